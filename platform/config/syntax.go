package config

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// The small parsers of the values that have a syntax of their own: listen
// addresses, the upstream SIP URI, host names, SIP user names, LED specs
// and authorized_keys lines.

// hintError is a parse error with a hint for the operator.
type hintError struct{ msg, hint string }

func (e *hintError) Error() string {
	if e.hint == "" {
		return e.msg
	}
	return e.msg + " (hint: " + e.hint + ")"
}

func errHint(msg, hint string) error { return &hintError{msg: msg, hint: hint} }

// splitHint returns the message and hint of err.
func splitHint(err error) (msg, hint string) {
	var he *hintError
	if errors.As(err, &he) {
		return he.msg, he.hint
	}
	return err.Error(), ""
}

// Listener is one parsed sip.listen entry.
type Listener struct {
	// Transport is "udp" or "tcp".
	Transport string
	// Addr is the IP address and port to bind.
	Addr netip.AddrPort
}

// String renders l the way sip.listen writes it: "udp:0.0.0.0:5060",
// "tcp:[::1]:5060".
func (l Listener) String() string { return l.Transport + ":" + l.Addr.String() }

// ParseListen parses a sip.listen entry: "udp:HOST:PORT" or
// "tcp:HOST:PORT", HOST an IP literal (IPv6 in brackets), PORT 1..65535.
func ParseListen(s string) (Listener, error) {
	const example = `"udp:0.0.0.0:5060" or "tcp:[::]:5060"`
	transport, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Listener{}, errHint(strconv.Quote(s)+" is not TRANSPORT:HOST:PORT", "write "+example)
	}
	if transport != "udp" && transport != "tcp" {
		hint := "the transport is udp or tcp, as in " + example
		if t := strings.ToLower(transport); t == "udp" || t == "tcp" {
			hint = "write the transport in lower case: " + t
		}
		return Listener{}, errHint(strconv.Quote(s)+": unknown transport "+strconv.Quote(transport), hint)
	}
	ap, err := netip.ParseAddrPort(rest)
	if err != nil {
		host, port, serr := net.SplitHostPort(rest)
		switch {
		case serr != nil && strings.Count(rest, ":") > 1 && !strings.HasPrefix(rest, "["):
			return Listener{}, errHint(strconv.Quote(s)+": an IPv6 address needs brackets", "write "+transport+":[::1]:5060")
		case serr != nil:
			if _, aerr := netip.ParseAddr(strings.Trim(rest, "[]")); aerr == nil {
				return Listener{}, errHint(strconv.Quote(s)+" has no port", "add the port: "+transport+":"+netip.AddrPortFrom(netip.MustParseAddr(strings.Trim(rest, "[]")), 5060).String())
			}
			return Listener{}, errHint(strconv.Quote(s)+" is not TRANSPORT:HOST:PORT", "write "+example+" (IPv6 addresses in brackets)")
		case host == "":
			return Listener{}, errHint(strconv.Quote(s)+" has no address", "listen on all addresses with "+transport+":0.0.0.0:"+port+" or "+transport+":[::]:"+port)
		default:
			if _, aerr := netip.ParseAddr(host); aerr != nil {
				return Listener{}, errHint(strconv.Quote(s)+": "+strconv.Quote(host)+" is not an IP address", "sbcd binds to IP addresses, not host names: "+example)
			}
			return Listener{}, errHint(strconv.Quote(s)+": "+strconv.Quote(port)+" is not a port", "a port is 1..65535, usually 5060")
		}
	}
	if ap.Port() == 0 {
		return Listener{}, errHint(strconv.Quote(s)+": port 0 is not a port to listen on", "use 5060")
	}
	return Listener{Transport: transport, Addr: ap}, nil
}

// SIPURI is a parsed sip.upstream: sip:host[:port][;params].
type SIPURI struct {
	// Host is a host name, an IPv4 address or an IPv6 address (without
	// brackets), as written.
	Host string
	// Port is 1..65535, or 0 when the URI has none (5060 applies, or DNS
	// SRV for a host name).
	Port int
	// Params are the URI parameters in the order written.
	Params []URIParam
}

// URIParam is one ";name" or ";name=value" URI parameter.
type URIParam struct {
	Name  string
	Value string // "" for a parameter without a value (";lr")
}

