// Package config is the TOML configuration of the box: its schema, its
// defaults, strict decoding, validation that reports every problem at once
// with its line number, and atomic persistence.
//
// The keys are a contract with operators and their scripts (DESIGN.md §5):
// their names and meanings never change; keys are only ever added. The
// complete, commented example that ships in the image is
// rootfs/etc/sbcd/sbcd.toml; a test keeps it in step with the schema below.
//
// # Values as the operator wrote them
//
// Durations are kept as the integers the operator wrote, in the unit of the
// key (seconds, except nat_keepalive.send_interval in milliseconds), so that
// diffs and `sbcd check` show what is in the file. Methods such as
// [SessionTimer.TTLDuration] turn them into time.Duration. Likewise
// addresses are kept as strings; [ParseListen] and [ParseSIPURI] turn them
// into values.
//
// # Reading a file
//
// [Parse] starts from [Default], decodes the TOML with
// github.com/BurntSushi/toml, rejects unknown keys and values of the wrong
// type, then runs [Config.Validate]. Every problem comes back at once in a
// [*Problems], one line each:
//
//	sbcd.toml:12: session_timer.min_se: 60 is below the RFC 4028 minimum of 90 (hint: use 90 or more)
//
// [Check] does the same and also returns the non-fatal warnings, with line
// numbers, for `sbcd check`. [Load] applies the search order of DESIGN.md §5
// (the caller passes the paths). [Save] validates before it writes, and
// [WriteFileAtomic] makes a power cut leave either the old file or the new
// one.
//
// Array elements are named with 0-based indices in problem keys:
// device[1].address is the address of the second [[device]].
//
// Of sbcd it imports only the timer core's session package, for the one
// teardown rule both must agree on; cmd/sbcd maps a Config onto the Options
// and Params of each domain package.
package config

import (
	"path/filepath"
	"reflect"
	"time"

	"sbcd/timers/session"
)

// Config is the whole configuration of the box: one field per TOML table.
// The zero value is not useful; start from [Default] or [Parse].
type Config struct {
	System       System       `toml:"system"`
	SIP          SIP          `toml:"sip"`
	SessionTimer SessionTimer `toml:"session_timer"`
	NATKeepalive NATKeepalive `toml:"nat_keepalive"`
	Registrar    Registrar    `toml:"registrar"`
	// Devices are the [[device]] tables: devices that do not register.
	Devices []Device `toml:"device"`
	CDR     CDR      `toml:"cdr"`
	Trace   Trace    `toml:"trace"`
	Network Network  `toml:"network"`
	LEDs    LEDs     `toml:"leds"`
	Console Console  `toml:"console"`
	SSH     SSH      `toml:"ssh"`
}

// System is the [system] table.
type System struct {
	// Hostname of the box (RFC 1123). Empty leaves the system's hostname as
	// it is. Default "sbcd".
	Hostname string `toml:"hostname"`
	// Board is the board profile: auto, rpi4, nanopi-r2s, qemu-virt or
	// none (see Boards). Default "auto".
	Board string `toml:"board"`
	// DataDir is the writable data partition (CDRs, traces, host key, the
	// saved config). An absolute path; default "/data".
	DataDir string `toml:"data_dir"`
}

// SIP is the [sip] table. Changing Listen or MaxCalls needs a restart.
type SIP struct {
	// Listen are the SIP sockets, each "udp:HOST:PORT" or "tcp:HOST:PORT"
	// with HOST an IP literal ("udp:[::1]:5060" for IPv6); see ParseListen.
	// The built-in default serves on loopback only:
	// ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"].
	Listen []string `toml:"listen"`
	// AdvertisedAddress is the public address (IP or hostname, no port) to
	// put in Via and Contact; empty uses the listening address. Default "".
	AdvertisedAddress string `toml:"advertised_address"`
	// Upstream is where calls from devices go: "sip:host[:port][;params]"
	// (see ParseSIPURI). Default "": then the box has no upstream, which is
	// a problem as soon as a [[device]] or [[registrar.user]] is listed
	// (and a warning otherwise).
	Upstream string `toml:"upstream"`
	// MaxCalls is the dialog table size, preallocated at start.
	// Range 1..1000000, default 10000.
	MaxCalls int `toml:"max_calls"`
}

