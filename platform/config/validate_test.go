package config

import (
	"strings"
	"testing"
)

// TestValidateRules has one row per rule: a file that breaks it, and the
// problem(s) it must produce, with key and line.
func TestValidateRules(t *testing.T) {
	// up is an upstream, for rows that list devices or users.
	const up = "[sip]\nupstream = \"sip:ss.example.net\"\n"
	tests := []struct {
		name string
		src  string
		want []want
	}{
		// [system]
		{"hostname syntax", "[system]\nhostname = \"-sbc\"\n", []want{{"system.hostname", 2, "not a valid host name"}}},
		{"hostname underscore", "[system]\nhostname = \"sbc_01\"\n", []want{{"system.hostname", 2, "not a valid host name"}}},
		{"board unknown", "[system]\nboard = \"rpi5\"\n", []want{{"system.board", 2, `"rpi5" is not one of auto, rpi4, nanopi-r2s, qemu-virt, none`}}},
		{"data_dir relative", "[system]\n\ndata_dir = \"data\"\n", []want{{"system.data_dir", 3, "not an absolute path"}}},
		{"data_dir empty", "[system]\ndata_dir = \"\"\n", []want{{"system.data_dir", 2, "not an absolute path"}}},

		// [sip]
		{"listen empty", "[sip]\nlisten = []\n", []want{{"sip.listen", 2, "no listen address"}}},
		{"listen transport", "[sip]\nlisten = [\"sctp:0.0.0.0:5060\"]\n", []want{{"sip.listen[0]", 2, "unknown transport"}}},
		{"listen host name", "[sip]\nlisten = [\"udp:sbc.example.net:5060\"]\n", []want{{"sip.listen[0]", 2, "not an IP address"}}},
		{"listen no port", "[sip]\nlisten = [\"udp:0.0.0.0\"]\n", []want{{"sip.listen[0]", 2, "has no port"}}},
		{"listen duplicate on its own line", "[sip]\nlisten = [\n  \"udp:0.0.0.0:5060\",\n  \"udp:0.0.0.0:05060\",\n]\n", []want{{"sip.listen[1]", 4, "already sip.listen[0]"}}},
		{"advertised_address with port", "[sip]\nadvertised_address = \"203.0.113.7:5060\"\n", []want{{"sip.advertised_address", 2, "not an IP address or host name"}}},
		{"advertised_address junk", "[sip]\nadvertised_address = \"a b\"\n", []want{{"sip.advertised_address", 2, "not an IP address or host name"}}},
		{"upstream syntax", "[sip]\nupstream = \"softswitch.example.net\"\n", []want{{"sip.upstream", 2, "not a sip: URI"}}},
		{"upstream required by a device", "[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20:5060\"\n", []want{{"sip.upstream", 1, "1 device(s) and 0 registrar user(s)"}}},
		{"upstream required by a user", "[registrar]\n[[registrar.user]]\nname = \"1001\"\n", []want{{"sip.upstream", 2, "0 device(s) and 1 registrar user(s)"}}},
		{"upstream required, sip table written", "[sip]\nmax_calls = 5\n[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20:5060\"\n", []want{{"sip.upstream", 1, "no upstream"}}},
		{"max_calls 0", "[sip]\nmax_calls = 0\n", []want{{"sip.max_calls", 2, "below the minimum of 1"}}},
		{"max_calls too big", "[sip]\nmax_calls = 1000001\n", []want{{"sip.max_calls", 2, "above the maximum of 1000000"}}},

		// [session_timer]
		{"min_se below 90", "[session_timer]\nmin_se = 89\n", []want{{"session_timer.min_se", 2, "below the RFC 4028 minimum of 90"}}},
		{"min_se above a day", "[session_timer]\nttl = 86400\nmin_se = 86401\n", []want{{"session_timer.ttl", 2, "below session_timer.min_se (86401)"}, {"session_timer.min_se", 3, "above the maximum of 86400"}}},
		{"ttl below 90", "[session_timer]\nttl = 89\n", []want{{"session_timer.ttl", 2, "below the RFC 4028 minimum of 90"}}},
		{"ttl below min_se", "[session_timer]\nttl = 100\nmin_se = 120\n", []want{{"session_timer.ttl", 2, "below session_timer.min_se (120)"}}},
		{"ttl default below a written min_se", "[session_timer]\n\nmin_se = 1000\n", []want{{"session_timer.ttl", 3, "600 is below session_timer.min_se (1000)"}}},
		{"ttl above a day", "[session_timer]\nttl = 86401\n", []want{{"session_timer.ttl", 2, "above the maximum of 86400"}}},
		{"update_segment 1", "[session_timer]\nupdate_segment = 1\n", []want{{"session_timer.update_segment", 2, "below the minimum of 2"}}},
		{"update_segment 61", "[session_timer]\nupdate_segment = 61\n", []want{{"session_timer.update_segment", 2, "above the maximum of 60"}}},
		{"refresh_method", "[session_timer]\nrefresh_method = \"reinvite\"\n", []want{{"session_timer.refresh_method", 2, "not one of auto, update, invite"}}},
		{"refresher", "[session_timer]\nrefresher = \"uac\"\n", []want{{"session_timer.refresher", 2, "not one of sbcd, endpoint"}}},
		{"no_timer_reinvite_interval low", "[session_timer]\nno_timer_reinvite_interval = 59\n", []want{{"session_timer.no_timer_reinvite_interval", 2, "outside 60..86400"}}},
		{"no_timer_reinvite_interval high", "[session_timer]\nno_timer_reinvite_interval = 86401\n", []want{{"session_timer.no_timer_reinvite_interval", 2, "outside 60..86400"}}},
		{"max_call_duration negative", "[session_timer]\nmax_call_duration = -1\n", []want{{"session_timer.max_call_duration", 2, "below the minimum of 0"}}},
		{"max_call_duration over a week", "[session_timer]\nmax_call_duration = 604801\n", []want{{"session_timer.max_call_duration", 2, "above the maximum of 604800"}}},
		{"early_timeout low", "[session_timer]\nearly_timeout = 9\n", []want{{"session_timer.early_timeout", 2, "below the minimum of 10"}}},
		{"early_timeout high", "[session_timer]\nearly_timeout = 3601\n", []want{{"session_timer.early_timeout", 2, "above the maximum of 3600"}}},

		// [nat_keepalive]
		{"message too long", "[nat_keepalive]\nmessage = \"" + strings.Repeat("x", 1025) + "\"\n", []want{{"nat_keepalive.message", 2, "1025 bytes is above the maximum of 1024"}}},
		{"period 0", "[nat_keepalive]\nperiod = 0\n", []want{{"nat_keepalive.period", 2, "below the minimum of 1"}}},
		{"period over an hour", "[nat_keepalive]\nperiod = 3601\n", []want{{"nat_keepalive.period", 2, "above the maximum of 3600"}}},
		{"send_interval 0", "[nat_keepalive]\nsend_interval = 0\n", []want{{"nat_keepalive.send_interval", 2, "below the minimum of 1"}}},
		{"send_interval over a second", "[nat_keepalive]\nsend_interval = 1001\n", []want{{"nat_keepalive.send_interval", 2, "above the maximum of 1000"}}},
		{"send_interval does not divide", "[nat_keepalive]\nperiod = 1\nsend_interval = 7\n", []want{{"nat_keepalive.send_interval", 3, "does not divide period (1 s = 1000 ms)"}}},
		{"send_interval divides only via the period", "[nat_keepalive]\nperiod = 7\n", []want{}},
		{"send_one_time 0", "[nat_keepalive]\nsend_one_time = 0\n", []want{{"nat_keepalive.send_one_time", 2, "below the minimum of 1"}}},
		{"send_one_time too big", "[nat_keepalive]\nsend_one_time = 100001\n", []want{{"nat_keepalive.send_one_time", 2, "above the maximum of 100000"}}},
		{"mode", "[nat_keepalive]\nmode = \"ping\"\n", []want{{"nat_keepalive.mode", 2, "not one of message, crlf, options"}}},
		{"max_failures 0", "[nat_keepalive]\nmax_failures = 0\n", []want{{"nat_keepalive.max_failures", 2, "below the minimum of 1"}}},
		{"max_failures 101", "[nat_keepalive]\nmax_failures = 101\n", []want{{"nat_keepalive.max_failures", 2, "above the maximum of 100"}}},

		// [registrar]
		{"max_bindings 0", "[registrar]\nmax_bindings = 0\n", []want{{"registrar.max_bindings", 2, "below the minimum of 1"}}},
		{"max_bindings too big", "[registrar]\nmax_bindings = 1000001\n", []want{{"registrar.max_bindings", 2, "above the maximum of 1000000"}}},
		{"min_expires 0", "[registrar]\nmin_expires = 0\n", []want{{"registrar.min_expires", 2, "below the minimum of 1"}}},
		{"max_expires over a day", "[registrar]\nmax_expires = 86401\n", []want{{"registrar.max_expires", 2, "above the maximum of 86400"}}},
		{"min_expires above max_expires", "[registrar]\nmin_expires = 7200\n", []want{{"registrar.min_expires", 2, "above registrar.max_expires (3600)"}}},
		{"user without name", up + "[[registrar.user]]\npassword = \"x\"\n", []want{{"registrar.user[0].name", 3, "no name"}}},
		{"user name with a space", up + "[[registrar.user]]\nname = \"10 01\"\n", []want{{"registrar.user[0].name", 4, "not a SIP user name"}}},
		{"user name with @", up + "[[registrar.user]]\nname = \"1001@x\"\n", []want{{"registrar.user[0].name", 4, "not a SIP user name"}}},
		{"user twice", up + "[[registrar.user]]\nname = \"1001\"\n[[registrar.user]]\nname = \"1001\"\n", []want{{"registrar.user[1].name", 6, "already registrar.user[0]"}}},
		{"user without password under auth", up + "[registrar]\nauth = true\n[[registrar.user]]\nname = \"1001\"\n", []want{{"registrar.user[0].password", 5, "no password"}}},

		// [[device]]
		{"device without name", up + "[[device]]\naddress = \"192.0.2.20:5060\"\n", []want{{"device[0].name", 3, "no name"}}},
		{"device name", up + "[[device]]\nname = \"my pbx\"\naddress = \"192.0.2.20:5060\"\n", []want{{"device[0].name", 4, "not a SIP user name"}}},
		{"device twice", up + "[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20:5060\"\n[[device]]\nname = \"pbx\"\naddress = \"192.0.2.21:5060\"\n", []want{{"device[1].name", 7, "already device[0]"}}},
		{"device without address", up + "[[device]]\nname = \"pbx\"\n", []want{{"device[0].address", 3, "no address"}}},
		{"device address host name", up + "[[device]]\nname = \"pbx\"\naddress = \"pbx.example.net:5060\"\n", []want{{"device[0].address", 5, "is not an IP address"}}},
		{"device address no port", up + "[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20\"\n", []want{{"device[0].address", 5, "has no port"}}},
		{"device address port 0", up + "[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20:0\"\n", []want{{"device[0].address", 5, "port 0"}}},
		{"device address bad port", up + "[[device]]\nname = \"pbx\"\naddress = \"192.0.2.20:sip\"\n", []want{{"device[0].address", 5, "bad port"}}},
		{"device address wildcard", up + "[[device]]\nname = \"pbx\"\naddress = \"0.0.0.0:5060\"\n", []want{{"device[0].address", 5, "not the address of one device"}}},
		{"device address junk", "device = [{name = \"pbx\", address = \"x\"}]\n" + up, []want{{"device[0].address", 1, "is not IP:PORT"}}},
		{"device inside another table", up + "device = [{name = \"pbx\", address = \"192.0.2.20:5060\"}]\n", []want{{"sip.device", 3, "unknown key"}}},

		// [cdr]
		{"cdr dir relative", "[cdr]\ndir = \"cdr\"\n", []want{{"cdr.dir", 2, "not an absolute path"}}},

		// [[network.interface]]
		{"interface without name", "[[network.interface]]\ndhcp = true\n", []want{{"network.interface[0].name", 1, "no name"}}},
		{"interface name too long", "[[network.interface]]\nname = \"eth0123456789abcd\"\n", []want{{"network.interface[0].name", 2, "longer than 15 bytes"}}},
		{"interface name slash", "[[network.interface]]\nname = \"eth/0\"\n", []want{{"network.interface[0].name", 2, "Linux refuses"}}},
		{"interface twice", "[[network.interface]]\nname = \"eth0\"\n[[network.interface]]\nname = \"eth0\"\n", []want{{"network.interface[1].name", 4, "already network.interface[0]"}}},
		{"address without prefix", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"192.0.2.10\"]\n", []want{{"network.interface[0].addresses[0]", 3, "not an address/prefix"}}},
		{"address junk", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"192.0.2.10/24\", \"x/24\"]\n", []want{{"network.interface[0].addresses[1]", 3, "not an address/prefix"}}},
		{"address multicast", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"224.0.0.1/4\"]\n", []want{{"network.interface[0].addresses[0]", 3, "not an interface address"}}},
		{"address on two interfaces", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"192.0.2.10/24\"]\n[[network.interface]]\nname = \"eth1\"\naddresses = [\"192.0.2.10/25\"]\n", []want{{"network.interface[1].addresses[0]", 6, "already network.interface[0].addresses[0]"}}},
		{"dhcp with addresses", "[[network.interface]]\nname = \"eth0\"\ndhcp = true\naddresses = [\"192.0.2.10/24\"]\n", []want{{"network.interface[0].addresses", 4, "static addresses and dhcp"}}},
		{"gateway junk", "[[network.interface]]\nname = \"eth0\"\ngateway = \"router\"\n", []want{{"network.interface[0].gateway", 3, "not an IP address"}}},
		{"gateway unspecified", "[[network.interface]]\nname = \"eth0\"\ngateway = \"0.0.0.0\"\n", []want{{"network.interface[0].gateway", 3, "not a router address"}}},
		{"gateway with dhcp", "[[network.interface]]\nname = \"eth0\"\ndhcp = true\ngateway = \"192.0.2.1\"\n", []want{{"network.interface[0].gateway", 4, "DHCP provides the gateway"}}},
		{"two IPv4 gateways", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"192.0.2.10/24\"]\ngateway = \"192.0.2.1\"\n[[network.interface]]\nname = \"eth1\"\naddresses = [\"198.51.100.10/24\"]\ngateway = \"198.51.100.1\"\n", []want{{"network.interface[1].gateway", 8, "second IPv4 default route"}}},
		{"two IPv6 gateways", "[[network.interface]]\nname = \"eth0\"\ngateway = \"fe80::1\"\n[[network.interface]]\nname = \"eth1\"\ngateway = \"fe80::2\"\n", []want{{"network.interface[1].gateway", 6, "second IPv6 default route"}}},
		{"mtu low", "[[network.interface]]\nname = \"eth0\"\nmtu = 575\n", []want{{"network.interface[0].mtu", 3, "below the minimum of 576"}}},
		{"mtu high", "[[network.interface]]\nname = \"eth0\"\nmtu = 9217\n", []want{{"network.interface[0].mtu", 3, "above the maximum of 9216"}}},
		{"mtu too low for IPv6", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"2001:db8::10/64\"]\nmtu = 1000\n", []want{{"network.interface[0].mtu", 4, "below the IPv6 minimum of 1280"}}},
		{"vlan out of range", "[[network.interface]]\nname = \"eth0.4095\"\nvlan = 4095\nparent = \"eth0\"\n", []want{{"network.interface[0].vlan", 3, "outside the 802.1Q VLAN IDs"}}},
		{"vlan without parent", "[[network.interface]]\nname = \"eth0.100\"\nvlan = 100\n", []want{{"network.interface[0].parent", 3, "needs the parent link"}}},
		{"parent without vlan", "[[network.interface]]\nname = \"eth0.100\"\nparent = \"eth0\"\n", []want{{"network.interface[0].parent", 3, "parent is set but vlan is not"}}},
		{"parent is itself", "[[network.interface]]\nname = \"eth0\"\nvlan = 100\nparent = \"eth0\"\n", []want{{"network.interface[0].parent", 4, "its own parent"}}},
		{"parent name", "[[network.interface]]\nname = \"v100\"\nvlan = 100\nparent = \"eth 0\"\n", []want{{"network.interface[0].parent", 4, "Linux refuses"}}},
		{"vlan twice", "[[network.interface]]\nname = \"a\"\nvlan = 100\nparent = \"eth0\"\n[[network.interface]]\nname = \"b\"\nvlan = 100\nparent = \"eth0\"\n", []want{{"network.interface[1].vlan", 7, "VLAN 100 on eth0 is already network.interface[0]"}}},

		// [leds]
		{"led status", "[leds]\nstatus = \"ACT\"\n", []want{{"leds.status", 2, "not sysfs:NAME or gpio:LINE"}}},
		{"led sip", "[leds]\nsip = \"sysfs:\"\n", []want{{"leds.sip", 2, "names no LED"}}},
		{"led calls", "[leds]\ncalls = \"gpio:1 7\"\n", []want{{"leds.calls", 2, "contains a space"}}},
		{"led alarm", "[leds]\nalarm = \"sysfs:..\"\n", []want{{"leds.alarm", 2, "not an LED name"}}},

		// [console]
		{"console device relative", "[console]\ndevice = \"ttyS0\"\n", []want{{"console.device", 2, "not an absolute device path"}}},
		{"console baud", "[console]\nbaud = 115201\n", []want{{"console.baud", 2, "not a standard serial speed"}}},

		// [ssh]
		{"ssh listen without port", "[ssh]\nlisten = \"0.0.0.0\"\n", []want{{"ssh.listen", 2, "not HOST:PORT"}}},
		{"ssh listen host name", "[ssh]\nlisten = \"box:22\"\n", []want{{"ssh.listen", 2, "is not an IP address"}}},
		{"ssh listen port", "[ssh]\nlisten = \":0\"\n", []want{{"ssh.listen", 2, "not a port"}}},
		{"authorized key placeholder", "[ssh]\nauthorized_keys = [\n  \"" + testKey + "\",\n  \"ssh-ed25519 AAAA... admin@laptop\",\n]\n", []want{{"ssh.authorized_keys[1]", 4, "not a base64 ssh-ed25519 key"}}},
		{"authorized key with options", "[ssh]\nauthorized_keys = [\"from=\\\"10.0.0.0/8\\\",no-pty " + testKey + "\"]\n", []want{{"ssh.authorized_keys[0]", 2, "key options"}}},
		{"authorized key private", "[ssh]\nauthorized_keys = [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]\n", []want{{"ssh.authorized_keys[0]", 2, "private key"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "t.toml")
			checkProblems(t, problemsOf(t, err), tt.want)
		})
	}
}

