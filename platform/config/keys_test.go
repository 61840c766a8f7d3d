package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVOSNames(t *testing.T) {
	want := map[string]string{
		"SS_SIP_SESSION_TTL":                  "session_timer.ttl",
		"SS_SIP_SESSION_UPDATE_SEGMENT":       "session_timer.update_segment",
		"SS_SIP_NO_TIMER_REINVITE_INTERVAL":   "session_timer.no_timer_reinvite_interval",
		"SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP": "session_timer.early_timeout",
		"SS_SIP_NAT_KEEP_ALIVE_MESSAGE":       "nat_keepalive.message",
		"SS_SIP_NAT_KEEP_ALIVE_PERIOD":        "nat_keepalive.period",
		"SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL": "nat_keepalive.send_interval",
		"SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME": "nat_keepalive.send_one_time",
	}
	if diff := cmp.Diff(want, VOSNames); diff != "" {
		t.Errorf("VOSNames (-want +got):\n%s", diff)
	}
	for vos, key := range VOSNames {
		if k, ok := Lookup(key); !ok || k != key {
			t.Errorf("Lookup(%q) = %q, %v: every VOS key must be a schema key", key, k, ok)
		}
		if got, ok := VOSName(key); !ok || got != vos {
			t.Errorf("VOSName(%q) = %q, %v, want %q", key, got, ok, vos)
		}
	}
	if _, ok := VOSName("session_timer.min_se"); ok {
		t.Error("VOSName(min_se) found a name; VOS3000 has none")
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"SS_SIP_SESSION_TTL", "session_timer.ttl", true},
		{"ss_sip_session_ttl", "session_timer.ttl", true},
		{" SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL ", "nat_keepalive.send_interval", true},
		{"session_timer.ttl", "session_timer.ttl", true},
		{"sip.upstream", "sip.upstream", true},
		{"ssh.authorized_keys", "ssh.authorized_keys", true},
		{"ttl", "", false},
		{"device.name", "", false}, // inside an array of tables
		{"session_timer", "", false},
		{"SS_SIP_UNKNOWN", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := Lookup(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestGetSet(t *testing.T) {
	c := Default()
	get := func(name string) string {
		t.Helper()
		v, err := c.Get(name)
		if err != nil {
			t.Fatalf("Get(%q): %v", name, err)
		}
		return v
	}
	for name, want := range map[string]string{
		"SS_SIP_SESSION_TTL":       "600",
		"nat_keepalive.message":    `"HELLO"`,
		"nat_keepalive.nated_only": "true",
		"sip.listen":               `["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]`,
	} {
		if got := get(name); got != want {
			t.Errorf("Get(%q) = %s, want %s", name, got, want)
		}
	}
	if _, err := c.Get("nope"); err == nil {
		t.Error("Get(unknown) succeeded")
	}

	sets := []struct{ name, value string }{
		{"SS_SIP_SESSION_TTL", "1200"},
		{"sip.upstream", "sip:softswitch.example.net:5060"}, // quotes may be left out
		{"nat_keepalive.message", `"PING"`},
		{"nat_keepalive.nated_only", "false"},
		{"sip.listen", "udp:0.0.0.0:5060, tcp:0.0.0.0:5060"},
		{"ssh.authorized_keys", `["a", "b"]`},
		{"console.password", "1234"}, // text that looks like a number
	}
	for _, s := range sets {
		if err := c.Set(s.name, s.value); err != nil {
			t.Errorf("Set(%q, %q): %v", s.name, s.value, err)
		}
	}
	if c.SessionTimer.TTL != 1200 || c.SIP.Upstream != "sip:softswitch.example.net:5060" || c.NATKeepalive.Message != "PING" ||
		c.NATKeepalive.NATedOnly || !cmp.Equal(c.SIP.Listen, []string{"udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"}) ||
		!cmp.Equal(c.SSH.AuthorizedKeys, []string{"a", "b"}) || c.Console.Password != "1234" {
		t.Errorf("after Set: %+v", c)
	}
	for _, bad := range []struct{ name, value, msg string }{
		{"session_timer.ttl", "ten", "is not a value"},
		{"session_timer.ttl", `"600"`, "expected an integer"},
		{"session_timer.ttl", "600.5", "expected an integer"},
		{"trace.enabled", "yes", "is not a value"},
		{"trace.enabled", "1", "expected true or false"},
		{"no.such", "1", "unknown parameter"},
	} {
		before := c.SessionTimer.TTL
		err := c.Set(bad.name, bad.value)
		if err == nil || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("Set(%q, %q) = %v, want an error containing %q", bad.name, bad.value, err, bad.msg)
		}
		if c.SessionTimer.TTL != before {
			t.Errorf("failed Set(%q, %q) changed the config", bad.name, bad.value)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.SIP.Upstream = "sip:softswitch.example.net:5060;transport=tcp"
	c.Devices = []Device{{Name: "pbx", Address: "192.0.2.20:5060"}, {Name: "gw", Address: "[2001:db8::20]:5060"}}
	c.Registrar.Users = []User{{Name: "1001", Password: `pa"ss\word`}}
	c.Network.Interfaces = []Interface{
		{Name: "eth0", Addresses: []string{"192.0.2.10/24", "2001:db8::10/64"}, Gateway: "192.0.2.1", MTU: 1500},
		{Name: "eth0.100", VLAN: 100, Parent: "eth0", DHCP: true},
	}
	c.NATKeepalive.Message = "HELLO\r\n\x00"
	c.SSH.AuthorizedKeys = []string{testKey}
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data, "marshalled.toml")
	if err != nil {
		t.Fatalf("Parse(Marshal(c)): %v\n%s", err, data)
	}
	if diff := cmp.Diff(&c, got, equateEmpty); diff != "" {
		t.Errorf("round trip (-want +got):\n%s\n%s", diff, data)
	}
}
