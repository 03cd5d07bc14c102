package docker

// A copy of the local driver's tail buffer; the two drivers keep
// their workers' output the same way.

import (
	"strings"
	"sync"
)

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	// mu guards buf.
	mu  sync.Mutex
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	// Trim only when twice over, so that trimming is amortized O(1) a byte.
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > t.max {
		b = b[len(b)-t.max:]
	}
	return string(b)
}

// lastLines formats the last n lines as ": line; line", or "" when empty,
// to end an error message with what the worker said before it died.
func (t *tailBuffer) lastLines(n int) string {
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

type multiWriter []*tailBuffer

func (m multiWriter) Write(p []byte) (int, error) {
	for _, w := range m {
		w.Write(p)
	}
	return len(p), nil
}
