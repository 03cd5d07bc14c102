package clients

// The official Databricks Go SDK (github.com/databricks/databricks-sdk-go)
// against `gantry dev`, one subtest per SDK call, so that `go test -v`
// reports per call what works. The test builds the gantry binary from this
// tree, starts `gantry dev` with a temp data dir (authentication on, as by
// default: the SDK sends the admin token that gantry dev writes to
// DATA_DIR/admin-token), uploads the binary-classifier fixture with the
// gantry CLI (model upload is a Gantry extension the SDK has no call for)
// and then uses the SDK alone: the serving calls here, and the identity
// calls (SCIM, endpoint permissions, tokens, secrets) in identity_test.go.
//
// Not here yet, because Gantry does not have them: the AI gateway's usage
// tracking and guardrails (issue 15).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/logger"
	"github.com/databricks/databricks-sdk-go/service/serving"
)

// repoRoot is the gantry repository this module sits in.
const repoRoot = "../.."

var fixture = filepath.Join(repoRoot, "worker", "testdata", "models", "binary")

// expected is the fixture's expected.json: rows and python3-xgboost's
// predictions for them.
type expected struct {
	Columns     []any     `json:"columns"`
	Data        []any     `json:"data"`
	Predictions []float64 `json:"predictions"`
}

// sdkLog records what the SDK logs, so that the test can see its warnings.
type sdkLog struct {
	mu    sync.Mutex
	warns []string
}

func (l *sdkLog) Enabled(context.Context, logger.Level) bool { return true }
func (l *sdkLog) Tracef(context.Context, string, ...any)     {}
func (l *sdkLog) Debugf(context.Context, string, ...any)     {}
func (l *sdkLog) Infof(context.Context, string, ...any)      {}
func (l *sdkLog) Warnf(_ context.Context, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.warns = append(l.warns, fmt.Sprintf(format, v...))
}
func (l *sdkLog) Errorf(ctx context.Context, format string, v ...any) { l.Warnf(ctx, format, v...) }

