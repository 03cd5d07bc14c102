// Package guardrail applies the AI gateway's guardrails
// (ai_gateway.guardrails, PEERS.md §2.1) to the text of LLM requests and
// answers: PII detection (BLOCK or MASK) and invalid keywords. It is pure:
// no I/O, no clock, no goroutine; the activator decides what to do with a
// Decision.
//
// PII kinds, each found by a pattern and then checked:
//
//   - EMAIL: local@domain.tld, the local part without leading, trailing or
//     doubled dots, a top-level domain of two letters or more;
//   - PHONE: a North American number with separators ((555) 234-5678,
//     555-234-5678, 555.234.5678, +1 555 234 5678; area code and exchange
//     start with 2-9) or an international one that starts with + and has
//     8 to 15 digits (+44 20 7946 0958);
//   - CREDIT_CARD: 13 to 19 digits, grouped by single spaces or dashes or
//     not, starting with 2-6 (the card networks), passing the Luhn check;
//   - IBAN: two capital letters, two check digits and 11 to 30 letters or
//     digits (groups of four separated by spaces allowed), whose ISO 13616
//     mod-97 checksum is 1;
//   - US_SSN: ddd-dd-dddd or ddd dd dddd, area not 000, 666 or 9xx, group
//     not 00, serial not 0000.
//
// Every kind needs a boundary on both sides: no letter or digit right
// before or after the match. Where matches overlap, the kind earlier in
// the list above Find's order wins (cards before phones).
package guardrail

import (
	"regexp"
	"sort"
	"strings"
)

// Kind names a kind of PII; a masked match is replaced by "[" + Kind + "]".
type Kind string

// The kinds Find reports.
const (
	Email      Kind = "EMAIL"
	Phone      Kind = "PHONE"
	CreditCard Kind = "CREDIT_CARD"
	IBAN       Kind = "IBAN"
	SSN        Kind = "US_SSN"
)

// Match is one piece of PII in a text: text[Start:End].
type Match struct {
	Start, End int
	Kind       Kind
}

// detector finds candidates with re and keeps those check accepts; check
// may shorten a candidate (it returns the accepted length, 0 to drop it).
type detector struct {
	kind  Kind
	re    *regexp.Regexp
	check func(s string) int
	// digits (a run of digits and separators with at least that many
	// digits) or need are cheap tests that s may hold a match; the regexp
	// runs only then (most text holds no PII, and a scan is far cheaper).
	digits int
	need   func(s string) bool
}

