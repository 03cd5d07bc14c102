// Package local runs the embedded Kafka-protocol broker and ClickHouse server
// that `gantry dev` (and the tests) use when no external ones are given.
package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ClickHouse is a clickhouse-server process with its data under a directory
// of ours, listening on loopback only.
type ClickHouse struct {
	dir  string
	bin  []string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// ErrNoClickHouse says that no ClickHouse server binary is on the PATH.
var ErrNoClickHouse = errors.New("no clickhouse-server (or clickhouse) binary on the PATH; install Debian's clickhouse-server or give --clickhouse host:port")

// FindClickHouse returns the command that starts a ClickHouse server:
// Debian's clickhouse-server, or the single clickhouse binary of current
// releases with its server subcommand.
func FindClickHouse() ([]string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return []string{p}, nil
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return []string{p, "server"}, nil
	}
	return nil, ErrNoClickHouse
}

// NewClickHouse prepares a server under dir on a free loopback port, kept
// across restarts. Start runs it.
func NewClickHouse(dir string) (*ClickHouse, error) {
	bin, err := FindClickHouse()
	if err != nil {
		return nil, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ch := &ClickHouse{dir: dir, bin: bin, port: port}
	if err := ch.writeConfig(); err != nil {
		return nil, err
	}
	return ch, nil
}

// Addr is the native protocol's address.
func (ch *ClickHouse) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ch.port)) }

// Start starts the server and waits until it accepts connections.
func (ch *ClickHouse) Start(ctx context.Context) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.cmd != nil {
		return nil
	}
	args := append(ch.bin[1:], "--config-file="+filepath.Join(ch.dir, "config.xml"))
	cmd := exec.Command(ch.bin[0], args...)
	cmd.Dir = ch.dir
	out, err := os.OpenFile(filepath.Join(ch.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// The server dies with us: a crashed gantry dev leaves no orphan
	// holding the port and the data dir's lock.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", ch.bin[0], err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	ch.cmd, ch.done = cmd, done

	// 18.16 answers in about 0.2 s; a first start that creates its data
	// directory takes a little longer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", ch.Addr(), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			ch.cmd = nil
			log, _ := os.ReadFile(filepath.Join(ch.dir, "error.log"))
			return fmt.Errorf("clickhouse-server exited at start (%s); its error log ends: %s", cmd.ProcessState, tail(log, 800))
		case <-ctx.Done():
			ch.stopLocked()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ch.stopLocked()
			return fmt.Errorf("clickhouse-server did not listen on %s within 30 s", ch.Addr())
		}
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 s) and waits.
func (ch *ClickHouse) Stop() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.stopLocked()
}

func (ch *ClickHouse) stopLocked() {
	if ch.cmd == nil {
		return
	}
	ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch.done:
	case <-time.After(10 * time.Second):
		ch.cmd.Process.Kill()
		<-ch.done
	}
	ch.cmd = nil
}

func (ch *ClickHouse) writeConfig() error {
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(ch.dir, d), 0o755); err != nil {
			return err
		}
	}
	// <yandex> is the root element 18.16 knows; current releases accept it.
	config := `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>` + ch.dir + `/server.log</log><errorlog>` + ch.dir + `/error.log</errorlog><size>10M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <timezone>UTC</timezone>
  <tcp_port>` + strconv.Itoa(ch.port) + `</tcp_port>
  <path>` + ch.dir + `/data/</path>
  <tmp_path>` + ch.dir + `/tmp/</tmp_path>
  <user_files_path>` + ch.dir + `/user_files/</user_files_path>
  <format_schema_path>` + ch.dir + `/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`
	users := `<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
`
	if err := os.WriteFile(filepath.Join(ch.dir, "config.xml"), []byte(config), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(ch.dir, "users.xml"), []byte(users), 0o644)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
