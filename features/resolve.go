package features

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/gantry/gantry/api"
)

// TableSource reads a published table's state; ok is false when it was
// never published.
type TableSource func(src string) (t api.OnlineTable, ok bool, err error)

// Resolve checks spec against the published tables (and sig, the model's
// signature, when not nil) and returns the route activators follow. Every
// mismatch is an error that names the lookup, feature and types, so that a
// config that could not serve fails when it is applied, not at the first
// request.
func Resolve(spec api.FeatureSpec, tables TableSource, sig *api.Schema, serving bool) (*api.FeatureRoute, error) {
	if len(spec.Features) == 0 {
		return nil, fmt.Errorf("feature spec %s has no feature lookups", spec.Name)
	}
	r := &api.FeatureRoute{Spec: spec.Name, Serving: serving}
	sigTypes := map[string]string{}
	if sig != nil {
		for _, c := range sig.Inputs {
			if c.Name != "" {
				sigTypes[c.Name] = c.Type
				r.Order = append(r.Order, c.Name)
			}
		}
	}
	seen := map[string]string{}
	for i, fl := range spec.Features {
		where := fmt.Sprintf("feature spec %s, lookup %d (%s)", spec.Name, i, fl.TableName)
		if fl.TableName == "" {
			return nil, fmt.Errorf("feature spec %s, lookup %d: table_name is required", spec.Name, i)
		}
		if len(fl.LookupKey) == 0 {
			return nil, fmt.Errorf("%s: lookup_key is required", where)
		}
		t, ok, err := tables(fl.TableName)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s: table %s is not published to the online store; publish it first (POST /api/2.0/feature-store/tables/%s/publish)", where, fl.TableName, fl.TableName)
		}
		if len(fl.LookupKey) != len(t.PrimaryKeyColumns) {
			return nil, fmt.Errorf("%s: lookup_key %v has %d columns, the table's primary key %v has %d (same order and types)",
				where, fl.LookupKey, len(fl.LookupKey), t.PrimaryKeyColumns, len(t.PrimaryKeyColumns))
		}
		types := map[string]string{}
		for _, c := range t.Columns {
			types[c.Name] = c.Type
		}
		names := fl.FeatureNames
		if len(names) == 0 {
			for _, c := range t.Columns {
				if !contains(t.PrimaryKeyColumns, c.Name) && c.Name != t.TimeseriesKey {
					names = append(names, c.Name)
				}
			}
		}
		lr := api.LookupRoute{Table: fl.TableName, LookupKey: fl.LookupKey}
		for from := range fl.RenameOutputs {
			if !contains(names, from) {
				return nil, fmt.Errorf("%s: rename_outputs names %s, which is not one of its features %v", where, from, names)
			}
		}
		for _, n := range names {
			ty, ok := types[n]
			if !ok {
				return nil, fmt.Errorf("%s: table %s has no column %s (it has %s)", where, fl.TableName, n, columnList(t.Columns))
			}
			out := n
			if to := fl.RenameOutputs[n]; to != "" {
				out = to
			}
			if prev, dup := seen[out]; dup {
				return nil, fmt.Errorf("%s: feature %s is also the output of %s; rename one with rename_outputs", where, out, prev)
			}
			seen[out] = fl.TableName
			var def api.RawJSON
			if d, ok := fl.DefaultValues[out]; ok {
				// Through JSON, so that YAML's ints and the API's
				// float64s are judged alike.
				def, _ = json.Marshal(d)
				json.Unmarshal(def, &d)
				if !valueFits(d, ty) {
					return nil, fmt.Errorf("%s: default_values[%s] is %v, which is not a %s", where, out, d, ty)
				}
			}
			if st, ok := sigTypes[out]; ok && !typeFits(st, ty) {
				return nil, fmt.Errorf("%s: feature %s is %s in table %s but %s in the model's signature", where, out, ty, fl.TableName, st)
			}
			lr.Features = append(lr.Features, n)
			lr.Outputs = append(lr.Outputs, out)
			lr.Defaults = append(lr.Defaults, def)
		}
		for d := range fl.DefaultValues {
			if !contains(lr.Outputs, d) {
				return nil, fmt.Errorf("%s: default_values names %s, which is not one of its outputs %v", where, d, lr.Outputs)
			}
		}
		r.Lookups = append(r.Lookups, lr)
	}
	if _, err := Compile(r); err != nil {
		return nil, err
	}
	return r, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func columnList(cs []api.FeatureColumn) string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Name)
	}
	return b.String()
}

// Kinds of ClickHouse types that lookups tell apart.
const (
	kindInt      = "integer"
	kindFloat    = "float"
	kindBool     = "boolean"
	kindString   = "string"
	kindDate     = "date"
	kindDateTime = "timestamp"
	kindArray    = "array of numbers"
	kindOther    = "other"
)

// Kind classifies a ClickHouse type (Nullable and LowCardinality looked
// through).
func Kind(ty string) string {
	for _, w := range []string{"Nullable(", "LowCardinality("} {
		for strings.HasPrefix(ty, w) && strings.HasSuffix(ty, ")") {
			ty = ty[len(w) : len(ty)-1]
		}
	}
	switch {
	case strings.HasPrefix(ty, "Int") || strings.HasPrefix(ty, "UInt"):
		return kindInt
	case strings.HasPrefix(ty, "Float") || strings.HasPrefix(ty, "Decimal"):
		return kindFloat
	case ty == "Bool" || ty == "Boolean":
		return kindBool
	case ty == "String" || strings.HasPrefix(ty, "FixedString") || ty == "UUID" || strings.HasPrefix(ty, "Enum"):
		return kindString
	case ty == "Date" || ty == "Date32":
		return kindDate
	case strings.HasPrefix(ty, "DateTime"):
		return kindDateTime
	case strings.HasPrefix(ty, "Array("):
		if k := Kind(ty[len("Array(") : len(ty)-1]); k == kindInt || k == kindFloat {
			return kindArray
		}
	}
	return kindOther
}

// typeFits reports whether a column of ClickHouse type ty can feed a
// signature input of MLflow type st.
func typeFits(st, ty string) bool {
	k := Kind(ty)
	switch st {
	case "long", "integer":
		return k == kindInt
	case "double", "float":
		return k == kindInt || k == kindFloat
	case "boolean":
		return k == kindBool || (k == kindInt && strings.Contains(ty, "UInt8"))
	case "string":
		return k == kindString || k == kindDate || k == kindDateTime
	case "datetime":
		return k == kindDate || k == kindDateTime
	case "array":
		return k == kindArray
	}
	return k != kindOther
}

// valueFits reports whether a default value (decoded JSON) fits type ty.
func valueFits(v any, ty string) bool {
	if v == nil {
		return strings.HasPrefix(ty, "Nullable(")
	}
	switch k := Kind(ty); k {
	case kindInt:
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case kindFloat:
		_, ok := v.(float64)
		return ok
	case kindBool:
		_, ok := v.(bool)
		return ok
	case kindString, kindDate, kindDateTime:
		_, ok := v.(string)
		return ok
	case kindArray:
		a, ok := v.([]any)
		if !ok {
			return false
		}
		for _, x := range a {
			if _, ok := x.(float64); !ok {
				return false
			}
		}
		return true
	}
	return false
}
