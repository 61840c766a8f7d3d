package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// want is an expected problem: its key, line and part of its message.
type want struct {
	key  string
	line int
	msg  string
}

// checkProblems compares problems with wants, in order.
func checkProblems(t *testing.T, got []Problem, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("got %d problems, want %d:\n%s", len(got), len(wants), (&Problems{File: "t.toml", List: got}).Error())
	}
	for i, w := range wants {
		p := got[i]
		if p.Key != w.key || p.Line != w.line || !strings.Contains(p.Msg, w.msg) {
			t.Errorf("problem %d = %s\nwant key %q, line %d, message containing %q", i, p.Format("t.toml"), w.key, w.line, w.msg)
		}
	}
}

func parseErrs(t *testing.T, src string) []Problem {
	t.Helper()
	c, err := Parse([]byte(src), "t.toml")
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", src)
	}
	if c != nil {
		t.Error("Parse returned a config along with problems")
	}
	return problemsOf(t, err)
}

func TestParseEmptyIsDefault(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "\ufeff\n", "[sip]\n[session_timer]\n"} {
		c, err := Parse([]byte(src), "t.toml")
		if err != nil {
			t.Fatalf("Parse(%q): %v", src, err)
		}
		if diff := cmp.Diff(Default(), *c); diff != "" {
			t.Errorf("Parse(%q) differs from Default():\n%s", src, diff)
		}
	}
}