// TestValidateAccepts: values at the edges of every range are accepted.
func TestValidateAccepts(t *testing.T) {
	src := `[system]
hostname = ""
board = "none"
data_dir = "/var/lib/sbcd"

[sip]
listen = ["udp:[::]:5060", "tcp:[::]:5060", "udp:0.0.0.0:5080", "tcp:0.0.0.0:5080"]
advertised_address = "sbc.example.net"
upstream = "sip:[2001:db8::1]:5060;transport=tcp"
max_calls = 1000000

[session_timer]
ttl = 90
update_segment = 60
min_se = 90
refresh_method = "invite"
refresher = "endpoint"
no_timer_reinvite_interval = 0
max_call_duration = 604800
early_timeout = 10

[nat_keepalive]
message = ""
period = 3600
send_interval = 1000
send_one_time = 100000
mode = "options"
nated_only = false
max_failures = 100

[registrar]
max_bindings = 1
min_expires = 86400
max_expires = 86400
auth = true
[[registrar.user]]
name = "1001"
password = "s3cret-pass"
[[registrar.user]]
name = "alice.smith"
password = "x"

[[device]]
name = "pbx"
address = "[2001:db8::20]:5060"

[cdr]
dir = "/data/cdr"

[trace]
enabled = true

[[network.interface]]
name = "eth0"
addresses = ["192.0.2.10/24", "2001:db8::10/64"]
gateway = "192.0.2.1"
mtu = 9216

[[network.interface]]
name = "eth0.100"
vlan = 4094
parent = "eth0"
dhcp = true
mtu = 576

[leds]
status = "sysfs:ACT"
sip = "gpio:17"
calls = "sysfs:nanopi-r2s:green:lan"
alarm = ""

[console]
device = "/dev/ttyAMA0"
baud = 1200
password = "console"

[ssh]
listen = "[::1]:2222"
authorized_keys = ["` + testKey + `"]
password = ""
`
	if _, err := Parse([]byte(src), "t.toml"); err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, l := range []string{"udp:[::1]:5060", "tcp:192.0.2.10:5060"} {
		c := Default()
		c.SIP.Listen = []string{l}
		if err := c.Validate(); err != nil {
			t.Errorf("listen %q: %v", l, err)
		}
	}
}

