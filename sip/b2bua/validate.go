package b2bua

import (
	"strings"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
)

// This file holds the UAS checks every request goes through before it is
// routed (RFC 3261 §8.2), in the order of that section. See the package
// doc for the order and the choices made.

// sipVersion is the only protocol version sbcd speaks (RFC 3261 §7.1).
const sipVersion = "SIP/2.0"

// accept is the only body type sbcd takes in an INVITE (RFC 3261 §8.2.3,
// §20.1). A multipart body is refused: sbcd resends a leg's last body as
// application/sdp in session refreshes (DESIGN.md §2).
const accept = "application/sdp"

// knownMethods are methods sbcd recognises but does not handle out of a
// dialog: they draw 405 with Allow (RFC 3261 §8.2.1, §21.4.6). REGISTER is
// among them when sbcd runs without a registrar.
var knownMethods = map[sip.RequestMethod]bool{
	sip.REGISTER: true, sip.MESSAGE: true, sip.INFO: true, sip.NOTIFY: true,
	sip.SUBSCRIBE: true, sip.REFER: true, sip.PRACK: true, sip.PUBLISH: true,
}

// handledMethods are the methods sbcd implements (the Allow list).
var handledMethods = map[sip.RequestMethod]bool{
	sip.INVITE: true, sip.ACK: true, sip.BYE: true, sip.CANCEL: true,
	sip.UPDATE: true, sip.OPTIONS: true,
}

// singleHeaders are header fields that may appear only once (RFC 3261
// §7.3.1: only comma-separated list fields may be repeated), by lower-case
// full and compact name (§7.3.3).
var singleHeaders = map[string]string{
	"call-id": "call-id", "i": "call-id",
	"from": "from", "f": "from",
	"to": "to", "t": "to",
	"cseq":           "cseq",
	"max-forwards":   "max-forwards",
	"content-length": "content-length", "l": "content-length",
	"content-type": "content-type", "c": "content-type",
}

// refusal is a response sbcd sends instead of processing a request.
type refusal struct {
	code   int
	reason string
	hdrs   []sip.Header
}

// checkMessage makes the checks every request but ACK must pass before
// anything else looks at it: version and framing (RFC 3261 §7, §8.1.1).
// A zero code means the request passed.
func checkMessage(req *sip.Request) refusal {
	// RFC 3261 §21.5.26: a request in another SIP version gets 505.
	if req.SipVersion != sipVersion {
		return refusal{code: 505, reason: "Version Not Supported"}
	}
	// RFC 3261 §8.1.1: To, From, CSeq, Call-ID and Via are mandatory
	// (Max-Forwards too, but RFC 2543 UAs omit it: tolerated).
	if req.CallID() == nil || req.From() == nil || req.To() == nil || req.CSeq() == nil || req.Via() == nil {
		return refusal{code: 400, reason: "Missing Mandatory Header"}
	}
	// RFC 3261 §7.3.1: a single-valued header field repeated (RFC 4475
	// §3.3.8 multi01, two Content-Lengths in §3.3.9 mcl01) is malformed.
	seen := make(map[string]bool, 8)
	for _, h := range req.Headers() {
		name, ok := singleHeaders[strings.ToLower(h.Name())]
		if !ok {
			continue
		}
		if seen[name] {
			return refusal{code: 400, reason: "Duplicate " + h.Name()}
		}
		seen[name] = true
	}
	return refusal{}
}

// checkMethod is method inspection (RFC 3261 §8.2.1) for a request outside
// a dialog, and the CSeq method check that follows it (§8.1.1.5: the CSeq
// method matches the request's). Unknown methods get 501 first, so an
// escaped method such as RE%47IST%45R (RFC 4475 §3.1.1.5) is just unknown.
func checkMethod(req *sip.Request) refusal {
	if !handledMethods[req.Method] {
		if knownMethods[req.Method] {
			return refusal{code: 405, reason: "Method Not Allowed", hdrs: []sip.Header{sip.NewHeader("Allow", allow)}}
		}
		// RFC 3261 §21.5.2.
		return refusal{code: 501, reason: "Not Implemented", hdrs: []sip.Header{sip.NewHeader("Allow", allow)}}
	}
	return checkCSeq(req)
}

// checkCSeq checks that the CSeq method matches the request method (RFC
// 3261 §8.1.1.5, §20.16; RFC 4475 §3.1.2.17).
func checkCSeq(req *sip.Request) refusal {
	if m := req.CSeq().MethodName; m != req.Method {
		return refusal{code: 400, reason: "CSeq Method Mismatch"}
	}
	return refusal{}
}

