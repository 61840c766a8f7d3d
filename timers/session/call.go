package session

import "time"

// LegID names a leg of a call.
type LegID uint8

// Legs. LegNone marks call-level events in an Action.
const (
	LegA    LegID = iota // the caller's dialog: sbcd is UAS
	LegB                 // the callee's dialog: sbcd is UAC
	LegNone LegID = 0xff
)

func (l LegID) String() string {
	switch l {
	case LegA:
		return "A"
	case LegB:
		return "B"
	}
	return "-"
}

// Mode is how a leg is kept honest.
type Mode uint8

// Leg modes.
const (
	// ModeIdle: not negotiated yet.
	ModeIdle Mode = iota
	// ModeTimer: an RFC 4028 session timer runs on the leg.
	ModeTimer
	// ModeProbe: the endpoint has no session-timer support; sbcd probes it
	// with a re-INVITE every no_timer_reinvite_interval.
	ModeProbe
	// ModeOff: no session timer and probing disabled.
	ModeOff
)

var modeNames = [...]string{"idle", "timer", "probe", "off"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "mode?"
}

// Phase is where a call is in its life.
type Phase uint8

// Call phases.
const (
	PhaseIdle      Phase = iota // slot unused
	PhaseEarly                  // INVITE received, no final answer yet
	PhaseAnswered               // 2xx sent to the caller, ACK awaited
	PhaseConfirmed              // ACK received: the call is up
	PhaseEnded                  // the call is over
)

// Kind is what an Action asks the sip layer to do.
type Kind uint8

// Action kinds.
const (
	// ActNone asks for nothing.
	ActNone Kind = iota
	// ActRefresh: send a session refresh on Leg with Method, carrying
	// Supported: timer and Offer (refresher=uac: sbcd).
	ActRefresh
	// ActProbe: send a re-INVITE with the leg's last SDP to check that the
	// endpoint of a leg without session timer is alive.
	ActProbe
	// ActEnd: end the call: BYE on both legs once confirmed (CANCEL and
	// final responses while early), CDR with Reason. Leg is the leg that
	// failed, or LegNone for a call-level deadline.
	ActEnd
)

// Action is a decision of the state machine for the sip layer.
type Action struct {
	Kind   Kind
	Leg    LegID
	Method Method // ActRefresh: MethodUpdate or MethodInvite
	Offer  Offer  // ActRefresh: the session-timer headers to send
	Reason Reason // ActEnd
	// Due is, for ActRefresh and ActProbe, the deadline (ns) that made the
	// action due: how late the request goes out is measured against it.
	Due int64
}

// pending is the transaction sbcd has outstanding on a leg.
type pending uint8

const (
	pendNone    pending = iota
	pendRefresh         // a refresh of sbcd's own
	pendProbe           // a no-timer probe
	pendRelay           // a re-INVITE or UPDATE relayed from the other leg
)

// Leg is the session-timer state of one leg, kept compact in the dialog slot.
type Leg struct {
	SE    uint32 // negotiated session interval, seconds (ModeTimer)
	MinSE uint32 // Min-SE in force on the leg, seconds
	Mode  Mode
	// LocalRefresher: sbcd refreshes this leg (else the endpoint does and
	// sbcd tears down when it stops).
	LocalRefresher bool
	// AllowUpdate: the endpoint's Allow lists UPDATE.
	AllowUpdate bool
	// NoUpdate: the endpoint refused UPDATE with 405/501; re-INVITE from
	// now on (DESIGN.md §2).
	NoUpdate bool
	// CallIDOwner: sbcd chose this leg's Call-ID (the B-leg), which sets
	// the 491 back-off range (RFC 3261 §14.1).
	CallIDOwner bool

	pend     pending
	tries    uint8 // failed attempts of the refresh (or probe) under way
	tries422 uint8

	// RefreshesSent and RefreshesReceived count refreshes for the CDR.
	RefreshesSent     uint32
	RefreshesReceived uint32

	// Due is the next deadline of the leg (ns), 0 for none.
	Due int64
	// Refreshed is when the session was last refreshed or negotiated (ns).
	Refreshed int64
}

// Expires is when the leg's session ends unless refreshed (RFC 4028 §10).
func (l *Leg) Expires() int64 {
	if l.Mode != ModeTimer {
		return 0
	}
	return l.Refreshed + int64(l.SE)*int64(time.Second)
}

