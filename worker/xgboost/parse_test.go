package xgboost

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// doc is a decoded JSON model, for tests to corrupt.
type doc = map[string]any

func readDoc(t *testing.T, fixture string) doc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, fixture, "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d doc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// get walks d along a path of object keys and array indices.
func get(d any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			d = d.(doc)[k]
		case int:
			d = d.([]any)[k]
		}
	}
	return d
}

func learner(d doc) doc { return d["learner"].(doc) }

func trees(d doc) []any {
	return get(d, "learner", "gradient_booster", "model", "trees").([]any)
}

func tree0(d doc) doc { return trees(d)[0].(doc) }

func TestParseCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture string
		corrupt func(d doc)
		want    string
	}{
		{"no learner", "binary", func(d doc) { delete(d, "learner") }, `no "learner" object`},
		{"no booster", "binary", func(d doc) { delete(learner(d), "gradient_booster") }, "no \"learner.gradient_booster\""},
		{"objective", "binary", func(d doc) { get(d, "learner", "objective").(doc)["name"] = "reg:made-up" },
			`unsupported objective "reg:made-up"`},
		{"booster name", "binary", func(d doc) { get(d, "learner", "gradient_booster").(doc)["name"] = "gbforest" },
			`unsupported gradient booster "gbforest"`},
		{"child out of range", "binary", func(d doc) { tree0(d)["left_children"].([]any)[0] = 1e6 },
			"tree 0: node 0: child 1000000 out of range"},
		{"negative child", "binary", func(d doc) { tree0(d)["right_children"].([]any)[0] = -5 },
			"child -5 out of range"},
		{"cycle", "binary", func(d doc) {
			t := tree0(d)
			l := int(t["left_children"].([]any)[0].(float64))
			t["left_children"].([]any)[l] = 0
			t["right_children"].([]any)[l] = 0
		}, "child 0 is reached twice"},
		{"shared child", "binary", func(d doc) {
			t := tree0(d)
			t["right_children"].([]any)[0] = t["left_children"].([]any)[0]
		}, "is reached twice"},
		{"split feature", "binary", func(d doc) { tree0(d)["split_indices"].([]any)[0] = 6 },
			"split feature 6 out of range [0, 6)"},
		{"negative feature", "binary", func(d doc) { tree0(d)["split_indices"].([]any)[0] = -1 },
			"split feature -1 out of range"},
		{"huge feature", "binary", func(d doc) { tree0(d)["split_indices"].([]any)[0] = 1e30 },
			"cannot unmarshal"},
		{"empty tree", "binary", func(d doc) {
			t := tree0(d)
			for _, k := range []string{"left_children", "right_children", "split_indices", "split_conditions", "default_left"} {
				t[k] = []any{}
			}
			t["tree_param"].(doc)["num_nodes"] = "0"
		}, "tree 0: no nodes"},
		{"short array", "binary", func(d doc) {
			c := tree0(d)["split_conditions"].([]any)
			tree0(d)["split_conditions"] = c[:len(c)-1]
		}, "split_conditions has"},
		{"num_nodes", "binary", func(d doc) { tree0(d)["tree_param"].(doc)["num_nodes"] = "100000000" },
			"num_nodes is 100000000"},
		{"default_left", "binary", func(d doc) { tree0(d)["default_left"].([]any)[0] = 7 },
			"default_left[0] is 7"},
		{"categorical", "binary", func(d doc) { tree0(d)["split_type"].([]any)[0] = 1 },
			"categorical splits are not supported"},
		{"num_trees", "binary", func(d doc) {
			get(d, "learner", "gradient_booster", "model", "gbtree_model_param").(doc)["num_trees"] = "21"
		}, "num_trees is 21 but there are 20 trees"},
		{"tree_info", "multiclass", func(d doc) {
			get(d, "learner", "gradient_booster", "model", "tree_info").([]any)[4] = 3
		}, "tree_info[4] is 3, want 0 to 2"},
		{"tree_info length", "binary", func(d doc) {
			m := get(d, "learner", "gradient_booster", "model").(doc)
			m["tree_info"] = m["tree_info"].([]any)[1:]
		}, "tree_info has 19 entries for 20 trees"},
		{"huge num_class", "multiclass", func(d doc) { learner(d)["learner_model_param"].(doc)["num_class"] = "1000000000" },
			"num_class is 1000000000"},
		{"num_feature", "binary", func(d doc) { learner(d)["learner_model_param"].(doc)["num_feature"] = "-1" },
			"num_feature is -1"},
		{"num_feature text", "binary", func(d doc) { learner(d)["learner_model_param"].(doc)["num_feature"] = "six" },
			`num_feature is "six"`},
		{"base_score", "binary", func(d doc) { learner(d)["learner_model_param"].(doc)["base_score"] = "1.5" },
			"must be in (0,1)"},
		{"base_score text", "binary", func(d doc) { learner(d)["learner_model_param"].(doc)["base_score"] = "half" },
			"want a finite number"},
		{"vector leaf", "binary", func(d doc) {
			get(d, "learner", "gradient_booster", "model", "gbtree_model_param").(doc)["size_leaf_vector"] = "3"
		}, "vector leaves"},
		{"gblinear weights", "linear", func(d doc) {
			m := get(d, "learner", "gradient_booster", "model").(doc)
			m["weights"] = m["weights"].([]any)[1:]
		}, "gblinear has 10 weights, want 11"},
		{"dart weights", "dart", func(d doc) {
			g := get(d, "learner", "gradient_booster").(doc)
			g["weight_drop"] = g["weight_drop"].([]any)[1:]
		}, "dart weight_drop has 7 weights for 8 trees"},
		{"best_iteration", "binary", func(d doc) { learner(d)["attributes"].(doc)["best_iteration"] = "x" },
			"attribute best_iteration"},
		{"feature names", "binary", func(d doc) { learner(d)["feature_names"] = []any{"a"} },
			"1 feature names for 6 features"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := readDoc(t, tc.fixture)
			tc.corrupt(d)
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseNotJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "not an XGBoost JSON model: the file is empty"},
		{"spaces", " \n", "the file is empty"},
		{"truncated", `{"learner": {"attributes": {`, "not an XGBoost JSON model: unexpected end of JSON input"},
		{"array", `[1, 2]`, "legacy binary format"},
		{"ubjson cut short", "{L\x00\x00\x00\x00\x00\x00\x00\x07learner{", "invalid UBJSON: the document is cut short"},
		{"ubjson deep", "{i\x01a" + strings.Repeat("[", 1000), "invalid UBJSON: nested deeper than 64"},
		{"ubjson empty elements", "{i\x01a[$Z#L\x7f\xff\xff\xff\xff\xff\xff\xff", "invalid UBJSON: length"},
		{"ubjson many nulls", "{i\x01a[$Z#l\x7f\xff\xff\xff}", "invalid UBJSON: 2147483647 elements of no size"},
		{"ubjson NaN", "{i\x01a[$d#i\x01\x7f\xc0\x00\x00}", "invalid UBJSON: a number is NaN"},
		{"ubjson other", "{i\x01aSi\x01b}", `no "learner" object`},
		{"legacy", "binf\x9a\x99\x99>", "legacy binary format"},
		{"other json", `{"a": 1}`, `no "learner" object`},
		{"null learner", `{"learner": null}`, `no "learner" object`},
		{"deep", strings.Repeat(`{"learner":`, 20000), "not an XGBoost JSON model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestParseVersions checks the fields that differ between XGBoost
// versions: 2.x's bracketed base_score and iteration_indptr, numbers
// instead of strings for parameters, booleans in default_left (before
// 1.6), and no split_type.
func TestParseVersions(t *testing.T) {
	want := predictFixture(t, "multiclass", readDoc(t, "multiclass"))
	d := readDoc(t, "multiclass")
	lp := learner(d)["learner_model_param"].(doc)
	lp["base_score"] = "[5E-1]"
	lp["num_class"] = 3
	m := get(d, "learner", "gradient_booster", "model").(doc)
	indptr := []any{}
	for i := 0; i <= len(trees(d))/3; i++ {
		indptr = append(indptr, 3*i)
	}
	m["iteration_indptr"] = indptr
	for _, tr := range trees(d) {
		tr := tr.(doc)
		delete(tr, "split_type")
		for i, v := range tr["default_left"].([]any) {
			tr["default_left"].([]any)[i] = v.(float64) == 1
		}
	}
	got := predictFixture(t, "multiclass", d)
	if len(got) != len(want) {
		t.Fatal("different number of predictions")
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("prediction %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// predictFixture parses d and predicts the rows of fixture's expected.json.
func predictFixture(t *testing.T, fixture string, d doc) []float32 {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	bst, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	_, _, exp := loadFixture(t, filepath.Join(fixtures, fixture))
	p, err := bst.predict(exp.rows(), bst.NumTrees(), nanMissing)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadErrors(t *testing.T) {
	dir := filepath.Join(fixtures, "binary")
	for _, tc := range []struct {
		name string
		dir  string
		conf map[string]any
		want string
	}{
		{"legacy", filepath.Join(fixtures, "binary_legacy"),
			map[string]any{"data": "model.xgb", "model_format": "xgb"},
			`model.xgb: not an XGBoost JSON model: this looks like XGBoost's legacy binary format`},
		{"no data", dir, map[string]any{}, `no "data" file`},
		{"escape", dir, map[string]any{"data": "../binary/model.json"}, "not a path inside the model directory"},
		{"absolute", dir, map[string]any{"data": "/etc/passwd"}, "not a path inside the model directory"},
		{"missing file", dir, map[string]any{"data": "nope.json"}, "nope.json: open"},
		{"class", dir, map[string]any{"data": "model.json", "model_class": "xgboost.sklearn.XGBSomething"},
			`unsupported model_class "xgboost.sklearn.XGBSomething"`},
		{"best_iteration", filepath.Join(fixtures, "binary"),
			map[string]any{"data": "model.json", "model_class": "xgboost.sklearn.XGBRegressor"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.dir, tc.conf)
			if tc.want == "" {
				if err != nil {
					t.Errorf("Load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestBestIterationOutOfRange(t *testing.T) {
	d := readDoc(t, "binary")
	learner(d)["attributes"].(doc)["best_iteration"] = "20"
	b, _ := json.Marshal(d)
	bst, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	_, err = newModel(bst, "xgboost.sklearn.XGBRegressor")
	want := "best_iteration 20: 21 boosting rounds of 1 trees asked for, the model has 20 trees"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("newModel error %v, want one containing %q", err, want)
	}
}

// TestUBJ: the UBJSON fixture is the binary fixture's Booster saved as
// model.ubj by XGBoost itself; it must parse to the same model and give
// the same predictions, bit for bit.
func TestUBJ(t *testing.T) {
	want, _, exp := loadFixture(t, filepath.Join(fixtures, "binary"))
	got, err := Load(filepath.Join(fixtures, "binary_ubj"), map[string]any{"data": "model.ubj", "model_format": "ubj"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Booster().NumTrees() != want.Booster().NumTrees() || !slices.Equal(got.Booster().FeatureNames(), want.Booster().FeatureNames()) {
		t.Fatalf("ubj model: %d trees, features %v; json: %d, %v", got.Booster().NumTrees(), got.Booster().FeatureNames(),
			want.Booster().NumTrees(), want.Booster().FeatureNames())
	}
	rows := exp.rows()
	a, err := got.Predict(rows)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := want.Predict(rows)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("ubj predictions %v, json %v", a, b)
	}
	comparePredictions(t, a, exp.Predictions)
}
