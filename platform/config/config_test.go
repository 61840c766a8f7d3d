package config

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// problemsOf returns the problems of err, failing the test when err is not
// a *Problems.
func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		return nil
	}
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %v (%T) is not a *Problems", err, err)
	}
	return ps.List
}

func TestDefaultValues(t *testing.T) {
	c := Default()
	// The defaults of DESIGN.md §2, §3 and §5, and the decisions the
	// package documents (loopback listen, no upstream, CDRs under data_dir).
	want := Config{
		System: System{Hostname: "sbcd", Board: "auto", DataDir: "/data"},
		SIP:    SIP{Listen: []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"}, MaxCalls: 10000},
		SessionTimer: SessionTimer{TTL: 600, UpdateSegment: 2, MinSE: 90, RefreshMethod: "auto", Refresher: "sbcd",
			NoTimerReinviteInterval: 7200, MaxCallDuration: 0, EarlyTimeout: 300},
		NATKeepalive: NATKeepalive{Message: "HELLO", Period: 30, SendInterval: 10, SendOneTime: 100, Mode: "message", NATedOnly: true, MaxFailures: 3},
		Registrar:    Registrar{MaxBindings: 100000, MinExpires: 60, MaxExpires: 3600},
		Console:      Console{Baud: 115200},
		SSH:          SSH{Listen: ":22"},
	}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("Default() mismatch (-want +got):\n%s", diff)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if got := c.CDRDir(); got != "/data/cdr" {
		t.Errorf("CDRDir() = %q, want /data/cdr", got)
	}
	c.CDR.Dir = "/data/calls"
	if got := c.CDRDir(); got != "/data/calls" {
		t.Errorf("CDRDir() with dir set = %q", got)
	}
	// Default returns a fresh copy each time.
	c.SIP.Listen[0] = "changed"
	if Default().SIP.Listen[0] != "udp:127.0.0.1:5060" || DefaultListen[0] != "udp:127.0.0.1:5060" {
		t.Error("Default() shares its listen slice")
	}
}

func TestDurationHelpers(t *testing.T) {
	c := Default()
	s := c.SessionTimer
	checks := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"TTLDuration", s.TTLDuration(), 600 * time.Second},
		{"MinSEDuration", s.MinSEDuration(), 90 * time.Second},
		{"NoTimerReinviteIntervalDuration", s.NoTimerReinviteIntervalDuration(), 2 * time.Hour},
		{"CallDurationLimit", s.CallDurationLimit(), 0},
		{"EarlyTimeoutDuration", s.EarlyTimeoutDuration(), 300 * time.Second},
		{"RefreshAfter", s.RefreshAfter(), 300 * time.Second},
		{"TeardownAfter", s.TeardownAfter(), 568 * time.Second},
		{"PeriodDuration", c.NATKeepalive.PeriodDuration(), 30 * time.Second},
		{"SendIntervalDuration", c.NATKeepalive.SendIntervalDuration(), 10 * time.Millisecond},
		{"MinExpiresDuration", c.Registrar.MinExpiresDuration(), time.Minute},
		{"MaxExpiresDuration", c.Registrar.MaxExpiresDuration(), time.Hour},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	// DESIGN.md §10: SE 90 is torn down at 60 s.
	if got := (SessionTimer{TTL: 90, UpdateSegment: 3}).TeardownAfter(); got != 60*time.Second {
		t.Errorf("TeardownAfter(90) = %v, want 60s", got)
	}
	if got := (SessionTimer{TTL: 90, UpdateSegment: 0}).RefreshAfter(); got != 0 {
		t.Errorf("RefreshAfter with segment 0 = %v, want 0", got)
	}
	if got := c.NATKeepalive.Capacity(); got != 300000 {
		t.Errorf("Capacity() = %d, want 300000", got)
	}
	if got := (NATKeepalive{Period: 30, SendInterval: 0, SendOneTime: 1}).Capacity(); got != 0 {
		t.Errorf("Capacity() with send_interval 0 = %d, want 0", got)
	}
	if !c.NATKeepalive.Enabled() {
		t.Error("default keep-alive not enabled")
	}
	off := NATKeepalive{Mode: "message"}
	if off.Enabled() {
		t.Error(`mode "message" with message "" is enabled`)
	}
	off.Mode = "crlf"
	if !off.Enabled() {
		t.Error(`mode "crlf" with message "" is not enabled`)
	}
}

