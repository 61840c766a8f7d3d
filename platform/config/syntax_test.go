package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testKey is a well-formed ed25519 public key line whose private key was
// thrown away (the same one the example file shows).
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICnJJPY1HAevWoVRIiZ2BBXulHelASgKbTuAO/GsPnBt admin@laptop"

func TestParseListen(t *testing.T) {
	good := map[string]string{
		"udp:0.0.0.0:5060":        "udp:0.0.0.0:5060",
		"tcp:127.0.0.1:5080":      "tcp:127.0.0.1:5080",
		"udp:[::1]:5060":          "udp:[::1]:5060",
		"tcp:[::]:5060":           "tcp:[::]:5060",
		"udp:[fe80::1%eth0]:5060": "udp:[fe80::1%eth0]:5060",
	}
	for in, want := range good {
		l, err := ParseListen(in)
		if err != nil {
			t.Errorf("ParseListen(%q): %v", in, err)
			continue
		}
		if l.String() != want {
			t.Errorf("ParseListen(%q).String() = %q, want %q", in, l.String(), want)
		}
	}
	if l, _ := ParseListen("udp:[::1]:5060"); l.Transport != "udp" || l.Addr.Port() != 5060 || !l.Addr.Addr().IsLoopback() {
		t.Errorf("ParseListen fields = %+v", l)
	}
	bad := map[string]string{ // input → part of the message or hint
		"":                     "not TRANSPORT:HOST:PORT",
		"0.0.0.0:5060":         "unknown transport",
		"UDP:0.0.0.0:5060":     "lower case",
		"tls:0.0.0.0:5061":     "unknown transport",
		"udp:0.0.0.0":          "has no port",
		"udp:[::1]":            "has no port",
		"udp::5060":            "has no address",
		"udp:example.net:5060": "not an IP address",
		"udp:0.0.0.0:0":        "port 0",
		"udp:0.0.0.0:99999":    "not a port",
		"udp:0.0.0.0:http":     "not a port",
		"udp:::1:5060":         "needs brackets",
		"udp:garbage":          "not TRANSPORT:HOST:PORT",
	}
	for in, want := range bad {
		_, err := ParseListen(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseListen(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestParseSIPURI(t *testing.T) {
	good := []struct {
		in   string
		want SIPURI
	}{
		{"sip:softswitch.example.net", SIPURI{Host: "softswitch.example.net"}},
		{"sip:softswitch.example.net:5060", SIPURI{Host: "softswitch.example.net", Port: 5060}},
		{"SIP:Example.NET.", SIPURI{Host: "Example.NET."}},
		{"sip:192.0.2.1:5080", SIPURI{Host: "192.0.2.1", Port: 5080}},
		{"sip:[2001:db8::1]:5060", SIPURI{Host: "2001:db8::1", Port: 5060}},
		{"sip:[2001:db8::1]", SIPURI{Host: "2001:db8::1"}},
		{"sip:ss.example.net;transport=tcp;lr", SIPURI{Host: "ss.example.net", Params: []URIParam{{"transport", "tcp"}, {"lr", ""}}}},
		{"sip:ss.example.net:5060;x-tag=a%20b", SIPURI{Host: "ss.example.net", Port: 5060, Params: []URIParam{{"x-tag", "a%20b"}}}},
	}
	for _, tt := range good {
		got, err := ParseSIPURI(tt.in)
		if err != nil {
			t.Errorf("ParseSIPURI(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, equateEmpty); diff != "" {
			t.Errorf("ParseSIPURI(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	u, _ := ParseSIPURI("sip:[2001:db8::1];transport=TCP")
	if u.String() != "sip:[2001:db8::1];transport=TCP" || u.Transport() != "tcp" || u.HostPort() != "[2001:db8::1]:5060" {
		t.Errorf("String/Transport/HostPort = %q %q %q", u.String(), u.Transport(), u.HostPort())
	}
	if v, ok := u.Param("Transport"); !ok || v != "TCP" {
		t.Errorf("Param(Transport) = %q, %v", v, ok)
	}

	bad := map[string]string{
		"":                              "not a sip: URI",
		"softswitch.example.net":        "not a sip: URI",
		"http://example.net":            "not a sip: URI",
		"sips:example.net":              "TLS",
		"sip:":                          "no host",
		"sip:1001@example.net":          "not a user@host",
		"sip:example.net?Subject=x":     "headers",
		"sip:example.net:":              "not a port",
		"sip:example.net:0":             "not a port",
		"sip:example.net:65536":         "not a port",
		"sip:example.net:+506":          "not a port",
		"sip:example.net:5060:5060":     "too many colons",
		"sip:2001:db8::1":               "too many colons",
		"sip:[2001:db8::1":              "unclosed",
		"sip:[192.0.2.1]":               "not an IPv6 address",
		"sip:[fe80::1%eth0]":            "not an IPv6 address",
		"sip:[::1]x":                    "unexpected",
		"sip:exa mple.net":              "not a host name",
		"sip:-example.net":              "not a host name",
		"sip:1.2.3":                     "not a host name",
		"sip:999.1.1.1":                 "not a host name",
		"sip:example..net":              "not a host name",
		"sip:example.net;":              "empty URI parameter",
		"sip:example.net;;lr":           "empty URI parameter",
		"sip:example.net;transport=":    "bad value",
		"sip:example.net;transport=tls": "not served",
		"sip:example.net;lr;LR":         "appears twice",
		"sip:example.net;a b":           "bad URI parameter name",
		"sip:example.net;a=b=c":         "bad value",
		"sip:example.net;a=%zz":         "bad value",
	}
	for in, want := range bad {
		_, err := ParseSIPURI(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSIPURI(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

// FuzzUpstreamURI: ParseSIPURI never panics, and what it accepts renders to
// a string that parses back to the same URI (and renders the same again).
func FuzzUpstreamURI(f *testing.F) {
	for _, s := range []string{
		"sip:softswitch.example.net:5060", "sip:[2001:db8::1]:5060;transport=tcp;lr", "SIP:192.0.2.1",
		"sip:a.b;x=%41", "sips:x", "sip:x@y", "sip:[::ffff:192.0.2.1]", "sip:example.net.;maddr=[::1]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseSIPURI(s)
		if err != nil {
			return
		}
		out := u.String()
		u2, err := ParseSIPURI(out)
		if err != nil {
			t.Fatalf("ParseSIPURI(%q) = %+v, but its String %q does not parse: %v", s, u, out, err)
		}
		if !cmp.Equal(u, u2, equateEmpty) {
			t.Fatalf("round trip of %q: %+v != %+v", s, u, u2)
		}
		if u2.String() != out {
			t.Fatalf("String not stable: %q then %q", out, u2.String())
		}
		if u.Port < 0 || u.Port > 65535 || u.Host == "" {
			t.Fatalf("ParseSIPURI(%q) = %+v", s, u)
		}
		_ = u.HostPort()
	})
}

func TestCheckAuthorizedKey(t *testing.T) {
	for _, ok := range []string{
		testKey,
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICnJJPY1HAevWoVRIiZ2BBXulHelASgKbTuAO/GsPnBt",
		"  " + testKey + "  ",
	} {
		if err := checkAuthorizedKey(ok); err != nil {
			t.Errorf("checkAuthorizedKey(%q): %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"":                                 "empty key",
		"ssh-ed25519 AAAA... admin@laptop": "not a base64",
		"ssh-ed25519":                      "not followed",
		"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAICnJJPY1HAevWoVRIiZ2BBXulHelASgKbTuAO/GsPnBt": "not a base64 ssh-rsa key",
		"-----BEGIN OPENSSH PRIVATE KEY-----":                                          "private key",
		testKey + "\n" + testKey:                                                       "several lines",
		"hello world":                                                                  "not an OpenSSH public key line",
	} {
		err := checkAuthorizedKey(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkAuthorizedKey(%q) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestCheckLED(t *testing.T) {
	for _, ok := range []string{"", "sysfs:ACT", "sysfs:nanopi-r2s:red:sys", "gpio:17", "gpio:GPIO17"} {
		if err := checkLED(ok); err != nil {
			t.Errorf("checkLED(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"ACT", "sysfs:", "gpio:", "led:ACT", "sysfs:../x", "sysfs:a b", "sysfs:..", "SYSFS:ACT"} {
		if err := checkLED(bad); err == nil {
			t.Errorf("checkLED(%q) accepted", bad)
		}
	}
}

func TestValidHostname(t *testing.T) {
	for _, ok := range []string{"sbcd", "sbc-01", "box.example.net", "box.example.net.", "a1", "0box", strings.Repeat("a", 63)} {
		if !validHostname(ok, false) {
			t.Errorf("validHostname(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", ".", "-a", "a-", "a..b", "a_b", "a b", "1.2.3.4", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "a"} {
		if validHostname(bad, false) {
			t.Errorf("validHostname(%q) = true", bad)
		}
	}
	if validHostname("example.123", true) || !validHostname("123.example", true) {
		t.Error("the SIP toplabel rule is not applied")
	}
}
