package worker

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gantry/gantry/api"
)

// TestWorkerSecret: a worker given its deployment's secret answers
// invocations that carry it (the activators') and 401 to the others, in
// API.md's shape and without saying what the secret is; probes need none.
func TestWorkerSecret(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	base, _ := start(t, Config{ModelDir: writeModel(t, namedModel), Secret: secret},
		map[string]Loader{"xgboost": loaderOf(&sumRuntime{}, 2)})
	waitReady(t, base) // /ping is open
	body := `{"dataframe_split": {"columns": ["age", "amount"], "data": [[1, 2]]}}`
	for _, c := range []struct {
		what, secret string
		want         int
	}{
		{"the activator's", secret, 200},
		{"none", "", 401},
		{"another deployment's", "fedcba9876543210fedcba9876543210", 401},
		{"a prefix", secret[:16], 401},
	} {
		req, _ := http.NewRequest("POST", base+"/invocations", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if c.secret != "" {
			req.Header.Set(SecretHeader, c.secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.what, resp.StatusCode, b, c.want)
		}
		if c.want == 401 {
			var e api.Error
			if json.Unmarshal(b, &e) != nil || e.Code != api.ErrUnauthenticated || strings.Contains(string(b), secret[:8]) {
				t.Errorf("%s: %s", c.what, b)
			}
		}
	}
	if resp, err := http.Get(base + "/metrics"); err != nil || resp.StatusCode != 200 {
		t.Errorf("/metrics: %v %v", resp, err)
	}
}
