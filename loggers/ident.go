package loggers

import "fmt"

// CheckIdent reports whether s may name a column (or a table part) in SQL
// that Gantry builds: the same rule as table names, so a name that passes
// needs no escaping and a name that fails is refused, never quoted.
func CheckIdent(s string) error {
	if !identRE.MatchString(s) {
		return fmt.Errorf("%q must be %s", s, identRule)
	}
	return nil
}