// checkHeaders is header inspection (RFC 3261 §8.2.2): the Request-URI
// scheme (§8.2.2.1) and the Require option tags (§8.2.2.3).
func checkHeaders(req *sip.Request) refusal {
	// RFC 3261 §8.2.2.1: a Request-URI scheme sbcd does not understand
	// draws 416. sbcd routes by sip and sips URIs only (tel URIs are not
	// translated).
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips":
	default:
		return refusal{code: 416, reason: "Unsupported URI Scheme"}
	}
	// RFC 3261 §8.2.2.3: option tags in Require that sbcd does not support
	// draw 420 listing them in Unsupported; never for ACK or CANCEL
	// (§8.2.2.3, §9.1: a CANCEL's Require is ignored).
	if req.IsAck() || req.IsCancel() {
		return refusal{}
	}
	var unsupported []string
	for _, h := range header.All(nil, req.Headers(), header.Require) {
		for tag := range strings.SplitSeq(h.Value(), ",") {
			tag = strings.TrimSpace(tag)
			if tag == "" || strings.EqualFold(tag, header.OptionTimer) {
				continue
			}
			unsupported = append(unsupported, tag)
		}
	}
	if len(unsupported) > 0 {
		return refusal{code: 420, reason: "Bad Extension",
			hdrs: []sip.Header{sip.NewHeader("Unsupported", strings.Join(unsupported, ", "))}}
	}
	return refusal{}
}

// checkContent is content processing (RFC 3261 §8.2.3) for a new INVITE:
// its body must be application/sdp in the identity encoding, and the
// caller must accept application/sdp, the body of sbcd's answers
// (§21.4.7).
func checkContent(req *sip.Request) refusal {
	if len(req.Body()) > 0 {
		ct := header.First(req.Headers(), "Content-Type")
		if ct == nil {
			// RFC 3261 §20.15: a body needs a Content-Type.
			return refusal{code: 400, reason: "Missing Content-Type"}
		}
		if mediaType(ct.Value()) != accept {
			return refusal{code: 415, reason: "Unsupported Media Type",
				hdrs: []sip.Header{sip.NewHeader("Accept", accept)}}
		}
		for _, h := range header.All(nil, req.Headers(), "Content-Encoding") {
			for enc := range strings.SplitSeq(h.Value(), ",") {
				if enc = strings.TrimSpace(enc); enc != "" && !strings.EqualFold(enc, "identity") {
					return refusal{code: 415, reason: "Unsupported Media Type",
						hdrs: []sip.Header{sip.NewHeader("Accept-Encoding", "identity")}}
				}
			}
		}
	}
	// RFC 3261 §21.4.7: sbcd's answers carry SDP; an Accept without it
	// (and without a matching wildcard) draws 406. No Accept means
	// application/sdp (§20.1).
	accepts := header.All(nil, req.Headers(), "Accept")
	if len(accepts) == 0 {
		return refusal{}
	}
	for _, h := range accepts {
		for v := range strings.SplitSeq(h.Value(), ",") {
			switch mediaType(v) {
			case "", accept, "application/*", "*/*":
				return refusal{}
			}
		}
	}
	return refusal{code: 406, reason: "Not Acceptable", hdrs: []sip.Header{sip.NewHeader("Accept", accept)}}
}

// mediaType is the lower-case type/subtype of a Content-Type or Accept
// value, without parameters.
func mediaType(v string) string {
	t, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

// checkMaxForwards answers 483 for a request sbcd would forward with
// Max-Forwards 0 (RFC 3261 §16.3 item 3, which sbcd applies to the legs
// it originates on behalf of a request, as a B2BUA forwarding it).
func checkMaxForwards(req *sip.Request) refusal {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return refusal{code: 483, reason: "Too Many Hops"}
	}
	return refusal{}
}

// optionsAnswer is sbcd's 200 to an OPTIONS addressed to it (RFC 3261
// §11.2: Allow, Accept, Accept-Encoding, Accept-Language, Supported).
func optionsHeaders() []sip.Header {
	return []sip.Header{
		sip.NewHeader("Allow", allow),
		sip.NewHeader("Accept", accept),
		sip.NewHeader("Accept-Encoding", "identity"),
		sip.NewHeader("Accept-Language", "en"),
		sip.NewHeader(header.Supported, header.OptionTimer),
	}
}
