package xgboost

import (
	"errors"
	"fmt"
	"math"
)

// forest holds a model's trees in the flat layout prediction walks: all
// nodes in one slice, each tree's after its root, the two children of a
// split next to each other.
type forest struct {
	nodes  []node
	leaves []float32 // leaf values by node index; 0 for splits
	roots  []uint32  // first node of each tree
	depths []int32   // edges on each tree's longest root-to-leaf path
}

// node is a split, or a leaf, in 12 bytes so that the hot part of a model
// stays in cache.
//
// A leaf points to itself and sends every value, missing or not, to its
// own index. A walk can therefore take a tree's depth in steps whatever
// the path, and walk several rows in lockstep, without testing for leaves.
type node struct {
	// split is the threshold as an order key (see orderKey); values at
	// or above it go right. MaxUint32 for a leaf.
	split uint32
	// kids is the index of the left child; the right child is kids+1. A
	// leaf's own index.
	kids uint32
	// feat is the split feature, with defaultLeft set when a missing
	// value goes to the left child. defaultLeft and feature 0 for a leaf.
	feat uint32
}

const (
	defaultLeft = 1 << 31
	featMask    = defaultLeft - 1
)

// Walks compare order keys instead of floats: for float32 values a and b
// that are not NaN, a < b exactly when orderKey(a) < orderKey(b). Integer
// keys let a step pick a child with arithmetic instead of a branch, which
// real rows mispredict about half the time: on rows that a branch
// predictor cannot learn, the walk is more than twice as fast this way.
func orderKey(f float32) uint32 {
	if f == 0 {
		f = 0 // -0 and +0 compare equal; give them one key
	}
	b := math.Float32bits(f)
	if b&(1<<31) != 0 {
		return ^b // negative: larger magnitude, smaller key
	}
	return b | 1<<31
}

// missingKey stands for a missing value in a row of keys. No number has
// this key (NaN has none, +Inf has 0xff800000), and it is above every key,
// so a missing value goes right unless the node says left.
const missingKey = math.MaxUint32

// step moves from node i one level down for the row of keys that starts
// at x[row].
func step(nodes []node, i uint32, x []uint32, row int) uint32 {
	n := nodes[i]
	v := x[row+int(n.feat&featMask)]
	// v >= split makes split-v-1 negative, and its sign bit 1: right.
	j := n.kids + uint32((uint64(n.split)-uint64(v)-1)>>63)
	if v == missingKey && n.feat&defaultLeft != 0 {
		j = n.kids
	}
	return j
}

// leaf returns the index of the leaf tree t sends the row x[row:] to.
func (f *forest) leaf(t int, x []uint32, row int) uint32 {
	i := f.roots[t]
	for range f.depths[t] {
		i = step(f.nodes, i, x, row)
	}
	return i
}

// add checks t and appends its nodes reachable from the root, breadth
// first. Cycles, shared nodes and out-of-range indices are errors here, so
// that prediction cannot meet them. Nodes the root does not reach (XGBoost
// keeps pruned nodes in the arrays, marked deleted) are dropped.
func (f *forest) add(t *jsonTree, numFeature int) error {
	n := len(t.LeftChildren)
	if n == 0 {
		return errors.New("no nodes")
	}
	if num, err := intParam(t.Param, "num_nodes", n, math.MaxInt32); err != nil {
		return err
	} else if num != n {
		return fmt.Errorf("num_nodes is %d but left_children has %d entries", num, n)
	}
	for _, a := range []struct {
		name string
		len  int
	}{
		{"right_children", len(t.RightChildren)},
		{"split_indices", len(t.SplitIndices)},
		{"split_conditions", len(t.SplitConditions)},
		{"default_left", len(t.DefaultLeft)},
	} {
		if a.len != n {
			return fmt.Errorf("%s has %d entries for %d nodes", a.name, a.len, n)
		}
	}
	if t.SplitType != nil && len(t.SplitType) != n {
		return fmt.Errorf("split_type has %d entries for %d nodes", len(t.SplitType), n)
	}
	if uint64(len(f.nodes))+uint64(n) > math.MaxUint32 {
		return errors.New("model has too many nodes")
	}

	base := len(f.nodes)
	seen := make([]bool, n)
	seen[0] = true
	// The output is the breadth-first queue: src and depth say where
	// output node base+q comes from and how deep it is.
	src := make([]int32, 1, n)
	depth := make([]int32, 1, n)
	var maxDepth int32
	f.nodes = append(f.nodes, node{})
	f.leaves = append(f.leaves, 0)
	for q := 0; q < len(src); q++ {
		i, self := src[q], uint32(base+q)
		left, right := t.LeftChildren[i], t.RightChildren[i]
		if left == -1 { // XGBoost's test for a leaf
			f.nodes[self] = node{split: math.MaxUint32, kids: self, feat: defaultLeft}
			f.leaves[self] = t.SplitConditions[i]
			maxDepth = max(maxDepth, depth[q])
			continue
		}
		for _, c := range [2]int64{left, right} {
			if c < 0 || c >= int64(n) {
				return fmt.Errorf("node %d: child %d out of range [0, %d)", i, c, n)
			}
			if seen[c] {
				return fmt.Errorf("node %d: child %d is reached twice (a cycle or shared node)", i, c)
			}
			seen[c] = true
		}
		feat := t.SplitIndices[i]
		if feat < 0 || feat >= int64(numFeature) {
			return fmt.Errorf("node %d: split feature %d out of range [0, %d)", i, feat, numFeature)
		}
		if t.SplitType != nil && t.SplitType[i] != 0 {
			return fmt.Errorf("node %d: categorical splits are not supported", i)
		}
		nd := node{
			split: orderKey(t.SplitConditions[i]),
			kids:  uint32(len(f.nodes)),
			feat:  uint32(feat),
		}
		if t.DefaultLeft[i] {
			nd.feat |= defaultLeft
		}
		f.nodes[self] = nd
		f.nodes = append(f.nodes, node{}, node{})
		f.leaves = append(f.leaves, 0, 0)
		src = append(src, int32(left), int32(right))
		depth = append(depth, depth[q]+1, depth[q]+1)
	}
	f.roots = append(f.roots, uint32(base))
	f.depths = append(f.depths, maxDepth)
	return nil
}
