package llm

import (
	"strings"
	"testing"
)

func TestTextStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stop    []string
		pieces  []string
		want    []string // what each add returns, then flush's
		stopped bool
	}{
		{"plain", nil, []string{"Once", " upon"}, []string{"Once", " upon", ""}, false},
		{"stop inside a piece", []string{"END"}, []string{"abcENDxyz"}, []string{"abc", ""}, true},
		{"stop across pieces", []string{"The end"}, []string{"so. The", " e", "nd!"}, []string{"so. ", "", "", ""}, true},
		{"a partial stop is text after all", []string{"The end"}, []string{"so. The", " e"}, []string{"so. ", "", "The e"}, false},
		{"split UTF-8", nil, []string{"caf\xc3", "\xa9 ok"}, []string{"caf", "é ok", ""}, false},
		{"UTF-8 cut at the end", nil, []string{"ab\xe2\x82"}, []string{"ab", "\uFFFD"}, false},
		{"earliest of two stops", []string{"cd", "bc"}, []string{"abcd"}, []string{"a", ""}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTextStream(tc.stop)
			var got []string
			stopped := false
			for _, p := range tc.pieces {
				if stopped {
					break
				}
				var out string
				out, stopped = ts.add(p)
				got = append(got, out)
			}
			got = append(got, ts.flush())
			if strings.Join(got, "|") != strings.Join(tc.want, "|") || stopped != tc.stopped {
				t.Fatalf("got %q stopped=%v, want %q stopped=%v", got, stopped, tc.want, tc.stopped)
			}
		})
	}
}
