// Package session is the RFC 4028 session-timer state machine of one call
// of the B2BUA: the negotiation on each leg, the deadlines that follow from
// it, and what to do when a deadline passes or a refresh transaction ends.
//
// It exists so that the protocol rules live in one place that can be tested
// exhaustively in virtual time. It is pure: the sip layer hands it header
// values, transaction outcomes and a monotonic time in nanoseconds; it
// answers with decisions and Actions for the sip layer to carry out. No I/O,
// no clock, no goroutines, no allocation on the refresh path.
//
// Terms: the A-leg is the caller's dialog, where sbcd is UAS; the B-leg is
// the callee's dialog, where sbcd is UAC. "Local" means sbcd, "remote" the
// endpoint of that leg.
package session

import (
	"errors"
	"fmt"
	"time"
)

// RFC limits and SIP timers this package relies on.
const (
	// AbsoluteMinSE is the smallest session interval RFC 4028 allows
	// (RFC 4028 §4 and §5: Min-SE MUST NOT be less than 90 seconds).
	AbsoluteMinSE = 90 * time.Second
	// T1 is the RFC 3261 §17.1.1.1 round-trip estimate.
	T1 = 500 * time.Millisecond
	// TimerH is how long a UAS waits for the ACK of its 2xx, 64*T1
	// (RFC 3261 §17.2.1 and §13.3.1.4).
	TimerH = 64 * T1
	// TransactionTimeout is Timer B/F, 64*T1 (RFC 3261 §17.1.1.2, §17.1.2.2):
	// the longest a refresh or probe transaction can stay unanswered.
	TransactionTimeout = 64 * T1
	// MaxMaxCallDuration bounds max_call_duration so that every deadline
	// fits the timing wheel's range with room to spare.
	MaxMaxCallDuration = 7 * 24 * time.Hour
)

// Method is the request used to refresh a session.
type Method uint8

// Refresh methods (the `refresh_method` key).
const (
	// MethodAuto uses UPDATE when the peer's Allow lists it, else re-INVITE.
	MethodAuto Method = iota
	// MethodUpdate always refreshes with UPDATE (RFC 3311).
	MethodUpdate
	// MethodInvite always refreshes with re-INVITE.
	MethodInvite
)

var methodNames = [...]string{MethodAuto: "auto", MethodUpdate: "update", MethodInvite: "invite"}

func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return fmt.Sprintf("method(%d)", uint8(m))
}

// ParseMethod reads a `refresh_method` value: auto, update or invite.
func ParseMethod(s string) (Method, error) {
	for m, n := range methodNames {
		if s == n {
			return Method(m), nil
		}
	}
	return 0, fmt.Errorf("session: refresh method %q is not one of auto, update, invite", s)
}

// Preference says who should refresh when sbcd may choose (RFC 4028 §9,
// Table 2 row "UAC supports, no refresher in the request").
type Preference uint8

// Refresher preferences (the `refresher` key).
const (
	// PreferSbcd makes sbcd the refresher wherever it may choose.
	PreferSbcd Preference = iota
	// PreferEndpoint leaves refreshing to the endpoint wherever it may.
	PreferEndpoint
)

var preferenceNames = [...]string{PreferSbcd: "sbcd", PreferEndpoint: "endpoint"}

func (p Preference) String() string {
	if int(p) < len(preferenceNames) {
		return preferenceNames[p]
	}
	return fmt.Sprintf("preference(%d)", uint8(p))
}

// ParsePreference reads a `refresher` value: sbcd or endpoint.
func ParsePreference(s string) (Preference, error) {
	for p, n := range preferenceNames {
		if s == n {
			return Preference(p), nil
		}
	}
	return 0, fmt.Errorf("session: refresher %q is not one of sbcd, endpoint", s)
}

// Params are the session-timer parameters of the [session_timer] section.
// Durations are whole seconds on the wire; Validate enforces that.
type Params struct {
	// TTL is the Session-Expires sbcd requests and accepts
	// (key `ttl`, VOS3000 SS_SIP_SESSION_TTL, default 600 s).
	TTL time.Duration
	// UpdateSegment: when sbcd is the refresher it refreshes every
	// SE/UpdateSegment (key `update_segment`, VOS3000
	// SS_SIP_SESSION_UPDATE_SEGMENT, default 2, the RFC 4028 §10 half).
	UpdateSegment int
	// MinSE is sbcd's Min-SE: smaller requests draw 422 (key `min_se`,
	// default 90 s, never below 90 s).
	MinSE time.Duration
	// RefreshMethod picks UPDATE or re-INVITE (key `refresh_method`,
	// default auto).
	RefreshMethod Method
	// Refresher says who refreshes where sbcd may choose (key `refresher`,
	// default sbcd).
	Refresher Preference
	// NoTimerReinviteInterval is the probe interval for legs whose endpoint
	// has no session-timer support; 0 disables probing (key
	// `no_timer_reinvite_interval`, VOS3000 SS_SIP_NO_TIMER_REINVITE_INTERVAL,
	// default 7200 s).
	NoTimerReinviteInterval time.Duration
	// MaxCallDuration is a hard cap on an answered call; 0 is off (key
	// `max_call_duration`, default 0).
	MaxCallDuration time.Duration
	// EarlyTimeout cleans up a call that is never answered (key
	// `early_timeout`, VOS3000 SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP,
	// default 300 s).
	EarlyTimeout time.Duration
}