// method is the refresh method for this leg (DESIGN.md §2 refresh_method).
func (l *Leg) method(p *Params) Method {
	switch {
	case l.NoUpdate:
		return MethodInvite
	case p.RefreshMethod == MethodUpdate:
		return MethodUpdate
	case p.RefreshMethod == MethodAuto && l.AllowUpdate:
		return MethodUpdate
	}
	return MethodInvite
}

// offer is what a refresh sbcd sends carries: the current interval with
// sbcd as refresher (RFC 4028 §7.4: refresher=uac names the sender).
func (l *Leg) offer() Offer {
	return Offer{SE: l.SE, MinSE: l.MinSE, Refresher: RefresherUAC}
}

// arm sets the leg's deadline after a successful negotiation at now.
func (l *Leg) arm(now int64, p *Params) {
	l.pend, l.tries, l.tries422 = pendNone, 0, 0
	l.Refreshed = now
	switch l.Mode {
	case ModeTimer:
		se := time.Duration(l.SE) * time.Second
		if l.LocalRefresher {
			// RFC 4028 §10: the refresher refreshes before expiry;
			// sbcd does it at SE/update_segment.
			l.Due = now + int64(p.RefreshAfter(se))
		} else {
			// RFC 4028 §10: the side that does not refresh sends BYE at
			// SE − min(32 s, SE/3) when no refresh came.
			l.Due = now + int64(TeardownAfter(se))
		}
	case ModeProbe:
		l.Due = now + int64(p.NoTimerReinviteInterval)
	default:
		l.Due = 0
	}
}

// settle moves the leg to ModeTimer with interval se, or to ModeProbe (or
// ModeOff when probing is disabled) when se is 0.
func (l *Leg) settle(se uint32, local bool, p *Params) {
	switch {
	case se != 0:
		// RFC 4028 §4, §5: an interval is never below Min-SE (nor 90 s),
		// whatever a peer that breaks the rule answered.
		l.MinSE = max(l.MinSE, secs(AbsoluteMinSE))
		l.Mode, l.SE, l.LocalRefresher = ModeTimer, max(se, l.MinSE), local
	case p.NoTimerReinviteInterval > 0:
		l.Mode, l.SE, l.LocalRefresher = ModeProbe, 0, false
	default:
		l.Mode, l.SE, l.LocalRefresher = ModeOff, 0, false
	}
}

// Call is the session-timer state of one call: both legs and the call-level
// deadlines (early answer, ACK, maximum duration).
type Call struct {
	Legs   [2]Leg
	Phase  Phase
	Reason Reason // why it ended (PhaseEnded)
	// EndedBy is the leg whose failure ended the call, LegNone otherwise.
	EndedBy LegID

	earlyAt int64 // early_timeout deadline (PhaseEarly)
	ackAt   int64 // Timer H deadline (PhaseAnswered)
	maxAt   int64 // max_call_duration deadline
}

// leg returns the state of leg id, or nil for an id that names no leg: a bad
// id from a caller is ignored, never acted on as another leg.
func (c *Call) leg(id LegID) *Leg {
	if id > LegB {
		return nil
	}
	return &c.Legs[id]
}

// Invite starts a call at now, when the caller's INVITE is accepted into a
// slot (DESIGN.md §2: a call never answered is cleaned up at early_timeout).
func (c *Call) Invite(now int64, p *Params) {
	*c = Call{Phase: PhaseEarly, EndedBy: LegNone}
	c.Legs[LegB].CallIDOwner = true
	c.earlyAt = now + int64(p.EarlyTimeout)
}

// StartUAC settles the B-leg (or any leg where sbcd was UAC) from the callee's
// 2xx to the INVITE sbcd sent with offer (RFC 4028 §7.2): Session-Expires
// with refresher=uac makes sbcd the refresher, uas the callee; a missing
// refresher leaves it to sbcd. A 2xx without Session-Expires means the
// callee runs no session timer: the leg is probed instead.
func (c *Call) StartUAC(now int64, leg LegID, offer Offer, resp Response, allowUpdate bool, p *Params) {
	l := c.leg(leg)
	if c.Phase != PhaseEarly || l == nil {
		return // a late 2xx of an ended or already answered call
	}
	l.AllowUpdate = allowUpdate
	l.MinSE = offer.MinSE
	l.settle(resp.SE, resp.Refresher != RefresherUAS, p)
	l.arm(now, p)
}

