package llm

import (
	"strings"
	"unicode/utf8"
)

// textStream turns token pieces into the text a client sees: it cuts the
// text at the first stop sequence, and holds back what could still become
// one (the "Once up" of a stop "Once upon") or is half a UTF-8 character
// (a token may end inside one), so that no streamed chunk ever has to be
// taken back. Bytes that are no UTF-8 at all become U+FFFD, as JSON
// would make them.
type textStream struct {
	stop    []string
	maxStop int
	buf     strings.Builder // all text generated so far
	sent    int             // bytes of buf returned already
	cut     int             // where a stop sequence began; -1 while none
}

func newTextStream(stop []string) *textStream {
	t := &textStream{cut: -1}
	for _, s := range stop {
		if s != "" {
			t.stop = append(t.stop, s)
			t.maxStop = max(t.maxStop, len(s))
		}
	}
	return t
}

// add appends a piece and returns the text now safe to send; stopped
// reports that a stop sequence completed (nothing after it is sent).
func (t *textStream) add(piece string) (out string, stopped bool) {
	if t.cut >= 0 {
		return "", true
	}
	from := max(0, t.buf.Len()-t.maxStop+1)
	t.buf.WriteString(piece)
	s := t.buf.String()
	if t.maxStop > 0 {
		first := -1
		for _, st := range t.stop {
			if i := strings.Index(s[from:], st); i >= 0 && (first < 0 || from+i < first) {
				first = from + i
			}
		}
		if first >= 0 {
			t.cut = first
			out = strings.ToValidUTF8(s[t.sent:max(t.sent, first)], "\uFFFD")
			t.sent = max(t.sent, first)
			return out, true
		}
	}
	end := len(s) - t.holdback(s)
	if end <= t.sent {
		return "", false
	}
	out = strings.ToValidUTF8(s[t.sent:end], "\uFFFD")
	t.sent = end
	return out, false
}

// holdback is how many bytes at the end of s may not be sent yet.
func (t *textStream) holdback(s string) int {
	n := 0
	// The longest suffix that is a proper prefix of a stop sequence.
	for _, st := range t.stop {
		for k := min(len(st)-1, len(s)); k > n; k-- {
			if strings.HasSuffix(s, st[:k]) {
				n = k
				break
			}
		}
	}
	// A character cut short by the token's end.
	if i := lastRuneStart(s); i >= 0 && !utf8.FullRuneInString(s[i:]) {
		n = max(n, len(s)-i)
	}
	return n
}

func lastRuneStart(s string) int {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			return i
		}
	}
	return -1
}

// flush returns what add held back, at the end of generation: a partial
// stop sequence that never completed is text after all. A character
// still cut short is replaced by U+FFFD, as a decoder would.
func (t *textStream) flush() string {
	s := t.buf.String()
	if t.cut >= 0 {
		s = s[:t.cut]
	}
	if t.sent >= len(s) {
		return ""
	}
	out := strings.ToValidUTF8(s[t.sent:], "\uFFFD")
	t.sent = len(s)
	return out
}
