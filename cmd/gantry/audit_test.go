package main

// Audit end to end: gantry dev with a real ClickHouse; control-plane
// changes travel the inference records' path (capture, the embedded
// broker, the in-process logger) into default.gantry_audit.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
)

// controlCall sends a control-plane request as the test's principal: the
// admin token when gantry dev runs with authentication (its data dir holds
// one), else X-Gantry-User.
type controlCall struct {
	addr, token string
}

const auditUser = "audit-e2e@corp.com"

func (c controlCall) do(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+c.addr+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gantry-User", auditUser)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// principal is the name audit rows should carry for c's calls.
func (c controlCall) principal(t *testing.T) string {
	if c.token == "" {
		return auditUser
	}
	st, b := c.do(t, "GET", "/api/2.0/preview/scim/v2/Me", "")
	var me struct {
		UserName      string `json:"userName"`
		ApplicationID string `json:"applicationId"`
	}
	if err := json.Unmarshal(b, &me); st != 200 || err != nil {
		t.Fatalf("Me: %d %s", st, b)
	}
	// A service principal's Me carries its application id in both fields
	// (the SDKs read userName).
	if me.ApplicationID != "" {
		return me.ApplicationID
	}
	return me.UserName
}

func TestAuditTableEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse and gantry dev; run without -short")
	}
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	bin, addr, dataDir := buildGantry(t), freeAddr(t), t.TempDir()
	dev := startDev(t, bin, addr, dataDir, "--clickhouse", ch.Addr())
	c := controlCall{addr: addr}
	if tok, err := os.ReadFile(filepath.Join(dataDir, "admin-token")); err == nil {
		c.token = strings.TrimSpace(string(tok))
	}
	who := c.principal(t)

	mustCLI(t, bin, addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	// A secret on the way, whose value must reach no row and no log line.
	const value = "sk-e2e-9c8b7a6f5e4d3c2b1a"
	for _, call := range []struct{ path, body string }{
		{"/api/2.0/secrets/scopes/create", `{"scope": "e2e"}`},
		{"/api/2.0/secrets/put", `{"scope": "e2e", "key": "api", "string_value": "` + value + `"}`},
	} {
		if st, b := c.do(t, "POST", call.path, call.body); st != 200 {
			t.Fatalf("POST %s: %d %s", call.path, st, b)
		}
	}
	entity := func(v string) string {
		return `{"served_entities": [{"name": "` + v + `", "entity_name": "binary", "entity_version": "1", "environment_vars": {"API_KEY": "{{secrets/e2e/api}}"}}]}`
	}
	if st, b := c.do(t, "POST", "/api/2.0/serving-endpoints", `{"name": "audited", "config": `+entity("a")+`}`); st != 200 {
		t.Fatalf("create: %d %s", st, b)
	}
	mustCLI(t, bin, addr, "endpoints", "wait", "audited")
	if st, b := c.do(t, "PUT", "/api/2.0/serving-endpoints/audited/config", entity("b")); st != 200 {
		t.Fatalf("update: %d %s", st, b)
	}
	mustCLI(t, bin, addr, "endpoints", "wait", "audited")
	if st, b := c.do(t, "DELETE", "/api/2.0/serving-endpoints/audited", ""); st != 200 {
		t.Fatalf("delete: %d %s", st, b)
	}

	want := []string{
		"POST /api/2.0/serving-endpoints|/api/2.0/serving-endpoints|serving-endpoint audited|" + who + "|200",
		"PUT /api/2.0/serving-endpoints/{name}/config|/api/2.0/serving-endpoints/audited/config||" + who + "|200",
		"DELETE /api/2.0/serving-endpoints/{name}|/api/2.0/serving-endpoints/audited||" + who + "|200",
	}
	var got []string
	eventually.True(t, 30*time.Second, "three audit rows for the endpoint", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := db.Query(ctx, "SELECT action, path, target, principal, status_code FROM default.gantry_audit FINAL "+
			"WHERE path LIKE '%/serving-endpoints%' ORDER BY timestamp_ms")
		if err != nil {
			// The logger creates the table with its first row.
			return false
		}
		got = got[:0]
		for _, r := range res.Rows {
			got = append(got, strings.Join(r, "|"))
		}
		return len(got) >= len(want)
	})
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	t.Logf("audit rows:\n%s", strings.Join(got, "\n"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := db.Query(ctx, "SELECT count() FROM default.gantry_audit FINAL WHERE target = 'secret e2e/api' AND principal = ?", who)
	if err != nil || fmt.Sprint(res.Rows) != "[[1]]" {
		t.Fatalf("the secret's put: %v %v", res, err)
	}
	res, err = db.Query(ctx, "SELECT count() FROM default.gantry_audit WHERE position(concat(action, path, target, principal, source), ?) > 0", value)
	if err != nil || fmt.Sprint(res.Rows) != "[[0]]" {
		t.Fatalf("rows holding the secret value: %v %v", res, err)
	}
	dev.stop(t)
	if bytes.Contains([]byte(dev.log.String()), []byte(value)) {
		t.Fatal("gantry dev's log holds the secret value")
	}
}
