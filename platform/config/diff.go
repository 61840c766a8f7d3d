package config

import (
	"bytes"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// Change is one key whose value differs between the running configuration
// and a new one.
type Change struct {
	// Key is the TOML key ("session_timer.ttl"), or for an array of tables
	// its name ("device", "registrar.user", "network.interface"), compared
	// as a whole.
	Key string
	// Old and New are the values as TOML ("600", "\"HELLO\"", a table
	// array as inline tables). Passwords are shown as "(hidden)".
	Old, New string
	// Restart is true when the new value takes effect only after a restart
	// of sbcd (DESIGN.md §5: capacity, listen sockets).
	Restart bool
}

// restartKeys are the keys whose change needs a restart: the tables sized
// at start (capacity), the sockets bound at start, and what the daemon
// reads once. Everything else is applied live by cmd/sbcd.
var restartKeys = map[string]bool{
	"system.board":           true, // the board profile is probed once
	"system.data_dir":        true, // CDR writer, host key, saved config
	"sip.listen":             true, // sockets
	"sip.advertised_address": true, // in every dialog's Via and Contact
	"sip.max_calls":          true, // dialog table, preallocated
	"registrar.max_bindings": true, // binding table, preallocated
	"cdr.dir":                true, // the CDR writer's directory
	"console.device":         true, // the serial port is opened once
	"console.baud":           true,
	"ssh.listen":             true, // the management socket
	"network.interface":      true, // netlink apply arrives with the board work
	"leds.status":            true, // LEDs arrive with the board work
	"leds.sip":               true,
	"leds.calls":             true,
	"leds.alarm":             true,
}

// secretKeys are shown as "(hidden)" in a Change.
var secretKeys = map[string]bool{
	"ssh.password":     true,
	"console.password": true,
	"registrar.user":   true,
}

// Diff returns the keys whose values differ between old and new, in schema
// order, each marked live or restart. Equal configurations give nil.
func Diff(old, new *Config) []Change {
	var out []Change
	seen := map[string]bool{}
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	for _, sk := range schemaKeys() {
		key, a, b := sk.key, reflect.Value{}, reflect.Value{}
		if sk.array {
			// The whole array of tables, once: its name is the key up to
			// the leaf ("device.name" → "device").
			key, _ = splitLast(sk.key)
			if seen[key] {
				continue
			}
			seen[key] = true
			a, b = arrayField(ov, key), arrayField(nv, key)
		} else {
			a, b = ov.FieldByIndex(sk.index), nv.FieldByIndex(sk.index)
		}
		if !a.IsValid() || !b.IsValid() || reflect.DeepEqual(a.Interface(), b.Interface()) {
			continue
		}
		c := Change{Key: key, Old: tomlValue(a), New: tomlValue(b), Restart: restartKeys[key]}
		if secretKeys[key] {
			c.Old, c.New = "(hidden)", "(hidden)"
		}
		out = append(out, c)
	}
	return out
}

// arrayField finds the slice field of an array of tables by its dotted
// TOML path ("registrar.user").
func arrayField(v reflect.Value, path string) reflect.Value {
	for _, part := range strings.Split(path, ".") {
		i, ok := tomlFields(v.Type())[part]
		if !ok {
			return reflect.Value{}
		}
		v = v.Field(i)
	}
	return v
}

// tomlValue renders v as a TOML value.
func tomlValue(v reflect.Value) string {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"v": v.Interface()}); err != nil {
		return "?"
	}
	s := strings.TrimSpace(buf.String())
	if _, val, ok := strings.Cut(s, "="); ok && !strings.HasPrefix(s, "[[") {
		return strings.TrimSpace(val)
	}
	// An array of tables encodes as [[v]] blocks: list them inline.
	var parts []string
	for _, block := range strings.Split(s, "[[v]]") {
		block = strings.TrimSpace(block)
		if block == "" {
			continue
		}
		var fields []string
		for _, line := range strings.Split(block, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				fields = append(fields, line)
			}
		}
		parts = append(parts, "{"+strings.Join(fields, ", ")+"}")
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// NeedsRestart reports whether a change of key (a Change.Key) takes effect
// only after a restart.
func NeedsRestart(key string) bool { return restartKeys[key] }

// Plan splits changes into those applied live and those that wait for a
// restart.
func Plan(changes []Change) (live, restart []Change) {
	for _, c := range changes {
		if c.Restart {
			restart = append(restart, c)
		} else {
			live = append(live, c)
		}
	}
	return live, restart
}
