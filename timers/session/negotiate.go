package session

import "time"

// Refresher is the value of the refresher parameter of Session-Expires
// (RFC 4028 §4). It names a role in the transaction that carries it, not a
// party: in a refresh that sbcd sends, "uac" means sbcd.
type Refresher uint8

// Refresher parameter values.
const (
	RefresherNone Refresher = iota // parameter absent
	RefresherUAC
	RefresherUAS
)

func (r Refresher) String() string {
	switch r {
	case RefresherUAC:
		return "uac"
	case RefresherUAS:
		return "uas"
	}
	return ""
}

// Request is what the session-timer headers of a received INVITE or UPDATE
// say. Zero values mean "absent".
type Request struct {
	SE        uint32    // Session-Expires delta-seconds, 0 when absent
	Refresher Refresher // refresher parameter of Session-Expires
	MinSE     uint32    // Min-SE delta-seconds, 0 when absent
	Supported bool      // "timer" is listed in Supported or Require
}

// Response is what the session-timer headers of a received 2xx or 422 say.
type Response struct {
	SE        uint32    // Session-Expires delta-seconds, 0 when absent
	Refresher Refresher // refresher parameter of Session-Expires
	MinSE     uint32    // Min-SE delta-seconds (422), 0 when absent
}

// Offer is what sbcd puts in an INVITE or UPDATE it sends: Session-Expires
// with SE and Refresher, and Min-SE. Every such request also carries
// Supported: timer (DESIGN.md §2).
type Offer struct {
	SE        uint32
	MinSE     uint32
	Refresher Refresher
}

// Answer is what sbcd puts in a 2xx it sends. SE 0 means the 2xx carries no
// Session-Expires. Require means the 2xx must carry Require: timer.
type Answer struct {
	SE        uint32
	Refresher Refresher
	Require   bool
}

// MaxRetries422 is how many times sbcd retries a request that drew 422
// (DESIGN.md §2: once, twice at most).
const MaxRetries422 = 2

// maxSE bounds every interval sbcd agrees to: one day.
const maxSE = 86400

func secs(d time.Duration) uint32 { return uint32(d / time.Second) }

// Check applies sbcd's Min-SE to a received INVITE or UPDATE. When it returns
// reject > 0, answer 422 Session Interval Too Small with Min-SE: reject.
// Otherwise it returns the request as sbcd takes it, with Session-Expires
// raised where the RFC lets sbcd raise it.
func (p *Params) Check(req Request) (out Request, reject uint32) {
	min := secs(p.MinSE)
	if req.SE != 0 && req.SE < min {
		if req.Supported {
			// RFC 4028 §9: a UAS that finds Session-Expires below its
			// minimum rejects with 422 carrying Min-SE, when the UAC
			// supports the extension.
			return req, min
		}
		// RFC 4028 §8.1: without Supported: timer a 422 would not be
		// understood; raise Session-Expires (and Min-SE) instead.
		req.SE = min
	}
	if req.MinSE > maxSE {
		req.MinSE = maxSE
	}
	if req.SE > maxSE {
		req.SE = maxSE
	}
	if req.SE != 0 && req.SE < req.MinSE {
		// RFC 4028 §7.1: Session-Expires is never below Min-SE; a UAC
		// that broke that rule gets its own Min-SE.
		req.SE = req.MinSE
	}
	if req.MinSE != 0 && req.MinSE < min {
		req.MinSE = min
	}
	return req, 0
}

// Offer is what sbcd asks of the callee on the B-leg for a caller's checked
// request: at most ttl and never more than the caller asked for, at least
// every Min-SE on the path (RFC 4028 §7.1, §8.1).
func (p *Params) Offer(caller Request) Offer {
	se := secs(p.TTL)
	if caller.SE != 0 && caller.SE < se {
		se = caller.SE
	}
	minSE := max(secs(p.MinSE), caller.MinSE)
	if se < minSE {
		se = minSE
	}
	o := Offer{SE: se, MinSE: minSE, Refresher: RefresherUAC}
	if p.Refresher == PreferEndpoint {
		o.Refresher = RefresherUAS
	}
	return o
}

// Retry422 decides what to do when a request sbcd sent drew 422 with Min-SE
// minSE, after `tries` earlier retries. RFC 4028 §7.3: retry with Min-SE set
// to the 422's value and Session-Expires at least that, higher CSeq, same
// Call-ID. It gives up after MaxRetries422 retries, when the 422 carries no
// usable Min-SE, or when the offered Session-Expires already met that Min-SE
// (a retry could not satisfy such a peer).
func Retry422(o Offer, minSE uint32, tries int) (Offer, bool) {
	if tries >= MaxRetries422 || minSE == 0 || minSE > maxSE || minSE <= o.SE {
		return o, false
	}
	o.MinSE = max(o.MinSE, minSE)
	o.SE = max(o.SE, minSE)
	return o, true
}

// answer is sbcd's choice as UAS for a checked request (RFC 4028 §9). cap,
// when non-zero, is the most sbcd may promise (the B-leg's agreed interval).
// local reports whether sbcd refreshes. timer=false means the 2xx carries no
// Session-Expires and the leg runs without a session timer.
func (p *Params) answer(req Request, cap uint32) (a Answer, local, timer bool) {
	if !req.Supported && req.SE == 0 {
		// RFC 4028 §9: the UAS may only add Session-Expires on its own when
		// the UAC supports the extension; this leg has no session timer.
		return Answer{}, false, false
	}
	se := secs(p.TTL)
	if req.SE != 0 && req.SE < se {
		// RFC 4028 §9: the UAS may lower Session-Expires, never below Min-SE.
		se = req.SE
	}
	if cap != 0 && cap < se {
		// DESIGN.md §2: never promise the caller more than the B-leg agreed.
		se = cap
	}
	se = max(se, req.MinSE, secs(AbsoluteMinSE))
	if !req.Supported {
		// RFC 4028 §9 Table 2, row 1: the UAC does not support the
		// extension, so the UAS refreshes; no Require: timer.
		return Answer{SE: se, Refresher: RefresherUAS}, true, true
	}
	// RFC 4028 §9 Table 2, rows 2-4.
	r := req.Refresher
	if r == RefresherNone {
		r = RefresherUAS
		if p.Refresher == PreferEndpoint {
			r = RefresherUAC
		}
	}
	// RFC 4028 §9: refresher=uac in a 2xx requires Require: timer.
	return Answer{SE: se, Refresher: r, Require: r == RefresherUAC}, r == RefresherUAS, true
}
