package monitors

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/gantry/gantry/loggers"
)

// slice is a parsed slicing expression. Slices are parsed rather than
// spliced into SQL: a user's text never reaches ClickHouse except as a
// checked identifier, a number Go formatted or a quoted string literal.
type slice struct {
	expr   string // as the user wrote it: the metric tables' slice_key
	column string
	op     string // "" slices by the column's value
	num    float64
	str    string
	isNum  bool
}

var sliceRE = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:(<=|>=|!=|=|<|>)\s*(.+?))?\s*$`)

func parseSlice(s string) (slice, error) {
	m := sliceRE.FindStringSubmatch(s)
	if m == nil {
		return slice{}, fmt.Errorf("slice %q: want a column name, or a column compared with a number or a 'string' (col > 5, col = 'x')", s)
	}
	sl := slice{expr: strings.TrimSpace(s), column: m[1], op: m[2]}
	if err := loggers.CheckIdent(sl.column); err != nil {
		return slice{}, fmt.Errorf("slice %q: %v", s, err)
	}
	if sl.op == "" {
		return sl, nil
	}
	lit := m[3]
	if len(lit) >= 2 && lit[0] == '\'' && lit[len(lit)-1] == '\'' {
		if sl.op != "=" && sl.op != "!=" {
			return slice{}, fmt.Errorf("slice %q: a string compares with = or != only", s)
		}
		sl.str = lit[1 : len(lit)-1]
		return sl, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || f != f || f > 1e300 || f < -1e300 {
		return slice{}, fmt.Errorf("slice %q: %q is neither a finite number nor a 'string'", s, lit)
	}
	sl.num, sl.isNum = f, true
	return sl, nil
}

// valueSQL is the slice_value of a sample whose column has the value
// (isNull, num, label): the label itself when slicing by value (” for
// null), else 'true' or 'false' (a null compares false).
func (sl slice) valueSQL(isNull, num, isNum, label string) string {
	if sl.op == "" {
		return "if(" + isNull + ", '', " + label + ")"
	}
	var cond string
	if sl.isNum {
		cond = isNum + " AND " + num + " " + sl.op + " " + strconv.FormatFloat(sl.num, 'g', -1, 64)
	} else {
		cond = "NOT " + isNull + " AND " + label + " " + sl.op + " " + quote(sl.str)
	}
	return "if(" + cond + ", 'true', 'false')"
}

// quote is s as a ClickHouse string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
