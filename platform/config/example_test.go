package config

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

// examplePath is the commented example that ships in the image.
func examplePath(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "rootfs", "etc", "sbcd", "sbcd.toml")
}

func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(examplePath(t))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// exampleLine is a commented-out setting: "#" directly followed by a key or
// a [table] (prose comments have a space after the "#").
var exampleLine = regexp.MustCompile(`(?m)^#([A-Za-z_\[])`)

// uncomment turns the example settings of the file into real ones.
func uncomment(data []byte) []byte { return exampleLine.ReplaceAll(data, []byte("$1")) }

// TestExampleIsDefault: the shipped file parses, validates, and says
// exactly what Default says, except that it listens on every address.
func TestExampleIsDefault(t *testing.T) {
	c, warnings, err := Check(readExample(t), "sbcd.toml")
	if err != nil {
		t.Fatalf("the example does not parse:\n%v", err)
	}
	want := Default()
	want.SIP.Listen = []string{"udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"}
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("example differs from Default() (-want +got):\n%s", diff)
	}
	// Its warnings are the two a fresh box has: no upstream, no SSH key.
	var keys []string
	if warnings != nil {
		for _, w := range warnings.List {
			keys = append(keys, w.Key)
		}
	}
	if diff := cmp.Diff([]string{"sip.upstream", "ssh.authorized_keys"}, keys); diff != "" {
		t.Errorf("example warnings (-want +got):\n%s\n%v", diff, warnings)
	}
}

// TestExampleExamplesAreValid: with its commented-out examples switched
// on, the file is still valid, and then it sets every key of the schema,
// so the example cannot fall behind the schema.
func TestExampleExamplesAreValid(t *testing.T) {
	data := uncomment(readExample(t))
	c, err := Parse(data, "sbcd.toml (uncommented)")
	if err != nil {
		t.Fatalf("the uncommented example does not validate:\n%v", err)
	}
	if len(c.Devices) == 0 || len(c.Registrar.Users) == 0 || len(c.Network.Interfaces) == 0 || c.SIP.Upstream == "" || len(c.SSH.AuthorizedKeys) == 0 {
		t.Errorf("the uncommented example lacks examples: %+v", c)
	}
	var tree map[string]any
	if _, err := toml.Decode(string(data), &tree); err != nil {
		t.Fatal(err)
	}
	for _, sk := range schemaKeys() {
		if !definedIn(tree, strings.Split(sk.key, ".")) {
			t.Errorf("the example (with its examples uncommented) does not show %s", sk.key)
		}
	}
}

// definedIn reports whether the dotted key is set in the tree; an array
// of tables counts when any element sets the rest of the key.
func definedIn(v any, parts []string) bool {
	if len(parts) == 0 {
		return true
	}
	switch x := v.(type) {
	case map[string]any:
		next, ok := x[parts[0]]
		return ok && definedIn(next, parts[1:])
	case []map[string]any:
		for _, m := range x {
			if definedIn(m, parts) {
				return true
			}
		}
	}
	return false
}

// TestExampleComments: every key of a plain table has its own comment
// block right above it that gives the default, and names the VOS3000
// parameter where there is one.
func TestExampleComments(t *testing.T) {
	lines := strings.Split(string(readExample(t)), "\n")
	table := ""
	seen := map[string]bool{}
	header := regexp.MustCompile(`^#?\[+([a-z_.]+)\]+\s*$`)
	setting := regexp.MustCompile(`^#?([a-z_]+)\s*=`)
	for i, line := range lines {
		if m := header.FindStringSubmatch(line); m != nil {
			table = m[1]
			continue
		}
		m := setting.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := table + "." + m[1]
		var block []string
		for j := i - 1; j >= 0 && strings.HasPrefix(lines[j], "# "); j-- {
			block = append(block, lines[j])
		}
		text := strings.Join(block, "\n")
		if _, plain := Lookup(key); plain && !seen[key] {
			seen[key] = true
			if !strings.Contains(text, "Default") {
				t.Errorf("line %d: %s has no comment right above it giving its default", i+1, key)
			}
			if vos, ok := VOSName(key); ok && !strings.Contains(text, vos) {
				t.Errorf("line %d: the comment of %s does not name %s", i+1, key, vos)
			}
		}
	}
	for _, k := range Keys() {
		if !seen[k] {
			t.Errorf("%s is not in the example", k)
		}
	}
}

// designExample is the example of DESIGN.md §5, verbatim: the keys are a
// contract, so what the design shows must keep parsing.
const designExample = `[system]
hostname = "sbc-01"
board = "auto"                  # auto | rpi4 | nanopi-r2s | qemu-virt | none
data_dir = "/data"

[sip]
listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
advertised_address = ""         # public address to put in Via/Contact, if any
upstream = "sip:softswitch.example.net:5060"   # where calls from devices go
max_calls = 10000               # dialog table size, preallocated at start

[session_timer]
ttl = 600
update_segment = 2
min_se = 90
refresh_method = "auto"
refresher = "sbcd"
no_timer_reinvite_interval = 7200
max_call_duration = 0
early_timeout = 300

[nat_keepalive]
message = "HELLO"
period = 30
send_interval = 10              # milliseconds
send_one_time = 100
mode = "message"
nated_only = true
max_failures = 3

[registrar]
max_bindings = 100000
min_expires = 60
max_expires = 3600
auth = false
[[registrar.user]]
name = "1001"
password = "secret"

[[device]]                      # devices that do not register
name = "pbx"
address = "192.0.2.20:5060"

[cdr]
dir = "/data/cdr"

[trace]
enabled = false

[[network.interface]]
name = "eth0"
addresses = ["192.0.2.10/24"]
gateway = "192.0.2.1"
mtu = 1500
dhcp = false

[leds]                          # optional: override the board profile
status = "sysfs:ACT"            # sysfs:NAME (LED class) or gpio:LINE

[console]
device = ""                     # empty: from the board profile
baud = 115200
password = ""

[ssh]
listen = ":22"
authorized_keys = ["ssh-ed25519 AAAA... admin@laptop"]
`

// TestDesignExample: the example of DESIGN.md §5 decodes without a single
// unknown key or type error; its only problem is the placeholder key.
func TestDesignExample(t *testing.T) {
	_, err := Parse([]byte(designExample), "design.toml")
	checkProblems(t, problemsOf(t, err), []want{{"ssh.authorized_keys[0]", 67, "not a base64 ssh-ed25519 key"}})
	fixed := strings.Replace(designExample, "ssh-ed25519 AAAA... admin@laptop", testKey, 1)
	c, err := Parse([]byte(fixed), "design.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.SIP.Upstream != "sip:softswitch.example.net:5060" || c.Devices[0].Name != "pbx" || c.Registrar.Users[0].Name != "1001" ||
		c.Network.Interfaces[0].Addresses[0] != "192.0.2.10/24" || c.LEDs.Status != "sysfs:ACT" || c.CDRDir() != "/data/cdr" {
		t.Errorf("design example decoded as %+v", c)
	}
}
