package xgboost

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Limits on what a model may declare. They are far above real models and
// keep a hostile file from making Predict allocate without bound.
const (
	maxFeatures = 1 << 28
	maxGroups   = 1 << 20
)

// jsonModel is the subset of XGBoost's JSON model schema (doc/model.schema
// in the XGBoost repository) that prediction needs. Everything else, such
// as node statistics, is skipped.
type jsonModel struct {
	Learner *jsonLearner `json:"learner"`
}

type jsonLearner struct {
	Attributes      map[string]string `json:"attributes"`
	FeatureNames    []string          `json:"feature_names"`
	GradientBooster *jsonBooster      `json:"gradient_booster"`
	ModelParam      map[string]param  `json:"learner_model_param"`
	Objective       struct {
		Name string `json:"name"`
	} `json:"objective"`
}

// jsonBooster is a gradient booster. gbtree and gblinear keep their model
// in Model; dart wraps a gbtree in GBTree and adds per-tree weights.
type jsonBooster struct {
	Name       string       `json:"name"`
	Model      *jsonGBModel `json:"model"`
	GBTree     *jsonBooster `json:"gbtree"`
	WeightDrop []float32    `json:"weight_drop"`
}

type jsonGBModel struct {
	// gbtree
	Param           map[string]param `json:"gbtree_model_param"`
	Trees           []jsonTree       `json:"trees"`
	TreeInfo        []int64          `json:"tree_info"`
	IterationIndptr []int64          `json:"iteration_indptr"` // XGBoost 2.x
	// gblinear
	Weights []float32 `json:"weights"`
}

type jsonTree struct {
	Param           map[string]param `json:"tree_param"`
	LeftChildren    []int64          `json:"left_children"`
	RightChildren   []int64          `json:"right_children"`
	SplitIndices    []int64          `json:"split_indices"`
	SplitConditions []float32        `json:"split_conditions"`
	DefaultLeft     flags            `json:"default_left"`
	SplitType       []int64          `json:"split_type"` // absent before 1.6
}

// param is a model parameter. XGBoost writes them as strings ("3",
// "5E-1"); numbers are accepted too.
type param string

func (p *param) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = param(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("parameter is neither a string nor a number: %s", b)
	}
	*p = param(n)
	return nil
}

// flags is default_left: 0/1 numbers since XGBoost 1.6, booleans before.
type flags []bool

func (f *flags) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make([]bool, len(raw))
	for i, r := range raw {
		switch s := string(r); s {
		case "true", "1":
			out[i] = true
		case "false", "0":
		default:
			return fmt.Errorf("default_left[%d] is %s, want 0, 1, true or false", i, s)
		}
	}
	*f = out
	return nil
}

// intParam reads an integer parameter, with def when it is absent.
func intParam(m map[string]param, key string, def, max int) (int, error) {
	s, ok := m[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(string(s))
	if err != nil {
		// Some writers print integers as floats ("3.0", "1E0").
		f, ferr := strconv.ParseFloat(string(s), 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
			return 0, fmt.Errorf("%s is %q, want an integer", key, s)
		}
		n = int(f)
	}
	if n < 0 || n > max {
		return 0, fmt.Errorf("%s is %d, want 0 to %d", key, n, max)
	}
	return n, nil
}

// baseScores reads base_score: "5E-1" in XGBoost 1.x, "[5E-1]" or a list
// with one value per target in later versions.
func baseScores(s param) ([]float32, error) {
	str := strings.TrimSpace(string(s))
	if strings.HasPrefix(str, "[") && strings.HasSuffix(str, "]") {
		str = str[1 : len(str)-1]
	}
	var out []float32
	for _, f := range strings.Split(str, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 32)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("base_score is %q, want a finite number", s)
		}
		out = append(out, float32(v))
	}
	return out, nil
}

var errNotJSON = errors.New("not an XGBoost JSON model")

