package nomadtest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/internal/nomadtest"
	"github.com/hashicorp/nomad/api"
)

// TestVariables: the Variables API as Nomad answers it, through Nomad's
// own Go client.
func TestVariables(t *testing.T) {
	srv, c := start(t, nomadtest.Config{Namespaces: []string{"ml"}})
	vars := c.Variables()
	v, _, err := vars.Create(&api.Variable{Path: "nomad/jobs/j1", Items: api.VariableItems{"K": "v1"}}, nil)
	if err != nil || v.Namespace != "default" || v.Path != "nomad/jobs/j1" || v.ModifyIndex == 0 || v.Items["K"] != "v1" {
		t.Fatalf("create: %+v %v", v, err)
	}
	got, _, err := vars.Read("nomad/jobs/j1", nil)
	if err != nil || got.Items["K"] != "v1" || got.ModifyIndex != v.ModifyIndex {
		t.Fatalf("read: %+v %v", got, err)
	}
	// Namespaces are apart.
	if _, _, err := vars.Read("nomad/jobs/j1", &api.QueryOptions{Namespace: "ml"}); err != api.ErrVariablePathNotFound {
		t.Errorf("read in another namespace: %v", err)
	}
	// Check-and-set: a stale index is a 409 with the variable there.
	v.Items["K"] = "v2"
	if _, _, err := vars.CheckedUpdate(v, nil); err != nil {
		t.Fatalf("checked update: %v", err)
	}
	v.Items["K"] = "v3"
	var conflict api.ErrCASConflict
	if _, _, err := vars.CheckedUpdate(v, nil); !errorsAs(err, &conflict) || conflict.Conflict.Items != nil && conflict.Conflict.Items["K"] != "v2" {
		t.Errorf("stale update: %v", err)
	}
	if _, _, err := vars.CheckedCreate(&api.Variable{Path: "nomad/jobs/j1", Items: api.VariableItems{"K": "x"}}, nil); !errorsAs(err, &conflict) {
		t.Errorf("create over an existing variable with cas=0: %v", err)
	}

	// What Nomad refuses.
	for _, tc := range []struct {
		path  string
		items api.VariableItems
		code  int
		want  string
	}{
		{"nomad/jobs/j2", nil, 400, "variable missing required Items object"},
		{"nomad/other", api.VariableItems{"K": "v"}, 500, `only paths at "nomad/jobs"`},
		{"nomad", api.VariableItems{"K": "v"}, 500, `"nomad" is a reserved top-level directory path`},
		{"a.b", api.VariableItems{"K": "v"}, 500, `invalid path "a.b"`},
		{strings.Repeat("p", 129), api.VariableItems{"K": "v"}, 500, "invalid path"},
		{"big", api.VariableItems{"K": strings.Repeat("x", 64*1024)}, 500, "variables are limited to 64KiB in total size"},
	} {
		_, _, err := vars.Create(&api.Variable{Path: tc.path, Items: tc.items}, nil)
		if code, body := status(err); code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("create %.20s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.want)
		}
	}

	// Lists carry no items; deletes are 204, also of nothing.
	list, _, err := vars.PrefixList("nomad/jobs", nil)
	if err != nil || len(list) != 1 || list[0].Path != "nomad/jobs/j1" {
		t.Errorf("list: %v %v", list, err)
	}
	if _, err := vars.Delete("nomad/jobs/j1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := vars.Delete("nomad/jobs/j1", nil); err != nil {
		t.Errorf("delete of nothing: %v", err)
	}
	if srv.Variable("", "nomad/jobs/j1") != nil {
		t.Error("the variable is still there")
	}
}

func errorsAs(err error, target *api.ErrCASConflict) bool {
	c, ok := err.(api.ErrCASConflict)
	if ok {
		*target = c
	}
	return ok
}

// TestTemplateReadsVariable: a task's env template reads its job's
// variable into the task's environment, a value with quotes and a
// newline intact; a template may read only its own job's variables, and
// an invalid template is refused at register as Nomad refuses it.
func TestTemplateReadsVariable(t *testing.T) {
	_, c := start(t, nomadtest.Config{})
	secret := "s3cr\"et\nline two"
	if _, _, err := c.Variables().Create(&api.Variable{Path: "nomad/jobs/tmpl", Items: api.VariableItems{"API_KEY": secret}}, nil); err != nil {
		t.Fatal(err)
	}
	job := taskJob(t, "tmpl", 1, "")
	job.TaskGroups[0].Tasks[0].Templates = []*api.Template{{
		EmbeddedTmpl: new(`{{ with nomadVar "nomad/jobs/tmpl" }}API_KEY={{ (index . "API_KEY").Value | toJSON }}{{ end }}`),
		DestPath:     new("secrets/app.env"), Envvars: new(true),
	}}
	if _, _, err := c.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	var regs []*api.ServiceRegistration
	eventually.True(t, 15*time.Second, "a registration", func() bool {
		regs, _, _ = c.Services().Get("tmpl", nil)
		return len(regs) == 1
	})
	var body string
	eventually.True(t, 15*time.Second, "the task to answer", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/env?name=API_KEY", regs[0].Address, regs[0].Port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == 200
	})
	if body != secret {
		t.Errorf("the task's API_KEY differs from the variable's (%d bytes, want %d; values not shown)", len(body), len(secret))
	}

	bad := taskJob(t, "bad", 1, "")
	bad.TaskGroups[0].Tasks[0].Templates = []*api.Template{{EmbeddedTmpl: new("x"), DestPath: new("../../../etc/x"), ChangeMode: new("reload")}}
	_, _, err := c.Jobs().Register(bad, nil)
	if code, body := status(err); code != 500 || !strings.Contains(body, "Template 1 validation failed") ||
		!strings.Contains(body, "destination escapes allocation directory") || !strings.Contains(body, "Invalid change mode") {
		t.Errorf("an invalid template: %d %s", code, body)
	}

	// Another job's variable: the task waits, as consul-template does.
	other := taskJob(t, "other", 1, "")
	other.TaskGroups[0].Tasks[0].Templates = []*api.Template{{
		EmbeddedTmpl: new(`{{ with nomadVar "nomad/jobs/tmpl" }}K={{ (index . "API_KEY").Value }}{{ end }}`),
		DestPath:     new("secrets/app.env"), Envvars: new(true),
	}}
	if _, _, err := c.Jobs().Register(other, nil); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 15*time.Second, "a Permission denied template event", func() bool {
		as, _, _ := c.Jobs().Allocations("other", false, nil)
		for _, a := range as {
			for _, ts := range a.TaskStates {
				for _, ev := range ts.Events {
					if ev.Type == "Template" && strings.Contains(ev.DisplayMessage+ev.Message, "Permission denied") {
						return true
					}
				}
			}
		}
		return false
	})
	if regs, _, _ := c.Services().Get("other", nil); len(regs) != 0 {
		t.Errorf("a task that may not read its template's variable started: %v", regs)
	}
}
