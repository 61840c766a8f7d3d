// Package keepalive keeps the NAT bindings of registered phones open and
// notices devices that have gone away.
//
// A phone behind NAT registers from a private address; the NAT in front of it
// forgets the public port it mapped after some idle time (often 30 to 120 s
// for UDP), and from then on incoming calls for that phone go nowhere. The
// registrar therefore sends every such binding a small packet once per period
// from the SIP listening socket, which keeps the mapping that carries SIP
// alive. In OPTIONS mode the keep-alive is a request that the device must
// answer, so a device that stopped answering is noticed and its binding
// evicted after a few unanswered pings.
//
// The parameters follow the VOS3000 softswitch model (SS_SIP_NAT_KEEP_ALIVE_*)
// that operators know: one keep-alive per binding per period, sent in batches
// of at most send_one_time every send_interval. See Params.
//
// The package holds the fixed-capacity binding table and its pacer: the table
// is allocated once by New, and Upsert, Lookup, Remove, Answered and Advance
// allocate nothing. The package does no I/O, starts no goroutines and never
// reads the clock (timers/huge maps the binding array on huge pages in New):
// the owner (the registrar) passes a monotonic time in
// nanoseconds, calls Advance every send_interval and sends the packets the
// returned events ask for. Given the same calls it produces the same events.
package keepalive

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode is what a keep-alive looks like on the wire.
type Mode uint8

const (
	// ModeMessage sends Params.Message as a bare UDP payload (VOS3000
	// behaviour). An empty message disables keep-alives in this mode.
	ModeMessage Mode = iota
	// ModeCRLF sends a CRLF ping (a double CRLF over TCP, RFC 5626 §4.4.1).
	ModeCRLF
	// ModeOptions sends a SIP OPTIONS request; a device that leaves
	// Params.MaxFailures of them in a row unanswered is evicted.
	ModeOptions
)

var modeNames = [...]string{ModeMessage: "message", ModeCRLF: "crlf", ModeOptions: "options"}

// String returns the configuration spelling of m ("message", "crlf",
// "options"), or "Mode(N)" for a value that is not a mode.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Valid reports whether m is one of the defined modes.
func (m Mode) Valid() bool { return int(m) < len(modeNames) }

