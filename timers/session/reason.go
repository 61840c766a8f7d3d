package session

import "fmt"

// Reason is why a call ended: the closed set of CDR end reasons
// (DESIGN.md §4). Its String is the value written to the CDR.
type Reason uint8

// End reasons. The zero value means the call has not ended.
const (
	ReasonNone Reason = iota
	// ReasonCallerBye: the caller hung up.
	ReasonCallerBye
	// ReasonCalleeBye: the callee hung up.
	ReasonCalleeBye
	// ReasonCancelled: the caller cancelled before an answer.
	ReasonCancelled
	// ReasonRejected: the callee (or sbcd's routing) refused the call.
	ReasonRejected
	// ReasonSessionTimeout: a session timer expired, or a refresh timed
	// out or drew 408 (RFC 4028 §10).
	ReasonSessionTimeout
	// ReasonRefreshRejected481: a refresh drew 481, the far end no longer
	// knows the dialog (RFC 4028 §10, RFC 5057 §5.1).
	ReasonRefreshRejected481
	// ReasonRefreshFailed: a refresh drew a final answer that ends the
	// dialog (RFC 5057 §5.1) or kept failing until the session could not be
	// kept alive.
	ReasonRefreshFailed
	// ReasonNoTimerProbeFailed: the probe of a leg without session-timer
	// support went unanswered or was refused with 408/481.
	ReasonNoTimerProbeFailed
	// ReasonMaxDuration: max_call_duration was reached.
	ReasonMaxDuration
	// ReasonEarlyTimeout: the call was never answered within early_timeout.
	ReasonEarlyTimeout
	// ReasonNoAck: the 2xx to the caller was never acknowledged (Timer H).
	ReasonNoAck
	// ReasonTableFull: refused because the dialog table was full.
	ReasonTableFull
	// ReasonShutdown: sbcd was stopped while the call was up.
	ReasonShutdown
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:               "",
	ReasonCallerBye:          "caller_bye",
	ReasonCalleeBye:          "callee_bye",
	ReasonCancelled:          "cancelled",
	ReasonRejected:           "rejected",
	ReasonSessionTimeout:     "session_timeout",
	ReasonRefreshRejected481: "refresh_rejected_481",
	ReasonRefreshFailed:      "refresh_failed",
	ReasonNoTimerProbeFailed: "no_timer_probe_failed",
	ReasonMaxDuration:        "max_duration",
	ReasonEarlyTimeout:       "early_timeout",
	ReasonNoAck:              "no_ack",
	ReasonTableFull:          "table_full",
	ReasonShutdown:           "shutdown",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons lists every end reason, for documentation and tests.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}
