// Package cdr writes call detail records: one CSV line per finished call,
// the operator's billing record (DESIGN.md §4).
//
// It exists so that a call's record is durable before the call's slot in the
// dialog table is freed: the sip layer hands a finished call to
// [Writer.Append], which never blocks (DESIGN.md §1: nothing blocks inside a
// shard), and frees the slot when the record's done callback reports that the
// line was written and fsynced. A single writer goroutine commits records in
// groups (one write and one fsync per batch and day file), which is what lets
// a box on an SD card keep up with 1,500 calls/s (DESIGN.md §10).
//
// # Files
//
// Records go to one file per UTC day, DIR/YYYY-MM-DD.csv, named after the
// date of the record's EndTime. Every file starts with the header row
// ([Header]); a file found at start (a restart) is appended to without a
// second header. If a power cut left half a line at the end of a file, that
// partial line is cut off before anything is appended (counted in
// [Stats].Truncated). Files are created with mode 0640 and the directory with
// 0750 (both further restricted by the umask); the directory is fsynced after
// a file is created so that its name survives a power cut. A day file removed
// or renamed while sbcd runs (an operator moving it away) is started anew,
// with a header, at the next batch.
//
// # Lines
//
// Columns, in order (see [Header]): call_id, caller, callee, source,
// transport, setup_time, answer_time, end_time, duration, end_reason,
// ended_by, sip_code, then per leg (a_ for the caller's leg, b_ for the
// callee's): se, refresher, mode, refreshes_sent, refreshes_received.
//
//   - Times are UTC, RFC 3339 with milliseconds (2026-11-24T13:05:09.123Z),
//     empty when zero (answer_time of a call that was never answered).
//   - duration is end_time − answer_time in seconds with three decimals,
//     computed from the two timestamps as printed (so a line can be audited
//     by subtraction); 0.000 for a call that was never answered.
//   - end_reason is the closed set of [session.Reason] names; ended_by is
//     caller, callee or sbcd; sip_code the final status of the call (200 when
//     answered), 0 when there was none.
//   - se is the leg's negotiated Session-Expires in seconds (0 without a
//     session timer); refresher is sbcd, endpoint, or empty without a
//     session timer; mode is timer, probe, off, or empty when the leg was
//     never established (a rejected call's legs).
//
// Lines end with LF. Fields are quoted as RFC 4180 says when they contain a
// comma or a double quote (doubled inside), or start with a space.
//
// Text fields (call_id, caller, callee, transport) come from the network and
// are neutralised so that a record is always exactly one line and cannot
// attack the tools operators open it with:
//
//   - every control character (bytes 0x00–0x1F, which includes CR, LF and
//     TAB, and 0x7F) is replaced with U+FFFD "�": a line of the file is a
//     record, whatever the peer sent, so grep, wc -l, tail and the partial
//     line recovery above stay correct, and a terminal shows no escape
//     sequence;
//   - spreadsheet formula injection: a field that starts with '=', '+', '-'
//     or '@' gets a leading apostrophe ('=HYPERLINK(...) is shown as text).
//     A telephone number, '+' or '-' followed by digits only
//     (+4930123456), is left alone: it cannot be a formula, and E.164
//     numbers are what caller and callee usually hold.
//
// Any other bytes, including invalid UTF-8, are written as they are.
package cdr

import (
	"net/netip"
	"time"

	"sbcd/timers/session"
)

// EndedBy says who ended a call.
type EndedBy uint8

// Who ended the call. The zero value is written as an empty field.
const (
	EndedByUnknown EndedBy = iota
	EndedByCaller          // the caller: BYE or CANCEL on the A-leg
	EndedByCallee          // the callee: BYE or a final failure on the B-leg
	EndedBySBCD            // sbcd: a timer, a failed refresh, shutdown, full table
)

func (e EndedBy) String() string {
	switch e {
	case EndedByCaller:
		return "caller"
	case EndedByCallee:
		return "callee"
	case EndedBySBCD:
		return "sbcd"
	}
	return ""
}

// Refresher says who refreshes a leg's session timer.
type Refresher uint8

// Refreshers. RefresherNone (written empty) is a leg without session timer.
const (
	RefresherNone     Refresher = iota
	RefresherSBCD               // sbcd sends the refreshes
	RefresherEndpoint           // the endpoint does; sbcd tears down when they stop
)

func (r Refresher) String() string {
	switch r {
	case RefresherSBCD:
		return "sbcd"
	case RefresherEndpoint:
		return "endpoint"
	}
	return ""
}

// Leg is what a CDR says about one leg of a call.
type Leg struct {
	SE        uint32 // negotiated Session-Expires, seconds; 0 without a timer
	Refresher Refresher
	// Mode is how the leg was kept honest; ModeIdle (a leg never
	// established) is written as an empty field.
	Mode              session.Mode
	RefreshesSent     uint32
	RefreshesReceived uint32
}

// LegFields returns the CDR fields of a leg from its session-timer state.
// A nil leg gives the zero Leg.
func LegFields(l *session.Leg) Leg {
	if l == nil {
		return Leg{}
	}
	out := Leg{
		Mode:              l.Mode,
		RefreshesSent:     l.RefreshesSent,
		RefreshesReceived: l.RefreshesReceived,
	}
	if l.Mode == session.ModeTimer {
		out.SE = l.SE
		out.Refresher = RefresherEndpoint
		if l.LocalRefresher {
			out.Refresher = RefresherSBCD
		}
	}
	return out
}

// Record is one finished call. Strings are written as the sip layer gives
// them (user parts or URIs), neutralised as the package documentation says.
type Record struct {
	CallID    string // the caller's Call-ID (A-leg)
	Caller    string
	Callee    string
	Source    netip.AddrPort // where the caller's packets came from
	Transport string         // "udp" or "tcp"

	SetupTime  time.Time // the caller's INVITE
	AnswerTime time.Time // the 2xx to the caller; zero when never answered
	EndTime    time.Time // required: it also names the day file

	Reason  session.Reason
	EndedBy EndedBy
	// Code is the call's final SIP status: 200 for an answered call, else
	// the final failure code; 0 if there was none.
	Code int

	A, B Leg // the caller's leg and the callee's leg
}