// ParseMode parses the configuration spelling of a mode: "message", "crlf"
// or "options" (ASCII case is ignored, nothing else is).
func ParseMode(s string) (Mode, error) {
	for i, name := range modeNames {
		if strings.EqualFold(s, name) {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("keepalive: nat_keepalive.mode: unknown mode %q (want message, crlf or options)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) {
	if !m.Valid() {
		return nil, fmt.Errorf("keepalive: nat_keepalive.mode: %v is not a mode", m)
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseMode.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Params are the keep-alive parameters, TOML section [nat_keepalive]. Each
// field names its TOML key and, where there is one, the VOS3000 name that the
// console and `sbcd check` accept as an alias.
type Params struct {
	// Message is the UDP payload of a keep-alive in ModeMessage.
	// TOML message, VOS3000 SS_SIP_NAT_KEEP_ALIVE_MESSAGE, default "HELLO".
	// Empty disables keep-alives in ModeMessage (ModeCRLF and ModeOptions do
	// not use it). At most 1024 bytes.
	Message string
	// Period is the time between two keep-alives to the same binding.
	// TOML period (seconds), VOS3000 SS_SIP_NAT_KEEP_ALIVE_PERIOD, default
	// 30 s, range 1 s to 3600 s, a whole multiple of SendInterval.
	Period time.Duration
	// SendInterval is the pacer's tick and the shortest gap between two
	// batches (a batch may take several ticks whose bindings fit
	// SendOneTime, Table.BatchDue). TOML send_interval (milliseconds),
	// VOS3000 SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL, default 10 ms, range
	// 1 ms to 1 s.
	SendInterval time.Duration
	// SendOneTime is the most keep-alives sent in one batch.
	// TOML send_one_time, VOS3000 SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME,
	// default 100, range 1 to 100000.
	SendOneTime int
	// Mode is the kind of keep-alive. TOML mode, default ModeMessage.
	Mode Mode
	// NATedOnly limits keep-alives to bindings whose source address differs
	// from their Contact. TOML nated_only, default true.
	NATedOnly bool
	// MaxFailures is, in ModeOptions, the number of consecutive unanswered
	// pings after which a binding is evicted. TOML max_failures, default 3,
	// range 1 to 100.
	MaxFailures int
}

// DefaultParams returns the defaults of DESIGN.md §3.
func DefaultParams() Params {
	return Params{
		Message:      "HELLO",
		Period:       30 * time.Second,
		SendInterval: 10 * time.Millisecond,
		SendOneTime:  100,
		Mode:         ModeMessage,
		NATedOnly:    true,
		MaxFailures:  3,
	}
}

// Limits enforced by Validate.
const (
	MinPeriod       = time.Second
	MaxPeriod       = time.Hour
	MinSendInterval = time.Millisecond
	MaxSendInterval = time.Second
	MaxSendOneTime  = 100000
	MaxMaxFailures  = 100
	MaxMessageLen   = 1024
)

// ParamError is one problem found by Validate. Key is the TOML key under
// [nat_keepalive] (for example "period"), VOSName the VOS3000 name or "".
type ParamError struct {
	Key     string
	VOSName string
	Problem string
}

// Error renders "keepalive: nat_keepalive.KEY (VOSNAME): PROBLEM".
func (e *ParamError) Error() string {
	if e.VOSName == "" {
		return "keepalive: nat_keepalive." + e.Key + ": " + e.Problem
	}
	return "keepalive: nat_keepalive." + e.Key + " (" + e.VOSName + "): " + e.Problem
}

// Validate checks every rule and returns all problems at once (errors.Join
// of *ParamError), or nil.
func (p Params) Validate() error {
	var errs []error
	bad := func(key, vos, format string, args ...any) {
		errs = append(errs, &ParamError{Key: key, VOSName: vos, Problem: fmt.Sprintf(format, args...)})
	}
	const (
		vosMessage  = "SS_SIP_NAT_KEEP_ALIVE_MESSAGE"
		vosPeriod   = "SS_SIP_NAT_KEEP_ALIVE_PERIOD"
		vosInterval = "SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL"
		vosOneTime  = "SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME"
	)
	if len(p.Message) > MaxMessageLen {
		bad("message", vosMessage, "%d bytes is above the maximum %d", len(p.Message), MaxMessageLen)
	}
	periodOK, intervalOK := true, true
	switch {
	case p.Period < MinPeriod:
		bad("period", vosPeriod, "%v is below the minimum %v", p.Period, MinPeriod)
		periodOK = false
	case p.Period > MaxPeriod:
		bad("period", vosPeriod, "%v is above the maximum %v", p.Period, MaxPeriod)
		periodOK = false
	}
	switch {
	case p.SendInterval < MinSendInterval:
		bad("send_interval", vosInterval, "%v is below the minimum %v", p.SendInterval, MinSendInterval)
		intervalOK = false
	case p.SendInterval > MaxSendInterval:
		bad("send_interval", vosInterval, "%v is above the maximum %v", p.SendInterval, MaxSendInterval)
		intervalOK = false
	}
	if periodOK && intervalOK && p.Period%p.SendInterval != 0 {
		bad("period", vosPeriod, "%v is not a whole multiple of send_interval %v (the pacer works in send_interval ticks)", p.Period, p.SendInterval)
	}
	switch {
	case p.SendOneTime < 1:
		bad("send_one_time", vosOneTime, "%d is below the minimum 1", p.SendOneTime)
	case p.SendOneTime > MaxSendOneTime:
		bad("send_one_time", vosOneTime, "%d is above the maximum %d", p.SendOneTime, MaxSendOneTime)
	}
	if !p.Mode.Valid() {
		bad("mode", "", "%v is not one of message, crlf, options", p.Mode)
	}
	switch {
	case p.MaxFailures < 1:
		bad("max_failures", "", "%d is below the minimum 1", p.MaxFailures)
	case p.MaxFailures > MaxMaxFailures:
		bad("max_failures", "", "%d is above the maximum %d", p.MaxFailures, MaxMaxFailures)
	}
	return errors.Join(errs...)
}

// ticks is the number of send_interval ticks in one period, or 0 when the
// two do not make a usable schedule.
func (p Params) ticks() int64 {
	if p.SendInterval <= 0 || p.Period <= 0 {
		return 0
	}
	return int64(p.Period / p.SendInterval)
}

// Capacity is the number of bindings the pacer covers in one period without
// stretching it: (Period/SendInterval) × SendOneTime. With more bindings each
// one is still pinged, but every Period × bindings/Capacity (see Table). It is
// 0 for parameters that do not make a schedule.
func (p Params) Capacity() int {
	b := p.ticks()
	if b <= 0 || p.SendOneTime <= 0 {
		return 0
	}
	c := b * int64(p.SendOneTime)
	if c > int64(^uint(0)>>1) || c/int64(p.SendOneTime) != b {
		return int(^uint(0) >> 1)
	}
	return int(c)
}

// Enabled reports whether the parameters send keep-alives at all: ModeMessage
// with an empty Message sends none.
func (p Params) Enabled() bool { return !(p.Mode == ModeMessage && p.Message == "") }

// PacketsPerSecond is the keep-alive rate for the given number of pinged
// bindings: bindings/Period, capped at SendOneTime/SendInterval when the
// bindings exceed Capacity. It is 0 when keep-alives are disabled or the
// parameters do not make a schedule.
func (p Params) PacketsPerSecond(bindings int) float64 {
	c := p.Capacity()
	if bindings <= 0 || c == 0 || !p.Enabled() {
		return 0
	}
	if bindings > c {
		bindings = c
	}
	return float64(bindings) / p.Period.Seconds()
}
