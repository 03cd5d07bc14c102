package report

import (
	"fmt"
	"strconv"
	"strings"
)

// Summary is the predictions in one line: the shares of the most frequent
// values for class labels, the mean and p10/p50/p90 for numbers (both for
// a few whole numbers, where the mean of 0/1 is the positive rate).
func (p *Predictions) Summary() string {
	var parts []string
	if p.Count == 0 {
		parts = append(parts, "no predictions")
	}
	if p.Classes() {
		var shares []string
		var shown int64
		for _, v := range p.Top {
			shares = append(shares, fmt.Sprintf("%s: %s", v.Value, percent(v.Count, p.Count)))
			shown += v.Count
		}
		if rest := p.Distinct - int64(len(p.Top)); rest > 0 {
			shares = append(shares, fmt.Sprintf("%d others: %s", rest, percent(p.Count-shown, p.Count)))
		}
		parts = append(parts, strings.Join(shares, ", "))
	}
	if p.Numeric {
		parts = append(parts, fmt.Sprintf("mean %s p10/p50/p90 %s/%s/%s", num(p.Mean), num(p.P10), num(p.P50), num(p.P90)))
	}
	s := strings.Join(parts, "; ")
	if p.Unreadable > 0 {
		s += fmt.Sprintf(" (answers without a flat predictions list: %d)", p.Unreadable)
	}
	return s
}

// String is the accuracy with what it counts, e.g. "91.84% (90/98)".
func (a *Accuracy) String() string {
	if a.Labelled == 0 {
		return "no labels matched"
	}
	return fmt.Sprintf("%s (%d/%d)", percent(a.Correct, a.Labelled), a.Correct, a.Labelled)
}

func percent(n, of int64) string {
	if of == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 2, 64) + "%"
}

// num keeps four significant digits: enough to compare two entities, short
// enough for a table cell.
func num(f float64) string { return strconv.FormatFloat(f, 'g', 4, 64) }