// sniff explains what a document that is not a JSON object probably is.
func sniff(b []byte) error {
	b = bytes.TrimLeft(b, " \t\r\n")
	const hint = `; save the model with model_format="json" (mlflow.xgboost.save_model) or as a .json file`
	switch {
	case len(b) == 0:
		return fmt.Errorf("%w: the file is empty", errNotJSON)
	case b[0] == '{' && len(b) > 1 && bytes.IndexByte([]byte("iUIlLdD$#"), b[1]) >= 0:
		// UBJSON objects start with '{' followed by a type marker for the
		// length of the first key, never by JSON's '"' or whitespace.
		return fmt.Errorf("%w: this looks like XGBoost's binary UBJSON format (.ubj)%s", errNotJSON, hint)
	case b[0] != '{':
		return fmt.Errorf("%w: this looks like XGBoost's legacy binary format (.xgb, .bin, .model)%s", errNotJSON, hint)
	}
	return nil
}

// Parse reads an XGBoost JSON model document, as written by
// Booster.save_model("model.json") or mlflow.xgboost.save_model(...,
// model_format="json"). It checks the trees completely, so a Booster it
// returns can predict any row without indexing out of range or looping.
//
// It reads XGBoost's UBJSON format (model.ubj) too, by transcoding it to
// the same JSON first.
func Parse(b []byte) (*Booster, error) {
	if isUBJ(b) {
		j, err := ubjToJSON(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errNotJSON, err)
		}
		b = j
	}
	if err := sniff(b); err != nil {
		return nil, err
	}
	var doc jsonModel
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotJSON, err)
	}
	l := doc.Learner
	if l == nil {
		return nil, fmt.Errorf(`%w: no "learner" object`, errNotJSON)
	}
	if l.GradientBooster == nil {
		return nil, fmt.Errorf(`%w: no "learner.gradient_booster" object`, errNotJSON)
	}
	if l.ModelParam == nil {
		return nil, fmt.Errorf(`%w: no "learner.learner_model_param" object`, errNotJSON)
	}
	bst, err := newBooster(l)
	if err != nil {
		return nil, fmt.Errorf("invalid XGBoost model: %w", err)
	}
	return bst, nil
}

func newBooster(l *jsonLearner) (*Booster, error) {
	b := &Booster{
		objectiveName: l.Objective.Name,
		featureNames:  l.FeatureNames,
		attributes:    l.Attributes,
	}
	obj, ok := objectives[b.objectiveName]
	if !ok {
		if b.objectiveName == "" {
			return nil, errors.New("no objective")
		}
		return nil, fmt.Errorf("unsupported objective %q", b.objectiveName)
	}
	b.obj = obj

	mp := l.ModelParam
	var err error
	if b.numFeature, err = intParam(mp, "num_feature", 0, maxFeatures); err != nil {
		return nil, err
	}
	numClass, err := intParam(mp, "num_class", 0, maxGroups)
	if err != nil {
		return nil, err
	}
	numTarget, err := intParam(mp, "num_target", 1, maxGroups)
	if err != nil {
		return nil, err
	}
	// XGBoost's num_output_group: one margin per class, or per target.
	b.numGroup = max(numClass, numTarget, 1)
	if len(b.featureNames) != 0 && len(b.featureNames) != b.numFeature {
		return nil, fmt.Errorf("%d feature names for %d features", len(b.featureNames), b.numFeature)
	}
	if err := b.setBaseMargin(mp); err != nil {
		return nil, err
	}

	gb := l.GradientBooster
	switch gb.Name {
	case "gbtree":
		err = b.loadTrees(gb.Model)
	case "dart":
		if gb.GBTree == nil {
			return nil, errors.New(`dart booster has no "gbtree" object`)
		}
		if err = b.loadTrees(gb.GBTree.Model); err == nil {
			err = b.setDartWeights(gb.WeightDrop)
		}
	case "gblinear":
		err = b.loadLinear(gb.Model)
	case "":
		err = errors.New("gradient booster has no name")
	default:
		err = fmt.Errorf("unsupported gradient booster %q", gb.Name)
	}
	if err != nil {
		return nil, err
	}
	if s, ok := b.attributes["best_iteration"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("attribute best_iteration is %q, want a round number", s)
		}
		b.bestIteration = n
	} else {
		b.bestIteration = -1
	}
	return b, nil
}

