package xgboost

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestOrderKey checks that order keys compare as the floats do.
func TestOrderKey(t *testing.T) {
	special := []float32{
		0, float32(math.Copysign(0, -1)), 1, -1,
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
		math.MaxFloat32, -math.MaxFloat32, 0.5, -0.5, 1e-40, -1e-40,
	}
	r := rand.New(rand.NewPCG(1, 2))
	vals := append([]float32{}, special...)
	for range 2000 {
		vals = append(vals, math.Float32frombits(r.Uint32()))
	}
	for _, a := range vals {
		if a != a || math.IsInf(float64(a), 0) {
			continue
		}
		if orderKey(a) == missingKey {
			t.Fatalf("orderKey(%v) is missingKey", a)
		}
		for _, b := range special {
			if (a < b) != (orderKey(a) < orderKey(b)) {
				t.Errorf("%v < %v is %v, keys %#x < %#x", a, b, a < b, orderKey(a), orderKey(b))
			}
			if (a == b) != (orderKey(a) == orderKey(b)) {
				t.Errorf("%v == %v is %v, keys %#x, %#x", a, b, a == b, orderKey(a), orderKey(b))
			}
		}
	}
}

// TestUnreachableNodes checks that nodes the root does not reach, which
// XGBoost keeps after pruning, are ignored even when they hold garbage.
func TestUnreachableNodes(t *testing.T) {
	want := predictFixture(t, "binary", readDoc(t, "binary"))
	d := readDoc(t, "binary")
	for _, tr := range trees(d) {
		tr := tr.(doc)
		for k, v := range map[string]any{
			"left_children": 12345, "right_children": -7, "split_indices": 4294967295,
			"split_conditions": 1.5, "default_left": 1, "split_type": 0,
		} {
			tr[k] = append(tr[k].([]any), v)
		}
		p := tr["tree_param"].(doc)
		n, _ := strconv.Atoi(p["num_nodes"].(string))
		p["num_nodes"] = strconv.Itoa(n + 1)
	}
	got := predictFixture(t, "binary", d)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("prediction %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestWalk checks the walk on a hand-made tree: thresholds, missing values
// in both default directions, and -0.
func TestWalk(t *testing.T) {
	// Node 0 splits feature 0 at 0, missing values going left; node 2
	// splits feature 1 at -1.5, missing values going right. Leaves 1, 3, 4.
	tr := &jsonTree{
		LeftChildren:    []int64{1, -1, 3, -1, -1},
		RightChildren:   []int64{2, -1, 4, -1, -1},
		SplitIndices:    []int64{0, 0, 1, 0, 0},
		SplitConditions: []float32{0, 10, -1.5, 30, 40},
		DefaultLeft:     flags{true, false, false, false, false},
	}
	var f forest
	if err := f.add(tr, 2); err != nil {
		t.Fatal(err)
	}
	nan := math.NaN()
	for _, tc := range []struct {
		x    []float64
		want float32
	}{
		{[]float64{-1, 0}, 10},
		{[]float64{nan, 0}, 10},
		{[]float64{-1e-45, 5}, 10},
		{[]float64{math.Copysign(0, -1), 0}, 40}, // -0 is not < 0
		{[]float64{0, -2}, 30},
		{[]float64{0, -1.5}, 40},
		{[]float64{1e30, nan}, 40},
	} {
		keys := make([]uint32, 2)
		if err := fillKeys(keys, tc.x, nanMissing); err != nil {
			t.Fatal(err)
		}
		if got := f.leaves[f.leaf(0, keys, 0)]; got != tc.want {
			t.Errorf("walk(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
}