// detectors in order of precedence.
var detectors = []detector{
	{CreditCard, regexp.MustCompile(`[2-6](?:[ -]?[0-9]){12,18}`), cardLen, 13, nil},
	{IBAN, regexp.MustCompile(`[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}`), ibanLen, 0, ibanStart},
	{SSN, regexp.MustCompile(`[0-9]{3}([- ])[0-9]{2}([- ])[0-9]{4}`), ssnLen, 9, nil},
	{Email, regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}`), emailLen, 0, nil},
	{Phone, regexp.MustCompile(`(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-]?)[2-9][0-9]{2}[ .-][0-9]{4}`), whole, 10, nil},
	{Phone, regexp.MustCompile(`\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}`), intlPhoneLen, 0, hasByte('+')},
}

// MaxMatch bounds the length of every kind but EMAIL (an IBAN of 34
// characters with its spaces is the longest); Stream relies on it.
const MaxMatch = 48

// Find returns the PII in s, in order, without overlaps.
func Find(s string) []Match {
	var out []Match
	run := digitRun(s)
	for _, d := range detectors {
		var locs [][]int
		switch {
		case d.kind == Email:
			locs = emailCandidates(d.re, s)
		case d.digits > 0 && run >= d.digits, d.need != nil && d.need(s):
			locs = d.re.FindAllStringIndex(s, -1)
		}
		for _, loc := range locs {
			start, end := loc[0], loc[1]
			if start > 0 && isAlnum(s[start-1]) {
				continue
			}
			n := d.check(s[start:end])
			if n == 0 {
				continue
			}
			end = start + n
			if end < len(s) && isAlnum(s[end]) {
				continue
			}
			if overlaps(out, start, end) {
				continue
			}
			out = append(out, Match{start, end, d.kind})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

func overlaps(ms []Match, start, end int) bool {
	for _, m := range ms {
		if start < m.End && m.Start < end {
			return true
		}
	}
	return false
}

// Mask replaces each match of ms (from Find(s)) by its kind in brackets.
func Mask(s string, ms []Match) string {
	if len(ms) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range ms {
		b.WriteString(s[last:m.Start])
		b.WriteString("[" + string(m.Kind) + "]")
		last = m.End
	}
	b.WriteString(s[last:])
	return b.String()
}

// digitRun is the most digits in a run of digits and separators
// (space - . ( ) +), up to 13 (what the longest need asks).
func digitRun(s string) int {
	run, most := 0, 0
	for i := 0; i < len(s) && most < 13; i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			run++
			most = max(most, run)
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')' || c == '+':
		default:
			run = 0
		}
	}
	return most
}

// emailCandidates runs re only on the run of email characters around
// each @: scanning all of s from every position is what costs.
func emailCandidates(re *regexp.Regexp, s string) [][]int {
	var locs [][]int
	end := 0 // the windows do not overlap
	for i := strings.IndexByte(s, '@'); i >= 0; {
		a, b := i, i+1
		for a > end && isEmailByte(s[a-1]) {
			a--
		}
		for b < len(s) && (isAlnum(s[b]) || s[b] == '.' || s[b] == '-') {
			b++
		}
		for _, loc := range re.FindAllStringIndex(s[a:b], -1) {
			locs = append(locs, []int{loc[0] + a, loc[1] + a})
		}
		end = b
		j := strings.IndexByte(s[b:], '@')
		if j < 0 {
			break
		}
		i = b + j
	}
	return locs
}

func isEmailByte(c byte) bool {
	return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
}

func hasByte(c byte) func(s string) bool {
	return func(s string) bool { return strings.IndexByte(s, c) >= 0 }
}

// ibanStart is a need: two capital letters then two digits.
func ibanStart(s string) bool {
	for i := 0; i+4 <= len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' && s[i+1] >= 'A' && s[i+1] <= 'Z' && isDigit(s[i+2]) && isDigit(s[i+3]) {
			return true
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func whole(s string) int { return len(s) }

func digits(s string) []byte {
	var d []byte
	for i := 0; i < len(s); i++ {
		if isDigit(s[i]) {
			d = append(d, s[i])
		}
	}
	return d
}

// cardLen accepts 13-19 digits with one kind of separator that pass Luhn.
func cardLen(s string) int {
	if strings.Contains(s, " ") && strings.Contains(s, "-") {
		return 0
	}
	d := digits(s)
	if len(d) < 13 || len(d) > 19 || !Luhn(d) {
		return 0
	}
	return len(s)
}

// Luhn reports whether the digits pass the Luhn check.
func Luhn(d []byte) bool {
	sum := 0
	for i := len(d) - 1; i >= 0; i-- {
		n := int(d[i] - '0')
		if (len(d)-1-i)%2 == 1 {
			n *= 2
			if n > 9 {
				n -= 9
			}
		}
		sum += n
	}
	return sum%10 == 0
}

// ibanLen accepts the longest prefix of s, ending before a space or at the
// end, that is 15-34 characters without spaces with a valid checksum: a
// following capitalized word must not spoil an IBAN.
func ibanLen(s string) int {
	for end := len(s); end > 0; end-- {
		if end < len(s) && s[end] != ' ' {
			continue
		}
		c := strings.ReplaceAll(s[:end], " ", "")
		if len(c) >= 15 && len(c) <= 34 && IBANValid(c) {
			return end
		}
	}
	return 0
}

// IBANValid reports whether the compact IBAN c has mod-97 checksum 1.
func IBANValid(c string) bool {
	r := c[4:] + c[:4]
	rem := 0
	for i := 0; i < len(r); i++ {
		ch := r[i]
		switch {
		case isDigit(ch):
			rem = (rem*10 + int(ch-'0')) % 97
		case ch >= 'A' && ch <= 'Z':
			rem = (rem*100 + int(ch-'A'+10)) % 97
		default:
			return false
		}
	}
	return rem == 1
}

// ssnLen accepts an SSN with one separator kind and valid parts.
func ssnLen(s string) int {
	if s[3] != s[6] {
		return 0
	}
	area, group, serial := s[0:3], s[4:6], s[7:11]
	if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
		return 0
	}
	return len(s)
}

func emailLen(s string) int {
	at := strings.IndexByte(s, '@')
	local := s[:at]
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return 0
	}
	return len(s)
}

// intlPhoneLen accepts + and 8-15 digits, without a trailing ")".
func intlPhoneLen(s string) int {
	s = strings.TrimRight(s, ")")
	if n := len(digits(s)); n < 8 || n > 15 {
		return 0
	}
	if strings.Count(s, "(") != strings.Count(s, ")") {
		return 0
	}
	return len(s)
}
