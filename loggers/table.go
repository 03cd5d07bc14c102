package loggers

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/gantry/gantry/api"
)

// Table names an inference table in ClickHouse.
type Table struct {
	Database, Name string
}

// String is the qualified name, database.table.
func (t Table) String() string { return t.Database + "." + t.Name }

// Quoted is the qualified name quoted for SQL. The parts are identifiers
// PayloadTable checked, so they need no quotes and quoting cannot be escaped.
func (t Table) Quoted() string { return "`" + t.Database + "`.`" + t.Name + "`" }

// identRE is what a table name part may hold: a ClickHouse identifier that
// needs no quoting. SQL is built from these names, so anything else is
// refused rather than escaped.
var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,99}$`)

// identRule says identRE in words, for error messages.
const identRule = "a letter or _ followed by letters, digits and _ (at most 100)"

// PayloadTable names the inference table of an endpoint's capture config:
// database <catalog_name>_<schema_name>, table <table_name_prefix>_payload,
// the prefix defaulting to the endpoint name (dashes become underscores).
// It answers an *api.Error naming the bad field under field, the path of
// c in the request ("config.auto_capture_config").
func PayloadTable(endpoint, field string, c *api.AutoCaptureConfig) (Table, error) {
	prefix := c.TableNamePrefix
	if prefix == "" {
		prefix = strings.ReplaceAll(endpoint, "-", "_")
	}
	for _, f := range []struct{ field, v string }{
		{"catalog_name", c.CatalogName}, {"schema_name", c.SchemaName}, {"table_name_prefix", prefix},
	} {
		if !identRE.MatchString(f.v) {
			return Table{}, api.Errorf(api.ErrInvalidParameterValue,
				"%s.%s: %q must be %s", field, f.field, f.v, identRule)
		}
	}
	return Table{Database: c.CatalogName + "_" + c.SchemaName, Name: prefix + "_payload"}, nil
}

// ParseTable reads what Table.String wrote, checking both parts.
func ParseTable(s string) (Table, error) {
	db, name, ok := strings.Cut(s, ".")
	if !ok || !identRE.MatchString(db) || !identRE.MatchString(name) {
		return Table{}, fmt.Errorf("table %q: want database.table, each %s", s, identRule)
	}
	return Table{Database: db, Name: name}, nil
}

// Enabled reports whether c turns capture on.
func Enabled(c *api.AutoCaptureConfig) bool {
	return c != nil && c.Enabled != nil && *c.Enabled
}