// setBaseMargin turns base_score into the margin every prediction starts
// from, one per output group.
func (b *Booster) setBaseMargin(mp map[string]param) error {
	scores := []float32{0.5} // XGBoost's default
	if s, ok := mp["base_score"]; ok {
		var err error
		if scores, err = baseScores(s); err != nil {
			return err
		}
	}
	if len(scores) != 1 && len(scores) != b.numGroup {
		return fmt.Errorf("%d base scores for %d outputs", len(scores), b.numGroup)
	}
	b.baseMargin = make([]float32, b.numGroup)
	for g := range b.baseMargin {
		s := scores[min(g, len(scores)-1)]
		switch b.obj.link {
		case linkSigmoid:
			if !(s > 0 && s < 1) {
				return fmt.Errorf("base_score is %v, must be in (0,1) for %s", s, b.objectiveName)
			}
		case linkExp:
			if !(s > 0) {
				return fmt.Errorf("base_score is %v, must be positive for %s", s, b.objectiveName)
			}
		}
		b.baseMargin[g] = b.obj.margin(s)
	}
	return nil
}

func (b *Booster) loadTrees(m *jsonGBModel) error {
	if m == nil {
		return errors.New(`gbtree booster has no "model" object`)
	}
	numTrees, err := intParam(m.Param, "num_trees", len(m.Trees), math.MaxInt32)
	if err != nil {
		return err
	}
	if numTrees != len(m.Trees) {
		return fmt.Errorf("num_trees is %d but there are %d trees", numTrees, len(m.Trees))
	}
	if len(m.TreeInfo) != len(m.Trees) {
		return fmt.Errorf("tree_info has %d entries for %d trees", len(m.TreeInfo), len(m.Trees))
	}
	parallel, err := intParam(m.Param, "num_parallel_tree", 1, math.MaxInt32)
	if err != nil {
		return err
	}
	if n, err := intParam(m.Param, "size_leaf_vector", 0, math.MaxInt32); err != nil {
		return err
	} else if n > 1 {
		return fmt.Errorf("vector leaves (size_leaf_vector %d, multi_strategy=multi_output_tree) are not supported", n)
	}
	b.layer = max(parallel, 1) * b.numGroup
	if err := b.setIterations(m.IterationIndptr, len(m.Trees)); err != nil {
		return err
	}

	b.groups = make([]int32, len(m.Trees))
	for i, g := range m.TreeInfo {
		if g < 0 || g >= int64(b.numGroup) {
			return fmt.Errorf("tree_info[%d] is %d, want 0 to %d", i, g, b.numGroup-1)
		}
		b.groups[i] = int32(g)
	}
	for i := range m.Trees {
		if err := b.trees.add(&m.Trees[i], b.numFeature); err != nil {
			return fmt.Errorf("tree %d: %w", i, err)
		}
	}
	return nil
}

// setIterations records where each boosting round's trees end, from
// XGBoost 2.x's iteration_indptr or else from the fixed round size.
func (b *Booster) setIterations(indptr []int64, numTrees int) error {
	if len(indptr) == 0 {
		return nil
	}
	if indptr[0] != 0 || indptr[len(indptr)-1] != int64(numTrees) {
		return fmt.Errorf("iteration_indptr must run from 0 to %d trees", numTrees)
	}
	for i := 1; i < len(indptr); i++ {
		if indptr[i] < indptr[i-1] {
			return fmt.Errorf("iteration_indptr decreases at %d", i)
		}
	}
	b.iterEnd = make([]int, len(indptr)-1)
	for i := range b.iterEnd {
		b.iterEnd[i] = int(indptr[i+1])
	}
	return nil
}

func (b *Booster) setDartWeights(w []float32) error {
	if len(w) != b.NumTrees() {
		return fmt.Errorf("dart weight_drop has %d weights for %d trees", len(w), b.NumTrees())
	}
	b.weights = w
	return nil
}

func (b *Booster) loadLinear(m *jsonGBModel) error {
	if m == nil {
		return errors.New(`gblinear booster has no "model" object`)
	}
	// One weight per feature and group, then one bias per group.
	if want := (b.numFeature + 1) * b.numGroup; len(m.Weights) != want {
		return fmt.Errorf("gblinear has %d weights, want %d for %d features and %d outputs",
			len(m.Weights), want, b.numFeature, b.numGroup)
	}
	b.linear = m.Weights
	b.isLinear = true
	return nil
}