// TestValidateNoLines: Validate on a Config that is not from a file gives
// the same keys without lines, and never panics on nonsense.
func TestValidateNoLines(t *testing.T) {
	c := Default()
	c.SessionTimer.MinSE = 60
	c.Devices = []Device{{}}
	ps := problemsOf(t, c.Validate())
	checkProblems(t, ps, []want{
		{"sip.upstream", 0, "no upstream"},
		{"session_timer.min_se", 0, "below the RFC 4028 minimum"},
		{"device[0].name", 0, "no name"},
		{"device[0].address", 0, "no address"},
	})
	if got := c.Validate().Error(); !strings.HasPrefix(got, "sip.upstream: no upstream") {
		t.Errorf("Error() = %q", got)
	}

	var zero Config
	if err := zero.Validate(); err == nil {
		t.Error("the zero Config validates")
	}
	_ = zero.Warnings()
	huge := Default()
	huge.SessionTimer.TTL = 1 << 62
	huge.NATKeepalive.Period = 1 << 62
	huge.NATKeepalive.SendInterval = -1
	huge.NATKeepalive.SendOneTime = 1 << 62
	_ = huge.Validate()
	_ = huge.Warnings()
	_, _ = huge.SessionTimer.RefreshAfter(), huge.NATKeepalive.Capacity()
}

