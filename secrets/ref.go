package secrets

import (
	"regexp"
	"strings"
)

// Ref is a secret reference, {{secrets/scope/key}}, as endpoint configs
// write one in environment_vars (and external models in *_api_key).
type Ref struct {
	Scope, Key string
}

func (r Ref) String() string { return "{{secrets/" + r.Scope + "/" + r.Key + "}}" }

var (
	// refRE is a whole reference. Spaces inside the braces are allowed,
	// as Databricks' examples sometimes have them.
	refRE = regexp.MustCompile(`^\{\{\s*secrets/([A-Za-z0-9_.@-]{1,128})/([A-Za-z0-9_.-]{1,128})\s*\}\}$`)
	// mentionRE is anything that looks like it means to be a reference.
	mentionRE = regexp.MustCompile(`\{\{\s*secrets/`)
)

// ParseRef reads a value that is a whole reference. ok is false for a
// value that is not one; mentions reports whether it looks like it meant
// to be (so that a typo is refused instead of reaching the worker as
// text).
func ParseRef(v string) (r Ref, ok, mentions bool) {
	m := refRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return Ref{}, false, mentionRE.MatchString(v)
	}
	return Ref{Scope: m[1], Key: m[2]}, true, true
}

// Mentions reports whether v holds something that looks like a secret
// reference, whole or not.
func Mentions(v string) bool { return mentionRE.MatchString(v) }