func TestClone(t *testing.T) {
	c := Default()
	c.Devices = []Device{{Name: "pbx", Address: "192.0.2.20:5060"}}
	c.Network.Interfaces = []Interface{{Name: "eth0", Addresses: []string{"192.0.2.10/24"}}}
	c.SSH.AuthorizedKeys = []string{"k"}
	d := c.Clone()
	if diff := cmp.Diff(&c, d); diff != "" {
		t.Fatalf("Clone differs:\n%s", diff)
	}
	d.SIP.Listen[0] = "x"
	d.Devices[0].Name = "x"
	d.Network.Interfaces[0].Addresses[0] = "x"
	d.SSH.AuthorizedKeys[0] = "x"
	if c.SIP.Listen[0] == "x" || c.Devices[0].Name == "x" || c.Network.Interfaces[0].Addresses[0] == "x" || c.SSH.AuthorizedKeys[0] == "x" {
		t.Error("Clone shares slices with the original")
	}
}

// TestSchemaKinds: the decoder handles string, int, bool, []string, structs
// and slices of structs; a field of any other kind would not decode.
func TestSchemaKinds(t *testing.T) {
	var walk func(t2 reflect.Type, path string)
	walk = func(t2 reflect.Type, path string) {
		for i := range t2.NumField() {
			f := t2.Field(i)
			p := path + "." + f.Name
			if tomlName(f) == "" {
				t.Errorf("%s has no toml tag", p)
				continue
			}
			switch f.Type.Kind() {
			case reflect.String, reflect.Int, reflect.Bool:
			case reflect.Struct:
				walk(f.Type, p)
			case reflect.Slice:
				switch f.Type.Elem().Kind() {
				case reflect.String:
				case reflect.Struct:
					walk(f.Type.Elem(), p)
				default:
					t.Errorf("%s: unsupported slice of %v", p, f.Type.Elem())
				}
			default:
				t.Errorf("%s: unsupported kind %v", p, f.Type.Kind())
			}
		}
	}
	walk(reflect.TypeFor[Config](), "Config")
}

// TestSchemaKeys pins the key names: they are a contract with operators.
func TestSchemaKeys(t *testing.T) {
	var got []string
	for _, sk := range schemaKeys() {
		k := sk.key
		if sk.array {
			k += " (array)"
		}
		got = append(got, k)
	}
	want := []string{
		"system.hostname", "system.board", "system.data_dir",
		"sip.listen", "sip.advertised_address", "sip.upstream", "sip.max_calls",
		"session_timer.ttl", "session_timer.update_segment", "session_timer.min_se", "session_timer.refresh_method",
		"session_timer.refresher", "session_timer.no_timer_reinvite_interval", "session_timer.max_call_duration", "session_timer.early_timeout",
		"nat_keepalive.message", "nat_keepalive.period", "nat_keepalive.send_interval", "nat_keepalive.send_one_time",
		"nat_keepalive.mode", "nat_keepalive.nated_only", "nat_keepalive.max_failures",
		"registrar.max_bindings", "registrar.min_expires", "registrar.max_expires", "registrar.auth",
		"registrar.user.name (array)", "registrar.user.password (array)",
		"device.name (array)", "device.address (array)",
		"cdr.dir", "trace.enabled",
		"network.interface.name (array)", "network.interface.addresses (array)", "network.interface.gateway (array)",
		"network.interface.mtu (array)", "network.interface.dhcp (array)", "network.interface.vlan (array)", "network.interface.parent (array)",
		"leds.status", "leds.sip", "leds.calls", "leds.alarm",
		"console.device", "console.baud", "console.password",
		"ssh.listen", "ssh.authorized_keys", "ssh.password",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("schema keys changed (-want +got); keys are a contract, only add:\n%s", diff)
	}
	if keys := Keys(); slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "device.") }) || len(keys) != len(want)-11 {
		t.Errorf("Keys() = %v: want the %d plain-table keys", keys, len(want)-11)
	}
}

var equateEmpty = cmpopts.EquateEmpty()