func (l *sdkLog) warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.warns...)
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// buildGantry builds ./cmd/gantry of this tree into a temp dir.
func buildGantry(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gantry")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gantry")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gantry: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDev runs `gantry dev` on a free address until the test ends and
// returns the address, its output and its data dir.
func startDev(t *testing.T, bin string) (string, *syncBuffer, string) {
	t.Helper()
	addr := freeAddr(t)
	log := &syncBuffer{}
	dataDir := t.TempDir()
	cmd := exec.Command(bin, "dev", "--listen", addr, "--data-dir", dataDir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gantry dev exited with %v\n%s", err, log)
			}
		case <-time.After(40 * time.Second):
			cmd.Process.Kill()
			t.Errorf("gantry dev did not stop on SIGTERM\n%s", log)
		}
	})
	// It starts ClickHouse first when clickhouse-server is on the PATH.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return addr, log, dataDir
		}
		if time.Now().After(deadline) {
			t.Fatalf("gantry dev did not come up: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminToken is the admin token gantry dev made on its first start in
// dataDir (DATA_DIR/admin-token), which /healthz answering waits for.
func adminToken(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		t.Fatalf("gantry dev's admin token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// isAPIError reports whether err is the SDK's *apierr.APIError with code.
func isAPIError(err error, status int, code string) bool {
	var ae *apierr.APIError
	return errors.As(err, &ae) && ae.StatusCode == status && ae.ErrorCode == code
}

func TestDatabricksSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("builds gantry and runs gantry dev with worker processes; run without -short")
	}
	bin := buildGantry(t)
	addr, devLog, dataDir := startDev(t, bin)
	base := "http://" + addr
	token := adminToken(t, dataDir)

	upload := exec.Command(bin, "models", "upload", "fraud", fixture)
	upload.Env = append(os.Environ(), "GANTRY_ADDR="+base, "GANTRY_TOKEN="+token)
	if out, err := upload.CombinedOutput(); err != nil || !strings.Contains(string(out), "version 1") {
		t.Fatalf("gantry models upload: %v\n%s", err, out)
	}
	var want expected
	if b, err := os.ReadFile(filepath.Join(fixture, "expected.json")); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}

	sdkLogs := &sdkLog{}
	logger.DefaultLogger = sdkLogs
	w, err := databricks.NewWorkspaceClient(&databricks.Config{
		Host: base, Token: token, AuthType: "pat",
		HTTPTimeoutSeconds: 60, RetryTimeoutSeconds: 60,
		// The SDK's default of 15 requests a second would space the
		// test's calls out by 66 ms, long enough for a worker to start.
		RateLimitPerSecond: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const ep = "sdk-ep"
	entity := func(name string) serving.ServedEntityInput {
		return serving.ServedEntityInput{Name: name, EntityName: "fraud", EntityVersion: "1", WorkloadSize: "Small"}
	}
	create := serving.CreateServingEndpoint{
		Name:   ep,
		Config: &serving.EndpointCoreConfigInput{ServedEntities: []serving.ServedEntityInput{entity("a")}},
		Tags:   []serving.EndpointTag{{Key: "team", Value: "risk"}},
	}

	ok := t.Run("Create+Wait", func(t *testing.T) {
		wait, err := w.ServingEndpoints.Create(ctx, create)
		if err != nil {
			t.Fatal(err)
		}
		if wait.Response.Name != ep || wait.Response.State.ConfigUpdate != serving.EndpointStateConfigUpdateInProgress {
			t.Errorf("create answered %s %+v, want IN_PROGRESS", wait.Response.Name, wait.Response.State)
		}
		got, err := wait.GetWithTimeout(2 * time.Minute)
		if err != nil {
			t.Fatalf("%v\n%s", err, devLog)
		}
		if got.State.Ready != serving.EndpointStateReadyReady || got.State.ConfigUpdate != serving.EndpointStateConfigUpdateNotUpdating {
			t.Errorf("after the waiter: %+v", got.State)
		}
	})
	if !ok {
		t.Fatalf("no endpoint to go on with\n%s", devLog)
	}

	t.Run("HostMetadata", func(t *testing.T) {
		// The SDK asked for /.well-known/databricks-config on its first
		// call: Gantry has none and answers a JSON 404, which the SDK
		// reads and falls back on its own config.
		resp, err := http.Get(base + "/.well-known/databricks-config")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			ErrorCode string `json:"error_code"`
			Message   string `json:"message"`
		}
		if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &e) != nil ||
			e.ErrorCode != "RESOURCE_DOES_NOT_EXIST" || e.Message == "" {
			t.Errorf("GET /.well-known/databricks-config: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		asked := false
		for _, msg := range sdkLogs.warnings() {
			if strings.Contains(msg, "databricks-config") {
				asked = true
				if !strings.Contains(msg, e.Message) {
					t.Errorf("the SDK did not read Gantry's error: %s", msg)
				}
			}
		}
		if !asked {
			t.Errorf("the SDK did not ask for host metadata; its warnings: %q", sdkLogs.warnings())
		}
	})

	t.Run("Create/409", func(t *testing.T) {
		_, err := w.ServingEndpoints.Create(ctx, create)
		if !errors.Is(err, apierr.ErrResourceAlreadyExists) || !isAPIError(err, 409, "RESOURCE_ALREADY_EXISTS") {
			t.Errorf("second create: %v, want RESOURCE_ALREADY_EXISTS", err)
		}
	})

	t.Run("Get", func(t *testing.T) {
		got, err := w.ServingEndpoints.GetByName(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != ep || got.Id == "" || got.CreationTimestamp == 0 || got.PermissionLevel != serving.ServingEndpointDetailedPermissionLevelCanManage {
			t.Errorf("endpoint = %+v", got)
		}
		if got.Config == nil || len(got.Config.ServedEntities) != 1 || got.Config.ServedEntities[0].Name != "a" ||
			got.Config.ServedEntities[0].EntityName != "fraud" || got.Config.ServedEntities[0].State == nil ||
			got.Config.ServedEntities[0].State.Deployment != serving.ServedModelStateDeploymentDeploymentReady {
			t.Errorf("config = %+v", got.Config)
		}
		if got.Config != nil && got.Config.ConfigVersion != 1 {
			t.Errorf("config_version = %d", got.Config.ConfigVersion)
		}
		if len(got.Tags) != 1 || got.Tags[0].Key != "team" || got.Tags[0].Value != "risk" {
			t.Errorf("tags = %+v", got.Tags)
		}
	})

	t.Run("Get/NotFound", func(t *testing.T) {
		_, err := w.ServingEndpoints.GetByName(ctx, "no-such-endpoint")
		if !errors.Is(err, apierr.ErrResourceDoesNotExist) || !errors.Is(err, apierr.ErrNotFound) || !apierr.IsMissing(err) {
			t.Errorf("get a missing endpoint: %v, want RESOURCE_DOES_NOT_EXIST", err)
		}
	})

	t.Run("ListAll", func(t *testing.T) {
		all, err := w.ServingEndpoints.ListAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 || all[0].Name != ep || all[0].State == nil || all[0].State.Ready != serving.EndpointStateReadyReady {
			t.Errorf("list = %+v", all)
		}
	})

	query := func(t *testing.T) *serving.QueryEndpointResponse {
		t.Helper()
		resp, err := w.ServingEndpoints.Query(ctx, serving.QueryEndpointInput{
			Name: ep, DataframeSplit: &serving.DataframeSplitInput{Columns: want.Columns, Data: want.Data},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Predictions) != len(want.Predictions) {
			t.Fatalf("%d predictions, want %d: %v", len(resp.Predictions), len(want.Predictions), resp.Predictions)
		}
		for i, p := range resp.Predictions {
			f, ok := p.(float64)
			if !ok || math.Abs(f-want.Predictions[i]) > 1e-6 {
				t.Errorf("prediction %d = %v, want %v", i, p, want.Predictions[i])
			}
		}
		return resp
	}

	t.Run("Query/dataframe_split", func(t *testing.T) {
		if resp := query(t); resp.ServedModelName != "a" {
			t.Errorf("served-model-name = %q, want a", resp.ServedModelName)
		}
	})

	t.Run("Logs", func(t *testing.T) {
		resp, err := w.ServingEndpoints.Logs(ctx, serving.LogsRequest{Name: ep, ServedModelName: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(resp.Logs) == "" {
			t.Error("no worker output")
		}
		_, err = w.ServingEndpoints.Logs(ctx, serving.LogsRequest{Name: ep, ServedModelName: "zz"})
		if !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("logs of a missing served entity: %v", err)
		}
	})

	t.Run("BuildLogs", func(t *testing.T) {
		resp, err := w.ServingEndpoints.BuildLogs(ctx, serving.BuildLogsRequest{Name: ep, ServedModelName: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(resp.Logs, "builds no environment") {
			t.Errorf("build logs = %q", resp.Logs)
		}
	})

	t.Run("ExportMetrics", func(t *testing.T) {
		resp, err := w.ServingEndpoints.ExportMetrics(ctx, serving.ExportMetricsRequest{Name: ep})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Contents == nil {
			t.Fatal("no contents")
		}
		b, err := io.ReadAll(resp.Contents)
		resp.Contents.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{
			`gantry_endpoint_ready{endpoint="sdk-ep"} 1`,
			`gantry_served_entity_replicas_ready{endpoint="sdk-ep",served_entity="a",config="active"} 1`,
			`gantry_served_entity_deployment_state{endpoint="sdk-ep",served_entity="a",config="active",state="DEPLOYMENT_READY"} 1`,
		} {
			if !strings.Contains(string(b), line+"\n") {
				t.Errorf("metrics lack %s:\n%s", line, b)
			}
		}
		_, err = w.ServingEndpoints.ExportMetrics(ctx, serving.ExportMetricsRequest{Name: "no-such-endpoint"})
		if !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("metrics of a missing endpoint: %v", err)
		}
	})

	t.Run("Patch/tags", func(t *testing.T) {
		resp, err := w.ServingEndpoints.Patch(ctx, serving.PatchServingEndpointTags{
			Name: ep, AddTags: []serving.EndpointTag{{Key: "env", Value: "prod"}}, DeleteTags: []string{"team"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Tags) != 1 || resp.Tags[0].Key != "env" || resp.Tags[0].Value != "prod" {
			t.Errorf("tags after patch = %+v", resp.Tags)
		}
		got, err := w.ServingEndpoints.GetByName(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Tags) != 1 || got.Tags[0].Key != "env" {
			t.Errorf("stored tags = %+v", got.Tags)
		}
	})

	t.Run("PutAiGateway/inference_table_config", func(t *testing.T) {
		_, chErr := exec.LookPath("clickhouse-server")
		if chErr != nil && os.Getenv("CI") != "" {
			t.Fatalf("CI must provide clickhouse-server (make test-deps installs it): %v", chErr)
		}
		itc := &serving.AiGatewayInferenceTableConfig{Enabled: true, CatalogName: "sdk", SchemaName: "test", TableNamePrefix: "sdk_ep"}
		resp, err := w.ServingEndpoints.PutAiGateway(ctx, serving.PutAiGatewayRequest{Name: ep, InferenceTableConfig: itc})
		if chErr != nil {
			// gantry dev found no ClickHouse: inference tables are off,
			// and the call must say so as API.md's 400.
			if !errors.Is(err, apierr.ErrInvalidParameterValue) || !strings.Contains(fmt.Sprint(err), "inference tables are off") {
				t.Errorf("without ClickHouse: %v, want INVALID_PARAMETER_VALUE saying inference tables are off", err)
			}
			t.Skipf("ClickHouse is not installed, so only the 400 was checked: %v", chErr)
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, devLog)
		}
		if c := resp.InferenceTableConfig; c == nil || !c.Enabled || c.TableNamePrefix != "sdk_ep" || c.CatalogName != "sdk" {
			t.Errorf("answer = %+v", resp)
		}
		got, err := w.ServingEndpoints.GetByName(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if got.AiGateway == nil || got.AiGateway.InferenceTableConfig == nil || !got.AiGateway.InferenceTableConfig.Enabled {
			t.Errorf("endpoint's ai_gateway = %+v", got.AiGateway)
		}
	})

	t.Run("PutAiGateway/rate_limits", func(t *testing.T) {
		// A limit the test's queries never reach: the endpoint is queried
		// below, by the admin and by a service principal.
		limits := []serving.AiGatewayRateLimit{
			{Calls: 100000, Key: serving.AiGatewayRateLimitKeyEndpoint, RenewalPeriod: serving.AiGatewayRateLimitRenewalPeriodMinute},
		}
		req := serving.PutAiGatewayRequest{Name: ep, RateLimits: limits}
		if got, err := w.ServingEndpoints.GetByName(ctx, ep); err == nil && got.AiGateway != nil {
			req.InferenceTableConfig = got.AiGateway.InferenceTableConfig // PUT replaces the whole gateway
		}
		resp, err := w.ServingEndpoints.PutAiGateway(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.RateLimits) != 1 || resp.RateLimits[0].Calls != 100000 || resp.RateLimits[0].Key != serving.AiGatewayRateLimitKeyEndpoint {
			t.Errorf("answer = %+v", resp)
		}
		_, err = w.ServingEndpoints.PutAiGateway(ctx, serving.PutAiGatewayRequest{Name: ep, RateLimits: []serving.AiGatewayRateLimit{
			{Calls: 10, Key: "nobody", RenewalPeriod: serving.AiGatewayRateLimitRenewalPeriodMinute},
		}})
		if !errors.Is(err, apierr.ErrInvalidParameterValue) || !strings.Contains(fmt.Sprint(err), "rate_limits") {
			t.Errorf("an unknown key: %v, want INVALID_PARAMETER_VALUE naming rate_limits", err)
		}
	})

	t.Run("UpdateConfig+WaitGetServingEndpointNotUpdating", func(t *testing.T) {
		half := func(name string) serving.Route { return serving.Route{ServedModelName: name, TrafficPercentage: 50} }
		split := func(other string) serving.EndpointCoreConfigInput {
			return serving.EndpointCoreConfigInput{
				Name:           ep,
				ServedEntities: []serving.ServedEntityInput{entity("a"), entity(other)},
				TrafficConfig:  &serving.TrafficConfig{Routes: []serving.Route{half("a"), half(other)}},
			}
		}
		// Two updates at once, each starting a new served entity: the
		// first to arrive rolls out, and the other finds it in progress
		// (409 RESOURCE_CONFLICT). A worker that came up between the two
		// would let the second through (it then changes nothing new), so
		// up to five rounds, each with an entity of its own.
		var other string
		conflicts := 0
		for round := 1; round <= 5 && conflicts == 0; round++ {
			other = fmt.Sprintf("b%d", round)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			answers := make([]*serving.ServingEndpointDetailed, 2)
			start := make(chan struct{})
			for i := range 2 {
				wg.Go(func() {
					<-start
					wait, err := w.ServingEndpoints.UpdateConfig(ctx, split(other))
					errs[i] = err
					if err == nil {
						answers[i] = wait.Response
					}
				})
			}
			close(start)
			wg.Wait()
			accepted := 0
			for i, err := range errs {
				switch {
				case err == nil:
					accepted++
				case isAPIError(err, 409, "RESOURCE_CONFLICT") && errors.Is(err, apierr.ErrResourceConflict):
					conflicts++
				default:
					t.Fatalf("update %d of round %d: %v", i, round, err)
				}
			}
			if accepted == 0 {
				t.Fatalf("round %d: both updates refused: %v", round, errs)
			}
			if conflicts == 1 {
				for _, a := range answers {
					if a != nil && (a.State.ConfigUpdate != serving.EndpointStateConfigUpdateInProgress || a.PendingConfig == nil) {
						t.Errorf("the accepted update answered %+v pending %+v, want IN_PROGRESS with a pending_config", a.State, a.PendingConfig)
					}
				}
			}
			got, err := w.ServingEndpoints.WaitGetServingEndpointNotUpdating(ctx, ep, 2*time.Minute, nil)
			if err != nil {
				t.Fatalf("%v\n%s", err, devLog)
			}
			if got.State.Ready != serving.EndpointStateReadyReady || len(got.Config.ServedEntities) != 2 || got.PendingConfig != nil ||
				got.Config.ServedEntities[1].Name != other {
				t.Fatalf("after update round %d: %+v entities %+v", round, got.State, got.Config.ServedEntities)
			}
			if tc := got.Config.TrafficConfig; tc == nil || len(tc.Routes) != 2 || tc.Routes[0].TrafficPercentage != 50 {
				t.Errorf("traffic_config = %+v", tc)
			}
		}
		if conflicts == 0 {
			t.Error("no update found another in progress in five rounds: 409 RESOURCE_CONFLICT not seen")
		}
		// Both halves answer: 40 requests all to one of them would be
		// a chance of 2^-39.
		seen := map[string]int{}
		for range 40 {
			seen[query(t).ServedModelName]++
		}
		if seen["a"] == 0 || seen[other] == 0 || len(seen) != 2 {
			t.Errorf("answers by served entity = %v, want a and %s", seen, other)
		}
	})

	t.Run("identity", func(t *testing.T) {
		identityCalls(t, w, base, ep, func(c *databricks.WorkspaceClient) error {
			_, err := c.ServingEndpoints.Query(ctx, serving.QueryEndpointInput{
				Name: ep, DataframeSplit: &serving.DataframeSplitInput{Columns: want.Columns, Data: want.Data},
			})
			return err
		})
	})

	t.Run("CreateProvisionedThroughputEndpoint+UpdateProvisionedThroughputEndpointConfig", func(t *testing.T) {
		// The /pt routes size an LLM entity in provisioned_model_units: an
		// openai_server model running the repository's fake
		// OpenAI-compatible server, one chunk of 100 tokens/s a unit.
		fake := filepath.Join(t.TempDir(), "fakeopenai")
		build := exec.Command("go", "build", "-o", fake, "./worker/openaiserver/testdata/fakeopenai")
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build fakeopenai: %v\n%s", err, out)
		}
		dir := t.TempDir()
		mlmodel := fmt.Sprintf("flavors:\n  openai_server:\n    command: [%q]\n    health: /health\n    tokens_per_second: 100\n", fake)
		if err := os.WriteFile(filepath.Join(dir, "MLmodel"), []byte(mlmodel), 0o644); err != nil {
			t.Fatal(err)
		}
		upload := exec.Command(bin, "models", "upload", "stories", dir)
		upload.Env = append(os.Environ(), "GANTRY_ADDR="+base, "GANTRY_TOKEN="+token)
		if out, err := upload.CombinedOutput(); err != nil {
			t.Fatalf("gantry models upload stories: %v\n%s", err, out)
		}
		const pt = "sdk-pt"
		units := func(n int64) serving.PtEndpointCoreConfig {
			return serving.PtEndpointCoreConfig{ServedEntities: []serving.PtServedModel{
				{Name: "llm", EntityName: "stories", EntityVersion: "1", ProvisionedModelUnits: n}}}
		}
		_, err := w.ServingEndpoints.CreateProvisionedThroughputEndpoint(ctx, serving.CreatePtEndpointRequest{Name: pt, Config: units(0)})
		if !errors.Is(err, apierr.ErrInvalidParameterValue) || !strings.Contains(fmt.Sprint(err), "provisioned_model_units: 0 is out of range") {
			t.Errorf("0 units: %v, want INVALID_PARAMETER_VALUE naming provisioned_model_units", err)
		}
		wait, err := w.ServingEndpoints.CreateProvisionedThroughputEndpoint(ctx, serving.CreatePtEndpointRequest{Name: pt, Config: units(1)})
		if err != nil {
			t.Fatal(err)
		}
		if wait.Response.Name != pt || wait.Response.State.ConfigUpdate != serving.EndpointStateConfigUpdateInProgress {
			t.Errorf("pt create answered %s %+v, want IN_PROGRESS", wait.Response.Name, wait.Response.State)
		}
		got, err := wait.GetWithTimeout(2 * time.Minute)
		if err != nil {
			t.Fatalf("%v\n%s", err, devLog)
		}
		if got.State.Ready != serving.EndpointStateReadyReady || got.Config == nil || len(got.Config.ServedEntities) != 1 ||
			got.Config.ServedEntities[0].ProvisionedModelUnits != 1 || !got.Config.ServedEntities[0].BurstScalingEnabled {
			t.Errorf("after the waiter: %+v %+v, want READY with 1 unit and burst scaling on", got.State, got.Config)
		}
		fixed := units(1)
		fixed.ServedEntities[0].BurstScalingEnabled = false
		fixed.ServedEntities[0].ForceSendFields = []string{"BurstScalingEnabled"}
		if _, err := w.ServingEndpoints.UpdateProvisionedThroughputEndpointConfig(ctx, serving.UpdateProvisionedThroughputEndpointConfigRequest{Name: pt, Config: fixed}); err != nil {
			t.Fatal(err)
		}
		got, err = w.ServingEndpoints.WaitGetServingEndpointNotUpdating(ctx, pt, 2*time.Minute, nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, devLog)
		}
		if got.Config == nil || len(got.Config.ServedEntities) != 1 || got.Config.ServedEntities[0].ProvisionedModelUnits != 1 ||
			got.Config.ServedEntities[0].BurstScalingEnabled {
			t.Errorf("after the update: %+v, want 1 unit and burst scaling off", got.Config)
		}
		if err := w.ServingEndpoints.DeleteByName(ctx, pt); err != nil {
			t.Error(err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		if err := w.ServingEndpoints.DeleteByName(ctx, ep); err != nil {
			t.Fatal(err)
		}
		if _, err := w.ServingEndpoints.GetByName(ctx, ep); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("get after delete: %v", err)
		}
		if err := w.ServingEndpoints.DeleteByName(ctx, ep); !errors.Is(err, apierr.ErrResourceDoesNotExist) {
			t.Errorf("delete again: %v", err)
		}
	})

	t.Run("unknown paths answer API.md's error shape", func(t *testing.T) {
		for _, p := range []string{"/no/such/path", "/api/2.0/no-such-api", "/serving-endpoints/x/nothing"} {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				ErrorCode string `json:"error_code"`
				Message   string `json:"message"`
			}
			if resp.StatusCode != 404 || json.Unmarshal(b, &e) != nil || e.ErrorCode != "RESOURCE_DOES_NOT_EXIST" || e.Message == "" {
				t.Errorf("GET %s: %d %s", p, resp.StatusCode, b)
			}
		}
	})
}
