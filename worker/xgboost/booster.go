package xgboost

import (
	"fmt"
	"math"
)

// Booster is a parsed XGBoost model: its trees or linear weights and its
// objective. It is immutable and safe for concurrent use.
type Booster struct {
	objectiveName string
	obj           objective
	numFeature    int
	numGroup      int       // outputs per row before the link: classes or targets
	baseMargin    []float32 // per group
	featureNames  []string
	attributes    map[string]string
	bestIteration int // the best_iteration attribute, or -1

	// gbtree and dart
	trees   forest
	groups  []int32   // output group of each tree (tree_info)
	weights []float32 // dart's weight_drop; nil for gbtree
	layer   int       // trees per boosting round
	iterEnd []int     // trees after each round, when the model says (2.x)

	// gblinear
	isLinear bool
	linear   []float32 // weight of feature f for group g at f*numGroup+g; biases last
}

// NumFeatures is the number of input features the model expects.
func (b *Booster) NumFeatures() int { return b.numFeature }

// Objective is the name of the model's objective, such as "binary:logistic".
func (b *Booster) Objective() string { return b.objectiveName }

// FeatureNames are the feature names saved with the model, or nil.
func (b *Booster) FeatureNames() []string { return b.featureNames }

// NumTrees is the number of trees in the model; 0 for gblinear.
func (b *Booster) NumTrees() int { return len(b.trees.roots) }

// treesForRounds is how many trees the first rounds boosting rounds hold.
func (b *Booster) treesForRounds(rounds int) (int, error) {
	n := b.NumTrees()
	if b.isLinear {
		return 0, nil
	}
	if b.iterEnd != nil {
		if rounds > len(b.iterEnd) {
			return 0, fmt.Errorf("%d boosting rounds asked for, the model has %d", rounds, len(b.iterEnd))
		}
		return b.iterEnd[rounds-1], nil
	}
	if rounds > n/b.layer+1 || rounds*b.layer > n {
		return 0, fmt.Errorf("%d boosting rounds of %d trees asked for, the model has %d trees",
			rounds, b.layer, n)
	}
	return rounds * b.layer, nil
}

// width is the number of values predict returns per row.
func (b *Booster) width() int {
	if b.obj.link == linkSoftmax {
		return 1
	}
	return b.numGroup
}

// rowBlock is how many rows predict runs through each tree at a time, as
// XGBoost's CPU predictor does: a tree stays in cache for the whole block.
const rowBlock = 64

// predict returns the model's output for rows, width() values per row,
// using the first ntrees trees. A value equal to missing (as float32) or
// NaN is a missing value.
func (b *Booster) predict(rows [][]float64, ntrees int, missing float32) ([]float32, error) {
	nf, ng := b.numFeature, b.numGroup
	margins := make([]float32, len(rows)*ng)
	// Trees read each row as order keys (see orderKey), gblinear as floats.
	var keys []uint32
	var vals []float32
	if b.isLinear {
		vals = make([]float32, min(len(rows), rowBlock)*nf)
	} else {
		keys = make([]uint32, min(len(rows), rowBlock)*nf)
	}
	for start := 0; start < len(rows); start += rowBlock {
		block := rows[start:min(start+rowBlock, len(rows))]
		m := margins[start*ng : (start+len(block))*ng]
		for i := range block {
			copy(m[i*ng:(i+1)*ng], b.baseMargin)
		}
		for i, r := range block {
			var err error
			if b.isLinear {
				err = fill(vals[i*nf:(i+1)*nf], r, missing)
			} else {
				err = fillKeys(keys[i*nf:(i+1)*nf], r, missing)
			}
			if err != nil {
				return nil, fmt.Errorf("row %d: %w", start+i, err)
			}
		}
		if b.isLinear {
			b.addLinear(m, vals, len(block))
		} else {
			b.addTrees(m, keys, len(block), ntrees)
		}
	}
	return b.transform(margins, len(rows)), nil
}

