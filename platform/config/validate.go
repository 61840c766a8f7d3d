package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Limits that Validate enforces. The session-timer and keep-alive ranges
// are those of DESIGN.md §2 and §3, and of the timers packages that take
// these values.
const (
	// absoluteMinSE is the floor of RFC 4028 §5: Min-SE is never below
	// 90 seconds.
	absoluteMinSE      = 90
	maxSessionInterval = 86400  // 1 day: ttl, min_se, probe interval
	maxCallDuration    = 604800 // 1 week
	minEarlyTimeout    = 10
	maxEarlyTimeout    = 3600
	minProbeInterval   = 60
	maxKeepalivePeriod = 3600 // s
	maxSendInterval    = 1000 // ms
	maxSendOneTime     = 100000
	maxMaxFailures     = 100
	maxMessageLen      = 1024 // bytes
	maxTableSize       = 1000000
	maxExpires         = 86400
	minMTU, maxMTU     = 576, 9216
	minMTUIPv6         = 1280 // RFC 8200 §5
	maxIfNameLen       = 15   // Linux IFNAMSIZ − 1
)

// Validate checks every key against its rules and the rules between keys,
// and returns every problem at once as a *Problems (without line numbers:
// Parse adds them for a file), or nil when c is valid.
//
// The rules, key by key:
//
//	system.hostname        empty or an RFC 1123 host name
//	system.board           one of Boards
//	system.data_dir        an absolute path
//	sip.listen             at least one; each udp|tcp:IP:PORT (ParseListen); no duplicates
//	sip.advertised_address empty, an IP address or a host name (no port)
//	sip.upstream           empty or a sip: URI (ParseSIPURI); required when devices or users are listed
//	sip.max_calls          1..1000000
//	session_timer.min_se   90 (RFC 4028 §5)..86400
//	session_timer.ttl      min_se..86400 (RFC 4028 §4: Session-Expires ≥ Min-SE)
//	session_timer.update_segment            2..60 (RFC 4028 §10: refresh by half the interval)
//	session_timer.refresh_method            auto, update or invite
//	session_timer.refresher                 sbcd or endpoint
//	session_timer.no_timer_reinvite_interval 0 (off) or 60..86400
//	session_timer.max_call_duration         0 (off)..604800
//	session_timer.early_timeout             10..3600
//	nat_keepalive.message       at most 1024 bytes
//	nat_keepalive.period        1..3600 s
//	nat_keepalive.send_interval 1..1000 ms, dividing period×1000
//	nat_keepalive.send_one_time 1..100000
//	nat_keepalive.mode          message, crlf or options
//	nat_keepalive.max_failures  1..100
//	registrar.max_bindings      1..1000000
//	registrar.min_expires       1..86400, at most max_expires
//	registrar.max_expires       1..86400
//	registrar.user[i].name      an RFC 3261 user part, unique
//	registrar.user[i].password  not empty when registrar.auth is true
//	device[i].name              an RFC 3261 user part, unique
//	device[i].address           IP:PORT, a unicast IP literal and a port
//	cdr.dir                     empty or an absolute path
//	network.interface[i].name      1..15 bytes, no space or slash, unique
//	network.interface[i].addresses each an address/prefix (CIDR), unique over all interfaces, none with dhcp
//	network.interface[i].gateway   empty or a unicast IP; none with dhcp; one IPv4 and one IPv6 default route at most
//	network.interface[i].mtu       0 (leave) or 576..9216; 1280 or more with IPv6 addresses
//	network.interface[i].vlan      0 or 1..4094, with parent; parent and vlan unique together
//	network.interface[i].parent    set exactly when vlan is; not the interface itself
//	leds.status|sip|calls|alarm empty, sysfs:NAME or gpio:LINE
//	console.device              empty or an absolute path
//	console.baud                one of BaudRates
//	ssh.listen                  empty (off) or HOST:PORT, HOST empty or an IP literal
//	ssh.authorized_keys         each "TYPE BASE64 [comment]", without key options
//
// Validate never panics, whatever c holds.
func (c *Config) Validate() error {
	var col collector
	c.validate(&col)
	if len(col.issues) == 0 {
		return nil
	}
	return &Problems{List: col.problems(nil)}
}