// StartUAS settles the A-leg (or any leg where sbcd was UAS) for the checked
// INVITE req and returns the session-timer headers of sbcd's 2xx
// (RFC 4028 §9, Table 2). capSE, when non-zero, is the B-leg's agreed
// interval, which the answer never exceeds (DESIGN.md §2).
func (c *Call) StartUAS(now int64, leg LegID, req Request, capSE uint32, allowUpdate bool, p *Params) Answer {
	l := c.leg(leg)
	if c.Phase != PhaseEarly || l == nil {
		return Answer{}
	}
	l.AllowUpdate = allowUpdate
	l.MinSE = max(req.MinSE, secs(p.MinSE))
	a, local, timer := p.answer(req, capSE)
	if !timer {
		a.SE = 0
	}
	l.settle(a.SE, local, p)
	a.SE = l.SE
	l.arm(now, p)
	return a
}

// Answered records that sbcd sent the 2xx to the caller at now: Timer H runs
// until the ACK (RFC 3261 §13.3.1.4), and max_call_duration starts.
func (c *Call) Answered(now int64, p *Params) {
	if c.Phase != PhaseEarly {
		return
	}
	c.Phase = PhaseAnswered
	c.earlyAt = 0
	c.ackAt = now + int64(TimerH)
	if p.MaxCallDuration > 0 {
		c.maxAt = now + int64(p.MaxCallDuration)
	}
}

// Acked records the caller's ACK of the 2xx.
func (c *Call) Acked() {
	if c.Phase == PhaseAnswered {
		c.Phase = PhaseConfirmed
		c.ackAt = 0
	}
}

// End marks the call over with reason (a BYE, CANCEL, rejection or shutdown
// handled by the sip layer). It reports false when the call had already
// ended, so the first reason wins.
func (c *Call) End(reason Reason, by LegID) bool {
	if c.Phase == PhaseEnded || c.Phase == PhaseIdle {
		return false
	}
	c.Phase, c.Reason, c.EndedBy = PhaseEnded, reason, by
	c.earlyAt, c.ackAt, c.maxAt = 0, 0, 0
	c.Legs[0].Due, c.Legs[1].Due = 0, 0
	return true
}

// Next is the earliest deadline of the call in ns, or 0 when none is set:
// the time the owner schedules the call's timer for.
func (c *Call) Next() int64 {
	next := int64(0)
	for _, t := range [...]int64{c.earlyAt, c.ackAt, c.maxAt, c.Legs[0].Due, c.Legs[1].Due} {
		if t != 0 && (next == 0 || t < next) {
			next = t
		}
	}
	return next
}

func (c *Call) end(reason Reason, by LegID, out []Action) []Action {
	if !c.End(reason, by) {
		return out
	}
	return append(out, Action{Kind: ActEnd, Leg: by, Reason: reason})
}

// Fire handles every deadline of the call that is due at now and appends what
// the sip layer must do. Call it when the call's timer expires; then
// reschedule the timer to Next.
func (c *Call) Fire(now int64, p *Params, out []Action) []Action {
	switch {
	case c.Phase == PhaseEnded || c.Phase == PhaseIdle:
		return out
	case c.earlyAt != 0 && now >= c.earlyAt:
		// DESIGN.md §2 early_timeout (SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP).
		return c.end(ReasonEarlyTimeout, LegNone, out)
	case c.ackAt != 0 && now >= c.ackAt:
		// RFC 3261 §13.3.1.4: no ACK within Timer H ends the dialog.
		return c.end(ReasonNoAck, LegA, out)
	case c.maxAt != 0 && now >= c.maxAt:
		return c.end(ReasonMaxDuration, LegNone, out)
	}
	for i := range c.Legs {
		l := &c.Legs[i]
		if l.Due == 0 || now < l.Due {
			continue
		}
		id, due := LegID(i), l.Due
		switch {
		case l.pend == pendRelay:
			// A relayed request is in flight on the leg; its outcome
			// decides (its transaction ends within Timer B).
			l.Due = now + int64(time.Second)
		case l.pend == pendRefresh:
			// The refresh never completed and the session has expired
			// (the transaction layer should have reported a timeout
			// first): RFC 4028 §10.
			return c.end(ReasonSessionTimeout, id, out)
		case l.pend == pendProbe:
			return c.end(ReasonNoTimerProbeFailed, id, out)
		case l.Mode == ModeTimer && l.LocalRefresher:
			a := c.send(now, id, p)
			a.Due = due
			out = append(out, a)
		case l.Mode == ModeTimer:
			// RFC 4028 §10: no refresh arrived by SE − min(32, SE/3).
			return c.end(ReasonSessionTimeout, id, out)
		case l.Mode == ModeProbe:
			l.pend = pendProbe
			// Guard in case the outcome is never reported.
			l.Due = now + int64(TransactionTimeout+4*time.Second)
			out = append(out, Action{Kind: ActProbe, Leg: id, Method: MethodInvite, Due: due})
		default:
			l.Due = 0
		}
	}
	return out
}

