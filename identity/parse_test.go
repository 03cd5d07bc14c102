package identity

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBearer(t *testing.T) {
	for _, tc := range []struct {
		in, tok string
		err     error
	}{
		{"", "", ErrNoToken},
		{"Bearer dapi0123abcd", "dapi0123abcd", nil},
		{"bearer dapi0123abcd", "dapi0123abcd", nil},
		{"BEARER   abc.def-ghi_jkl~+/==", "abc.def-ghi_jkl~+/==", nil},
		{"Basic dXNlcjpwYXNz", "", ErrNotBearer},
		{"Bearer", "", ErrNotBearer},
		{"Bearer ", "", ErrBadToken},
		{"Bearer ====", "", ErrBadToken},
		{"Bearer abc def", "", ErrBadToken},
		{"Bearer abc\x00", "", ErrBadToken},
		{"Bearer " + strings.Repeat("a", 513), "", errTokenLength},
	} {
		tok, err := ParseBearer(tc.in)
		if tok != tc.tok || !errors.Is(err, tc.err) {
			t.Errorf("ParseBearer(%q) = %q, %v; want %q, %v", tc.in, tok, err, tc.tok, tc.err)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer dapi0123", "bearer a==", "Basic x", "Bearer  a b", "", "Bearer \xff", "Bearer =a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := ParseBearer(h)
		if err != nil {
			if tok != "" {
				t.Fatalf("token %q with error %v", tok, err)
			}
			return
		}
		if tok == "" || len(tok) > maxTokenLen || strings.ContainsAny(tok, " \t\r\n\x00") {
			t.Fatalf("ParseBearer(%q) accepted %q", h, tok)
		}
		// What it accepts parses back to itself in canonical form.
		if again, err := ParseBearer("Bearer " + tok); err != nil || again != tok {
			t.Fatalf("ParseBearer(Bearer %q) = %q, %v", tok, again, err)
		}
	})
}

func TestParseFilter(t *testing.T) {
	attrs := []string{"userName", "displayName"}
	for _, tc := range []struct {
		in   string
		want *Filter
		err  string
	}{
		{"", nil, ""},
		{`userName eq "alice@corp.com"`, &Filter{"userName", "eq", "alice@corp.com"}, ""},
		{`USERNAME EQ "a"`, &Filter{"userName", "eq", "a"}, ""},
		{`displayName co "Ali"`, &Filter{"displayName", "co", "Ali"}, ""},
		{`displayName sw "A \"q\" \\"`, &Filter{"displayName", "sw", `A "q" \`}, ""},
		{`userName  eq   "a"  `, &Filter{"userName", "eq", "a"}, ""},
		{`emails eq "a"`, nil, `attribute "emails" cannot be filtered on; use userName or displayName`},
		{`userName gt "a"`, nil, `operator "gt" is not supported`},
		{`userName eq a`, nil, "want a string in double quotes"},
		{`userName eq "a`, nil, "closing double quote is missing"},
		{`userName eq "a" and displayName eq "b"`, nil, "one comparison, without and/or"},
		{`userName eq "\n"`, nil, `only \" and \\ may follow a backslash`},
		{`userName`, nil, "is not of the form `userName eq \"value\"`"},
	} {
		f, err := ParseFilter(tc.in, attrs...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFilter(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseFilter(%q): %v", tc.in, err)
			continue
		}
		if (f == nil) != (tc.want == nil) || (f != nil && *f != *tc.want) {
			t.Errorf("ParseFilter(%q) = %+v, want %+v", tc.in, f, tc.want)
		}
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{`userName eq "a@b"`, `displayName co "x\"y"`, `applicationId sw ""`, `a`, `userName eq "`, `userName eq "a" or 1`, "userName eq \"\xff\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFilter(s, "userName", "displayName", "applicationId")
		if err != nil || got == nil {
			return
		}
		// A parsed filter prints back to a filter that parses the same.
		again, err := ParseFilter(got.String(), "userName", "displayName", "applicationId")
		if err != nil || again == nil || *again != *got {
			t.Fatalf("ParseFilter(%q) = %+v; its String %q parses to %+v, %v", s, got, got.String(), again, err)
		}
		if !got.Match(got.Value) && got.Op != "" {
			t.Fatalf("filter %+v does not match its own value", got)
		}
	})
}