func (c *Config) validate(col *collector) {
	c.validateSystem(col)
	c.validateSIP(col)
	c.validateSessionTimer(col)
	c.validateKeepalive(col)
	c.validateRegistrar(col)
	c.validateDevices(col)
	if d := c.CDR.Dir; d != "" && !isAbs(d) {
		col.add("cdr.dir", fmt.Sprintf("%q is not an absolute path", d), `leave it "" for DATA_DIR/cdr, or write a path such as "/data/cdr"`)
	}
	c.validateNetwork(col)
	c.validateLEDs(col)
	c.validateConsoleSSH(col)
}

func isAbs(p string) bool { return strings.HasPrefix(p, "/") && filepath.IsAbs(p) }

// intRange checks lo <= v <= hi.
func intRange(col *collector, key string, v, lo, hi int, unit, hint string) bool {
	if v >= lo && v <= hi {
		return true
	}
	u := ""
	if unit != "" {
		u = " " + unit
	}
	if v < lo {
		col.add(key, fmt.Sprintf("%d is below the minimum of %d%s", v, lo, u), hint)
	} else {
		col.add(key, fmt.Sprintf("%d is above the maximum of %d%s", v, hi, u), hint)
	}
	return false
}

// oneOf checks that v is one of the allowed words.
func oneOf(col *collector, key, v string, allowed ...string) {
	if slices.Contains(allowed, v) {
		return
	}
	hint := "use one of " + strings.Join(allowed, ", ")
	if l := strings.ToLower(strings.TrimSpace(v)); l != v && slices.Contains(allowed, l) {
		hint = "write " + strconv.Quote(l)
	}
	col.add(key, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")), hint)
}

func (c *Config) validateSystem(col *collector) {
	s := c.System
	if s.Hostname != "" && !validHostname(s.Hostname, false) {
		col.add("system.hostname", fmt.Sprintf("%q is not a valid host name", s.Hostname),
			`letters, digits and hyphens in dot-separated labels of at most 63 characters, e.g. "sbc-01"; "" leaves the host name alone`)
	}
	oneOf(col, "system.board", s.Board, Boards...)
	if !isAbs(s.DataDir) {
		col.add("system.data_dir", fmt.Sprintf("%q is not an absolute path", s.DataDir), `the data partition, normally "/data"`)
	}
}

func (c *Config) validateSIP(col *collector) {
	s := c.SIP
	if len(s.Listen) == 0 {
		col.add("sip.listen", "no listen address: sbcd would serve nothing", `listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]`)
	}
	seen := map[string]int{}
	for i, l := range s.Listen {
		key := indexKey("sip.listen", i)
		ln, err := ParseListen(l)
		if err != nil {
			msg, hint := splitHint(err)
			col.add(key, msg, hint)
			continue
		}
		canon := ln.String()
		if j, dup := seen[canon]; dup {
			col.add(key, fmt.Sprintf("%q is already sip.listen[%d]", l, j), "remove one of them")
			continue
		}
		seen[canon] = i
	}
	if a := s.AdvertisedAddress; a != "" {
		if _, err := netip.ParseAddr(a); err != nil && !validHostname(a, false) {
			hint := "an IP address or a host name, without a port"
			if h, _, err := net.SplitHostPort(a); err == nil {
				hint = "leave out the port: " + strconv.Quote(h)
			}
			col.add("sip.advertised_address", fmt.Sprintf("%q is not an IP address or host name", a), hint)
		}
	}
	if s.Upstream == "" {
		if n := len(c.Devices) + len(c.Registrar.Users); n > 0 {
			col.add("sip.upstream", fmt.Sprintf("no upstream is set, but %d device(s) and %d registrar user(s) are listed: their calls would have nowhere to go",
				len(c.Devices), len(c.Registrar.Users)), `upstream = "sip:softswitch.example.net:5060"`, "sip", "device[0]", "registrar.user[0]")
		}
	} else if _, err := ParseSIPURI(s.Upstream); err != nil {
		msg, hint := splitHint(err)
		col.add("sip.upstream", msg, hint)
	}
	intRange(col, "sip.max_calls", s.MaxCalls, 1, maxTableSize, "calls", "the dialog table is allocated at start; 10000 is the default")
}

func (c *Config) validateSessionTimer(col *collector) {
	s := c.SessionTimer
	// RFC 4028 §5: "the Min-SE ... MUST NOT be less than 90 seconds".
	switch {
	case s.MinSE < absoluteMinSE:
		col.add("session_timer.min_se", fmt.Sprintf("%d is below the RFC 4028 minimum of 90", s.MinSE), "use 90 or more")
	case s.MinSE > maxSessionInterval:
		col.add("session_timer.min_se", fmt.Sprintf("%d is above the maximum of %d s", s.MinSE, maxSessionInterval), "use 90, the RFC 4028 minimum, unless a peer needs more")
	}
	// RFC 4028 §4: sbcd never asks for (or accepts) a Session-Expires below
	// its own Min-SE.
	switch {
	case s.TTL < absoluteMinSE:
		col.add("session_timer.ttl", fmt.Sprintf("%d is below the RFC 4028 minimum of 90", s.TTL), "use 90 or more; 600 is the default")
	case s.TTL < s.MinSE:
		col.add("session_timer.ttl", fmt.Sprintf("%d is below session_timer.min_se (%d): sbcd would ask for less than it accepts", s.TTL, s.MinSE),
			fmt.Sprintf("raise ttl to %d or more, or lower min_se", s.MinSE), "session_timer.min_se")
	case s.TTL > maxSessionInterval:
		col.add("session_timer.ttl", fmt.Sprintf("%d is above the maximum of %d s", s.TTL, maxSessionInterval), "600 is the default")
	}
	// RFC 4028 §10: the refresher refreshes by half the interval;
	// update_segment 2 is exactly that, more refreshes earlier.
	intRange(col, "session_timer.update_segment", s.UpdateSegment, 2, 60, "",
		"the refresh goes out every ttl/update_segment; 2, the default, refreshes at half the interval as RFC 4028 §10 recommends")
	oneOf(col, "session_timer.refresh_method", s.RefreshMethod, "auto", "update", "invite")
	oneOf(col, "session_timer.refresher", s.Refresher, "sbcd", "endpoint")
	if v := s.NoTimerReinviteInterval; v != 0 && (v < minProbeInterval || v > maxSessionInterval) {
		col.add("session_timer.no_timer_reinvite_interval", fmt.Sprintf("%d is outside 60..86400 s", v), "0 turns probing off; 7200 is the default")
	}
	intRange(col, "session_timer.max_call_duration", s.MaxCallDuration, 0, maxCallDuration, "s", "0 turns the cap off; 604800 is one week")
	intRange(col, "session_timer.early_timeout", s.EarlyTimeout, minEarlyTimeout, maxEarlyTimeout, "s", "300 is the default")
}

func (c *Config) validateKeepalive(col *collector) {
	k := c.NATKeepalive
	if len(k.Message) > maxMessageLen {
		col.add("nat_keepalive.message", fmt.Sprintf("%d bytes is above the maximum of %d", len(k.Message), maxMessageLen), `a short payload such as "HELLO"; "" turns message keep-alives off`)
	}
	periodOK := intRange(col, "nat_keepalive.period", k.Period, 1, maxKeepalivePeriod, "s", "30 is the default; most NATs forget UDP bindings after 30 to 120 s")
	intervalOK := intRange(col, "nat_keepalive.send_interval", k.SendInterval, 1, maxSendInterval, "ms", "10 (milliseconds) is the default")
	if periodOK && intervalOK {
		if ms := k.Period * 1000; ms%k.SendInterval != 0 {
			d := k.SendInterval
			for ms%d != 0 {
				d--
			}
			col.add("nat_keepalive.send_interval", fmt.Sprintf("%d ms does not divide period (%d s = %d ms): the pacer works in whole send_interval ticks", k.SendInterval, k.Period, ms),
				fmt.Sprintf("use a divisor of %d, such as %d", ms, d), "nat_keepalive.period")
		}
	}
	intRange(col, "nat_keepalive.send_one_time", k.SendOneTime, 1, maxSendOneTime, "", "100 is the default")
	oneOf(col, "nat_keepalive.mode", k.Mode, "message", "crlf", "options")
	intRange(col, "nat_keepalive.max_failures", k.MaxFailures, 1, maxMaxFailures, "", "3 is the default")
}

func (c *Config) validateRegistrar(col *collector) {
	r := c.Registrar
	intRange(col, "registrar.max_bindings", r.MaxBindings, 1, maxTableSize, "bindings", "the binding table is allocated at start; 100000 is the default")
	minOK := intRange(col, "registrar.min_expires", r.MinExpires, 1, maxExpires, "s", "60 is the default")
	maxOK := intRange(col, "registrar.max_expires", r.MaxExpires, 1, maxExpires, "s", "3600 is the default")
	if minOK && maxOK && r.MinExpires > r.MaxExpires {
		col.add("registrar.min_expires", fmt.Sprintf("%d is above registrar.max_expires (%d)", r.MinExpires, r.MaxExpires),
			"min_expires must not exceed max_expires", "registrar.max_expires")
	}
	names := map[string]int{}
	for i, u := range r.Users {
		key := indexKey("registrar.user", i)
		switch {
		case u.Name == "":
			col.add(key+".name", "the user has no name", `name = "1001", the user part the phone registers as`, key)
		case !validUserPart(u.Name):
			col.add(key+".name", fmt.Sprintf("%q is not a SIP user name", u.Name), "letters, digits and - _ . ! ~ * ' ( ) & = + $ , ; ? /, with no spaces and no @")
		default:
			if j, dup := names[u.Name]; dup {
				col.add(key+".name", fmt.Sprintf("user %q is already registrar.user[%d]", u.Name, j), "each user once")
			} else {
				names[u.Name] = i
			}
		}
		if r.Auth && u.Password == "" {
			col.add(key+".password", fmt.Sprintf("user %q has no password, and registrar.auth is on", u.Name), `password = "..."`, key)
		}
	}
}

func (c *Config) validateDevices(col *collector) {
	names := map[string]int{}
	for i, d := range c.Devices {
		key := indexKey("device", i)
		switch {
		case d.Name == "":
			col.add(key+".name", "the device has no name", `name = "pbx", the Request-URI user that reaches it`, key)
		case !validUserPart(d.Name):
			col.add(key+".name", fmt.Sprintf("%q is not a SIP user name", d.Name), "letters, digits and - _ . ! ~ * ' ( ) & = + $ , ; ? /, with no spaces and no @")
		default:
			if j, dup := names[d.Name]; dup {
				col.add(key+".name", fmt.Sprintf("device %q is already device[%d]", d.Name, j), "give each device its own name")
			} else {
				names[d.Name] = i
			}
		}
		if err := checkDeviceAddress(d.Address); err != nil {
			msg, hint := splitHint(err)
			col.add(key+".address", msg, hint, key)
		}
	}
}

func checkDeviceAddress(a string) error {
	const hint = `an IP address and port, e.g. "192.0.2.20:5060" or "[2001:db8::20]:5060"`
	if a == "" {
		return errHint("the device has no address", hint)
	}
	ap, err := netip.ParseAddrPort(a)
	if err != nil {
		if h, _, err := net.SplitHostPort(a); err == nil {
			if _, err := netip.ParseAddr(h); err != nil {
				return errHint(fmt.Sprintf("%q: %q is not an IP address", a, h), "devices are matched by source address, so write the IP: "+hint)
			}
			return errHint(fmt.Sprintf("%q has a bad port", a), hint)
		}
		if _, err := netip.ParseAddr(a); err == nil {
			return errHint(fmt.Sprintf("%q has no port", a), "add the port, usually :5060")
		}
		return errHint(fmt.Sprintf("%q is not IP:PORT", a), hint)
	}
	switch {
	case ap.Port() == 0:
		return errHint(fmt.Sprintf("%q: port 0", a), "usually 5060")
	case ap.Addr().IsUnspecified() || ap.Addr().IsMulticast():
		return errHint(fmt.Sprintf("%q is not the address of one device", a), hint)
	}
	return nil
}

func (c *Config) validateNetwork(col *collector) {
	names := map[string]int{}
	addrs := map[netip.Addr]string{}
	vlans := map[string]int{}
	gw4, gw6 := "", ""
	for i, ifc := range c.Network.Interfaces {
		key := indexKey("network.interface", i)
		if err := checkIfName(ifc.Name); err != nil {
			msg, hint := splitHint(err)
			col.add(key+".name", msg, hint, key)
		} else if j, dup := names[ifc.Name]; dup {
			col.add(key+".name", fmt.Sprintf("interface %q is already network.interface[%d]", ifc.Name, j), "one [[network.interface]] per link; put all its addresses in one list")
		} else {
			names[ifc.Name] = i
		}
		has6 := false
		for j, a := range ifc.Addresses {
			akey := indexKey(key+".addresses", j)
			p, err := netip.ParsePrefix(a)
			if err != nil {
				hint := `an address with its prefix length, e.g. "192.0.2.10/24" or "2001:db8::10/64"`
				if ip, err := netip.ParseAddr(a); err == nil {
					hint = fmt.Sprintf("add the prefix length, e.g. \"%s/%d\"", ip, map[bool]int{true: 24, false: 64}[ip.Is4()])
				}
				col.add(akey, fmt.Sprintf("%q is not an address/prefix", a), hint)
				continue
			}
			if p.Addr().Is6() && !p.Addr().Is4In6() {
				has6 = true
			}
			if p.Addr().IsUnspecified() || p.Addr().IsMulticast() {
				col.add(akey, fmt.Sprintf("%q is not an interface address", a), `e.g. "192.0.2.10/24"`)
				continue
			}
			if other, dup := addrs[p.Addr()]; dup {
				col.add(akey, fmt.Sprintf("%s is already %s", p.Addr(), other), "each address on one interface only")
				continue
			}
			addrs[p.Addr()] = akey
		}
		if ifc.DHCP && len(ifc.Addresses) > 0 {
			col.add(key+".addresses", "static addresses and dhcp = true on the same interface", "either list addresses or use dhcp, not both", key+".dhcp")
		}
		if g := ifc.Gateway; g != "" {
			ip, err := netip.ParseAddr(g)
			switch {
			case err != nil:
				col.add(key+".gateway", fmt.Sprintf("%q is not an IP address", g), `the next hop of the default route, e.g. "192.0.2.1"`)
			case ip.IsUnspecified() || ip.IsMulticast():
				col.add(key+".gateway", fmt.Sprintf("%q is not a router address", g), `e.g. "192.0.2.1"`)
			case ifc.DHCP:
				col.add(key+".gateway", "a gateway and dhcp = true on the same interface: DHCP provides the gateway", `remove the gateway, or use static addresses`, key+".dhcp")
			case ip.Is4():
				if gw4 != "" {
					col.add(key+".gateway", "a second IPv4 default route (the first is "+gw4+")", "set the gateway on one interface only")
				}
				gw4 = key + ".gateway"
			default:
				if gw6 != "" {
					col.add(key+".gateway", "a second IPv6 default route (the first is "+gw6+")", "set the gateway on one interface only")
				}
				gw6 = key + ".gateway"
			}
		}
		if ifc.MTU != 0 {
			if intRange(col, key+".mtu", ifc.MTU, minMTU, maxMTU, "bytes", "0 leaves the MTU as it is; 1500 for Ethernet") && has6 && ifc.MTU < minMTUIPv6 {
				col.add(key+".mtu", fmt.Sprintf("%d is below the IPv6 minimum of %d, and the interface has IPv6 addresses", ifc.MTU, minMTUIPv6), "use 1280 or more")
			}
		}
		switch {
		case ifc.VLAN == 0 && ifc.Parent != "":
			col.add(key+".parent", "parent is set but vlan is not", "a VLAN sub-interface needs both vlan (1..4094) and parent; remove parent otherwise")
		case ifc.VLAN == 0:
		case ifc.VLAN < 1 || ifc.VLAN > 4094:
			col.add(key+".vlan", fmt.Sprintf("%d is outside the 802.1Q VLAN IDs 1..4094", ifc.VLAN), "0 means not a VLAN")
		case ifc.Parent == "":
			col.add(key+".parent", fmt.Sprintf("vlan = %d needs the parent link", ifc.VLAN), `parent = "eth0"`, key+".vlan", key)
		case ifc.Parent == ifc.Name:
			col.add(key+".parent", "an interface cannot be its own parent", fmt.Sprintf(`name the VLAN link differently, e.g. "%s.%d"`, ifc.Parent, ifc.VLAN))
		default:
			if err := checkIfName(ifc.Parent); err != nil {
				msg, hint := splitHint(err)
				col.add(key+".parent", msg, hint)
				break
			}
			id := ifc.Parent + "." + strconv.Itoa(ifc.VLAN)
			if j, dup := vlans[id]; dup {
				col.add(key+".vlan", fmt.Sprintf("VLAN %d on %s is already network.interface[%d]", ifc.VLAN, ifc.Parent, j), "one link per VLAN and parent")
			} else {
				vlans[id] = i
			}
		}
	}
}

// checkIfName checks a Linux interface name.
func checkIfName(n string) error {
	const hint = `a Linux interface name such as "eth0" or "eth0.100" (at most 15 characters)`
	switch {
	case n == "":
		return errHint("the interface has no name", hint)
	case len(n) > maxIfNameLen:
		return errHint(fmt.Sprintf("%q is longer than %d bytes", n, maxIfNameLen), hint)
	case n == "." || n == "..":
		return errHint(fmt.Sprintf("%q is not an interface name", n), hint)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c <= ' ' || c == '/' || c == ':' || c >= 0x7f {
			return errHint(fmt.Sprintf("%q contains a space, slash, colon or other character Linux refuses", n), hint)
		}
	}
	return nil
}

func (c *Config) validateLEDs(col *collector) {
	for _, l := range c.ledList() {
		if err := checkLED(l.value); err != nil {
			msg, hint := splitHint(err)
			col.add("leds."+l.key, msg, hint)
		}
	}
}

type ledEntry struct{ key, value string }

func (c *Config) ledList() []ledEntry {
	return []ledEntry{{"status", c.LEDs.Status}, {"sip", c.LEDs.SIP}, {"calls", c.LEDs.Calls}, {"alarm", c.LEDs.Alarm}}
}

func (c *Config) validateConsoleSSH(col *collector) {
	if d := c.Console.Device; d != "" && !isAbs(d) {
		col.add("console.device", fmt.Sprintf("%q is not an absolute device path", d), `e.g. "/dev/ttyS0", or "" for the board's console`)
	}
	if !slices.Contains(BaudRates, c.Console.Baud) {
		col.add("console.baud", fmt.Sprintf("%d is not a standard serial speed", c.Console.Baud), "115200 is the default; others: 9600, 19200, 38400, 57600, 230400, 460800, 921600, 1500000")
	}
	if l := c.SSH.Listen; l != "" {
		host, port, err := net.SplitHostPort(l)
		switch {
		case err != nil:
			col.add("ssh.listen", fmt.Sprintf("%q is not HOST:PORT", l), `":22" listens on every address; "" turns SSH off`)
		case host != "" && !validIP(host):
			col.add("ssh.listen", fmt.Sprintf("%q: %q is not an IP address", l, host), `":22" listens on every address, "192.0.2.10:22" on one`)
		default:
			if _, ok := parsePort(port); !ok {
				col.add("ssh.listen", fmt.Sprintf("%q: %q is not a port (1..65535)", l, port), `":22"`)
			}
		}
	}
	for i, k := range c.SSH.AuthorizedKeys {
		if err := checkAuthorizedKey(k); err != nil {
			msg, hint := splitHint(err)
			col.add(indexKey("ssh.authorized_keys", i), msg, hint)
		}
	}
}

func validIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// Warnings returns what is legal but probably not what the operator wants,
// in key order, without line numbers (Check adds them for a file):
//
//   - sip.upstream empty: calls from phones have nowhere to go;
//   - session_timer: a refresh every ttl/update_segment below 30 s, and no
//     way to notice a dead call to a peer without timer support
//     (no_timer_reinvite_interval and max_call_duration both 0);
//   - nat_keepalive.period of 60 s or more (many NATs forget UDP bindings
//     sooner), and a pacer that cannot reach registrar.max_bindings within
//     one period ((period/send_interval) × send_one_time below it);
//   - registrar.auth on with no users, or passwords listed with auth off;
//   - a device and a registrar user with the same name;
//   - a wildcard and a specific sip.listen on the same transport and port;
//   - cdr.dir outside system.data_dir (the root file system is read-only);
//   - a gateway outside every prefix of its interface;
//   - two LED roles driving the same LED;
//   - SSH that will not start (no key and no password), or a short password.
//
// There is no warning for an update_segment that refreshes after the
// teardown point, because Validate makes it impossible: the far end tears
// down at SE − min(32, SE/3) ≥ 2·SE/3, and update_segment ≥ 2 puts the
// refresh at SE/2 or earlier, at least SE/6 (15 s at the 90 s minimum)
// before it.
func (c *Config) Warnings() []Problem {
	var col collector
	c.warnings(&col)
	return col.problems(nil)
}

func (c *Config) warnings(col *collector) {
	if c.SIP.Upstream == "" && len(c.Devices)+len(c.Registrar.Users) == 0 {
		col.add("sip.upstream", "no upstream: calls from registered phones are refused", `upstream = "sip:softswitch.example.net:5060"`, "sip")
	}
	st := c.SessionTimer
	if r := st.RefreshAfter(); r > 0 && r.Seconds() < 30 {
		col.add("session_timer.update_segment", fmt.Sprintf("with ttl %d, a refresh every %s per call when sbcd refreshes: a lot of signalling", st.TTL, r),
			"2 (refresh at half the interval) is enough", "session_timer.ttl")
	}
	if st.NoTimerReinviteInterval == 0 && st.MaxCallDuration == 0 {
		col.add("session_timer.no_timer_reinvite_interval", "probing is off and max_call_duration is 0: a call to a peer without session timers that dies silently stays up (and billed) forever",
			"set no_timer_reinvite_interval (7200 is the default) or max_call_duration", "session_timer.max_call_duration")
	}
	k := c.NATKeepalive
	if k.Enabled() && k.Period >= 60 {
		col.add("nat_keepalive.period", fmt.Sprintf("%d s: many NATs forget a UDP binding after 30 to 60 s, and phones behind them stop receiving calls", k.Period),
			"30 is the default")
	}
	if capacity := k.Capacity(); k.Enabled() && capacity > 0 && capacity < c.Registrar.MaxBindings {
		col.add("nat_keepalive.send_one_time", fmt.Sprintf("the pacer reaches at most %d bindings per %d s period ((period/send_interval) × send_one_time), below registrar.max_bindings (%d): with a full table some bindings get their keep-alive late",
			capacity, k.Period, c.Registrar.MaxBindings),
			fmt.Sprintf("raise send_one_time to %d or more, or lower send_interval", (c.Registrar.MaxBindings+(k.Period*1000/k.SendInterval)-1)/(k.Period*1000/k.SendInterval)),
			"nat_keepalive.send_interval", "nat_keepalive.period", "nat_keepalive")
	}
	r := c.Registrar
	if r.Auth && len(r.Users) == 0 {
		col.add("registrar.auth", "auth is on but no [[registrar.user]] is listed: no phone can register", "add users, or set auth = false")
	}
	if !r.Auth {
		for i, u := range r.Users {
			if u.Password != "" {
				col.add(indexKey("registrar.user", i)+".password", "registrar.auth is false: this password is not checked", "set auth = true under [registrar] to require it")
				break
			}
		}
	}
	users := map[string]bool{}
	for _, u := range r.Users {
		users[u.Name] = true
	}
	for i, d := range c.Devices {
		if d.Name != "" && users[d.Name] {
			col.add(indexKey("device", i)+".name", fmt.Sprintf("%q is also a registrar user: calls for it may reach either", d.Name), "give the device another name")
		}
	}
	c.listenWarnings(col)
	if d := c.CDRDir(); isAbs(d) && isAbs(c.System.DataDir) && !within(d, c.System.DataDir) {
		col.add("cdr.dir", fmt.Sprintf("%q is outside system.data_dir (%q): on the box only the data partition is writable", d, c.System.DataDir), `leave it "" for DATA_DIR/cdr`)
	}
	for i, ifc := range c.Network.Interfaces {
		gw, err := netip.ParseAddr(ifc.Gateway)
		if err != nil || ifc.DHCP || gw.IsLinkLocalUnicast() || len(ifc.Addresses) == 0 {
			continue
		}
		onLink := false
		for _, a := range ifc.Addresses {
			if p, err := netip.ParsePrefix(a); err == nil && p.Masked().Contains(gw) {
				onLink = true
			}
		}
		if !onLink {
			col.add(indexKey("network.interface", i)+".gateway", fmt.Sprintf("%s is in none of the interface's prefixes: the default route may not be reachable", ifc.Gateway), "check the prefix lengths of addresses")
		}
	}
	leds := map[string]string{}
	for _, l := range c.ledList() {
		if l.value == "" {
			continue
		}
		if other, dup := leds[l.value]; dup {
			col.add("leds."+l.key, fmt.Sprintf("%q also drives leds.%s: the two roles will fight over it", l.value, other), `leave one "" to let the board merge them`)
			continue
		}
		leds[l.value] = l.key
	}
	if c.SSH.Listen != "" && len(c.SSH.AuthorizedKeys) == 0 && c.SSH.Password == "" {
		col.add("ssh.authorized_keys", "no authorized key and no password: the SSH service does not start", "add your public key: the one line of ~/.ssh/id_ed25519.pub", "ssh")
	}
	if p := c.SSH.Password; p != "" && len(p) < 8 {
		col.add("ssh.password", "shorter than 8 characters, on a box reachable over the network", "use a long password, or public keys only")
	}
}

func (c *Config) listenWarnings(col *collector) {
	type tp struct {
		transport string
		port      uint16
	}
	wild := map[tp]bool{}
	var parsed []Listener
	for _, l := range c.SIP.Listen {
		ln, err := ParseListen(l)
		if err != nil {
			parsed = append(parsed, Listener{})
			continue
		}
		parsed = append(parsed, ln)
		if ln.Addr.Addr().IsUnspecified() {
			wild[tp{ln.Transport, ln.Addr.Port()}] = true
		}
	}
	for i, ln := range parsed {
		if ln.Transport == "" || ln.Addr.Addr().IsUnspecified() {
			continue
		}
		if wild[tp{ln.Transport, ln.Addr.Port()}] {
			col.add(indexKey("sip.listen", i), fmt.Sprintf("%q overlaps a wildcard listen on the same port: binding both may fail", ln.String()), "keep the wildcard or the specific addresses, not both")
		}
	}
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