func TestParseKeepsDefaultsOfUnwrittenKeys(t *testing.T) {
	c, err := Parse([]byte("[session_timer]\nttl = 1800\n[nat_keepalive]\nmode = \"options\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.SessionTimer.TTL = 1800
	want.NATKeepalive.Mode = "options"
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUnknownKeys(t *testing.T) {
	src := `# line 1
colour = "red"

[system]
hostname = "sbc-01"
hostnmae = "typo"

[session_timers]
ttl = 600

[session_timer]
SS_SIP_SESSION_TTL = 600
period = 30

[[device]]
name = "pbx"
address = "192.0.2.20:5060"

[[device]]
name = "gw"
address = "192.0.2.21:5060"
port = 5060

[[registrar.user]]
name = "1001"
secret = "x"

[network]
interface = [{ name = "eth0", gw = "192.0.2.1" }]

[sip.extra]
a = 1
[sip]
upstream = "sip:ss.example.net"
"quoted key" = 1
`
	checkProblems(t, parseErrs(t, src), []want{
		{"colour", 2, "unknown key"},
		{"system.hostnmae", 6, "unknown key"},
		{"session_timers", 8, "unknown key"},
		{"session_timer.SS_SIP_SESSION_TTL", 12, "unknown key"},
		{"session_timer.period", 13, "unknown key"},
		{"device[1].port", 22, "unknown key"},
		{"registrar.user[0].secret", 26, "unknown key"},
		{"network.interface[0].gw", 29, "unknown key"},
		{"sip.extra", 31, "unknown key"},
		{`sip."quoted key"`, 35, "unknown key"},
	})
	// The hints point at what was meant.
	got := parseErrs(t, src)
	hints := map[string]string{
		"system.hostnmae":                  "did you mean hostname?",
		"session_timers":                   "did you mean session_timer?",
		"session_timer.SS_SIP_SESSION_TTL": "write ttl = ... under [session_timer]",
		"session_timer.period":             "period belongs in [nat_keepalive]",
		"device[1].port":                   "the keys of [device] are address, name",
		"colour":                           "the tables are cdr, console, device,",
	}
	for _, p := range got {
		if h, ok := hints[p.Key]; ok && !strings.Contains(p.Hint, h) {
			t.Errorf("%s: hint %q, want it to contain %q", p.Key, p.Hint, h)
		}
	}
}

func TestTypeErrors(t *testing.T) {
	src := `[system]
hostname = 42
board = "auto"

[sip]
listen = "udp:0.0.0.0:5060"
max_calls = "10000"
upstream = "sip:ss.example.net"

[session_timer]
ttl = 600.0
update_segment = 2.5
refresher = true

[nat_keepalive]
nated_only = "true"
message = ["HELLO"]

[cdr]
dir = 1979-05-27

[[device]]
name = "pbx"
address = 5060

[[network.interface]]
name = "eth0"
addresses = ["192.0.2.10/24", 24]
dhcp = 0

[leds]
status = { sysfs = "ACT" }

[trace]
enabled = "on"
`
	got := parseErrs(t, src)
	checkProblems(t, got, []want{
		{"system.hostname", 2, "expected a string, got the integer 42"},
		{"sip.listen", 6, `expected a list of strings, got a string "udp:0.0.0.0:5060"`},
		{"sip.max_calls", 7, `expected an integer, got a string "10000"`},
		{"session_timer.ttl", 11, "expected an integer, got the float 600"},
		{"session_timer.update_segment", 12, "expected an integer, got the float 2.5"},
		{"session_timer.refresher", 13, "expected a string, got the boolean true"},
		{"nat_keepalive.nated_only", 16, `expected true or false, got a string "true"`},
		{"nat_keepalive.message", 17, "expected a string, got a list"},
		{"cdr.dir", 20, "expected a string, got a date/time"},
		{"device[0].address", 24, "expected a string, got the integer 5060"},
		{"network.interface[0].addresses[1]", 28, "expected a string, got the integer 24"},
		{"network.interface[0].dhcp", 29, "expected true or false, got the integer 0"},
		{"leds.status", 32, "expected a string, got a table"},
		{"trace.enabled", 35, `expected true or false, got a string "on"`},
	})
	hints := map[string]string{
		"sip.max_calls":     "write 10000 without quotes",
		"session_timer.ttl": "write 600, without a decimal point",
		"sip.listen":        "write a list in brackets",
	}
	for _, p := range got {
		if h, ok := hints[p.Key]; ok && !strings.Contains(p.Hint, h) {
			t.Errorf("%s: hint %q, want it to contain %q", p.Key, p.Hint, h)
		}
	}
}

func TestTableShapeErrors(t *testing.T) {
	checkProblems(t, parseErrs(t, "sip = 5\n"), []want{{"sip", 1, "expected a table"}})
	checkProblems(t, parseErrs(t, "[device]\nname = \"pbx\"\n"), []want{{"device", 1, "expected a list of tables"}})
	got := parseErrs(t, "[device]\nname = \"pbx\"\n")
	if !strings.Contains(got[0].Hint, "[[device]]") {
		t.Errorf("hint %q does not show [[device]]", got[0].Hint)
	}
}

// TestAllProblemsAtOnce: unknown keys, type errors and rule violations of
// one file come back together, in line order, and a value that did not
// decode is not also reported by a rule about its default.
func TestAllProblemsAtOnce(t *testing.T) {
	src := `[sip]
listen = ["udp:0.0.0.0:5060", "sctp:0.0.0.0:5060"]
max_calls = 0

[session_timer]
min_se = "90"
ttl = 60
refresh_method = "INVITE"
bogus = 1

[nat_keepalive]
period = 0
`
	checkProblems(t, parseErrs(t, src), []want{
		{"sip.listen[1]", 2, "unknown transport"},
		{"sip.max_calls", 3, "below the minimum of 1"},
		{"session_timer.min_se", 6, "expected an integer"},
		{"session_timer.ttl", 7, "below the RFC 4028 minimum of 90"},
		{"session_timer.refresh_method", 8, `"INVITE" is not one of auto, update, invite`},
		{"session_timer.bogus", 9, "unknown key"},
		{"nat_keepalive.period", 12, "below the minimum of 1"},
	})
}

func TestSyntaxError(t *testing.T) {
	src := "[sip]\nmax_calls = 10\nupstream = sip:softswitch.example.net\n"
	got := parseErrs(t, src)
	checkProblems(t, got, []want{{"", 3, "TOML syntax (column"}})
	if !strings.Contains(got[0].Hint, "double quotes") {
		t.Errorf("hint = %q", got[0].Hint)
	}
	checkProblems(t, parseErrs(t, "[sip]\nmax_calls = 1\nmax_calls = 2\n"), []want{{"", 3, "already been defined"}})
	checkProblems(t, parseErrs(t, "[sip\n"), []want{{"", 1, "TOML syntax"}}) // the unclosed bracket is on line 1
	checkProblems(t, parseErrs(t, "a = \"\xff\"\n"), []want{{"", 1, "TOML syntax"}})
}

func TestProblemsError(t *testing.T) {
	_, err := Parse([]byte("[session_timer]\nmin_se = 60\nttl = 600\n"), "sbcd.toml")
	want := "sbcd.toml:2: session_timer.min_se: 60 is below the RFC 4028 minimum of 90 (hint: use 90 or more)"
	if err == nil || err.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", err, want)
	}
	_, err = Parse([]byte("[session_timer]\nttl = 50\n"), "sbcd.toml")
	if err == nil || !strings.HasPrefix(err.Error(), "sbcd.toml:2: session_timer.ttl (SS_SIP_SESSION_TTL): 50 is below") {
		t.Errorf("Error() = %q: want the VOS name after the key", err)
	}
	p := Problem{Key: "sip.max_calls", Msg: "m"}
	if got := p.Format(""); got != "sip.max_calls: m" {
		t.Errorf("Format without file or line = %q", got)
	}
	p.Line = 3
	if got := p.String(); got != "line 3: sip.max_calls: m" {
		t.Errorf("String with a line = %q", got)
	}
	if got := (Problem{Msg: "m"}).Format("f"); got != "f: m" {
		t.Errorf("Format without line or key = %q", got)
	}
	ps := &Problems{File: "f", List: []Problem{{Line: 1, Key: "a", Msg: "x"}, {Key: "b", Msg: "y", Hint: "z"}}}
	if got := ps.Error(); got != "f:1: a: x\nf: b: y (hint: z)" {
		t.Errorf("Problems.Error() = %q", got)
	}
}

func TestCheckWarnings(t *testing.T) {
	src := `[sip]
listen = ["udp:0.0.0.0:5060", "udp:192.0.2.10:5060"]

[nat_keepalive]
period = 90
send_one_time = 1

[registrar]
auth = true
max_bindings = 1000000
`
	c, warnings, err := Check([]byte(src), "t.toml")
	if err != nil || c == nil {
		t.Fatalf("Check: %v", err)
	}
	if warnings == nil || warnings.File != "t.toml" {
		t.Fatalf("warnings = %+v", warnings)
	}
	checkProblems(t, warnings.List, []want{
		{"sip.upstream", 1, "no upstream"},
		{"sip.listen[1]", 2, "overlaps a wildcard"},
		{"nat_keepalive.period", 5, "many NATs forget"},
		{"nat_keepalive.send_one_time", 6, "reaches at most 9000 bindings per 90 s period"},
		{"registrar.auth", 9, "no [[registrar.user]]"},
		{"ssh.authorized_keys", 0, "SSH service does not start"},
	})
	// Parse of the same file succeeds: warnings are not problems.
	if _, err := Parse([]byte(src), "t.toml"); err != nil {
		t.Errorf("Parse: %v", err)
	}
	// No warnings at all: nil.
	quiet := "[sip]\nupstream = \"sip:ss.example.net\"\n[ssh]\nlisten = \"\"\n"
	if _, w, err := Check([]byte(quiet), "t.toml"); err != nil || w != nil {
		t.Errorf("Check(quiet) = %v, %v", w, err)
	}
}

func TestLocateKeys(t *testing.T) {
	src := "\ufeff# comment [not.a.table]\r\n" + // 1
		"top = 1 # x = 2\r\n" + // 2
		`s = """` + "\n" + // 3
		`[fake]` + "\n" + // 4
		`fake = 1 \"""` + "\n" + // 5
		`"""` + "\n" + // 6
		"l = '''\n[fake2]\n''''\n" + // 7-9
		"[a . \"b.c\"]\n" + // 10
		"d.e = { f = 1, g = [1, {h = 2}] }\n" + // 11
		"arr = [\n  'x]',\n  \"y\\\"]\", # c\n  [3],\n]\n" + // 12-16
		"[[t]]\n" + // 17
		"k = 1\n" + // 18
		"[[t.u]]\n" + // 19
		"[[t]]\n" + // 20
		"[[t.u]]\n" + // 21
		"v = 1979-05-27 07:32:00Z\n" + // 22
		"[[t.u]]\n" + // 23
		"'lit key' = 2\n" + // 24
		"w = {x = 1}\n" // 25
	got := locateKeys(src)
	wants := map[string]int{
		"top": 2, "s": 3, "l": 7,
		"a": 10, `a."b.c"`: 10, `a."b.c".d`: 11, `a."b.c".d.e`: 11, `a."b.c".d.e.f`: 11, `a."b.c".d.e.g`: 11,
		`a."b.c".d.e.g[1].h`: 11, `a."b.c".arr`: 12, `a."b.c".arr[0]`: 13, `a."b.c".arr[1]`: 14, `a."b.c".arr[2]`: 15, `a."b.c".arr[2][0]`: 15,
		"t": 17, "t[0]": 17, "t[0].k": 18, "t[0].u[0]": 19, "t[1]": 20, "t[1].u[0]": 21, "t[1].u[0].v": 22, "t[1].u[1]": 23,
		`t[1].u[1]."lit key"`: 24, "t[1].u[1].w.x": 25,
	}
	for k, line := range wants {
		if got[k] != line {
			t.Errorf("line of %s = %d, want %d", k, got[k], line)
		}
	}
	for _, k := range []string{"fake", "fake2", "x", "not", "fake.fake"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s found, but it is inside a string or comment", k)
		}
	}
	// The document is valid TOML: the locator only ever sees such input.
	if _, err := Parse([]byte(src), "t.toml"); err == nil || strings.Contains(err.Error(), "TOML syntax") {
		t.Errorf("the locator test document must be valid TOML: %v", err)
	}
}

func TestKeyLinesFind(t *testing.T) {
	kl := keyLines{"sip": 3, "device[1]": 10, "session_timer.min_se": 7}
	tests := []struct {
		key     string
		related []string
		want    int
	}{
		{"sip.upstream", nil, 3},
		{"device[1].address", nil, 10},
		{"device[2].address", nil, 0},
		{"session_timer.ttl", []string{"session_timer.min_se"}, 7},
		{"nothing", nil, 0},
	}
	for _, tt := range tests {
		if got := kl.find(tt.key, tt.related); got != tt.want {
			t.Errorf("find(%q, %v) = %d, want %d", tt.key, tt.related, got, tt.want)
		}
	}
}