// fill converts one row to float32 into x, as DMatrix does, with NaN for
// missing values. A value is missing when it is NaN or equals the model's
// missing value; an infinite one, or one too large for float32, is an
// error, as in XGBoost, rather than a guess.
func fill(x []float32, row []float64, missing float32) error {
	x = x[:len(row)]
	for j, v := range row {
		f := float32(v)
		switch {
		case f != f || f == missing:
			f = float32(math.NaN())
		case f-f != 0: // only ±Inf
			return infinite(j, v)
		}
		x[j] = f
	}
	return nil
}

// fillKeys converts one row to order keys into x, with missingKey for
// missing values; otherwise like fill.
func fillKeys(x []uint32, row []float64, missing float32) error {
	x = x[:len(row)]
	for j, v := range row {
		f := float32(v)
		switch {
		case f != f || f == missing:
			x[j] = missingKey
		case f-f != 0:
			return infinite(j, v)
		default:
			x[j] = orderKey(f)
		}
	}
	return nil
}

func infinite(j int, v float64) error {
	return fmt.Errorf("feature %d is %v: infinite or too large for float32", j, v)
}

// addTrees adds the leaf values of the first ntrees trees to the margins of
// n rows of keys x. Each row's sum runs in tree order in float32, like
// XGBoost's. Rows go through a tree four at a time: their walks do not
// depend on each other, so the CPU overlaps them.
func (b *Booster) addTrees(m []float32, x []uint32, n, ntrees int) {
	nf, ng := b.numFeature, b.numGroup
	f := &b.trees
	nodes, leaves := f.nodes, f.leaves
	for t := range ntrees {
		g, root, depth := int(b.groups[t]), f.roots[t], f.depths[t]
		w := float32(1)
		if b.weights != nil {
			w = b.weights[t]
		}
		i := 0
		for ; i+4 <= n; i += 4 {
			r0, r1, r2, r3 := i*nf, (i+1)*nf, (i+2)*nf, (i+3)*nf
			j0, j1, j2, j3 := root, root, root, root
			for range depth {
				j0 = step(nodes, j0, x, r0)
				j1 = step(nodes, j1, x, r1)
				j2 = step(nodes, j2, x, r2)
				j3 = step(nodes, j3, x, r3)
			}
			b.addLeaf(m, i*ng+g, w, leaves[j0])
			b.addLeaf(m, (i+1)*ng+g, w, leaves[j1])
			b.addLeaf(m, (i+2)*ng+g, w, leaves[j2])
			b.addLeaf(m, (i+3)*ng+g, w, leaves[j3])
		}
		for ; i < n; i++ {
			b.addLeaf(m, i*ng+g, w, leaves[f.leaf(t, x, i*nf)])
		}
	}
}

// addLeaf adds a leaf value to margin m[k]; dart scales it by the tree's
// weight first, in float32 as XGBoost does.
func (b *Booster) addLeaf(m []float32, k int, w, v float32) {
	if b.weights != nil {
		v = float32(w * v)
	}
	m[k] += v
}

// addLinear adds a gblinear model's output to the margins of n rows, in
// float32 and feature order, skipping missing values as XGBoost's sparse
// rows do.
func (b *Booster) addLinear(m, x []float32, n int) {
	nf, ng := b.numFeature, b.numGroup
	bias := b.linear[nf*ng:]
	for i := 0; i < n; i++ {
		row := x[i*nf : (i+1)*nf]
		for g := 0; g < ng; g++ {
			psum := bias[g] + m[i*ng+g]
			for f, v := range row {
				if v == v {
					psum += float32(v * b.linear[f*ng+g])
				}
			}
			m[i*ng+g] = psum
		}
	}
}

// transform applies the objective's link to the margins of n rows, in
// place where it can.
func (b *Booster) transform(m []float32, n int) []float32 {
	ng := b.numGroup
	switch b.obj.link {
	case linkSigmoid:
		for i, v := range m {
			m[i] = sigmoid(v)
		}
	case linkExp:
		for i, v := range m {
			m[i] = expf(v)
		}
	case linkHinge:
		for i, v := range m {
			if v > 0 {
				m[i] = 1
			} else {
				m[i] = 0
			}
		}
	case linkSoftprob:
		for i := 0; i < n; i++ {
			softmax(m[i*ng : (i+1)*ng])
		}
	case linkSoftmax:
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(argmax(m[i*ng : (i+1)*ng]))
		}
		return out
	}
	return m
}
