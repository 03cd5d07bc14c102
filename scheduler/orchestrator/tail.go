package orchestrator

import (
	"strings"
	"sync"
)

// TailBuffer keeps the last max bytes written to it: drivers keep their
// workers' output in one, for Logs and for the reason a start failed.
type TailBuffer struct {
	max int
	// mu guards buf.
	mu  sync.Mutex
	buf []byte
}

// NewTailBuffer returns a buffer that keeps max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	// Trim only when twice over, so that trimming is amortized O(1) a byte.
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > t.max {
		b = b[len(b)-t.max:]
	}
	return string(b)
}

// LastLines formats the last n lines as ": line; line", or "" when empty,
// to end an error message with what the worker said before it died.
func (t *TailBuffer) LastLines(n int) string {
	lines := strings.Split(strings.TrimSpace(t.String()), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := strings.TrimSpace(strings.Join(lines, "; "))
	if s == "" {
		return ""
	}
	return ": " + s
}

// MultiWriter writes to every buffer it holds.
type MultiWriter []*TailBuffer

func (m MultiWriter) Write(p []byte) (int, error) {
	for _, w := range m {
		w.Write(p)
	}
	return len(p), nil
}
