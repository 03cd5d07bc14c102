package onlinestore_test

import (
	"context"
	"testing"

	"github.com/gantry/gantry/features/onlinestore"
	"github.com/gantry/gantry/features/onlinestore/redistest"
)

// A snapshot that fails half way is aborted: its rows go, the table keeps
// the generation readers use, and a committed generation is never aborted.
func TestAbortUncommittedGeneration(t *testing.T) {
	st := redistest.Open(t, redistest.Start(t))
	ctx := context.Background()
	lookup := func(key string) string {
		t.Helper()
		res, err := st.Lookup(ctx, []onlinestore.Query{{Table: "db.t", Keys: []string{key}}})
		if err != nil {
			t.Fatal(err)
		}
		return string(res[0].Rows[0])
	}
	w, err := st.NewGeneration(ctx, "db.t")
	if err != nil {
		t.Fatal(err)
	}
	w.Put(ctx, "1", []byte("[1]"))
	if err := w.Commit(ctx, []string{"v"}); err != nil {
		t.Fatal(err)
	}
	w.Abort(ctx) // committed: nothing happens
	if got := lookup("1"); got != "[1]" {
		t.Fatalf("after aborting a committed generation: %q", got)
	}

	failed, err := st.NewGeneration(ctx, "db.t")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"1", "2", "3"} {
		failed.Put(ctx, k, []byte("[9]"))
	}
	if err := failed.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Count leaves out the columns field, which only Commit writes.
	if n, err := st.Count(ctx, "db.t", failed.Generation()); err != nil || n != 2 {
		t.Fatalf("fields of the generation being written: %d %v, want 3 rows less one", n, err)
	}
	failed.Abort(ctx)
	if n, err := st.Count(ctx, "db.t", failed.Generation()); err != nil || n != 0 {
		t.Errorf("rows of the aborted generation: %d %v, want 0 (removed)", n, err)
	}
	if got := lookup("1"); got != "[1]" {
		t.Errorf("readers after an abort: %q, want the committed generation's [1]", got)
	}
}
