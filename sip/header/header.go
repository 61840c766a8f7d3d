// Package header reads and writes the header values that carry RFC 4028
// session timers (Session-Expires, Min-SE) and the option-tag and method
// lists that say whether a peer supports them (Supported, Require, Allow).
//
// It exists so that the sip layer hands the timer core (timers/session)
// already-checked numbers: everything here comes from the network, so every
// parser rejects what the grammar does not allow, never panics, and is
// fuzzed. Formatting appends to a caller's buffer and allocates nothing.
package header

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"sbcd/timers/session"
)

// Header names, with their compact forms (RFC 4028 §4: "x" for
// Session-Expires; RFC 3261 §7.3.3: "k" for Supported).
const (
	SessionExpires        = "Session-Expires"
	SessionExpiresCompact = "x"
	MinSE                 = "Min-SE"
	Supported             = "Supported"
	SupportedCompact      = "k"
	Require               = "Require"
	Allow                 = "Allow"
	// OptionTimer is the option tag of RFC 4028 §3.
	OptionTimer = "timer"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("header: syntax error")

func syntaxf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrSyntax, fmt.Sprintf(format, a...))
}

// isLWS reports the linear white space RFC 3261 §25.1 allows around
// separators (header values reach us unfolded).
func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trim(s string) string {
	for len(s) > 0 && isLWS(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isLWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// isToken reports whether s is an RFC 3261 §25.1 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isParamValue reports whether s is a gen-value: token, host or
// quoted-string (RFC 3261 §25.1), loosely: quoted strings must be closed.
func isParamValue(s string) bool {
	if len(s) >= 2 && s[0] == '"' {
		body := s[1 : len(s)-1]
		if s[len(s)-1] != '"' {
			return false
		}
		for i := 0; i < len(body); i++ {
			switch body[i] {
			case '\\':
				i++ // quoted-pair
				if i >= len(body) {
					return false
				}
			case '"':
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isToken(s[i:i+1]) && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return s != ""
}

// deltaSeconds parses RFC 3261 §25.1 delta-seconds (1*DIGIT). Values above
// 2^32-1 are taken as 2^32-1, as RFC 3261 §20.19 does for Expires.
func deltaSeconds(s string) (uint32, error) {
	if s == "" {
		return 0, syntaxf("missing delta-seconds")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, syntaxf("delta-seconds %q is not a number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return math.MaxUint32, nil // only a range error remains possible
	}
	return uint32(n), nil
}

// params walks ";name[=value]" parameters after the first value, calling fn
// for each with name and value trimmed.
func params(s string, fn func(name, value string) error) error {
	for s != "" {
		if s[0] != ';' {
			return syntaxf("expected ';' before %q", s)
		}
		s = s[1:]
		end := strings.IndexByte(s, ';')
		if q := strings.IndexByte(s, '"'); q >= 0 && (end < 0 || q < end) {
			// a quoted value may hold ';': find its closing quote
			close := q + 1
			for close < len(s) && s[close] != '"' {
				if s[close] == '\\' {
					close++
				}
				close++
			}
			if close >= len(s) {
				return syntaxf("unterminated quoted string")
			}
			end = strings.IndexByte(s[close:], ';')
			if end >= 0 {
				end += close
			}
		}
		p := s
		if end >= 0 {
			p, s = s[:end], s[end:]
		} else {
			s = ""
		}
		name, value, hasValue := strings.Cut(p, "=")
		name, value = trim(name), trim(value)
		if !isToken(name) {
			return syntaxf("parameter name %q is not a token", name)
		}
		if hasValue && !isParamValue(value) {
			return syntaxf("parameter %s has bad value %q", name, value)
		}
		if err := fn(name, value); err != nil {
			return err
		}
	}
	return nil
}

// SE is a parsed Session-Expires value (RFC 4028 §4).
type SE struct {
	Delta     uint32
	Refresher session.Refresher
}

// ParseSessionExpires parses the value of a Session-Expires header:
// delta-seconds *(SEMI se-params), se-params = refresher-param /
// generic-param, refresher-param = "refresher" EQUAL ("uas" / "uac")
// (RFC 4028 §4). Parameter names and the refresher value are compared
// case-insensitively (RFC 3261 §7.3.1).
func ParseSessionExpires(v string) (SE, error) {
	v = trim(v)
	i := strings.IndexByte(v, ';')
	if i < 0 {
		i = len(v)
	}
	d, err := deltaSeconds(trim(v[:i]))
	if err != nil {
		return SE{}, fmt.Errorf("parse Session-Expires: %w", err)
	}
	se := SE{Delta: d}
	seen := false
	err = params(v[i:], func(name, value string) error {
		if !strings.EqualFold(name, "refresher") {
			return nil
		}
		if seen {
			return syntaxf("refresher given twice")
		}
		seen = true
		switch {
		case strings.EqualFold(value, "uac"):
			se.Refresher = session.RefresherUAC
		case strings.EqualFold(value, "uas"):
			se.Refresher = session.RefresherUAS
		default:
			return syntaxf("refresher %q is neither uac nor uas", value)
		}
		return nil
	})
	if err != nil {
		return SE{}, fmt.Errorf("parse Session-Expires: %w", err)
	}
	return se, nil
}

// ParseMinSE parses the value of a Min-SE header: delta-seconds
// *(SEMI generic-param) (RFC 4028 §5).
func ParseMinSE(v string) (uint32, error) {
	v = trim(v)
	i := strings.IndexByte(v, ';')
	if i < 0 {
		i = len(v)
	}
	d, err := deltaSeconds(trim(v[:i]))
	if err == nil {
		err = params(v[i:], func(string, string) error { return nil })
	}
	if err != nil {
		return 0, fmt.Errorf("parse Min-SE: %w", err)
	}
	return d, nil
}

// ListHas reports whether a comma-separated list header value (Supported,
// Require, Allow) names item. Option tags and method names are compared
// exactly (RFC 3261 §19.2 and §7.1: both are case-sensitive tokens).
func ListHas(v, item string) bool {
	for v != "" {
		var e string
		e, v, _ = strings.Cut(v, ",")
		if trim(e) == item {
			return true
		}
	}
	return false
}

// AppendSessionExpires appends a Session-Expires value, with the refresher
// parameter when r names one.
func AppendSessionExpires(dst []byte, delta uint32, r session.Refresher) []byte {
	dst = strconv.AppendUint(dst, uint64(delta), 10)
	if r != session.RefresherNone {
		dst = append(dst, ";refresher="...)
		dst = append(dst, r.String()...)
	}
	return dst
}

// AppendMinSE appends a Min-SE value.
func AppendMinSE(dst []byte, delta uint32) []byte {
	return strconv.AppendUint(dst, uint64(delta), 10)
}

// Values is what a message's session-timer headers say, as raw header
// values; empty means absent. The sip layer fills it from a parsed message.
type Values struct {
	SessionExpires string
	MinSE          string
	Supported      []string // every Supported header value
	Require        []string // every Require header value
}

// timer reports whether the option tag "timer" is in Supported or Require.
func (v *Values) timer() bool {
	for _, l := range [2][]string{v.Supported, v.Require} {
		for _, s := range l {
			if ListHas(s, OptionTimer) {
				return true
			}
		}
	}
	return false
}

// Request turns a received INVITE's or UPDATE's values into what the timer
// core takes. A malformed Session-Expires or Min-SE is an error: answer
// 400 Bad Request naming the header.
func (v *Values) Request() (session.Request, error) {
	var r session.Request
	r.Supported = v.timer()
	if v.SessionExpires != "" {
		se, err := ParseSessionExpires(v.SessionExpires)
		if err != nil {
			return session.Request{}, err
		}
		r.SE, r.Refresher = se.Delta, se.Refresher
	}
	if v.MinSE != "" {
		m, err := ParseMinSE(v.MinSE)
		if err != nil {
			return session.Request{}, err
		}
		r.MinSE = m
	}
	return r, nil
}

// Response turns a received 2xx's or 422's values into what the timer core
// takes.
func (v *Values) Response() (session.Response, error) {
	r, err := v.Request()
	if err != nil {
		return session.Response{}, err
	}
	return session.Response{SE: r.SE, Refresher: r.Refresher, MinSE: r.MinSE}, nil
}

// Field is a header field as the sip layer holds it: sipgo's sip.Header.
type Field interface {
	Name() string
	Value() string
}

// First returns the first of fields named name, the zero F (nil for
// sipgo's sip.Header) when there is none. Names compare case-insensitively
// (RFC 3261 §7.3.1); compact forms are names of their own. It allocates
// nothing: sipgo's GetHeader lowers the name of every field it looks at,
// one allocation per field outside its short list of well-known names.
func First[F Field](fields []F, name string) F {
	for _, f := range fields {
		if strings.EqualFold(f.Name(), name) {
			return f
		}
	}
	var zero F
	return zero
}

// All appends the fields named name to dst, in their order (RFC 3261
// §7.3.1), and returns it.
func All[F Field](dst, fields []F, name string) []F {
	for _, f := range fields {
		if strings.EqualFold(f.Name(), name) {
			dst = append(dst, f)
		}
	}
	return dst
}