// SessionTimer is the [session_timer] table (RFC 4028; DESIGN.md §2).
// Durations are whole seconds.
type SessionTimer struct {
	// TTL is the Session-Expires sbcd requests and accepts, in seconds
	// (VOS3000 SS_SIP_SESSION_TTL). Range min_se..86400, default 600.
	TTL int `toml:"ttl"`
	// UpdateSegment: when sbcd is the refresher it refreshes every
	// ttl/update_segment (VOS3000 SS_SIP_SESSION_UPDATE_SEGMENT).
	// Range 2..60, default 2.
	UpdateSegment int `toml:"update_segment"`
	// MinSE is sbcd's Min-SE in seconds; smaller requests get 422.
	// Range 90..86400, default 90.
	MinSE int `toml:"min_se"`
	// RefreshMethod is auto, update or invite. Default "auto".
	RefreshMethod string `toml:"refresh_method"`
	// Refresher says who refreshes when sbcd may choose: sbcd or endpoint.
	// Default "sbcd".
	Refresher string `toml:"refresher"`
	// NoTimerReinviteInterval is the probe interval in seconds for legs
	// whose endpoint has no timer support; 0 disables probing
	// (VOS3000 SS_SIP_NO_TIMER_REINVITE_INTERVAL). 0 or 60..86400,
	// default 7200.
	NoTimerReinviteInterval int `toml:"no_timer_reinvite_interval"`
	// MaxCallDuration is a hard cap on a call in seconds; 0 is off.
	// Range 0..604800, default 0.
	MaxCallDuration int `toml:"max_call_duration"`
	// EarlyTimeout cleans up a call that is never answered or ACKed, in
	// seconds (VOS3000 SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP).
	// Range 10..3600, default 300.
	EarlyTimeout int `toml:"early_timeout"`
}

// TTLDuration is ttl as a time.Duration.
func (s SessionTimer) TTLDuration() time.Duration { return seconds(s.TTL) }

// MinSEDuration is min_se as a time.Duration.
func (s SessionTimer) MinSEDuration() time.Duration { return seconds(s.MinSE) }

// NoTimerReinviteIntervalDuration is no_timer_reinvite_interval as a
// time.Duration; 0 means probing is off.
func (s SessionTimer) NoTimerReinviteIntervalDuration() time.Duration {
	return seconds(s.NoTimerReinviteInterval)
}

// CallDurationLimit is max_call_duration as a time.Duration; 0 means off.
func (s SessionTimer) CallDurationLimit() time.Duration { return seconds(s.MaxCallDuration) }

// EarlyTimeoutDuration is early_timeout as a time.Duration.
func (s SessionTimer) EarlyTimeoutDuration() time.Duration { return seconds(s.EarlyTimeout) }

// RefreshAfter is when sbcd, as the refresher of a session of ttl seconds,
// sends its refresh: ttl/update_segment (RFC 4028 §10 recommends half).
// It is 0 when update_segment is not positive.
func (s SessionTimer) RefreshAfter() time.Duration {
	if s.UpdateSegment <= 0 {
		return 0
	}
	return s.TTLDuration() / time.Duration(s.UpdateSegment)
}

// TeardownAfter is when the side that does not refresh gives up on a
// session of ttl seconds that nobody refreshed: SE − min(32 s, SE/3)
// (RFC 4028 §10). For ttl 600 that is 568 s.
func (s SessionTimer) TeardownAfter() time.Duration {
	return session.TeardownAfter(s.TTLDuration())
}

// NATKeepalive is the [nat_keepalive] table (DESIGN.md §3).
type NATKeepalive struct {
	// Message is the UDP payload of a keep-alive in mode "message"; empty
	// disables keep-alives in that mode (VOS3000
	// SS_SIP_NAT_KEEP_ALIVE_MESSAGE). At most 1024 bytes, default "HELLO".
	Message string `toml:"message"`
	// Period in seconds: each binding gets one keep-alive per period
	// (VOS3000 SS_SIP_NAT_KEEP_ALIVE_PERIOD). Range 1..3600, default 30.
	Period int `toml:"period"`
	// SendInterval in milliseconds is the gap between two batches
	// (VOS3000 SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL). Range 1..1000, and
	// period×1000 must be a multiple of it; default 10.
	SendInterval int `toml:"send_interval"`
	// SendOneTime is the most keep-alives in one batch (VOS3000
	// SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME). Range 1..100000, default 100.
	SendOneTime int `toml:"send_one_time"`
	// Mode is message, crlf or options (OPTIONS detects dead devices).
	// Default "message".
	Mode string `toml:"mode"`
	// NATedOnly limits keep-alives to bindings whose source differs from
	// their Contact. Default true.
	NATedOnly bool `toml:"nated_only"`
	// MaxFailures: in options mode, evict a binding after this many
	// unanswered pings in a row. Range 1..100, default 3.
	MaxFailures int `toml:"max_failures"`
}

