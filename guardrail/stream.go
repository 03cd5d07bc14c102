package guardrail

import (
	"strings"
	"unicode/utf8"
)

// Tail is how much of a streamed text a Stream holds back at least: more
// than MaxMatch and MaxKeyword, so that PII or a keyword split across
// chunks is still whole in what is held when it is checked. The cut is
// made after a whitespace (no email, and no word, spans one); a run
// without whitespace longer than Tail is cut anyway, so at most 2×Tail
// (plus a PII match that straddles the cut) is held.
const Tail = 128

// Stream applies a guard to a text that arrives in pieces (one choice of
// a streamed answer). Write each piece, then Flush at the end; what they
// return is what may be sent. Not safe for concurrent use.
type Stream struct {
	g    *Guard
	buf  string // held back, not sent yet
	prev byte   // the last byte sent, for the boundary before buf
	// Decisions are the non-blocking decisions made (MASK), merged.
	Kinds []Kind
}

// NewStream is a Stream of g (which may be nil: everything passes).
func NewStream(g *Guard) *Stream { return &Stream{g: g} }

// Write adds a piece and returns the text that may be sent now. A
// non-empty Decision with Block set means the stream must end: nothing
// more may be sent.
func (s *Stream) Write(piece string) (string, Decision) {
	if s.g == nil {
		return piece, Decision{}
	}
	s.buf += piece
	if k, ok := s.g.keyword(s.withPrev(), false); ok {
		return "", Decision{Guardrail: "invalid_keywords", Block: true, Keyword: k}
	}
	target := len(s.buf) - Tail
	if target <= 0 {
		return "", Decision{}
	}
	cut := strings.LastIndexAny(s.buf[:target], " \t\r\n") + 1
	if target-cut > Tail {
		cut = target
	}
	var ms []Match
	if s.g.pii != "" {
		ms = s.find()
		for _, m := range ms {
			if m.Start < cut && cut < m.End {
				cut = m.Start
			}
		}
	}
	for cut > 0 && cut < len(s.buf) && !utf8.RuneStart(s.buf[cut]) {
		cut--
	}
	if cut == 0 {
		return "", Decision{}
	}
	return s.send(cut, ms)
}

// Flush checks and returns what is held; the stream has ended.
func (s *Stream) Flush() (string, Decision) {
	if s.g == nil || s.buf == "" {
		return "", Decision{}
	}
	if k, ok := s.g.keyword(s.withPrev(), true); ok {
		return "", Decision{Guardrail: "invalid_keywords", Block: true, Keyword: k}
	}
	var ms []Match
	if s.g.pii != "" {
		ms = s.find()
	}
	return s.send(len(s.buf), ms)
}

// withPrev is buf after the last byte sent.
func (s *Stream) withPrev() string {
	if s.prev == 0 {
		return s.buf
	}
	return string(s.prev) + s.buf
}

// find is the PII of buf, with the byte sent before it as context.
func (s *Stream) find() []Match {
	off := 0
	if s.prev != 0 {
		off = 1
	}
	var out []Match
	for _, m := range Find(s.withPrev()) {
		if m.Start < off {
			continue
		}
		out = append(out, Match{m.Start - off, m.End - off, m.Kind})
	}
	return out
}

// send releases buf[:cut], masked or blocked by the matches in it.
func (s *Stream) send(cut int, ms []Match) (string, Decision) {
	var in []Match
	for _, m := range ms {
		if m.End <= cut {
			in = append(in, m)
		}
	}
	out := s.buf[:cut]
	if len(in) > 0 {
		d := Decision{Guardrail: "pii", Block: s.g.pii == Block, Kinds: kinds(in)}
		if d.Block {
			return "", d
		}
		out = Mask(out, in)
		for _, k := range d.Kinds {
			s.addKind(k)
		}
	}
	s.prev = s.buf[cut-1]
	s.buf = s.buf[cut:]
	return out, Decision{}
}

func (s *Stream) addKind(k Kind) {
	for _, x := range s.Kinds {
		if x == k {
			return
		}
	}
	s.Kinds = append(s.Kinds, k)
}
