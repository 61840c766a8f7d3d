package config

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

// FuzzParse: no input makes Parse, Check, Validate or Warnings panic; what
// Parse accepts validates, survives Marshal and Parse unchanged, and every
// problem it reports has a key or a line; every bare key of a document the
// TOML parser accepts is found by the line scanner.
func FuzzParse(f *testing.F) {
	_, file, _, _ := runtime.Caller(0)
	if data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "rootfs", "etc", "sbcd", "sbcd.toml")); err == nil {
		f.Add(data)
		f.Add(uncomment(data))
	}
	f.Add([]byte(designExample))
	for _, s := range []string{
		"", "[sip]\nlisten = []\n", "[session_timer]\nttl = 60\nmin_se = 'x'\n",
		"[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20:5060\"\n[sip]\nupstream = \"sip:a.example\"\n",
		"device = [{name = \"a\", address = \"[::1]:5060\"}]\n",
		"[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/8\"]\ngateway = \"10.0.0.1\"\n",
		"a.b.c = 1\n[x.'y z']\n\"q\" = \"\"\"\nm\n\"\"\"\n", "[[a]]\n[[a.b]]\n[[a]]\n[[a.b]]\nc = 1\n",
		"[nat_keepalive]\nperiod = 9223372036854775807\nsend_interval = 1\n",
		"x = [[[[[[[[1]]]]]]]]\n", "x = {a = {b = {c = [1, {d = 2}]}}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, warnings, err := Check(data, "f.toml")
		if err != nil {
			if c != nil {
				t.Fatal("config returned with problems")
			}
			ps := problemsOf(t, err)
			if len(ps) == 0 {
				t.Fatal("empty *Problems")
			}
			for _, p := range ps {
				if p.Key == "" && p.Line == 0 {
					t.Fatalf("problem without key or line: %+v", p)
				}
			}
		} else {
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted what Validate refuses: %v", err)
			}
			_ = warnings
			_ = c.Warnings()
			out, err := c.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			c2, err := Parse(out, "marshalled.toml")
			if err != nil {
				t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
			}
			if diff := cmp.Diff(c, c2, equateEmpty); diff != "" {
				t.Fatalf("Marshal round trip (-before +after):\n%s", diff)
			}
		}
		// The line scanner finds every bare key of an accepted document.
		var tree map[string]any
		if _, err := toml.Decode(string(data), &tree); err == nil {
			lines := locateKeys(string(data))
			for _, k := range barePaths("", tree) {
				if lines[k] == 0 {
					t.Fatalf("no line for %s in:\n%q", k, data)
				}
			}
		}
	})
}

// barePaths lists the key paths of a decoded tree whose parts are all
// bare keys (quoted keys may be spelled many ways).
func barePaths(prefix string, v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if k == "" || strings.IndexFunc(k, func(r rune) bool { return r >= 0x80 || !isBare(byte(r)) }) >= 0 {
				continue
			}
			p := joinKey(prefix, k)
			out = append(out, p)
			out = append(out, barePaths(p, child)...)
		}
	case []map[string]any:
		for i, m := range x {
			out = append(out, barePaths(indexKey(prefix, i), m)...)
		}
	case []any:
		for i, e := range x {
			out = append(out, barePaths(indexKey(prefix, i), e)...)
		}
	}
	return out
}
