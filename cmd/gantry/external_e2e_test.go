package main

// External models end to end: gantry dev with ClickHouse in front of
// provider doubles (external/providertest, each a process of its own),
// one endpoint with a plaintext key and two with a secret reference; chat,
// streams and embeddings through the invocations and the OpenAI paths, a
// fallback; then every answer, every log line of gantry dev and every
// inference table row is searched for the keys.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry/gantry/external/providertest"
	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
)

// answers keeps every API answer of a test, headers and body, for the
// search at its end.
type answers struct {
	base string
	all  strings.Builder
}

func (a *answers) do(t *testing.T, method, path, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, a.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(&a.all, "%s %s -> %d %v\n%s\n", method, path, resp.StatusCode, resp.Header, b)
	return resp, string(b)
}

func (a *answers) ok(t *testing.T, method, path, body string) string {
	t.Helper()
	resp, b := a.do(t, method, path, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

func TestExternalModelsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ClickHouse, provider doubles and gantry dev; run without -short")
	}
	const (
		plainKey  = "sk-e2e-PLAINTEXT-7d1e6a0c93b2"
		secretKey = "sk-e2e-FROMSECRET-4b8f2e91c6d5"
	)
	plainBase, secretBase := providertest.Start(t, plainKey), providertest.Start(t, secretKey)
	ch := chtest.Start(t)
	db := chtest.Open(t, ch)
	bin, addr, dataDir := buildGantry(t), freeAddr(t), t.TempDir()
	dev := startDev(t, bin, addr, dataDir, "--clickhouse", ch.Addr())
	a := &answers{base: "http://" + addr}

	a.ok(t, "POST", "/api/2.0/secrets/scopes/create", `{"scope": "llm"}`)
	a.ok(t, "POST", "/api/2.0/secrets/put", `{"scope": "llm", "key": "openai", "string_value": "`+secretKey+`"}`)

	capture := `"auto_capture_config": {"catalog_name": "ml", "schema_name": "ext", "enabled": true}`
	openai := func(entity, model, base, key string) string {
		return `{"name": "` + entity + `", "external_model": {"name": "` + model + `", "provider": "openai", "task": "llm/v1%s",
			"openai_config": {` + key + `, "openai_api_base": "` + base + `/v1"}}}`
	}
	plain := `"openai_api_key_plaintext": "` + plainKey + `"`
	ref := `"openai_api_key": "{{secrets/llm/openai}}"`
	for _, body := range []string{
		`{"name": "plainchat", "config": {"served_entities": [` + fmt.Sprintf(openai("gpt", "gpt-4o-mini", plainBase, plain), "/chat") + `], ` + capture + `}}`,
		// A fallback: all traffic to an entity whose provider answers 429,
		// the next one in order answers.
		`{"name": "secretchat", "config": {"served_entities": [` + fmt.Sprintf(openai("busy", "fail-429", secretBase, ref), "/chat") + `, ` +
			fmt.Sprintf(openai("spare", "gpt-4o", secretBase, ref), "/chat") + `],
			"traffic_config": {"routes": [{"served_model_name": "busy", "traffic_percentage": 100}, {"served_model_name": "spare", "traffic_percentage": 0}]}, ` + capture + `}}`,
		`{"name": "emb", "config": {"served_entities": [` + fmt.Sprintf(openai("ada", "text-embedding-3-small", secretBase, ref), "/embeddings") + `], ` + capture + `}}`,
	} {
		a.ok(t, "POST", "/api/2.0/serving-endpoints", body)
	}
	a.ok(t, "PUT", "/api/2.0/serving-endpoints/secretchat/ai-gateway", `{"fallback_config": {"enabled": true}}`)
	for _, ep := range []string{"plainchat", "secretchat", "emb"} {
		mustCLI(t, bin, addr, "endpoints", "wait", ep)
		a.ok(t, "GET", "/api/2.0/serving-endpoints/"+ep, "")
	}
	a.ok(t, "GET", "/api/2.0/serving-endpoints", "")
	a.ok(t, "GET", "/api/2.0/gantry/routes", "")
	// The one answer that holds keys, by design (admins only, for a
	// separate activator): it proves the reference resolves, and is left
	// out of the search.
	req, _ := http.NewRequest("GET", a.base+"/api/2.0/gantry/external-keys", nil)
	kr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := io.ReadAll(kr.Body)
	kr.Body.Close()
	if kr.StatusCode != 200 || !strings.Contains(string(keys), plainKey) || strings.Count(string(keys), secretKey) != 3 || kr.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("external-keys: %d, plaintext key %v, secret key %d times", kr.StatusCode, strings.Contains(string(keys), plainKey), strings.Count(string(keys), secretKey))
	}

	chat := func(content string) string {
		return `{"messages": [{"role": "user", "content": "` + content + `"}], "max_tokens": 64}`
	}
	// Chat, both keys, through invocations and the OpenAI SDK's path.
	for _, c := range []struct{ path, body, want string }{
		{"/serving-endpoints/plainchat/invocations", chat("plain one"), "echo: plain one"},
		{"/serving-endpoints/chat/completions", `{"model": "plainchat", "messages": [{"role": "user", "content": "sdk two"}]}`, "echo: sdk two"},
		{"/serving-endpoints/secretchat/invocations", chat("secret three"), "echo: secret three"},
	} {
		if b := a.ok(t, "POST", c.path, c.body); !strings.Contains(b, c.want) || !strings.Contains(b, `"object":"chat.completion"`) {
			t.Fatalf("POST %s: %s", c.path, b)
		}
	}
	resp, _ := a.do(t, "POST", "/serving-endpoints/secretchat/invocations", chat("who"))
	if resp.Header.Get("x-gantry-fallbacks") != "busy=429" || resp.Header.Get("served-model-name") != "spare" {
		t.Errorf("fallback headers: %v", resp.Header)
	}
	// Embeddings, through both paths.
	for _, c := range []struct{ path, body string }{
		{"/serving-endpoints/emb/invocations", `{"input": ["a", "b"]}`},
		{"/serving-endpoints/embeddings", `{"model": "emb", "input": "c"}`},
	} {
		if b := a.ok(t, "POST", c.path, c.body); !strings.Contains(b, `"embedding"`) {
			t.Fatalf("POST %s: %s", c.path, b)
		}
	}
	// Streams, with the secret's key (and the fallback) and the plaintext one.
	for _, c := range []struct{ path, body, want string }{
		{"/serving-endpoints/secretchat/invocations", `{"messages": [{"role": "user", "content": "s t r"}], "stream": true}`, "echo: s t r"},
		{"/serving-endpoints/chat/completions", `{"model": "plainchat", "messages": [{"role": "user", "content": "x y"}], "stream": true}`, "echo: x y"},
	} {
		req, _ := http.NewRequest("POST", a.base+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(&a.all, "POST %s -> %d %v\n%s\n", c.path, resp.StatusCode, resp.Header, raw)
		s := mustChatStream(t, strings.NewReader(string(raw)))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || s.text != c.want || !s.done {
			t.Fatalf("stream %s: %d %v %q done=%v", c.path, resp.StatusCode, resp.Header, s.text, s.done)
		}
	}

	// gantry activator in a process of its own, following gantry dev's
	// route table with the components' token, gets the keys from
	// external-keys.
	actAddr := freeAddr(t)
	token := componentsToken(t, dataDir)
	adminTokens.Store(actAddr, tokenOf(addr))
	act := startProc(t, bin, actAddr, "activator", "--listen", actAddr, "--scheduler", "http://"+addr, "--token", token)
	remote := &answers{base: "http://" + actAddr}
	for _, c := range []struct{ path, body, want string }{
		{"/serving-endpoints/secretchat/invocations", chat("remote one"), "echo: remote one"},
		{"/serving-endpoints/chat/completions", `{"model": "plainchat", "messages": [{"role": "user", "content": "remote two"}]}`, "echo: remote two"},
		{"/serving-endpoints/embeddings", `{"model": "emb", "input": "remote"}`, `"embedding"`},
	} {
		var b string
		eventually.True(t, 10*time.Second, "the separate activator answers "+c.path, func() bool {
			var resp *http.Response
			resp, b = remote.do(t, "POST", c.path, c.body)
			return resp.StatusCode == 200
		})
		if !strings.Contains(b, c.want) {
			t.Fatalf("activator POST %s: %s", c.path, b)
		}
	}
	a.all.WriteString(remote.all.String())

	// Each call has its row: 3 for plainchat, 3 for secretchat, 2 for emb.
	var rows strings.Builder
	for tbl, want := range map[string]int{"plainchat": 3, "secretchat": 3, "emb": 2} {
		q := "SELECT * FROM `ml_ext`.`" + tbl + "_payload` FINAL"
		var got [][]string
		eventually.True(t, 60*time.Second, tbl+"'s rows", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := db.Query(ctx, q)
			if err != nil {
				return false
			}
			got = res.Rows
			return len(got) >= want
		})
		for _, r := range got {
			rows.WriteString(strings.Join(r, "\t") + "\n")
		}
	}
	if !strings.Contains(rows.String(), "FALLBACK_FROM:busy=429") {
		t.Errorf("no row names the fallback:\n%s", rows.String())
	}
	if !strings.Contains(rows.String(), "echo: s t r") {
		t.Errorf("no row holds the assembled stream:\n%s", rows.String())
	}
	act.stop(t)
	dev.stop(t)

	logs := dev.log.String() + act.log.String()
	// The data dir's files too: the state and secret stores hold the
	// plaintext key and the sealed secret, so only the logs there count.
	logFiles, _ := filepath.Glob(filepath.Join(dataDir, "*.log"))
	for _, f := range logFiles {
		b, _ := os.ReadFile(f)
		logs += string(b)
	}
	for _, key := range []string{plainKey, secretKey} {
		for what, text := range map[string]string{"an API answer": a.all.String(), "gantry dev's log": logs, "an inference table row": rows.String()} {
			if strings.Contains(text, key) {
				t.Errorf("%s holds key %s", what, key)
			}
		}
	}
	t.Logf("searched %d bytes of answers, %d of logs, %d of rows", a.all.Len(), len(logs), rows.Len())
}