// String renders u: "sip:" host [":" port] *(";" name ["=" value]).
func (u SIPURI) String() string {
	var b strings.Builder
	b.WriteString("sip:")
	if strings.Contains(u.Host, ":") {
		b.WriteString("[" + u.Host + "]")
	} else {
		b.WriteString(u.Host)
	}
	if u.Port != 0 {
		b.WriteString(":" + strconv.Itoa(u.Port))
	}
	for _, p := range u.Params {
		b.WriteString(";" + p.Name)
		if p.Value != "" {
			b.WriteString("=" + p.Value)
		}
	}
	return b.String()
}

// Param returns the value of the parameter name (case-insensitive) and
// whether it is present.
func (u SIPURI) Param(name string) (string, bool) {
	for _, p := range u.Params {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// Transport is the lower-cased ;transport= parameter, "" when absent.
func (u SIPURI) Transport() string {
	t, _ := u.Param("transport")
	return strings.ToLower(t)
}

// HostPort is "host:port" for dialing, with port 5060 when u has none.
func (u SIPURI) HostPort() string {
	port := u.Port
	if port == 0 {
		port = 5060
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(port))
}

// ParseSIPURI parses the upstream URI strictly: "sip:" (any case), a host
// (host name, IPv4 address or bracketed IPv6 address), an optional port,
// and optional ;name[=value] parameters (RFC 3261 §19.1.1 characters,
// no duplicates; transport must be udp or tcp, what sbcd serves). A user
// part, headers (?...), sips: and anything else are refused.
func ParseSIPURI(s string) (SIPURI, error) {
	const example = "sip:softswitch.example.net:5060"
	bad := func(msg, hint string) (SIPURI, error) {
		return SIPURI{}, errHint(strconv.Quote(s)+": "+msg, hint)
	}
	if len(s) < 4 || !strings.EqualFold(s[:4], "sip:") {
		if len(s) >= 5 && strings.EqualFold(s[:5], "sips:") {
			return bad("sips: (TLS) is not supported", "use a sip: URI, e.g. "+example)
		}
		return bad("not a sip: URI", "write it as "+example)
	}
	rest := s[4:]
	if strings.ContainsAny(rest, "?") {
		return bad("headers (?...) are not allowed in the upstream", "write just "+example)
	}
	if strings.Contains(rest, "@") {
		return bad("the upstream is a host, not a user@host", "leave out the user part: the called number comes from each call")
	}
	hostport, params, hasParams := strings.Cut(rest, ";")
	var u SIPURI
	var portStr string
	hasPort := false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return bad("unclosed [ in the host", "write IPv6 hosts as sip:[2001:db8::1]:5060")
		}
		a, err := netip.ParseAddr(hostport[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return bad(strconv.Quote(hostport[1:end])+" is not an IPv6 address", "write IPv6 hosts as sip:[2001:db8::1]:5060")
		}
		u.Host = hostport[1:end]
		after := hostport[end+1:]
		if after != "" {
			if after[0] != ':' {
				return bad("unexpected "+strconv.Quote(after)+" after the host", "write "+example)
			}
			portStr, hasPort = after[1:], true
		}
	} else {
		host, p, found := strings.Cut(hostport, ":")
		if found && strings.Contains(p, ":") {
			return bad("too many colons: an IPv6 host needs brackets", "write sip:[2001:db8::1]:5060")
		}
		switch {
		case host == "":
			return bad("no host", "write "+example)
		case isIPv4(host):
		case validHostname(host, true):
		default:
			return bad(strconv.Quote(host)+" is not a host name or IPv4 address", "write "+example)
		}
		u.Host = host
		portStr, hasPort = p, found
	}
	if hasPort {
		n, ok := parsePort(portStr)
		if !ok {
			return bad(strconv.Quote(portStr)+" is not a port (1..65535)", "write "+example+", or leave the port out for 5060")
		}
		u.Port = n
	}
	if hasParams {
		for _, p := range strings.Split(params, ";") {
			name, value, hasValue := strings.Cut(p, "=")
			switch {
			case name == "":
				return bad("empty URI parameter", "parameters are ;name or ;name=value, e.g. ;transport=tcp")
			case !validParamChars(name):
				return bad("bad URI parameter name "+strconv.Quote(name), "parameters are ;name or ;name=value, e.g. ;transport=tcp")
			case hasValue && (value == "" || !validParamChars(value)):
				return bad("bad value "+strconv.Quote(value)+" for URI parameter "+name, "parameters are ;name or ;name=value, e.g. ;transport=tcp")
			}
			if _, dup := u.Param(name); dup {
				return bad("URI parameter "+name+" appears twice", "keep one")
			}
			if strings.EqualFold(name, "transport") {
				if t := strings.ToLower(value); t != "udp" && t != "tcp" {
					return bad("transport="+value+" is not served by sbcd", "use ;transport=udp or ;transport=tcp")
				}
			}
			u.Params = append(u.Params, URIParam{Name: name, Value: value})
		}
	}
	return u, nil
}

// parsePort accepts 1..65535 written as plain decimal digits.
func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return n, true
}

func isIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

// validParamChars: RFC 3261 paramchar = param-unreserved / unreserved /
// escaped.
func validParamChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c), strings.IndexByte("-_.!~*'()[]/:&+$", c) >= 0:
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

// validUserPart: an RFC 3261 user (unreserved / escaped / user-unreserved),
// 1..128 bytes: what a device or user name must be to appear in a
// Request-URI.
func validUserPart(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c), strings.IndexByte("-_.!~*'()&=+$,;?/", c) >= 0:
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// validHostname checks an RFC 1123 host name: dot-separated labels of 1..63
// letters, digits and hyphens, not starting or ending with a hyphen, 253
// bytes at most, one trailing dot allowed. With sip, the last label must
// start with a letter (RFC 3261 toplabel), which also keeps "1.2.3" from
// passing for an address.
func validHostname(s string, sip bool) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	if sip && !(last[0] >= 'a' && last[0] <= 'z' || last[0] >= 'A' && last[0] <= 'Z') {
		return false
	}
	if !sip {
		// An all-numeric dotted name is a mistyped address, not a name.
		allDigits := true
		for i := 0; i < len(s); i++ {
			if s[i] != '.' && (s[i] < '0' || s[i] > '9') {
				allDigits = false
			}
		}
		if allDigits && len(labels) > 1 {
			return false
		}
	}
	return true
}

// checkLED checks a [leds] value: "", "sysfs:NAME" or "gpio:LINE".
func checkLED(s string) error {
	const hint = `write "sysfs:NAME" for /sys/class/leds/NAME or "gpio:LINE" for a GPIO line, or "" for the board's own`
	if s == "" {
		return nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "sysfs" && kind != "gpio") {
		return errHint(strconv.Quote(s)+" is not sysfs:NAME or gpio:LINE", hint)
	}
	if name == "" {
		return errHint(strconv.Quote(s)+" names no LED", hint)
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] == 0x7f || name[i] == '/' {
			return errHint(strconv.Quote(s)+": the name contains a space, a control character or a slash", hint)
		}
	}
	if kind == "sysfs" && (name == "." || name == "..") {
		return errHint(strconv.Quote(s)+" is not an LED name", hint)
	}
	return nil
}

// checkAuthorizedKey loosely checks an OpenSSH public key line,
// "TYPE BASE64 [comment]": some field must be followed by base64 data whose
// embedded key type is that field, and no key options may come before it
// (sbcd does not enforce them). No cryptography is involved.
func checkAuthorizedKey(line string) error {
	const hint = "paste one line of your .pub file, e.g. ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA... admin@laptop"
	s := strings.TrimSpace(line)
	switch {
	case s == "":
		return errHint("empty key", hint)
	case strings.ContainsAny(s, "\r\n"):
		return errHint("several lines in one entry", "put each key in its own list entry")
	case strings.HasPrefix(s, "-----BEGIN"):
		return errHint("this is a PEM block (a private key?), not an OpenSSH public key line", "never paste a private key; "+hint)
	}
	fields := strings.Fields(s)
	for i := 0; i+1 < len(fields); i++ {
		blob, err := base64.StdEncoding.DecodeString(fields[i+1])
		if err != nil || len(blob) < 4 {
			continue
		}
		n := binary.BigEndian.Uint32(blob)
		if uint64(n) <= uint64(len(blob)-4) && string(blob[4:4+n]) == fields[i] {
			if i > 0 {
				// platform/mgmt cannot honour from=, command=, restrict
				// and the like: refusing the line beats granting full
				// rights silently.
				return errHint("key options ("+strings.Join(fields[:i], " ")+") are not supported",
					"remove everything before "+fields[i]+": sbcd gives every authorized key the same rights")
			}
			return nil
		}
	}
	for i, f := range fields {
		if strings.HasPrefix(f, "ssh-") || strings.HasPrefix(f, "ecdsa-") || strings.HasPrefix(f, "sk-") {
			if i+1 == len(fields) {
				return errHint("key type "+f+" is not followed by the key data", hint)
			}
			return errHint("the key data after "+f+" is not a base64 "+f+" key (truncated when pasted?)", hint)
		}
	}
	return errHint("not an OpenSSH public key line (TYPE BASE64 [comment])", hint)
}