// PeriodDuration is period as a time.Duration.
func (k NATKeepalive) PeriodDuration() time.Duration { return seconds(k.Period) }

// SendIntervalDuration is send_interval (milliseconds) as a time.Duration.
func (k NATKeepalive) SendIntervalDuration() time.Duration {
	return time.Duration(k.SendInterval) * time.Millisecond
}

// Enabled reports whether keep-alives are sent at all: mode "message" with
// an empty message disables them.
func (k NATKeepalive) Enabled() bool { return k.Mode != "message" || k.Message != "" }

// Capacity is how many bindings the pacer can reach within one period:
// (period / send_interval) × send_one_time. It is 0 when the values are
// out of range.
func (k NATKeepalive) Capacity() int {
	if k.Period < 1 || k.Period > maxKeepalivePeriod || k.SendInterval < 1 || k.SendOneTime < 1 || k.SendOneTime > maxSendOneTime {
		return 0
	}
	return k.Period * 1000 / k.SendInterval * k.SendOneTime
}

// Registrar is the [registrar] table.
type Registrar struct {
	// MaxBindings is the binding table size, preallocated at start.
	// Range 1..1000000, default 100000.
	MaxBindings int `toml:"max_bindings"`
	// MinExpires is the shortest registration accepted, in seconds
	// (shorter ones get 423). Range 1..86400, default 60.
	MinExpires int `toml:"min_expires"`
	// MaxExpires is the longest registration granted, in seconds (longer
	// ones are shortened). Range min_expires..86400, default 3600.
	MaxExpires int `toml:"max_expires"`
	// Auth requires digest authentication of REGISTER against Users.
	// Default false.
	Auth bool `toml:"auth"`
	// Users are the [[registrar.user]] tables.
	Users []User `toml:"user"`
}

// MinExpiresDuration is min_expires as a time.Duration.
func (r Registrar) MinExpiresDuration() time.Duration { return seconds(r.MinExpires) }

// MaxExpiresDuration is max_expires as a time.Duration.
func (r Registrar) MaxExpiresDuration() time.Duration { return seconds(r.MaxExpires) }

// User is one [[registrar.user]]: a phone that registers.
type User struct {
	// Name is the user part the phone registers as (and is called by).
	Name string `toml:"name"`
	// Password is the digest password; required when registrar.auth is on.
	Password string `toml:"password"`
}

// Device is one [[device]]: a device that does not register, at a fixed
// address. Calls from its address go to the upstream; calls from the
// upstream whose Request-URI user is Name go to it.
type Device struct {
	Name string `toml:"name"`
	// Address is "IP:PORT" (an IP literal; "[2001:db8::1]:5060" for IPv6).
	Address string `toml:"address"`
}

// CDR is the [cdr] table (DESIGN.md §4).
type CDR struct {
	// Dir is where the daily CSV files go. Empty (the default) means
	// DATA_DIR/cdr; see Config.CDRDir.
	Dir string `toml:"dir"`
}

// Trace is the [trace] table.
type Trace struct {
	// Enabled logs every SIP message sent and received. Default false.
	Enabled bool `toml:"enabled"`
}

// Network is the [network] table. An empty list of interfaces means sbcd
// leaves the network configuration alone (what a development machine
// wants).
type Network struct {
	Interfaces []Interface `toml:"interface"`
}

// Interface is one [[network.interface]]: the desired state of a link,
// applied idempotently over netlink (DESIGN.md §7).
type Interface struct {
	// Name of the link, for example "eth0" (at most 15 bytes, the Linux
	// limit). For a VLAN sub-interface, the name sbcd gives the new link.
	Name string `toml:"name"`
	// Addresses in CIDR form ("192.0.2.10/24", "2001:db8::10/64").
	Addresses []string `toml:"addresses"`
	// Gateway is the default route's next hop through this link; empty
	// means no default route here.
	Gateway string `toml:"gateway"`
	// MTU in bytes, 576..9216; 0 leaves it as it is.
	MTU int `toml:"mtu"`
	// DHCP runs a DHCP client on the link; then Addresses and Gateway must
	// be empty.
	DHCP bool `toml:"dhcp"`
	// VLAN, when not 0, makes this a VLAN sub-interface (802.1Q ID
	// 1..4094) of Parent, created by sbcd. An addition to the keys of
	// DESIGN.md §5, for the VLAN sub-interfaces of §7.
	VLAN int `toml:"vlan"`
	// Parent is the link a VLAN sub-interface sits on; required with vlan,
	// not allowed without it.
	Parent string `toml:"parent"`
}

