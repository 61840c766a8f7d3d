package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Parse reads a configuration file: it starts from Default, decodes data
// as TOML, refuses unknown keys and values of the wrong type, and
// validates the result. name is the file name used in messages.
//
// On any problem it returns nil and a *Problems holding every problem
// found, each with its line: a TOML syntax error (the parser stops there,
// so it is the only one reported), else every unknown key, every value of
// the wrong type and every rule Validate finds broken. A value that could
// not be decoded is not validated further.
func Parse(data []byte, name string) (*Config, error) {
	c, _, err := Check(data, name)
	return c, err
}

// Check is Parse that also returns the warnings (see Config.Warnings) of a
// valid file, with their lines, for `sbcd check` and uploads. warnings is
// nil when there are none or when the file is invalid.
func Check(data []byte, name string) (cfg *Config, warnings *Problems, err error) {
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		return nil, nil, &Problems{File: name, List: []Problem{syntaxProblem(err, data)}}
	}
	lines := locateKeys(string(data))
	c := Default()
	d := decoder{}
	d.table("", tree, reflect.ValueOf(&c).Elem())
	var v collector
	c.validate(&v)
	for _, is := range v.issues {
		if !d.undecoded(is) {
			d.col.issues = append(d.col.issues, is)
		}
	}
	if len(d.col.issues) > 0 {
		return nil, nil, &Problems{File: name, List: d.col.problems(lines)}
	}
	var w collector
	c.warnings(&w)
	if len(w.issues) > 0 {
		warnings = &Problems{File: name, List: w.problems(lines)}
	}
	return &c, warnings, nil
}

// syntaxProblem turns an error of the TOML parser into a problem.
func syntaxProblem(err error, data []byte) Problem {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return Problem{Line: 1, Msg: "TOML: " + err.Error()}
	}
	line := pe.Position.Line
	if line < 1 {
		// Some errors at the end of the input carry no line: count the
		// lines up to the error's offset, or up to the end without one.
		end := len(data)
		if pe.Position.Start > 0 && pe.Position.Start < end {
			end = pe.Position.Start
		}
		line = 1 + bytes.Count(data[:end], []byte("\n"))
	}
	if s := pe.Position.Start; s > 0 && s < len(data) && data[s] == '\n' {
		// The parser counts the newline it stopped at as the next
		// line's; the operator's mistake is on the line it ends.
		line = 1 + bytes.Count(data[:s], []byte("\n"))
	}
	p := Problem{Line: line, Msg: "TOML syntax: " + pe.Message}
	if pe.Position.Col > 0 {
		p.Msg = fmt.Sprintf("TOML syntax (column %d): %s", pe.Position.Col, pe.Message)
	}
	switch m := pe.Message; {
	case strings.Contains(m, "expected value but found"):
		p.Hint = `text values need double quotes, e.g. upstream = "sip:softswitch.example.net"`
	case strings.Contains(m, "has already been defined"), strings.Contains(m, "already created"):
		p.Hint = "each key and [table] once; repeat a table with [[double brackets]] only where the example does"
	case strings.Contains(m, "newlines not allowed within inline tables"), strings.Contains(m, "strings cannot contain newlines"):
		p.Hint = "keep the value on one line"
	}
	return p
}

// decoder copies a parsed TOML tree onto a Config, reporting every unknown
// key and every value of the wrong type (BurntSushi/toml stops at the
// first), named by its full path.
type decoder struct {
	col collector
	bad []string // paths of values that could not be decoded
}

// undecoded reports whether a validation issue is about a value the
// decoder could not set (it would complain about the default instead).
func (d *decoder) undecoded(is issue) bool {
	for _, k := range append([]string{is.Key}, is.related...) {
		for _, b := range d.bad {
			if k == b || strings.HasPrefix(k, b+".") || strings.HasPrefix(k, b+"[") {
				return true
			}
		}
	}
	return false
}

func (d *decoder) wrongType(path string, v any, want, hint string) {
	d.bad = append(d.bad, path)
	d.col.add(path, fmt.Sprintf("expected %s, got %s", want, describe(v)), hint)
}

// table decodes the TOML table m at path into the struct rv.
func (d *decoder) table(path string, m map[string]any, rv reflect.Value) {
	fields := tomlFields(rv.Type())
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := joinKey(path, k)
		i, ok := fields[k]
		if !ok {
			d.col.add(p, "unknown key", unknownKeyHint(path, k, rv.Type()))
			continue
		}
		d.value(p, m[k], rv.Field(i))
	}
}