// DefaultParams returns the defaults of DESIGN.md §2.
func DefaultParams() Params {
	return Params{
		TTL:                     600 * time.Second,
		UpdateSegment:           2,
		MinSE:                   90 * time.Second,
		RefreshMethod:           MethodAuto,
		Refresher:               PreferSbcd,
		NoTimerReinviteInterval: 7200 * time.Second,
		MaxCallDuration:         0,
		EarlyTimeout:            300 * time.Second,
	}
}

// Validate returns every problem with p at once (joined), each naming the
// TOML key and, where there is one, the VOS3000 name.
func (p Params) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("session_timer.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	whole := func(key string, d time.Duration) bool {
		if d%time.Second != 0 {
			bad(key, "%v is not a whole number of seconds (SIP carries delta-seconds)", d)
			return false
		}
		return true
	}
	if whole("min_se", p.MinSE) && p.MinSE < AbsoluteMinSE {
		// RFC 4028 §5: Min-SE MUST NOT be less than 90 seconds.
		bad("min_se", "%v is below the RFC 4028 minimum of 90s", p.MinSE)
	}
	if whole("ttl (SS_SIP_SESSION_TTL)", p.TTL) && p.TTL < p.MinSE {
		// RFC 4028 §4: Session-Expires is never below Min-SE.
		bad("ttl (SS_SIP_SESSION_TTL)", "%v is below min_se %v", p.TTL, p.MinSE)
	}
	if p.TTL > 86400*time.Second {
		bad("ttl (SS_SIP_SESSION_TTL)", "%v is above the 86400s this box supports", p.TTL)
	}
	if p.UpdateSegment < 2 || p.UpdateSegment > 60 {
		// RFC 4028 §10: refreshing later than half the interval risks the
		// far end tearing the session down first.
		bad("update_segment (SS_SIP_SESSION_UPDATE_SEGMENT)", "%d is outside 2..60 (2 refreshes at half the interval, as RFC 4028 §10 recommends)", p.UpdateSegment)
	}
	if p.RefreshMethod > MethodInvite {
		bad("refresh_method", "%v is not one of auto, update, invite", p.RefreshMethod)
	}
	if p.Refresher > PreferEndpoint {
		bad("refresher", "%v is not one of sbcd, endpoint", p.Refresher)
	}
	if k := "no_timer_reinvite_interval (SS_SIP_NO_TIMER_REINVITE_INTERVAL)"; whole(k, p.NoTimerReinviteInterval) &&
		p.NoTimerReinviteInterval != 0 && (p.NoTimerReinviteInterval < 60*time.Second || p.NoTimerReinviteInterval > 86400*time.Second) {
		bad(k, "%v is outside 60s..86400s (0 disables probing)", p.NoTimerReinviteInterval)
	}
	if whole("max_call_duration", p.MaxCallDuration) && (p.MaxCallDuration < 0 || p.MaxCallDuration > MaxMaxCallDuration) {
		bad("max_call_duration", "%v is outside 0 (off)..%v", p.MaxCallDuration, MaxMaxCallDuration)
	}
	if k := "early_timeout (SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP)"; whole(k, p.EarlyTimeout) &&
		(p.EarlyTimeout < 10*time.Second || p.EarlyTimeout > 3600*time.Second) {
		bad(k, "%v is outside 10s..3600s", p.EarlyTimeout)
	}
	return errors.Join(errs...)
}

// RefreshAfter is when, after a successful negotiation with session interval
// se, sbcd sends its refresh when it is the refresher: se/UpdateSegment
// (RFC 4028 §10 recommends half the interval, UpdateSegment 2).
func (p Params) RefreshAfter(se time.Duration) time.Duration {
	seg := p.UpdateSegment
	if seg < 2 {
		seg = 2
	}
	return se / time.Duration(seg)
}

// TeardownAfter is when the side that does not refresh gives up on a
// session with interval se: se − min(32 s, se/3) (RFC 4028 §10).
func TeardownAfter(se time.Duration) time.Duration {
	return se - min(32*time.Second, se/3)
}