// LEDs is the [leds] table: optional overrides of the board profile's
// LEDs (DESIGN.md §6). Each is "" (the board's own), "sysfs:NAME" (the
// Linux LED class, /sys/class/leds/NAME) or "gpio:LINE".
type LEDs struct {
	// Status: fast blink while starting, steady when serving, slow blink
	// when the config was rejected or a subsystem failed.
	Status string `toml:"status"`
	// SIP: on when the upstream answers OPTIONS.
	SIP string `toml:"sip"`
	// Calls: on while calls are up, a short flash per new call.
	Calls string `toml:"calls"`
	// Alarm: on when timeouts or keep-alive failures exceed a threshold.
	Alarm string `toml:"alarm"`
}

// Console is the [console] table: the serial console.
type Console struct {
	// Device is the serial device, for example "/dev/ttyS0"; empty takes it
	// from the board profile.
	Device string `toml:"device"`
	// Baud is the line speed, one of the standard rates (see BaudRates).
	// Default 115200 (8N1).
	Baud int `toml:"baud"`
	// Password, when not empty, is asked before the console accepts
	// commands. Default "" (no password).
	Password string `toml:"password"`
}

// SSH is the [ssh] table: the management service (SSH, SFTP, scp).
type SSH struct {
	// Listen is the SSH address as HOST:PORT (HOST empty or an IP
	// literal); "" turns the service off. Default ":22". The daemon does
	// not start SSH while there is neither an authorized key nor a
	// password: a box fresh from the image has no way in over the network
	// until the operator adds a key on the console.
	Listen string `toml:"listen"`
	// AuthorizedKeys are OpenSSH public key lines, "TYPE BASE64 [comment]".
	AuthorizedKeys []string `toml:"authorized_keys"`
	// Password, when not empty, also allows password login.
	// Default "" (off: public keys only).
	Password string `toml:"password"`
}

// Boards are the values system.board accepts (DESIGN.md §5). A new board
// profile adds its name here.
var Boards = []string{"auto", "rpi4", "nanopi-r2s", "qemu-virt", "none"}

// BaudRates are the serial speeds console.baud accepts: the standard Linux
// termios rates from 1200 up.
var BaudRates = []int{
	1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800,
	500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000,
	3000000, 3500000, 4000000,
}

// DefaultListen is where the built-in default serves SIP: loopback only, so
// a box (or a development machine) without a config file is not reachable
// from the network. The example file in the image listens on 0.0.0.0.
var DefaultListen = []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"}

// Default returns the built-in configuration: the defaults of DESIGN.md
// §2, §3 and §5, serving SIP on loopback only, with no upstream, devices,
// users, network interfaces or authorized keys. It is valid.
func Default() Config {
	return Config{
		System: System{
			Hostname: "sbcd",
			Board:    "auto",
			DataDir:  "/data",
		},
		SIP: SIP{
			Listen:   append([]string(nil), DefaultListen...),
			MaxCalls: 10000,
		},
		SessionTimer: SessionTimer{
			TTL:                     600,
			UpdateSegment:           2,
			MinSE:                   90,
			RefreshMethod:           "auto",
			Refresher:               "sbcd",
			NoTimerReinviteInterval: 7200,
			MaxCallDuration:         0,
			EarlyTimeout:            300,
		},
		NATKeepalive: NATKeepalive{
			Message:      "HELLO",
			Period:       30,
			SendInterval: 10,
			SendOneTime:  100,
			Mode:         "message",
			NATedOnly:    true,
			MaxFailures:  3,
		},
		Registrar: Registrar{
			MaxBindings: 100000,
			MinExpires:  60,
			MaxExpires:  3600,
		},
		Console: Console{Baud: 115200},
		SSH:     SSH{Listen: ":22"},
	}
}

// CDRDir is where CDR files go: cdr.dir, or DATA_DIR/cdr when it is empty.
func (c *Config) CDRDir() string {
	if c.CDR.Dir != "" {
		return c.CDR.Dir
	}
	return filepath.Join(c.System.DataDir, "cdr")
}

// Clone returns a deep copy of c: editing the copy (for example with Set)
// leaves c untouched.
func (c *Config) Clone() *Config {
	out := *c
	cloneSlices(reflect.ValueOf(&out).Elem())
	return &out
}

// cloneSlices replaces every slice reachable from the struct v with a copy.
func cloneSlices(v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Struct:
			cloneSlices(f)
		case reflect.Slice:
			if f.IsNil() {
				continue
			}
			cp := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(cp, f)
			if f.Type().Elem().Kind() == reflect.Struct {
				for j := range cp.Len() {
					cloneSlices(cp.Index(j))
				}
			}
			f.Set(cp)
		}
	}
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
