package cdr

import (
	"strconv"
	"time"

	"sbcd/timers/session"
)

// Header is the first line of every CDR file (without its LF).
const Header = "call_id,caller,callee,source,transport," +
	"setup_time,answer_time,end_time,duration,end_reason,ended_by,sip_code," +
	"a_se,a_refresher,a_mode,a_refreshes_sent,a_refreshes_received," +
	"b_se,b_refresher,b_mode,b_refreshes_sent,b_refreshes_received"

// timeLayout is RFC 3339 in UTC with milliseconds (DESIGN.md §4).
const timeLayout = "2006-01-02T15:04:05.000Z"

// reasonNames holds the CDR name of every known end reason, so formatting
// never goes through the fmt path of Reason.String.
var reasonNames = func() (names [256]string) {
	for _, r := range session.Reasons() {
		names[r] = r.String()
	}
	return names
}()

// AppendCSV appends r as one CSV line, LF included, to dst and returns the
// extended buffer. It allocates nothing when dst has room for the line.
func AppendCSV(dst []byte, r *Record) []byte {
	if r == nil {
		return dst
	}
	dst = appendField(dst, r.CallID)
	dst = append(dst, ',')
	dst = appendField(dst, r.Caller)
	dst = append(dst, ',')
	dst = appendField(dst, r.Callee)
	dst = append(dst, ',')
	if r.Source.IsValid() {
		// An address with a zone (fe80::1%eth0) carries a string that is
		// not ours: format it apart and treat it as text.
		var scratch [64]byte
		dst = appendField(dst, r.Source.AppendTo(scratch[:0]))
	}
	dst = append(dst, ',')
	dst = appendField(dst, r.Transport)
	dst = append(dst, ',')
	dst = appendTime(dst, r.SetupTime)
	dst = append(dst, ',')
	dst = appendTime(dst, r.AnswerTime)
	dst = append(dst, ',')
	dst = appendTime(dst, r.EndTime)
	dst = append(dst, ',')
	dst = appendDuration(dst, r.AnswerTime, r.EndTime)
	dst = append(dst, ',')
	dst = appendReason(dst, r.Reason)
	dst = append(dst, ',')
	dst = append(dst, r.EndedBy.String()...)
	dst = append(dst, ',')
	dst = strconv.AppendInt(dst, int64(r.Code), 10)
	dst = append(dst, ',')
	dst = appendLeg(dst, &r.A)
	dst = append(dst, ',')
	dst = appendLeg(dst, &r.B)
	return append(dst, '\n')
}

func appendLeg(dst []byte, l *Leg) []byte {
	dst = strconv.AppendUint(dst, uint64(l.SE), 10)
	dst = append(dst, ',')
	dst = append(dst, l.Refresher.String()...)
	dst = append(dst, ',')
	switch l.Mode {
	case session.ModeTimer, session.ModeProbe, session.ModeOff:
		dst = append(dst, l.Mode.String()...)
	}
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, uint64(l.RefreshesSent), 10)
	dst = append(dst, ',')
	return strconv.AppendUint(dst, uint64(l.RefreshesReceived), 10)
}

func appendReason(dst []byte, r session.Reason) []byte {
	if r == session.ReasonNone {
		return dst
	}
	if name := reasonNames[r]; name != "" {
		return append(dst, name...)
	}
	dst = append(dst, "reason("...)
	dst = strconv.AppendUint(dst, uint64(r), 10)
	return append(dst, ')')
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return dst
	}
	return t.UTC().AppendFormat(dst, timeLayout)
}

// appendDuration appends end − answer in seconds with three decimals, from
// the millisecond timestamps as printed; 0.000 when never answered (or when
// the clock went backwards).
func appendDuration(dst []byte, answer, end time.Time) []byte {
	var ms int64
	if !answer.IsZero() && !end.IsZero() {
		ms = max(end.UnixMilli()-answer.UnixMilli(), 0)
	}
	dst = strconv.AppendInt(dst, ms/1000, 10)
	frac := ms % 1000
	return append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// isControl reports the bytes replaced with U+FFFD in text fields.
func isControl(c byte) bool { return c < 0x20 || c == 0x7f }

// formulaPrefix reports whether a text field needs the apostrophe that
// keeps spreadsheets from evaluating it: it starts with = + - or @, unless
// it is a telephone number ('+' or '-' followed by digits only).
func formulaPrefix[T ~string | ~[]byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	switch s[0] {
	case '=', '@':
		return true
	case '+', '-':
		if len(s) == 1 {
			return true
		}
		for i := 1; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return true
			}
		}
		return false
	}
	return false
}

// replacement is U+FFFD in UTF-8, written in place of control bytes.
const replacement = "\uFFFD"

// appendField appends the text field s, neutralised and quoted as the
// package documentation says.
func appendField[T ~string | ~[]byte](dst []byte, s T) []byte {
	quote, clean := len(s) > 0 && s[0] == ' ', false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ',' || c == '"':
			quote = true
		case isControl(c):
			clean = true
		}
	}
	formula := formulaPrefix(s)
	if !quote && !clean && !formula {
		return append(dst, s...)
	}
	if quote {
		dst = append(dst, '"')
	}
	if formula {
		dst = append(dst, '\'')
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			dst = append(dst, '"', '"')
		case isControl(c):
			dst = append(dst, replacement...)
		default:
			dst = append(dst, c)
		}
	}
	if quote {
		dst = append(dst, '"')
	}
	return dst
}
