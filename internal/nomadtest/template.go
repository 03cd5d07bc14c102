package nomadtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Template blocks, as Nomad's template hook renders them before a task
// starts: consul-template, whose syntax is Go's text/template with its
// own functions. The double knows the ones Gantry's jobs use, nomadVar
// (a variable's items, each with .Key and .Value, as consul-template's
// NomadVarItems) and toJSON, and refuses a template that calls another.
// Each renders to its destination in the task dir; one with env = true is
// read as KEY=VALUE lines (a value in double quotes is a JSON string, as
// go-envparse reads it) into the task's environment.

// varItem is one item of a variable in a template: {{ .KEY.Value }}.
type varItem struct{ Key, Value string }

func (v varItem) String() string { return v.Value }

// renderTemplates renders the task's templates and returns the
// environment those with env = true give the task. A variable a
// template reads that is missing, or that the task may not read, makes
// it wait, as consul-template does, until it exists or the allocation
// stops (stopped true).
func (a *alloc) renderTemplates(taskDir string) (env map[string]string, stopped bool, err error) {
	env = map[string]string{}
	for i, t := range a.task.Templates {
		for waited := false; ; waited = true {
			out, err := a.execute(t)
			if err == nil {
				dest := filepath.Join(taskDir, deref(t.DestPath))
				perm, _ := strconv.ParseUint(deref(t.Perms), 8, 12)
				if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
					return nil, false, err
				}
				if err := os.WriteFile(dest, []byte(out), os.FileMode(perm)); err != nil {
					return nil, false, err
				}
				if deref(t.Envvars) {
					if err := parseEnvFile(out, env); err != nil {
						return nil, false, fmt.Errorf("Template failed: %s: %v", deref(t.DestPath), err)
					}
				}
				break
			}
			var missing *missingError
			if !errors.As(err, &missing) {
				return nil, false, fmt.Errorf("Template failed: template %d: %v", i+1, err)
			}
			if !waited {
				a.event("Template", missing.Error(), nil, nil)
			}
			select {
			case <-a.stop:
				return nil, true, nil
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return env, false, nil
}

// missingError is a dependency a template waits for.
type missingError struct{ msg string }

func (e *missingError) Error() string { return e.msg }

func (a *alloc) execute(t *api.Template) (string, error) {
	var missing error
	funcs := template.FuncMap{
		"nomadVar": func(path string) (map[string]varItem, error) {
			items, err := a.srv.taskVariable(a, path)
			if err != nil {
				missing = &missingError{err.Error()}
				return nil, missing
			}
			out := make(map[string]varItem, len(items))
			for k, v := range items {
				out[k] = varItem{k, v}
			}
			return out, nil
		},
		"toJSON": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}
	tmpl, err := template.New("template").Delims(deref(t.LeftDelim), deref(t.RightDelim)).Funcs(funcs).Parse(deref(t.EmbeddedTmpl))
	if err != nil {
		return "", err
	}
	if deref(t.ErrMissingKey) {
		tmpl.Option("missingkey=error")
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, nil); err != nil {
		if missing != nil {
			return "", missing
		}
		return "", err
	}
	return b.String(), nil
}

// parseEnvFile reads KEY=VALUE lines into env, skipping blank lines and
// comments; a double-quoted value is a JSON string.
func parseEnvFile(s string, env map[string]string) error {
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return fmt.Errorf("line %d: no =", n)
		}
		if strings.HasPrefix(v, `"`) {
			var u string
			if err := json.Unmarshal([]byte(v), &u); err != nil {
				return fmt.Errorf("line %d: %v", n, err)
			}
			v = u
		}
		env[k] = v
	}
	return sc.Err()
}