// TestWarnings has one row per warning.
func TestWarnings(t *testing.T) {
	base := func(edit func(c *Config)) *Config {
		c := Default()
		c.SIP.Upstream = "sip:ss.example.net"
		c.SSH.AuthorizedKeys = []string{testKey}
		edit(&c)
		return &c
	}
	tests := []struct {
		name string
		cfg  *Config
		key  string
		msg  string
	}{
		{"no upstream", base(func(c *Config) { c.SIP.Upstream = "" }), "sip.upstream", "no upstream"},
		{"refresh too often", base(func(c *Config) { c.SessionTimer.TTL, c.SessionTimer.UpdateSegment = 90, 4 }), "session_timer.update_segment", "a refresh every 22.5s"},
		{"no dead-call detection", base(func(c *Config) { c.SessionTimer.NoTimerReinviteInterval = 0 }), "session_timer.no_timer_reinvite_interval", "stays up"},
		{"long keep-alive period", base(func(c *Config) { c.NATKeepalive.Period = 60 }), "nat_keepalive.period", "many NATs forget"},
		{"pacing below the table", base(func(c *Config) { c.NATKeepalive.SendOneTime = 3 }), "nat_keepalive.send_one_time", "reaches at most 9000 bindings"},
		{"auth without users", base(func(c *Config) { c.Registrar.Auth = true }), "registrar.auth", "no phone can register"},
		{"passwords without auth", base(func(c *Config) { c.Registrar.Users = []User{{Name: "1001", Password: "x"}} }), "registrar.user[0].password", "not checked"},
		{"device and user share a name", base(func(c *Config) {
			c.Registrar.Users = []User{{Name: "pbx"}}
			c.Devices = []Device{{Name: "pbx", Address: "192.0.2.20:5060"}}
		}), "device[0].name", "also a registrar user"},
		{"wildcard and specific listen", base(func(c *Config) { c.SIP.Listen = []string{"tcp:0.0.0.0:5060", "tcp:127.0.0.1:5060"} }), "sip.listen[1]", "overlaps a wildcard"},
		{"cdr outside data", base(func(c *Config) { c.CDR.Dir = "/var/cdr" }), "cdr.dir", "outside system.data_dir"},
		{"gateway off link", base(func(c *Config) {
			c.Network.Interfaces = []Interface{{Name: "eth0", Addresses: []string{"192.0.2.10/24"}, Gateway: "198.51.100.1"}}
		}), "network.interface[0].gateway", "in none of the interface's prefixes"},
		{"two roles on one LED", base(func(c *Config) { c.LEDs.Status, c.LEDs.Alarm = "sysfs:ACT", "sysfs:ACT" }), "leds.alarm", "also drives leds.status"},
		{"ssh without a way in", base(func(c *Config) { c.SSH.AuthorizedKeys = nil }), "ssh.authorized_keys", "does not start"},
		{"short ssh password", base(func(c *Config) { c.SSH.Password = "1234" }), "ssh.password", "shorter than 8"},
	}
	// The base itself is quiet.
	if w := base(func(*Config) {}).Warnings(); len(w) != 0 {
		t.Fatalf("base config has warnings: %v", w)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); err != nil {
				t.Fatalf("a warning row must be valid: %v", err)
			}
			w := tt.cfg.Warnings()
			if len(w) != 1 || w[0].Key != tt.key || !strings.Contains(w[0].Msg, tt.msg) {
				t.Errorf("Warnings() = %v\nwant one on %s containing %q", w, tt.key, tt.msg)
			}
		})
	}
	// Keep-alives off: no keep-alive warnings.
	off := base(func(c *Config) {
		c.NATKeepalive.Message, c.NATKeepalive.Period, c.NATKeepalive.SendOneTime = "", 600, 1
	})
	if w := off.Warnings(); len(w) != 0 {
		t.Errorf("keep-alives off, yet warnings: %v", w)
	}
}
