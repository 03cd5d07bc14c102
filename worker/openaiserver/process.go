package openaiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is one run of the server's command.
type child struct {
	cmd    *exec.Cmd
	base   string        // http://127.0.0.1:port
	url    *url.URL      // base, parsed
	exited chan struct{} // closed once the process has exited; then err is set
	err    error
	tail   *tailWriter
}

// start runs the command on a free port with its output into out (the
// worker's log) and a tail kept for error messages.
func start(s Settings, dir string, out io.Writer) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("openai_server: pick a port: %w", err)
	}
	env := append(childEnv(os.Environ()), s.PortEnv+"="+strconv.Itoa(port))
	args := expand(s.Command, env)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	tail := &tailWriter{max: 2048}
	w := io.MultiWriter(out, tail)
	cmd.Stdout, cmd.Stderr = w, w
	// The server must not outlive its worker, even a worker killed with
	// -9; its own children (vLLM's engine processes) go with its group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("openai_server: command %q not found (a relative path is the model directory's; anything else is looked up in the worker's PATH)", s.Command[0])
		}
		return nil, fmt.Errorf("openai_server: start %q: %w", s.Command[0], err)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	u, _ := url.Parse(base) // a literal: cannot fail
	c := &child{cmd: cmd, base: base, url: u, exited: make(chan struct{}), tail: tail}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// workerSecretEnv is where the drivers put the worker secret
// (jobs.WorkerSecretEnv). It is Gantry's, for the worker's own check, and
// the server has no use for it: a server that logs its environment would
// put it in the log.
const workerSecretEnv = "GANTRY_WORKER_SECRET"

// childEnv is the worker's environment less what is Gantry's own.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, workerSecretEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the child listens; the child then fails to start and the
// supervisor tries again on a new port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// stop ends the child and its process group: SIGTERM, then SIGKILL after
// grace.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.exited:
		return
	default:
	}
	pgid := -c.cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		syscall.Kill(pgid, syscall.SIGKILL)
		<-c.exited
	}
}

// exitError says how the child ended, with its last line of output.
func (c *child) exitError(when string) error {
	status := "exit status 0"
	if c.err != nil {
		status = c.err.Error()
	}
	if last := c.tail.lastLine(); last != "" {
		return fmt.Errorf("openai_server: the server %s (%s); its last output: %s", when, status, last)
	}
	return fmt.Errorf("openai_server: the server %s (%s) with no output", when, status)
}

// healthPoll is how often waitHealthy asks; healthTimeout bounds each ask.
const (
	healthPoll    = 100 * time.Millisecond
	healthTimeout = 2 * time.Second
)

// waitHealthy polls the health path until it answers 200, the child exits,
// or ctx ends.
func (c *child) waitHealthy(ctx context.Context, client *http.Client, path string) error {
	t := time.NewTicker(healthPoll)
	defer t.Stop()
	for {
		if c.healthy(ctx, client, path) {
			return nil
		}
		select {
		case <-c.exited:
			return c.exitError("exited before it answered " + path)
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (c *child) healthy(ctx context.Context, client *http.Client, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max int
	// mu guards buf: the child's stdout and stderr write concurrently.
	mu  sync.Mutex
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailWriter) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := bytes.TrimRight(t.buf, "\r\n\t ")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	if len(b) > 300 {
		b = b[len(b)-300:]
	}
	return string(bytes.TrimSpace(b))
}

// supervisor keeps a healthy child running once the first one was.
type supervisor struct {
	s      Settings
	dir    string
	out    io.Writer
	log    *slog.Logger
	client *http.Client

	// mu guards cur and down.
	mu   sync.Mutex
	cur  *child
	down error // why no child answers now; nil when cur is healthy
}

// current returns the healthy child, or why there is none.
func (sv *supervisor) current() (*child, error) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.cur, sv.down
}

// run restarts the child whenever it exits, until ctx ends; then it stops
// the child. first is the child Load started.
func (sv *supervisor) run(ctx context.Context, first *child) {
	c := first
	backoff := time.Second
	for {
		select {
		case <-ctx.Done():
			c.stop(10 * time.Second)
			return
		case <-c.exited:
		}
		err := c.exitError("exited")
		sv.log.Error("openai_server exited; starting it again", "err", err, "in", backoff)
		sv.setDown(err)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			next, err := start(sv.s, sv.dir, sv.out)
			if err != nil {
				sv.log.Error("openai_server restart failed", "err", err)
				sv.setDown(err)
				continue
			}
			if err := next.waitHealthy(ctx, sv.client, sv.s.Health); err != nil {
				next.stop(time.Second)
				sv.log.Error("openai_server restart failed", "err", err)
				sv.setDown(err)
				continue
			}
			c = next
			backoff = time.Second
			sv.mu.Lock()
			sv.cur, sv.down = c, nil
			sv.mu.Unlock()
			sv.log.Info("openai_server answers again", "addr", c.base)
			break
		}
	}
}

func (sv *supervisor) setDown(err error) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.down = err
}