// send starts a refresh sbcd owes on leg: counted, guarded by the session's
// expiry in case no outcome is ever reported.
func (c *Call) send(now int64, leg LegID, p *Params) Action {
	l := &c.Legs[leg]
	l.pend = pendRefresh
	l.RefreshesSent++
	l.Due = max(l.Expires(), now+int64(TransactionTimeout+4*time.Second))
	return Action{Kind: ActRefresh, Leg: leg, Method: l.method(p), Offer: l.offer()}
}

// Relayed records a re-INVITE or UPDATE that sbcd sends on leg on behalf of
// the other side (a media change) and returns the session-timer headers it
// carries. Its 2xx refreshes the leg like any refresh; report its outcome to
// Outcome. It reports false when a transaction of sbcd's is already under
// way on the leg (answer the other side 491, RFC 3261 §14.1).
func (c *Call) Relayed(leg LegID) (Offer, bool) {
	l := c.leg(leg)
	if l == nil || l.pend != pendNone || c.Phase == PhaseEnded || c.Phase == PhaseIdle {
		return Offer{}, false
	}
	l.pend = pendRelay
	l.RefreshesSent++
	o := l.offer()
	if !l.LocalRefresher {
		o.Refresher = RefresherUAS // the endpoint keeps refreshing
	}
	if l.Mode != ModeTimer {
		o = Offer{MinSE: max(l.MinSE, secs(AbsoluteMinSE))}
	}
	return o, true
}

// Received handles a session refresh (re-INVITE or UPDATE) that arrives on
// leg and returns the session-timer headers of sbcd's 2xx to it. Either side
// may refresh, and each refresh renegotiates interval and refresher
// (RFC 4028 §9, §10). When reject is non-zero, answer 422 with Min-SE: reject
// and leave the session as it was.
func (c *Call) Received(now int64, leg LegID, req Request, p *Params) (a Answer, reject uint32) {
	l := c.leg(leg)
	if l == nil || c.Phase == PhaseEnded || c.Phase == PhaseIdle {
		return Answer{}, 0
	}
	req, reject = p.Check(req)
	if reject != 0 {
		return Answer{}, reject
	}
	l.MinSE = max(l.MinSE, req.MinSE)
	var capSE uint32
	if o := &c.Legs[LegB]; leg == LegA && o.Mode == ModeTimer {
		capSE = o.SE // DESIGN.md §2: never promise the caller more than the B-leg
	}
	a, local, timer := p.answer(req, capSE)
	if !timer {
		a.SE = 0
	}
	l.settle(a.SE, local, p)
	a.SE = l.SE
	l.RefreshesReceived++
	if l.pend == pendProbe || l.pend == pendRefresh {
		// The endpoint refreshed while sbcd's own refresh or probe was
		// under way: the session is refreshed, so that transaction's
		// outcome no longer matters (Outcome ignores it).
		l.pend = pendNone
	}
	l.arm(now, p)
	return a, 0
}

// Outcome is how a refresh or probe transaction sbcd sent ended.
type Outcome struct {
	// Code is the final status code; 0 means the transaction timed out
	// (Timer B/F) or the transport failed.
	Code int
	// Response holds the session-timer headers of a 2xx or 422.
	Response Response
	// RetryAfter is the Retry-After of the answer in seconds, 0 if absent.
	RetryAfter uint32
}

// maxTries bounds the attempts of one refresh or probe that draws transient
// failures (DESIGN.md §2: 503 and other transient answers retry before
// giving up).
const maxTries = 3

