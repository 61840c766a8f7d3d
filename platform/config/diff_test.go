package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want []Change
	}{
		{name: "same", edit: func(*Config) {}},
		{name: "live timer", edit: func(c *Config) { c.SessionTimer.TTL = 1800 },
			want: []Change{{Key: "session_timer.ttl", Old: "600", New: "1800"}}},
		{name: "keep-alive message", edit: func(c *Config) { c.NATKeepalive.Message = "" },
			want: []Change{{Key: "nat_keepalive.message", Old: `"HELLO"`, New: `""`}}},
		{name: "capacity needs a restart", edit: func(c *Config) { c.SIP.MaxCalls = 20000; c.Trace.Enabled = true },
			want: []Change{
				{Key: "sip.max_calls", Old: "10000", New: "20000", Restart: true},
				{Key: "trace.enabled", Old: "false", New: "true"},
			}},
		{name: "listen needs a restart", edit: func(c *Config) { c.SIP.Listen = []string{"udp:0.0.0.0:5060"} },
			want: []Change{{Key: "sip.listen", Old: `["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]`, New: `["udp:0.0.0.0:5060"]`, Restart: true}}},
		{name: "devices as a whole", edit: func(c *Config) {
			c.Devices = []Device{{Name: "pbx", Address: "192.0.2.20:5060"}}
		}, want: []Change{{Key: "device", Old: "[]", New: `[{name = "pbx", address = "192.0.2.20:5060"}]`}}},
		{name: "passwords hidden", edit: func(c *Config) {
			c.Registrar.Users = []User{{Name: "1001", Password: "secret"}}
			c.SSH.Password = "hunter2"
		}, want: []Change{
			{Key: "registrar.user", Old: "(hidden)", New: "(hidden)"},
			{Key: "ssh.password", Old: "(hidden)", New: "(hidden)"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := Default()
			c := old.Clone()
			tc.edit(c)
			got := Diff(&old, c)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanSplits(t *testing.T) {
	old := Default()
	c := old.Clone()
	c.SessionTimer.TTL = 900
	c.Registrar.MaxBindings = 5000
	live, restart := Plan(Diff(&old, c))
	if len(live) != 1 || live[0].Key != "session_timer.ttl" || len(restart) != 1 || restart[0].Key != "registrar.max_bindings" {
		t.Errorf("live %v, restart %v", live, restart)
	}
}

// TestRestartKeysExist keeps restartKeys in step with the schema: a key
// renamed or removed there must not silently become "live".
func TestRestartKeysExist(t *testing.T) {
	known := map[string]bool{}
	for _, sk := range schemaKeys() {
		k := sk.key
		if sk.array {
			k, _ = splitLast(k)
		}
		known[k] = true
	}
	for k := range restartKeys {
		if !known[k] {
			t.Errorf("restartKeys names %q, which is not in the schema", k)
		}
	}
	for k := range secretKeys {
		if !known[k] {
			t.Errorf("secretKeys names %q, which is not in the schema", k)
		}
	}
}
