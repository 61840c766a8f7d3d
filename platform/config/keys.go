package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// VOSNames maps each VOS3000 parameter name that sbcd knows to its TOML key.
// The console's set and show, and `sbcd check`, accept either form. Do not
// modify it.
var VOSNames = map[string]string{
	"SS_SIP_SESSION_TTL":                  "session_timer.ttl",
	"SS_SIP_SESSION_UPDATE_SEGMENT":       "session_timer.update_segment",
	"SS_SIP_NO_TIMER_REINVITE_INTERVAL":   "session_timer.no_timer_reinvite_interval",
	"SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP": "session_timer.early_timeout",
	"SS_SIP_NAT_KEEP_ALIVE_MESSAGE":       "nat_keepalive.message",
	"SS_SIP_NAT_KEEP_ALIVE_PERIOD":        "nat_keepalive.period",
	"SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL": "nat_keepalive.send_interval",
	"SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME": "nat_keepalive.send_one_time",
}

// VOSName returns the VOS3000 name of a TOML key, if it has one.
func VOSName(key string) (string, bool) {
	for vos, k := range VOSNames {
		if k == key {
			return vos, true
		}
	}
	return "", false
}

// Lookup resolves a parameter name as an operator types it, a TOML key
// ("session_timer.ttl") or a VOS3000 name (SS_SIP_SESSION_TTL, any case), to
// its TOML key. It knows the keys of Keys: those of plain tables, not of
// arrays of tables such as [[device]].
func Lookup(name string) (key string, ok bool) {
	name = strings.TrimSpace(name)
	if k, ok := VOSNames[strings.ToUpper(name)]; ok {
		return k, true
	}
	for _, sk := range schemaKeys() {
		if !sk.array && sk.key == name {
			return name, true
		}
	}
	return "", false
}

// Keys returns the TOML keys of every value in a plain table ("system.hostname",
// ..., "ssh.password") in schema order: the names Lookup, Get and Set take.
// The keys of arrays of tables ([[device]], [[registrar.user]],
// [[network.interface]]) are not among them.
func Keys() []string {
	var out []string
	for _, sk := range schemaKeys() {
		if !sk.array {
			out = append(out, sk.key)
		}
	}
	return out
}

// schemaKey is one leaf of the schema.
type schemaKey struct {
	key   string // "session_timer.ttl"; for arrays of tables "device.name"
	array bool   // inside an array of tables
	index []int  // reflect field index path from Config
}

var schemaOnce = sync.OnceValue(func() []schemaKey {
	var out []schemaKey
	var walk func(t reflect.Type, prefix string, array bool, index []int)
	walk = func(t reflect.Type, prefix string, array bool, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := tomlName(f)
			if name == "" {
				continue
			}
			key := joinKey(prefix, name)
			idx := append(append([]int(nil), index...), i)
			switch {
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type, key, array, idx)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(f.Type.Elem(), key, true, nil)
			default:
				out = append(out, schemaKey{key: key, array: array, index: idx})
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", false, nil)
	return out
})

// schemaKeys returns every leaf key of the schema in struct order.
func schemaKeys() []schemaKey { return schemaOnce() }

// field returns the value of a plain-table key in c.
func (c *Config) field(key string) (reflect.Value, bool) {
	for _, sk := range schemaKeys() {
		if !sk.array && sk.key == key {
			return reflect.ValueOf(c).Elem().FieldByIndex(sk.index), true
		}
	}
	return reflect.Value{}, false
}

// Get returns the value of a parameter (a TOML key or VOS3000 name, see
// Lookup) as a TOML value: 600, "HELLO", true, ["udp:0.0.0.0:5060"].
func (c *Config) Get(name string) (string, error) {
	key, ok := Lookup(name)
	if !ok {
		return "", fmt.Errorf("unknown parameter %q", name)
	}
	v, _ := c.field(key)
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"v": v.Interface()}); err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	_, val, _ := strings.Cut(strings.TrimSpace(buf.String()), "=")
	return strings.TrimSpace(val), nil
}

// Set changes one parameter (a TOML key or VOS3000 name, see Lookup) from
// its console spelling: a TOML value (600, "HELLO", true,
// ["udp:0.0.0.0:5060"]); for a text key the quotes may be left out
// (sip:upstream.example.net), and for a list of text, a comma-separated
// list (udp:0.0.0.0:5060,tcp:0.0.0.0:5060) will do. Set checks the type
// only: the caller validates the whole config (Validate) before applying
// it, because a change can need another one first (raise min_se after ttl).
// On error c is unchanged.
func (c *Config) Set(name, value string) error {
	key, ok := Lookup(name)
	if !ok {
		return &Problems{List: []Problem{{Key: name, Msg: "unknown parameter", Hint: "see show params for the names"}}}
	}
	field, _ := c.field(key)
	var tree map[string]any
	v := any(nil)
	if _, err := toml.Decode("v = "+value, &tree); err == nil {
		v = tree["v"]
	}
	_, isString := v.(string)
	_, isList := v.([]any)
	switch {
	case field.Kind() == reflect.String && !isString:
		v = value
	case field.Kind() == reflect.Slice && !isList:
		var list []any
		for _, s := range strings.Split(value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		v = list
	case v == nil:
		return &Problems{List: []Problem{{Key: key, Msg: fmt.Sprintf("%q is not a value", value), Hint: "a number, true or false, or text in double quotes"}}}
	}
	tmp := reflect.New(field.Type()).Elem()
	var d decoder
	d.value(key, v, tmp)
	if len(d.col.issues) > 0 {
		return &Problems{List: d.col.problems(nil)}
	}
	field.Set(tmp)
	return nil
}

// Marshal renders c as a TOML file, every table and key in schema order.
// Comments of the file c was read from are not kept.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