// dialogGone reports the final answers after which the dialog no longer
// exists (RFC 5057 §5.1); 408 and 481 (RFC 4028 §10) are handled apart.
func dialogGone(code int) bool {
	switch code {
	case 404, 410, 416, 482, 483, 484, 485, 502, 604:
		return true
	}
	return false
}

// Outcome handles the end of a refresh, probe or relayed transaction sbcd
// sent on leg and returns what to do at once (ActNone when nothing is due
// now; a later retry is set as the leg's deadline). rnd is a random value for
// the RFC 3261 §14.1 back-off.
func (c *Call) Outcome(now int64, leg LegID, o Outcome, p *Params, rnd uint32) Action {
	l := c.leg(leg)
	if l == nil || c.Phase == PhaseEnded || c.Phase == PhaseIdle || l.pend == pendNone {
		return Action{} // late outcome of a forgotten transaction
	}
	kind := l.pend
	l.pend = pendNone
	fail := func(r Reason) Action {
		if kind == pendProbe {
			r = ReasonNoTimerProbeFailed
		}
		if !c.End(r, leg) {
			return Action{}
		}
		return Action{Kind: ActEnd, Leg: leg, Reason: r}
	}
	switch {
	case o.Code >= 200 && o.Code < 300:
		// RFC 4028 §7.2 applies to the 2xx of every refresh: it sets
		// interval and refresher anew; no Session-Expires turns the timer
		// off (the leg is then probed).
		l.settle(o.Response.SE, o.Response.Refresher != RefresherUAS, p)
		l.arm(now, p)
		return Action{}
	case o.Code == 0 || o.Code == 408:
		// RFC 4028 §10: a refresh that times out or draws 408 ends the
		// session with a BYE.
		return fail(ReasonSessionTimeout)
	case o.Code == 481:
		// RFC 4028 §10, RFC 5057 §5.1: the far end lost the dialog.
		return fail(ReasonRefreshRejected481)
	case dialogGone(o.Code):
		return fail(ReasonRefreshFailed)
	case kind == pendRelay:
		// RFC 5057 §5.1: other failures affect only the transaction; the
		// leg's deadline stands and the answer goes back to the sender.
		return Action{}
	case kind == pendProbe && o.Code != 491:
		// Any other answer shows the endpoint is alive, which is what the
		// probe asks; the session itself is unchanged.
		l.arm(now, p)
		return Action{}
	case o.Code == 422:
		// RFC 4028 §7.3 (for refreshes too, §10): retry with the larger
		// Min-SE from the 422, at most MaxRetries422 times.
		off, ok := Retry422(l.offer(), o.Response.MinSE, int(l.tries422))
		if !ok {
			return fail(ReasonRefreshFailed)
		}
		l.tries422++
		l.SE, l.MinSE = off.SE, off.MinSE
		return c.send(now, leg, p)
	case (o.Code == 405 || o.Code == 501) && !l.NoUpdate && l.method(p) == MethodUpdate:
		// DESIGN.md §2: UPDATE refused: fall back to re-INVITE at once and
		// remember it for this peer.
		l.NoUpdate = true
		return c.send(now, leg, p)
	}
	// 491, 503 and other transient or unknown failures: retry before
	// giving up, while a retry can still finish before the session expires.
	l.tries++
	if l.tries >= maxTries {
		return fail(ReasonRefreshFailed)
	}
	var delay time.Duration
	switch {
	case o.Code == 491:
		// RFC 3261 §14.1: the Call-ID owner waits 2.1-4 s, the other side
		// 0-2 s, in units of 10 ms.
		if l.CallIDOwner {
			delay = 2100*time.Millisecond + time.Duration(rnd%191)*10*time.Millisecond
		} else {
			delay = time.Duration(rnd%201) * 10 * time.Millisecond
		}
	case o.RetryAfter > 0:
		delay = time.Duration(min(o.RetryAfter, 32)) * time.Second
	default:
		delay = time.Second << (l.tries - 1)
	}
	at := now + int64(delay)
	if kind == pendRefresh && at+int64(TransactionTimeout) > l.Expires() {
		// A retry could not finish before the session expires.
		return fail(ReasonRefreshFailed)
	}
	l.Due = at
	return Action{}
}