// value decodes v, the TOML value at path, into rv.
func (d *decoder) value(path string, v any, rv reflect.Value) {
	switch rv.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			d.wrongType(path, v, "a table", "write it as a ["+stripIndexes(path)+"] section")
			return
		}
		d.table(path, m, rv)
	case reflect.Slice:
		elem := rv.Type().Elem()
		var items []any
		switch vv := v.(type) {
		case []any:
			items = vv
		case []map[string]any:
			items = make([]any, len(vv))
			for i := range vv {
				items[i] = vv[i]
			}
		default:
			if elem.Kind() == reflect.Struct {
				d.wrongType(path, v, "a list of tables", "write [["+stripIndexes(path)+"]], with double brackets, once per entry")
			} else {
				d.wrongType(path, v, "a list of strings", `write a list in brackets, e.g. ["one", "two"]`)
			}
			return
		}
		out := reflect.MakeSlice(rv.Type(), len(items), len(items))
		for i, it := range items {
			d.value(indexKey(path, i), it, out.Index(i))
		}
		rv.Set(out)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.wrongType(path, v, "a string", "put the value in double quotes")
			return
		}
		rv.SetString(s)
	case reflect.Int:
		switch n := v.(type) {
		case int64:
			if n < math.MinInt || n > math.MaxInt {
				d.wrongType(path, v, "an integer that fits", "")
				return
			}
			rv.SetInt(n)
		case float64:
			hint := "write a whole number"
			if n == math.Trunc(n) && math.Abs(n) < 1e15 {
				hint = fmt.Sprintf("write %d, without a decimal point", int64(n))
			}
			d.wrongType(path, v, "an integer", hint)
		case string:
			hint := "write a whole number without quotes"
			if _, err := strconv.Atoi(strings.TrimSpace(n)); err == nil {
				hint = "write " + strings.TrimSpace(n) + " without quotes"
			}
			d.wrongType(path, v, "an integer", hint)
		default:
			d.wrongType(path, v, "an integer", "")
		}
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			hint := "write true or false, without quotes"
			d.wrongType(path, v, "true or false", hint)
			return
		}
		rv.SetBool(b)
	default:
		// Not reached: the schema has only the kinds above (a test walks it).
		d.wrongType(path, v, rv.Type().String(), "")
	}
}

// describe names the TOML type of a decoded value for messages, with the
// value itself when it is short.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) <= 40 {
			return "a string " + strconv.Quote(x)
		}
		return "a string"
	case int64:
		return "the integer " + strconv.FormatInt(x, 10)
	case float64:
		return "the float " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case time.Time:
		return "a date/time"
	case []any, []map[string]any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// stripIndexes turns "network.interface[0].x" into "network.interface.x".
func stripIndexes(path string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == '[':
			depth++
		case c == ']' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// tomlFields maps the TOML key of each field of the struct type t to the
// field's index.
func tomlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if name := tomlName(t.Field(i)); name != "" {
			m[name] = i
		}
	}
	return m
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// unknownKeyHint suggests what the operator may have meant by key k in the
// table at path (of struct type t).
func unknownKeyHint(path, k string, t reflect.Type) string {
	if key, ok := VOSNames[strings.ToUpper(k)]; ok {
		table, leaf := splitLast(key)
		return fmt.Sprintf("%s is the VOS3000 name of %s: write %s = ... under [%s]", strings.ToUpper(k), key, leaf, table)
	}
	table := stripIndexes(path)
	var same []string
	for name := range tomlFields(t) {
		same = append(same, name)
	}
	slices.Sort(same)
	if best := closest(k, same); best != "" {
		return "did you mean " + best + "?"
	}
	// A top-level table written inside another one?
	if table != "" {
		root := reflect.TypeFor[Config]()
		if i, ok := tomlFields(root)[k]; ok {
			if root.Field(i).Type.Kind() == reflect.Slice {
				return fmt.Sprintf("%s is a top-level list of tables: write [[%s]] sections; after [%s], every key belongs to [%s]", k, k, table, table)
			}
			return fmt.Sprintf("%s is a top-level table: write a [%s] section; after [%s], every key belongs to [%s]", k, k, table, table)
		}
	}
	// The key of another table?
	for _, sk := range schemaKeys() {
		t2, leaf := splitLast(sk.key)
		if leaf == k && t2 != table {
			if sk.array {
				return fmt.Sprintf("%s belongs in [[%s]]", k, t2)
			}
			return fmt.Sprintf("%s belongs in [%s]", k, t2)
		}
	}
	if table == "" {
		return "the tables are " + strings.Join(same, ", ")
	}
	return "the keys of [" + table + "] are " + strings.Join(same, ", ")
}

// splitLast splits "a.b.c" into "a.b" and "c".
func splitLast(key string) (string, string) {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[:i], key[i+1:]
	}
	return "", key
}

// closest returns the candidate nearest to s by edit distance, when it is
// close enough to be a typo (or differs only in case or - for _).
func closest(s string, candidates []string) string {
	norm := strings.ReplaceAll(strings.ToLower(s), "-", "_")
	best, bestDist := "", 3
	for _, c := range candidates {
		if c == norm {
			return c
		}
		if d := editDistance(norm, c); d < bestDist && d <= max(1, len(c)/3) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
