package main

// Inference tables end to end: gantry dev (with --logger=false), a gantry
// broker and gantry logger processes, and a real ClickHouse server. The
// faults are real too: kill -9 of the logger, ClickHouse stopped, the
// broker killed.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gantry/gantry/internal/chtest"
	"github.com/gantry/gantry/internal/eventually"
	"github.com/gantry/gantry/loggers/local"
	"github.com/gantry/gantry/loggers/tables"
)

// rig is gantry dev serving one endpoint with capture on, with its broker,
// logger and ClickHouse each a process of its own.
type rig struct {
	bin, addr  string
	ch         *local.ClickHouse
	db         *tables.DB
	brokerAddr string
	brokerDir  string
	broker     *exec.Cmd
	logger     *proc
	loggerAddr string
	// sent is each answered request's client_request_id → what the client
	// sent and got.
	mu   sync.Mutex
	sent map[string]exchange
	// client is shared, so that its connections (and the server's
	// goroutines for them) do not pile up across send calls.
	client *http.Client
}

type exchange struct {
	status            int
	requestID         string
	request, response []byte
}

const captureTable = "`ml_logs`.`fraud_payload`"

func startRig(t *testing.T) *rig {
	t.Helper()
	if testing.Short() {
		t.Skip("runs ClickHouse, a broker and gantry processes; run without -short")
	}
	r := startStores(t)
	dataDir := t.TempDir()
	startDev(t, r.bin, r.addr, dataDir, "--kafka-brokers", r.brokerAddr, "--clickhouse", r.ch.Addr(), "--logger=false")
	r.loggerAddr = freeAddr(t)
	r.startLogger(t)

	mustCLI(t, r.bin, r.addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	ep := filepath.Join(t.TempDir(), "ep.json")
	writeFile(t, ep, `{"name": "fraud", "config": {"served_entities": [{"entity_name": "binary", "entity_version": "1", "workload_size": "Small"}],
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}}}`)
	mustCLI(t, r.bin, r.addr, "endpoints", "create", "-f", ep, "--wait")
	return r
}

// startStores starts what the rig keeps data in: ClickHouse and the broker.
func startStores(t *testing.T) *rig {
	t.Helper()
	r := &rig{bin: buildGantry(t), addr: freeAddr(t), sent: map[string]exchange{},
		client: &http.Client{Transport: tokenTransport{base: &http.Transport{MaxIdleConnsPerHost: 16}}}}
	t.Cleanup(r.client.CloseIdleConnections)
	r.ch = chtest.Start(t)
	r.db = chtest.Open(t, r.ch)
	r.brokerAddr, r.brokerDir = freeAddr(t), t.TempDir()
	r.startBroker(t)
	return r
}

func (r *rig) startBroker(t *testing.T) {
	t.Helper()
	r.broker = exec.Command(r.bin, "broker", "--listen", r.brokerAddr, "--data-dir", r.brokerDir)
	log := &syncBuffer{}
	r.broker.Stdout, r.broker.Stderr = log, log
	if err := r.broker.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := r.broker
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("tcp", r.brokerAddr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gantry broker did not listen: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) killBroker() {
	r.broker.Process.Kill()
	r.broker.Wait()
}

func (r *rig) startLogger(t *testing.T) {
	t.Helper()
	r.logger = startProc(t, r.bin, r.loggerAddr, "logger", "--listen", r.loggerAddr,
		"--kafka-brokers", r.brokerAddr, "--clickhouse", r.ch.Addr(), "--kafka-session-timeout", "2s")
}

// send makes n invocations from conns clients, each with its own
// client_request_id (prefix plus a number), and remembers the exchanges.
func (r *rig) send(t *testing.T, prefix string, n, conns int) {
	t.Helper()
	e := readExpected(t, "binary")
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				id := fmt.Sprintf("%s-%05d", prefix, i)
				row := e.Data[int(i)%len(e.Data)]
				body, _ := json.Marshal(map[string]any{"client_request_id": id,
					"dataframe_split": map[string]any{"columns": e.Columns, "data": [][]any{row}}})
				resp, err := r.client.Post("http://"+r.addr+"/serving-endpoints/fraud/invocations", "application/json", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s: %d %s", id, resp.StatusCode, out)
				}
				r.mu.Lock()
				r.sent[id] = exchange{resp.StatusCode, resp.Header.Get("x-request-id"), body, out}
				r.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// count is the rows of the table, each request once; -1 if unreadable.
func (r *rig) count() int {
	res, err := r.db.Query(context.Background(), "SELECT count() FROM "+captureTable+" FINAL")
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(res.Rows[0][0])
	return n
}

// waitRows waits until the table holds exactly what was sent, then checks
// every row against what the client sent and got.
func (r *rig) waitRows(t *testing.T, timeout time.Duration) {
	t.Helper()
	r.mu.Lock()
	want := len(r.sent)
	r.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for r.count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the table holds %d rows after %s; want %d", r.count(), timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var rows [][]string
	for len(rows)%tables.MaxRows == 0 { // one page at a time
		res, err := r.db.Query(context.Background(), fmt.Sprintf("SELECT client_request_id, request_id, status_code, request, response, endpoint, served_entity, execution_time_ms >= 0 FROM "+
			captureTable+" FINAL ORDER BY client_request_id LIMIT %d OFFSET %d", tables.MaxRows, len(rows)))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, res.Rows...)
		if len(res.Rows) == 0 {
			break
		}
	}
	if len(rows) != want {
		t.Fatalf("%d rows; want exactly %d", len(rows), want)
	}
	for _, row := range rows {
		x, ok := r.sent[row[0]]
		if !ok {
			t.Fatalf("row for client_request_id %q that was never sent", row[0])
		}
		if row[1] != x.requestID || row[2] != strconv.Itoa(x.status) || row[3] != string(x.request) ||
			row[4] != string(x.response) || row[5] != "fraud" || row[6] != "binary-1" || row[7] != "1" {
			t.Fatalf("row %q\ndiffers from the exchange %+v", row, x)
		}
	}
}

// TestInferenceTableExactlyOnce sends 10,000 invocations and kills the
// logger with SIGKILL halfway: the table ends with exactly one row per
// request, equal to what the client sent and received.
func TestInferenceTableExactlyOnce(t *testing.T) {
	r := startRig(t)
	sent := make(chan struct{})
	go func() { r.send(t, "a", 5000, 16); close(sent) }()
	// Kill it while it works: some rows are inserted, their offsets maybe
	// not, and more records are still arriving.
	eventually.True(t, 30*time.Second, "the first rows", func() bool { return r.count() > 0 })
	r.logger.cmd.Process.Signal(syscall.SIGKILL)
	r.logger.cmd.Wait()
	atKill := r.count()
	select {
	case <-sent:
		t.Fatal("every request was answered before the kill: nothing was arriving; send more")
	default:
	}
	<-sent
	if atKill >= 5000 {
		t.Fatalf("the table held %d of 5000 rows at the kill; the kill came too late to test redelivery", atKill)
	}
	t.Logf("killed the logger with %d of 5000 rows in the table", atKill)
	r.send(t, "b", 5000, 16)
	r.startLogger(t)
	r.waitRows(t, 90*time.Second)
	if len(r.sent) != 10000 {
		t.Fatalf("sent %d", len(r.sent))
	}
}

// TestInferenceTableSurvivesClickHouseOutage stops ClickHouse for 10 s under
// load: the records wait in Kafka and all arrive.
func TestInferenceTableSurvivesClickHouseOutage(t *testing.T) {
	r := startRig(t)
	r.send(t, "before", 200, 4)
	r.waitRows(t, 30*time.Second)

	r.ch.Stop()
	stopped := time.Now()
	for i := 0; time.Since(stopped) < 10*time.Second; i++ {
		r.send(t, fmt.Sprintf("during%03d", i), 50, 4)
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.ch.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.send(t, "after", 200, 4)
	r.waitRows(t, 60*time.Second)
}

// TestBrokerDownKeepsServing kills the broker: invocations still succeed,
// drops are counted, goroutines stay bounded, and capture resumes when
// the broker is back.
func TestBrokerDownKeepsServing(t *testing.T) {
	r := startRig(t)
	r.send(t, "before", 200, 4)
	r.waitRows(t, 30*time.Second)
	goroutines := r.metric(t, "go_goroutines")

	r.killBroker()
	start := time.Now()
	for r.metric(t, "gantry_capture_dropped_total") == 0 {
		r.send(t, fmt.Sprintf("down%d", time.Since(start).Milliseconds()), 50, 4)
		if time.Since(start) > 30*time.Second {
			t.Fatal("no drop counted within 30 s of the broker going down")
		}
	}
	r.send(t, "down-more", 1000, 8)
	if g := r.metric(t, "go_goroutines"); g > goroutines+50 {
		t.Fatalf("goroutines grew from %v to %v while the broker was down", goroutines, g)
	}

	// The dropped requests are gone from the table by design; what comes
	// after the broker is back arrives.
	r.mu.Lock()
	r.sent = map[string]exchange{}
	r.mu.Unlock()
	r.startBroker(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r.send(t, fmt.Sprintf("back%d", time.Now().UnixNano()), 20, 2)
		res, err := r.db.Query(context.Background(), "SELECT count() FROM "+captureTable+" FINAL WHERE client_request_id LIKE 'back%'")
		if err == nil && res.Rows[0][0] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no record reached the table within 60 s of the broker's return")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// metric reads one unlabelled sample from gantry dev's /metrics.
func (r *rig) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// TestShadowAnswersReachTheTable mirrors every request to a shadow route:
// clients get only the live entity's answers; the table holds both.
func TestShadowAnswersReachTheTable(t *testing.T) {
	r := startRig(t)
	mustCLI(t, r.bin, r.addr, "models", "upload", "binary", filepath.Join(fixtures, "binary"))
	cfg := filepath.Join(t.TempDir(), "config.json")
	writeFile(t, cfg, `{"served_entities": [{"entity_name": "binary", "entity_version": "1"}, {"entity_name": "binary", "entity_version": "2"}],
		"traffic_config": {"routes": [{"served_model_name": "binary-1", "traffic_percentage": 100}, {"served_model_name": "binary-2", "traffic_percentage": 100, "shadow": true}]},
		"auto_capture_config": {"catalog_name": "ml", "schema_name": "logs", "enabled": true}}`)
	mustCLI(t, r.bin, r.addr, "endpoints", "update-config", "fraud", "-f", cfg, "--wait")

	r.send(t, "s", 50, 4) // send fails the test on any non-200
	for id, x := range r.sent {
		if !bytes.Contains(x.response, []byte("predictions")) {
			t.Fatalf("%s: answer %s", id, x.response)
		}
	}
	query := "SELECT shadow, served_entity, count(), uniqExact(client_request_id) FROM " + captureTable + " FINAL GROUP BY shadow, served_entity ORDER BY shadow"
	var got string
	for deadline := time.Now().Add(30 * time.Second); ; {
		res, err := r.db.Query(context.Background(), query)
		if err == nil {
			got = fmt.Sprint(res.Rows)
		}
		if got == "[[0 binary-1 50 50] [1 binary-2 50 50]]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows by shadow and entity: %s; want 50 live rows from binary-1 and 50 shadow rows from binary-2", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
