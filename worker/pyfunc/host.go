package pyfunc

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// hostSource is the model host, shipped inside the gantry binary so that a
// worker needs nothing on disk but an interpreter and the model's libraries.
//
//go:embed host.py
var hostSource []byte

// HostMarker is in every model host's command line
// (`python - gantry-model-host MODEL_DIR`), so that operators, and tests,
// can find the process with ps.
const HostMarker = "gantry-model-host"

// maxAnswer bounds one answer of the host. The worker answers at most what
// a client may send in (16 MiB) many times over; a model that returns more
// is broken, and reading it would take the worker down.
const maxAnswer = 1 << 30

// hostInfo is the host's answer to the load request.
type hostInfo struct {
	Error      string   `json:"error"`
	Loader     string   `json:"loader"`
	Python     string   `json:"python"`
	Executable string   `json:"executable"`
	PID        int      `json:"pid"`
	Mismatches []string `json:"mismatches"`
}

// host is one running model host process. Only the runtime's dispatcher
// goroutine calls it, one message at a time.
type host struct {
	cmd     *exec.Cmd
	req     *os.File      // our end of the request pipe (fd 3 in the host)
	resp    *os.File      // our end of the answer pipe (fd 4 in the host)
	rd      *bufio.Reader // over resp
	exited  chan struct{} // closed once the process has exited; then waitErr is set
	waitErr error
	info    hostInfo
	buf     []byte // reused for answers
}

// errHostExited is a host that went away mid-call.
var errHostExited = errors.New("model host exited")

// startHost starts the interpreter with the host source on stdin, sends the
// load request and waits, up to timeout, until the model is loaded. A model
// that cannot load is an error carrying the host's one-line reason.
func startHost(python, dir string, load []byte, out io.Writer, timeout time.Duration) (*host, error) {
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("model host: %w", err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, fmt.Errorf("model host: %w", err)
	}
	cmd := exec.Command(python, "-", HostMarker, dir)
	cmd.Stdin = bytes.NewReader(hostSource)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{reqR, respW} // fds 3 and 4
	// The worker's environment is already the clean one the driver gave
	// it; unbuffered output puts a model's prints in the log as they
	// happen, not when a buffer fills.
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	// The host must not outlive its worker, even a worker killed with -9.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	reqR.Close()
	respW.Close()
	if err != nil {
		reqW.Close()
		respR.Close()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("python interpreter %q not found: set --python or GANTRY_PYTHON to one that has the model's libraries", python)
		}
		return nil, fmt.Errorf("start model host with %s: %w", python, err)
	}
	h := &host{cmd: cmd, req: reqW, resp: respR, rd: bufio.NewReaderSize(respR, 64<<10), exited: make(chan struct{})}
	go func() {
		h.waitErr = cmd.Wait()
		close(h.exited)
	}()
	deadline := time.Now().Add(timeout)
	kind, body, err := h.call(load, deadline)
	if err != nil {
		h.kill()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("the model did not load within %s", timeout)
		}
		return nil, fmt.Errorf("model host exited while loading the model (%s); its output is in the worker log", h.exitStatus())
	}
	if kind != 'R' || json.Unmarshal(body, &h.info) != nil {
		h.kill()
		return nil, fmt.Errorf("model host answered the load request with %q", kind)
	}
	if h.info.Error != "" {
		h.kill()
		msg := h.info.Error
		if len(h.info.Mismatches) > 0 {
			msg += "; the model was logged with other versions: " + strings.Join(h.info.Mismatches, ", ")
		}
		return nil, errors.New(msg)
	}
	return h, nil
}

// call sends one message and reads the answer, both before deadline. The
// answer's body is valid until the next call.
func (h *host) call(msg []byte, deadline time.Time) (kind byte, body []byte, err error) {
	h.req.SetWriteDeadline(deadline)
	h.resp.SetReadDeadline(deadline)
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(msg)))
	if _, err := h.req.Write(n[:]); err != nil {
		return 0, nil, h.ioErr(err)
	}
	if _, err := h.req.Write(msg); err != nil {
		return 0, nil, h.ioErr(err)
	}
	if _, err := io.ReadFull(h.rd, n[:]); err != nil {
		return 0, nil, h.ioErr(err)
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size == 0 || size > maxAnswer {
		return 0, nil, fmt.Errorf("model host answered %d bytes", size)
	}
	if cap(h.buf) < int(size) {
		h.buf = make([]byte, size)
	}
	h.buf = h.buf[:size]
	if _, err := io.ReadFull(h.rd, h.buf); err != nil {
		return 0, nil, h.ioErr(err)
	}
	return h.buf[0], h.buf[1:], nil
}

// ioErr keeps a deadline as it is and makes anything else (EOF, a broken
// pipe) errHostExited.
func (h *host) ioErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %v", errHostExited, err)
}

// kill ends the process and waits, briefly, for it to be reaped.
func (h *host) kill() {
	h.cmd.Process.Kill()
	h.req.Close()
	h.resp.Close()
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
	}
}

// exitStatus describes how the process ended, once it has ("signal:
// killed", "exit status 1"); a process still running says so.
func (h *host) exitStatus() string {
	select {
	case <-h.exited:
	case <-time.After(2 * time.Second):
		return "still running"
	}
	if h.waitErr == nil {
		return "exit status 0"
	}
	return h.waitErr.Error()
}
