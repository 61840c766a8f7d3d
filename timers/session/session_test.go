package session

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"
)

const sec = int64(time.Second)

// t0 is an arbitrary monotonic start, far from zero (0 means "no deadline").
const t0 = 1_000_000 * sec

func paramsTTL(ttl int) Params {
	p := DefaultParams()
	p.TTL = time.Duration(ttl) * time.Second
	return p
}

// answered builds a call answered and acknowledged at t0. The caller asks for
// se with refresher reqRef; the callee answers se with refresher respRef.
func answered(p *Params, se uint32, reqRef, respRef Refresher) *Call {
	c := new(Call)
	c.Invite(t0, p)
	req, reject := p.Check(Request{SE: se, Refresher: reqRef, Supported: true})
	if reject != 0 {
		panic("unexpected 422")
	}
	offer := p.Offer(req)
	c.StartUAC(t0, LegB, offer, Response{SE: se, Refresher: respRef}, true, p)
	c.StartUAS(t0, LegA, req, c.Legs[LegB].SE, true, p)
	c.Answered(t0, p)
	c.Acked()
	return c
}

type event struct {
	at  int64 // seconds after t0, in ms precision
	act Action
}

func (e event) String() string {
	return fmt.Sprintf("%.3fs %v leg %v %v %v", float64(e.at)/1e3, e.act.Kind, e.act.Leg, e.act.Method, e.act.Reason)
}

func (k Kind) String() string {
	return [...]string{"none", "refresh", "probe", "end"}[k]
}

// answer decides the outcome of a refresh or probe sbcd sent: the outcome and
// how long after sending it arrives. ok=false means no answer arrives before
// the transaction times out (reported after Timer F).
type answerFunc func(n int, a Action) (o Outcome, after time.Duration)

// simulate drives c in virtual time from t0 until t0+until, firing its
// deadlines exactly when due and delivering outcomes, and returns what it did.
func simulate(t *testing.T, c *Call, p *Params, until time.Duration, answer answerFunc) []event {
	t.Helper()
	type delivery struct {
		at  int64
		leg LegID
		o   Outcome
	}
	var (
		events  []event
		pending []delivery
		buf     []Action
		n       int
	)
	end := t0 + int64(until)
	for steps := 0; steps < 100000; steps++ {
		now := c.Next()
		di := -1
		for i, d := range pending {
			if (now == 0 || d.at < now) && (di < 0 || d.at < pending[di].at) {
				now, di = d.at, i
			}
		}
		if now == 0 || now > end {
			return events
		}
		if di >= 0 {
			d := pending[di]
			pending = append(pending[:di], pending[di+1:]...)
			if a := c.Outcome(now, d.leg, d.o, p, 7); a.Kind != ActNone {
				buf = append(buf[:0], a)
			} else {
				continue
			}
		} else {
			buf = c.Fire(now, p, buf[:0])
			for i, a := range buf {
				// Fired exactly at the deadline: Due is now.
				if (a.Kind == ActRefresh || a.Kind == ActProbe) && a.Due != now {
					t.Fatalf("%v fired at %d with Due %d", a.Kind, now, a.Due)
				}
				buf[i].Due = 0 // the events below compare without it
			}
		}
		for _, a := range buf {
			events = append(events, event{at: (now - t0) / int64(time.Millisecond), act: a})
			if a.Kind == ActRefresh || a.Kind == ActProbe {
				n++
				o, after := answer(n, a)
				pending = append(pending, delivery{at: now + int64(after), leg: a.Leg, o: o})
			}
		}
	}
	t.Fatal("simulation did not settle")
	return nil
}

func ok200(se uint32, r Refresher) answerFunc {
	return func(int, Action) (Outcome, time.Duration) {
		return Outcome{Code: 200, Response: Response{SE: se, Refresher: r}}, 50 * time.Millisecond
	}
}

func silent(int, Action) (Outcome, time.Duration) { return Outcome{}, TransactionTimeout }

// TestWorkedTimelines checks the timelines of DESIGN.md §2 and issue 2:
// refresh at SE/2, teardown at SE − min(32, SE/3).
func TestWorkedTimelines(t *testing.T) {
	for _, tc := range []struct {
		se                uint32
		refresh, teardown int64 // ms after answer
	}{
		{90, 45_000, 60_000},
		{600, 300_000, 568_000},
		{1800, 900_000, 1_768_000},
	} {
		t.Run(fmt.Sprint(tc.se), func(t *testing.T) {
			p := paramsTTL(int(tc.se))

			// sbcd refreshes both legs; every refresh answered after 50 ms.
			c := answered(&p, tc.se, RefresherNone, RefresherUAC)
			ev := simulate(t, c, &p, time.Duration(tc.se)*time.Second*3, ok200(tc.se, RefresherUAC))
			if len(ev) < 4 {
				t.Fatalf("events = %v, want refreshes", ev)
			}
			for i, want := range []event{
				{tc.refresh, Action{Kind: ActRefresh, Leg: LegA, Method: MethodUpdate}},
				{tc.refresh, Action{Kind: ActRefresh, Leg: LegB, Method: MethodUpdate}},
				{2*tc.refresh + 50, Action{Kind: ActRefresh, Leg: LegA, Method: MethodUpdate}},
				{2*tc.refresh + 50, Action{Kind: ActRefresh, Leg: LegB, Method: MethodUpdate}},
			} {
				got := ev[i]
				got.act.Offer = Offer{}
				if got != want {
					t.Errorf("event %d = %v, want %v", i, got, want)
				}
				if o := ev[i].act.Offer; o.SE != tc.se || o.Refresher != RefresherUAC {
					t.Errorf("event %d offer = %+v, want SE %d refresher uac", i, o, tc.se)
				}
			}
			if c.Phase != PhaseConfirmed {
				t.Errorf("call ended: %v", c.Reason)
			}

			// The endpoints refresh both legs and then go silent.
			c = answered(&p, tc.se, RefresherUAC, RefresherUAS)
			ev = simulate(t, c, &p, time.Duration(tc.se)*time.Second*3, silent)
			want := []event{{tc.teardown, Action{Kind: ActEnd, Leg: LegA, Reason: ReasonSessionTimeout}}}
			if fmt.Sprint(ev) != fmt.Sprint(want) {
				t.Errorf("silent endpoints: events = %v, want %v", ev, want)
			}

			// sbcd refreshes, the far end stops answering: BYE after
			// the refresh transaction times out (Timer F).
			c = answered(&p, tc.se, RefresherNone, RefresherUAC)
			ev = simulate(t, c, &p, time.Duration(tc.se)*time.Second*3, silent)
			last := ev[len(ev)-1]
			if last.act.Kind != ActEnd || last.act.Reason != ReasonSessionTimeout || last.at != tc.refresh+32_000 {
				t.Errorf("unanswered refresh: events = %v, want end session_timeout at %d ms", ev, tc.refresh+32_000)
			}
		})
	}
}

func TestTeardownAfter(t *testing.T) {
	for se, want := range map[int]int{90: 60, 96: 64, 120: 88, 600: 568, 1800: 1768} {
		if got := TeardownAfter(time.Duration(se) * time.Second); got != time.Duration(want)*time.Second {
			t.Errorf("TeardownAfter(%d s) = %v, want %d s", se, got, want)
		}
	}
	p := DefaultParams()
	p.UpdateSegment = 3
	if got := p.RefreshAfter(900 * time.Second); got != 300*time.Second {
		t.Errorf("RefreshAfter(900 s) with segment 3 = %v, want 300 s", got)
	}
}

// TestTable2 covers every row of RFC 4028 §9 Table 2 from the UAS side, for
// both refresher preferences.
func TestTable2(t *testing.T) {
	for _, tc := range []struct {
		name      string
		req       Request
		pref      Preference
		want      Answer
		wantMode  Mode
		wantLocal bool
	}{
		{"no support, no SE", Request{}, PreferSbcd, Answer{}, ModeProbe, false},
		{"no support, SE from proxy", Request{SE: 1800}, PreferSbcd, Answer{SE: 600, Refresher: RefresherUAS}, ModeTimer, true},
		{"no support, SE from proxy, prefer endpoint", Request{SE: 300}, PreferEndpoint, Answer{SE: 300, Refresher: RefresherUAS}, ModeTimer, true},
		{"support, none, prefer sbcd", Request{SE: 600, Supported: true}, PreferSbcd, Answer{SE: 600, Refresher: RefresherUAS}, ModeTimer, true},
		{"support, none, prefer endpoint", Request{SE: 600, Supported: true}, PreferEndpoint, Answer{SE: 600, Refresher: RefresherUAC, Require: true}, ModeTimer, false},
		{"support, uac", Request{SE: 600, Refresher: RefresherUAC, Supported: true}, PreferSbcd, Answer{SE: 600, Refresher: RefresherUAC, Require: true}, ModeTimer, false},
		{"support, uas", Request{SE: 600, Refresher: RefresherUAS, Supported: true}, PreferEndpoint, Answer{SE: 600, Refresher: RefresherUAS}, ModeTimer, true},
		{"support, no SE: sbcd adds its ttl", Request{Supported: true}, PreferSbcd, Answer{SE: 600, Refresher: RefresherUAS}, ModeTimer, true},
		{"support, larger SE is lowered to ttl", Request{SE: 3600, Supported: true}, PreferSbcd, Answer{SE: 600, Refresher: RefresherUAS}, ModeTimer, true},
		{"support, Min-SE respected", Request{SE: 400, MinSE: 400, Refresher: RefresherUAC, Supported: true}, PreferSbcd, Answer{SE: 400, Refresher: RefresherUAC, Require: true}, ModeTimer, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			p.Refresher = tc.pref
			req, reject := p.Check(tc.req)
			if reject != 0 {
				t.Fatalf("Check rejected with %d", reject)
			}
			var c Call
			c.Invite(t0, &p)
			got := c.StartUAS(t0, LegA, req, 0, false, &p)
			if got != tc.want {
				t.Errorf("answer = %+v, want %+v", got, tc.want)
			}
			l := c.Legs[LegA]
			if l.Mode != tc.wantMode || l.LocalRefresher != tc.wantLocal {
				t.Errorf("leg mode %v local %v, want %v %v", l.Mode, l.LocalRefresher, tc.wantMode, tc.wantLocal)
			}
			if got.Refresher == RefresherUAC && !got.Require {
				t.Error("refresher=uac without Require: timer (RFC 4028 §9)")
			}
		})
	}
}

func TestAnswerNeverAboveBLeg(t *testing.T) {
	p := DefaultParams()
	var c Call
	c.Invite(t0, &p)
	req, _ := p.Check(Request{SE: 1800, Supported: true})
	c.StartUAC(t0, LegB, p.Offer(req), Response{SE: 300, Refresher: RefresherUAS}, false, &p)
	a := c.StartUAS(t0, LegA, req, c.Legs[LegB].SE, false, &p)
	if a.SE != 300 {
		t.Errorf("A-leg 2xx promises %d s, B-leg agreed 300 s", a.SE)
	}
	// B-leg: the callee refreshes (uas); A-leg: sbcd refreshes.
	if c.Legs[LegB].LocalRefresher || !c.Legs[LegA].LocalRefresher {
		t.Errorf("refreshers: A local=%v B local=%v", c.Legs[LegA].LocalRefresher, c.Legs[LegB].LocalRefresher)
	}
	if c.Legs[LegB].method(&p) != MethodInvite {
		t.Error("peer without UPDATE in Allow must be refreshed by re-INVITE in auto mode")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name       string
		minSE      int
		req        Request
		want       Request
		wantReject uint32
	}{
		{"below min with support: 422", 90, Request{SE: 60, Supported: true}, Request{SE: 60, Supported: true}, 90},
		{"below configured min with support: 422", 120, Request{SE: 100, Supported: true}, Request{SE: 100, Supported: true}, 120},
		{"below min without support: raised", 120, Request{SE: 100}, Request{SE: 120}, 0},
		{"no SE: untouched", 90, Request{Supported: true}, Request{Supported: true}, 0},
		{"Min-SE above SE: SE raised", 90, Request{SE: 100, MinSE: 200, Supported: true}, Request{SE: 200, MinSE: 200, Supported: true}, 0},
		{"Min-SE below ours: raised", 120, Request{SE: 600, MinSE: 90, Supported: true}, Request{SE: 600, MinSE: 120, Supported: true}, 0},
		{"huge SE capped", 90, Request{SE: 4_000_000_000, Supported: true}, Request{SE: 86400, Supported: true}, 0},
		{"at min: accepted", 90, Request{SE: 90, Supported: true}, Request{SE: 90, Supported: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			p.MinSE = time.Duration(tc.minSE) * time.Second
			got, reject := p.Check(tc.req)
			if got != tc.want || reject != tc.wantReject {
				t.Errorf("Check(%+v) = %+v, %d; want %+v, %d", tc.req, got, reject, tc.want, tc.wantReject)
			}
		})
	}
}

func TestOffer(t *testing.T) {
	for _, tc := range []struct {
		name string
		pref Preference
		req  Request
		want Offer
	}{
		{"caller asks more than ttl: lowered", PreferSbcd, Request{SE: 1800, Supported: true}, Offer{SE: 600, MinSE: 90, Refresher: RefresherUAC}},
		{"caller asks less: kept", PreferSbcd, Request{SE: 120, Supported: true}, Offer{SE: 120, MinSE: 90, Refresher: RefresherUAC}},
		{"caller without timer: ttl", PreferSbcd, Request{}, Offer{SE: 600, MinSE: 90, Refresher: RefresherUAC}},
		{"caller Min-SE carried", PreferSbcd, Request{SE: 600, MinSE: 300, Supported: true}, Offer{SE: 600, MinSE: 300, Refresher: RefresherUAC}},
		{"prefer endpoint", PreferEndpoint, Request{SE: 600, Supported: true}, Offer{SE: 600, MinSE: 90, Refresher: RefresherUAS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			p.Refresher = tc.pref
			if got := p.Offer(tc.req); got != tc.want {
				t.Errorf("Offer = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRetry422(t *testing.T) {
	base := Offer{SE: 90, MinSE: 90, Refresher: RefresherUAC}
	for _, tc := range []struct {
		name   string
		minSE  uint32
		tries  int
		want   Offer
		wantOK bool
	}{
		{"first 422: retry with callee's Min-SE", 300, 0, Offer{SE: 300, MinSE: 300, Refresher: RefresherUAC}, true},
		{"second 422: retry again", 600, 1, Offer{SE: 600, MinSE: 600, Refresher: RefresherUAC}, true},
		{"third 422: give up", 900, 2, base, false},
		{"422 without Min-SE: give up", 0, 0, base, false},
		{"422 asking for what was offered: give up", 90, 0, base, false},
		{"absurd Min-SE: give up", 90000, 0, base, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Retry422(base, tc.minSE, tc.tries)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Retry422 = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestOutcomes covers each refresh outcome for a B-leg that sbcd refreshes
// (SE 90: refresh due at 45 s, session expires at 90 s).
func TestOutcomes(t *testing.T) {
	const refreshAt = t0 + 45*sec
	for _, tc := range []struct {
		name       string
		o          Outcome
		wantAct    Action
		wantDue    int64 // leg B deadline after the outcome, relative to t0 (0: none)
		wantReason Reason
	}{
		{"2xx, sbcd stays refresher", Outcome{Code: 200, Response: Response{SE: 90, Refresher: RefresherUAC}}, Action{}, 90 * sec, 0},
		{"2xx, callee takes over", Outcome{Code: 200, Response: Response{SE: 90, Refresher: RefresherUAS}}, Action{}, 105 * sec, 0},
		{"2xx, longer interval", Outcome{Code: 200, Response: Response{SE: 180, Refresher: RefresherUAC}}, Action{}, 135 * sec, 0},
		{"2xx without Session-Expires: probe", Outcome{Code: 200}, Action{}, 45*sec + 7200*sec, 0},
		{"timeout", Outcome{Code: 0}, Action{Kind: ActEnd, Leg: LegB, Reason: ReasonSessionTimeout}, 0, ReasonSessionTimeout},
		{"408", Outcome{Code: 408}, Action{Kind: ActEnd, Leg: LegB, Reason: ReasonSessionTimeout}, 0, ReasonSessionTimeout},
		{"481", Outcome{Code: 481}, Action{Kind: ActEnd, Leg: LegB, Reason: ReasonRefreshRejected481}, 0, ReasonRefreshRejected481},
		{"404 destroys the dialog", Outcome{Code: 404}, Action{Kind: ActEnd, Leg: LegB, Reason: ReasonRefreshFailed}, 0, ReasonRefreshFailed},
		{"405 to UPDATE: re-INVITE at once", Outcome{Code: 405}, Action{Kind: ActRefresh, Leg: LegB, Method: MethodInvite, Offer: Offer{SE: 90, MinSE: 90, Refresher: RefresherUAC}}, 90 * sec, 0},
		{"501 to UPDATE: re-INVITE at once", Outcome{Code: 501}, Action{Kind: ActRefresh, Leg: LegB, Method: MethodInvite, Offer: Offer{SE: 90, MinSE: 90, Refresher: RefresherUAC}}, 90 * sec, 0},
		{"422: retry with larger Min-SE", Outcome{Code: 422, Response: Response{MinSE: 120}}, Action{Kind: ActRefresh, Leg: LegB, Method: MethodUpdate, Offer: Offer{SE: 120, MinSE: 120, Refresher: RefresherUAC}}, 120 * sec, 0},
		{"422 without Min-SE", Outcome{Code: 422}, Action{Kind: ActEnd, Leg: LegB, Reason: ReasonRefreshFailed}, 0, ReasonRefreshFailed},
		// rnd 7: 2100 ms + 7*10 ms (sbcd owns the B-leg Call-ID).
		{"491: RFC 3261 back-off", Outcome{Code: 491}, Action{}, 45*sec + 2170*int64(time.Millisecond), 0},
		{"503 with Retry-After", Outcome{Code: 503, RetryAfter: 5}, Action{}, 50 * sec, 0},
		{"503 without Retry-After", Outcome{Code: 503}, Action{}, 46 * sec, 0},
		{"500: retry", Outcome{Code: 500}, Action{}, 46 * sec, 0},
		{"503 whose retry cannot finish before expiry", Outcome{Code: 503, RetryAfter: 30}, Action{Kind: ActEnd, Leg: LegB, Reason: ReasonRefreshFailed}, 0, ReasonRefreshFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := paramsTTL(90)
			c := answered(&p, 90, RefresherNone, RefresherUAC)
			acts := c.Fire(refreshAt, &p, nil)
			if len(acts) != 2 || acts[1].Leg != LegB || acts[1].Kind != ActRefresh || acts[1].Method != MethodUpdate {
				t.Fatalf("Fire at 45 s = %+v, want refreshes on both legs", acts)
			}
			got := c.Outcome(refreshAt, LegB, tc.o, &p, 7)
			if got != tc.wantAct {
				t.Errorf("action = %+v, want %+v", got, tc.wantAct)
			}
			var due int64
			if d := c.Legs[LegB].Due; d != 0 {
				due = d - t0
			}
			if due != tc.wantDue {
				t.Errorf("B-leg due = %v, want %v", time.Duration(due), time.Duration(tc.wantDue))
			}
			if c.Reason != tc.wantReason {
				t.Errorf("reason = %v, want %v", c.Reason, tc.wantReason)
			}
			if tc.wantReason != 0 && (c.Phase != PhaseEnded || c.Next() != 0) {
				t.Errorf("ended call still has phase %v, next %d", c.Phase, c.Next())
			}
		})
	}
}

func TestUpdateFallbackRemembered(t *testing.T) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherNone, RefresherUAC)
	c.Fire(t0+45*sec, &p, nil)
	a := c.Outcome(t0+45*sec, LegB, Outcome{Code: 405}, &p, 0)
	if a.Method != MethodInvite {
		t.Fatalf("fallback = %+v", a)
	}
	c.Outcome(t0+45*sec, LegA, Outcome{Code: 200, Response: Response{SE: 90, Refresher: RefresherUAC}}, &p, 0)
	c.Outcome(t0+46*sec, LegB, Outcome{Code: 200, Response: Response{SE: 90, Refresher: RefresherUAC}}, &p, 0)
	acts := c.Fire(t0+91*sec, &p, nil)
	if len(acts) != 2 {
		t.Fatalf("Fire at 91 s = %+v, want refreshes on both legs", acts)
	}
	for _, a := range acts {
		if a.Leg == LegB && a.Method != MethodInvite {
			t.Errorf("next B-leg refresh uses %v, want invite (405 remembered)", a.Method)
		}
	}
	if c.Legs[LegB].RefreshesSent != 3 {
		t.Errorf("B-leg refreshes sent = %d, want 3 (update, invite, invite)", c.Legs[LegB].RefreshesSent)
	}
}

func TestTransientRetriesThenGiveUp(t *testing.T) {
	p := paramsTTL(600)
	c := answered(&p, 600, RefresherNone, RefresherUAC)
	now := t0 + 300*sec
	c.Fire(now, &p, nil)
	c.Outcome(now, LegA, Outcome{Code: 200, Response: Response{SE: 600, Refresher: RefresherUAS}}, &p, 0)
	for i, wantDelay := range []int64{1, 2} {
		if a := c.Outcome(now, LegB, Outcome{Code: 503}, &p, 0); a.Kind != ActNone {
			t.Fatalf("503 #%d: action %+v", i+1, a)
		}
		if got := c.Legs[LegB].Due - now; got != wantDelay*sec {
			t.Fatalf("503 #%d: retry after %v, want %d s", i+1, time.Duration(got), wantDelay)
		}
		now = c.Legs[LegB].Due
		acts := c.Fire(now, &p, nil)
		if len(acts) != 1 || acts[0].Kind != ActRefresh || acts[0].Leg != LegB {
			t.Fatalf("retry #%d: %+v", i+1, acts)
		}
	}
	a := c.Outcome(now, LegB, Outcome{Code: 503}, &p, 0)
	if a.Kind != ActEnd || a.Reason != ReasonRefreshFailed {
		t.Fatalf("third 503: %+v, want end refresh_failed", a)
	}
}

func TestBackoff491(t *testing.T) {
	for _, tc := range []struct {
		leg      LegID
		lo, hi   time.Duration
		rnd      []uint32
		wantSeen bool
	}{
		{LegB, 2100 * time.Millisecond, 4000 * time.Millisecond, []uint32{0, 1, 190, 191, 1 << 31, ^uint32(0)}, true},
		{LegA, 0, 2000 * time.Millisecond, []uint32{0, 1, 200, 201, 1 << 31, ^uint32(0)}, true},
	} {
		for _, rnd := range tc.rnd {
			p := paramsTTL(600)
			c := answered(&p, 600, RefresherNone, RefresherUAC)
			now := t0 + 300*sec
			c.Fire(now, &p, nil)
			c.Outcome(now, tc.leg, Outcome{Code: 491}, &p, rnd)
			d := time.Duration(c.Legs[tc.leg].Due - now)
			if d < tc.lo || d > tc.hi || d%(10*time.Millisecond) != 0 {
				t.Errorf("leg %v rnd %d: back-off %v outside [%v, %v] in 10 ms units", tc.leg, rnd, d, tc.lo, tc.hi)
			}
		}
	}
}

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       Outcome
		want    Reason
		wantDue int64
	}{
		{"answered", Outcome{Code: 200}, 0, 7200*sec + 7200*sec},
		{"refused but alive", Outcome{Code: 488}, 0, 7200*sec + 7200*sec},
		{"timeout", Outcome{Code: 0}, ReasonNoTimerProbeFailed, 0},
		{"408", Outcome{Code: 408}, ReasonNoTimerProbeFailed, 0},
		{"481", Outcome{Code: 481}, ReasonNoTimerProbeFailed, 0},
		{"answered with Session-Expires: timer from now on", Outcome{Code: 200, Response: Response{SE: 600, Refresher: RefresherUAC}}, 0, 7200*sec + 300*sec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			var c Call
			c.Invite(t0, &p)
			req, _ := p.Check(Request{}) // caller without timer support
			c.StartUAC(t0, LegB, p.Offer(req), Response{}, false, &p)
			if a := c.StartUAS(t0, LegA, req, 0, false, &p); a != (Answer{}) {
				t.Fatalf("answer to a caller without timer support = %+v, want none", a)
			}
			c.Answered(t0, &p)
			c.Acked()
			if c.Next() != t0+7200*sec {
				t.Fatalf("first probe due at %v", time.Duration(c.Next()-t0))
			}
			acts := c.Fire(t0+7200*sec, &p, nil)
			if len(acts) != 2 || acts[0].Kind != ActProbe || acts[0].Method != MethodInvite {
				t.Fatalf("Fire = %+v, want probes on both legs", acts)
			}
			c.Outcome(t0+7200*sec, LegB, Outcome{Code: 200}, &p, 0)
			a := c.Outcome(t0+7200*sec, LegA, tc.o, &p, 0)
			if c.Reason != tc.want || (tc.want != 0) != (a.Kind == ActEnd) {
				t.Errorf("reason %v action %+v, want %v", c.Reason, a, tc.want)
			}
			if tc.want == 0 && c.Legs[LegA].Due-t0 != tc.wantDue {
				t.Errorf("next A-leg deadline at %v, want %v", time.Duration(c.Legs[LegA].Due-t0), time.Duration(tc.wantDue))
			}
		})
	}
}

func TestProbeLostOutcome(t *testing.T) {
	p := DefaultParams()
	var c Call
	c.Invite(t0, &p)
	c.StartUAC(t0, LegB, p.Offer(Request{}), Response{}, false, &p)
	c.StartUAS(t0, LegA, Request{}, 0, false, &p)
	c.Answered(t0, &p)
	c.Acked()
	c.Fire(t0+7200*sec, &p, nil)
	acts := c.Fire(c.Next(), &p, nil)
	if len(acts) != 1 || acts[0].Reason != ReasonNoTimerProbeFailed {
		t.Errorf("probe without outcome: %+v", acts)
	}
}

func TestProbeDisabled(t *testing.T) {
	p := DefaultParams()
	p.NoTimerReinviteInterval = 0
	var c Call
	c.Invite(t0, &p)
	c.StartUAC(t0, LegB, p.Offer(Request{}), Response{}, false, &p)
	c.StartUAS(t0, LegA, Request{}, 0, false, &p)
	c.Answered(t0, &p)
	c.Acked()
	if c.Legs[LegA].Mode != ModeOff || c.Next() != 0 {
		t.Errorf("mode %v next %d, want off and no deadline", c.Legs[LegA].Mode, c.Next())
	}
}

func TestCallDeadlines(t *testing.T) {
	p := DefaultParams()
	p.MaxCallDuration = 3600 * time.Second

	var c Call
	c.Invite(t0, &p)
	if acts := c.Fire(t0+299*sec, &p, nil); len(acts) != 0 {
		t.Fatalf("early: %+v", acts)
	}
	if c.Next() != t0+300*sec {
		t.Fatalf("early deadline %v", time.Duration(c.Next()-t0))
	}
	if acts := c.Fire(t0+300*sec, &p, nil); len(acts) != 1 || acts[0].Reason != ReasonEarlyTimeout || acts[0].Leg != LegNone {
		t.Fatalf("early timeout: %+v", acts)
	}

	// Answered but never acknowledged: Timer H, 32 s.
	c = Call{}
	c.Invite(t0, &p)
	c.StartUAC(t0+5*sec, LegB, p.Offer(Request{}), Response{SE: 600, Refresher: RefresherUAC}, true, &p)
	c.StartUAS(t0+5*sec, LegA, Request{}, 600, true, &p)
	c.Answered(t0+5*sec, &p)
	if c.Next() != t0+37*sec {
		t.Fatalf("ACK deadline %v, want 37 s", time.Duration(c.Next()-t0))
	}
	if acts := c.Fire(t0+37*sec, &p, nil); len(acts) != 1 || acts[0].Reason != ReasonNoAck {
		t.Fatalf("no ACK: %+v", acts)
	}

	// Acknowledged, refreshed by sbcd every 300 s, cut at 3600 s.
	c = Call{}
	c.Invite(t0, &p)
	c.StartUAC(t0, LegB, p.Offer(Request{}), Response{SE: 600, Refresher: RefresherUAC}, true, &p)
	c.StartUAS(t0, LegA, Request{Supported: true}, 600, true, &p)
	c.Answered(t0, &p)
	c.Acked()
	ev := simulate(t, &c, &p, 2*time.Hour, ok200(600, RefresherUAC))
	last := ev[len(ev)-1]
	if last.act.Kind != ActEnd || last.act.Reason != ReasonMaxDuration || last.at != 3600_000 {
		t.Errorf("max duration: last event %v", last)
	}
	if n := len(ev) - 1; n != 2*11 {
		t.Errorf("%d refreshes before the cut, want 22 (11 per leg)", n)
	}
	if c.End(ReasonCallerBye, LegA) {
		t.Error("End after end succeeded; the first reason must win")
	}
}

func TestReceivedRefresh(t *testing.T) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherUAC, RefresherUAS) // endpoints refresh
	// The caller refreshes at 40 s: teardown moves to 40+60 s.
	a, reject := c.Received(t0+40*sec, LegA, Request{SE: 90, Refresher: RefresherUAC, Supported: true}, &p)
	if reject != 0 || a != (Answer{SE: 90, Refresher: RefresherUAC, Require: true}) {
		t.Fatalf("answer %+v reject %d", a, reject)
	}
	if c.Legs[LegA].Due != t0+100*sec || c.Legs[LegA].RefreshesReceived != 1 {
		t.Errorf("A-leg due %v, received %d", time.Duration(c.Legs[LegA].Due-t0), c.Legs[LegA].RefreshesReceived)
	}
	// A refresh asking less than min_se with timer support: 422, nothing changes.
	if _, reject := c.Received(t0+50*sec, LegA, Request{SE: 60, Supported: true}, &p); reject != 90 {
		t.Errorf("refresh with SE 60: reject %d, want 422 with Min-SE 90", reject)
	}
	if c.Legs[LegA].Due != t0+100*sec {
		t.Error("a rejected refresh moved the deadline")
	}
	// The caller hands refreshing to sbcd: refresh due at 45 s after.
	a, _ = c.Received(t0+60*sec, LegA, Request{SE: 90, Refresher: RefresherUAS, Supported: true}, &p)
	if a.Refresher != RefresherUAS || !c.Legs[LegA].LocalRefresher || c.Legs[LegA].Due != t0+105*sec {
		t.Errorf("answer %+v local %v due %v", a, c.Legs[LegA].LocalRefresher, time.Duration(c.Legs[LegA].Due-t0))
	}
	// A refresh on the A-leg never promises more than the B-leg agreed.
	c.Legs[LegB].SE = 90
	a, _ = c.Received(t0+70*sec, LegA, Request{SE: 1800, Supported: true}, &p)
	if a.SE != 90 {
		t.Errorf("A-leg refresh answered with SE %d above the B-leg's 90", a.SE)
	}
}

func TestRelayed(t *testing.T) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherUAC, RefresherUAS)
	o, ok := c.Relayed(LegB)
	if !ok || o.Refresher != RefresherUAS || o.SE != 90 {
		t.Fatalf("Relayed = %+v, %v", o, ok)
	}
	if _, ok := c.Relayed(LegB); ok {
		t.Fatal("second relayed request while one is under way must be refused (491)")
	}
	// Still in flight at the teardown point: wait for its outcome.
	if acts := c.Fire(t0+60*sec, &p, nil); len(acts) != 1 || acts[0].Leg != LegA {
		t.Fatalf("Fire at 60 s = %+v, want the A-leg teardown only", acts)
	}
	p2 := paramsTTL(90)
	c = answered(&p2, 90, RefresherUAC, RefresherUAS)
	c.Relayed(LegB)
	c.Received(t0+59*sec, LegA, Request{SE: 90, Refresher: RefresherUAC, Supported: true}, &p2)
	if acts := c.Fire(t0+60*sec, &p2, nil); len(acts) != 0 {
		t.Fatalf("Fire at 60 s with a relay in flight = %+v", acts)
	}
	if a := c.Outcome(t0+61*sec, LegB, Outcome{Code: 488}, &p2, 0); a.Kind != ActNone {
		t.Fatalf("488 to a relayed re-INVITE: %+v", a)
	}
	if acts := c.Fire(c.Legs[LegB].Due, &p2, nil); len(acts) != 1 || acts[0].Reason != ReasonSessionTimeout {
		t.Fatalf("teardown after a failed relay: %+v", acts)
	}
}

func TestOutcomeIgnoredWhenNothingPending(t *testing.T) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherNone, RefresherUAC)
	before := *c
	if a := c.Outcome(t0+1, LegA, Outcome{Code: 481}, &p, 0); a.Kind != ActNone || *c != before {
		t.Errorf("stray outcome changed the call: %+v", a)
	}
	// Invalid leg ids never panic and never act on a real leg.
	c.Fire(t0+45*sec, &p, nil)
	before = *c
	if a := c.Outcome(t0+45*sec, LegNone, Outcome{Code: 481}, &p, 0); a.Kind != ActNone || *c != before {
		t.Errorf("outcome for LegNone acted: %+v", a)
	}
	if a, r := c.Received(t0+45*sec, LegID(7), Request{SE: 90, Supported: true}, &p); a != (Answer{}) || r != 0 || *c != before {
		t.Errorf("refresh on leg 7 acted: %+v %d", a, r)
	}
	if _, ok := c.Relayed(LegID(2)); ok || *c != before {
		t.Error("Relayed on leg 2 succeeded")
	}
}

func TestZeroAllocs(t *testing.T) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherNone, RefresherUAC)
	buf := make([]Action, 0, 4)
	now := t0
	ok := Outcome{Code: 200, Response: Response{SE: 90, Refresher: RefresherUAC}}
	req := Request{SE: 90, Refresher: RefresherUAS, Supported: true}
	if n := testing.AllocsPerRun(1000, func() {
		now = c.Next()
		buf = c.Fire(now, &p, buf[:0])
		for _, a := range buf {
			c.Outcome(now, a.Leg, ok, &p, 1)
		}
		c.Received(now, LegA, req, &p)
	}); n != 0 {
		t.Errorf("refresh cycle allocated %v times, want 0", n)
	}
	if c.Phase != PhaseConfirmed {
		t.Errorf("call ended: %v", c.Reason)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultParams().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Params)
		want []string
	}{
		{"min_se below 90", func(p *Params) { p.MinSE = 60 * time.Second }, []string{"session_timer.min_se: 1m0s is below the RFC 4028 minimum"}},
		{"ttl below min_se", func(p *Params) { p.TTL = 100 * time.Second; p.MinSE = 120 * time.Second }, []string{"ttl (SS_SIP_SESSION_TTL): 1m40s is below min_se"}},
		{"segment 1", func(p *Params) { p.UpdateSegment = 1 }, []string{"update_segment (SS_SIP_SESSION_UPDATE_SEGMENT): 1 is outside 2..60"}},
		{"fractional ttl", func(p *Params) { p.TTL = 600*time.Second + time.Millisecond }, []string{"not a whole number of seconds"}},
		{"probe interval too small", func(p *Params) { p.NoTimerReinviteInterval = 30 * time.Second }, []string{"SS_SIP_NO_TIMER_REINVITE_INTERVAL"}},
		{"negative max duration", func(p *Params) { p.MaxCallDuration = -time.Second }, []string{"max_call_duration"}},
		{"early timeout too long", func(p *Params) { p.EarlyTimeout = 2 * time.Hour }, []string{"SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP"}},
		{"bad enums", func(p *Params) { p.RefreshMethod = 9; p.Refresher = 9 }, []string{"refresh_method", "refresher"}},
		{"every problem at once", func(p *Params) { p.MinSE = 10 * time.Second; p.UpdateSegment = 0; p.EarlyTimeout = 0 }, []string{"min_se", "update_segment", "early_timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultParams()
			tc.edit(&p)
			err := p.Validate()
			if err == nil {
				t.Fatal("Validate accepted invalid params")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	p := DefaultParams()
	p.NoTimerReinviteInterval = 0
	p.MaxCallDuration = 0
	if err := p.Validate(); err != nil {
		t.Errorf("probing and max duration off must be valid: %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, s := range []string{"auto", "update", "invite"} {
		m, err := ParseMethod(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMethod(%q) = %v, %v", s, m, err)
		}
	}
	for _, s := range []string{"sbcd", "endpoint"} {
		p, err := ParsePreference(s)
		if err != nil || p.String() != s {
			t.Errorf("ParsePreference(%q) = %v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "UPDATE", "re-invite", "uac"} {
		if _, err := ParseMethod(s); err == nil {
			t.Errorf("ParseMethod(%q) succeeded", s)
		}
		if _, err := ParsePreference(s); err == nil {
			t.Errorf("ParsePreference(%q) succeeded", s)
		}
	}
}

func TestReasons(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		s := r.String()
		if s == "" || strings.ContainsAny(s, " ,\"") || seen[s] {
			t.Errorf("reason %d has unusable CDR name %q", r, s)
		}
		seen[s] = true
	}
	for _, want := range []string{"caller_bye", "callee_bye", "cancelled", "rejected", "session_timeout", "refresh_rejected_481",
		"no_timer_probe_failed", "max_duration", "early_timeout", "no_ack", "table_full", "shutdown"} {
		if !seen[want] {
			t.Errorf("DESIGN.md §4 reason %q missing", want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"auto", "update", "invite", "sbcd", "endpoint", "", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseMethod(s); err == nil && m.String() != s {
			t.Errorf("ParseMethod(%q) round trip = %q", s, m)
		}
		if p, err := ParsePreference(s); err == nil && p.String() != s {
			t.Errorf("ParsePreference(%q) round trip = %q", s, p)
		}
	})
}

// FuzzCall feeds random events to a call: it must never panic, never fire
// early, and never act once ended.
func FuzzCall(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{3, 3, 3, 7, 7, 7, 9, 0, 1, 255, 128, 64})
	codes := []int{0, 200, 408, 481, 404, 405, 501, 422, 491, 503, 500, 488}
	f.Add([]byte("0\x017C"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		p := paramsTTL(90)
		var c Call
		c.Invite(t0, &p)
		now := t0
		var buf []Action
		for i, op := range ops {
			arg := byte(0)
			if i+1 < len(ops) {
				arg = ops[i+1]
			}
			leg := LegID(arg & 1)
			switch op % 8 {
			case 0:
				c.StartUAC(now, LegB, p.Offer(Request{SE: uint32(arg) * 7}), Response{SE: uint32(arg) * 5, Refresher: Refresher(arg % 3)}, arg&2 != 0, &p)
			case 1:
				req, _ := p.Check(Request{SE: uint32(arg) * 3, Refresher: Refresher(arg % 3), MinSE: uint32(arg), Supported: arg&4 != 0})
				c.StartUAS(now, LegA, req, uint32(arg)*11, arg&8 != 0, &p)
				c.Answered(now, &p)
			case 2:
				c.Acked()
			case 3:
				next := c.Next()
				if next != 0 {
					if next < now {
						t.Fatalf("deadline %d in the past (now %d)", next, now)
					}
					now = next
				}
				ended := c.Phase == PhaseEnded
				buf = c.Fire(now, &p, buf[:0])
				if ended && len(buf) > 0 {
					t.Fatalf("ended call acted: %+v", buf)
				}
			case 4:
				c.Outcome(now, leg, Outcome{Code: codes[int(arg)%len(codes)], Response: Response{SE: uint32(arg), MinSE: uint32(arg) * 2}, RetryAfter: uint32(arg % 5)}, &p, uint32(arg))
			case 5:
				c.Received(now, leg, Request{SE: uint32(arg) * 4, Refresher: Refresher(arg % 3), Supported: arg&1 != 0}, &p)
			case 6:
				c.Relayed(leg)
			case 7:
				// Time moves on, but a driver never skips a deadline.
				now += int64(arg) * sec
				if next := c.Next(); next != 0 && next < now {
					now = next
				}
			}
			if c.Phase == PhaseEnded && c.Next() != 0 {
				t.Fatalf("ended call keeps a deadline")
			}
			for _, l := range c.Legs {
				if l.Mode == ModeTimer && (l.SE < 90 || l.SE < l.MinSE) {
					t.Fatalf("leg runs SE %d with Min-SE %d", l.SE, l.MinSE)
				}
			}
		}
	})
}

func TestErrorsAreJoined(t *testing.T) {
	p := DefaultParams()
	p.MinSE, p.UpdateSegment = 0, 0
	var joined interface{ Unwrap() []error }
	if err := p.Validate(); !errors.As(err, &joined) || len(joined.Unwrap()) < 2 {
		t.Errorf("Validate did not return every problem at once: %v", err)
	}
}

// BenchmarkRefreshCycle measures one refresh of both legs: Fire, two 2xx
// outcomes and an incoming refresh.
func BenchmarkRefreshCycle(b *testing.B) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherNone, RefresherUAC)
	buf := make([]Action, 0, 4)
	ok := Outcome{Code: 200, Response: Response{SE: 90, Refresher: RefresherUAC}}
	req := Request{SE: 90, Refresher: RefresherUAS, Supported: true}
	b.ReportAllocs()
	for b.Loop() {
		now := c.Next()
		buf = c.Fire(now, &p, buf[:0])
		for _, a := range buf {
			c.Outcome(now, a.Leg, ok, &p, 1)
		}
		c.Received(now, LegA, req, &p)
	}
}

func TestCallSize(t *testing.T) {
	// DESIGN.md §10: at most 4 KB per established call in all; the timer
	// state must stay a small part of it.
	if n := unsafe.Sizeof(Call{}); n > 128 {
		t.Errorf("session.Call is %d bytes, want at most 128", n)
	}
}

// TestFireReportsDue: a refresh fired late carries the deadline it was due
// at, which the sip layer measures its lateness against.
func TestFireReportsDue(t *testing.T) {
	p := paramsTTL(90)
	c := answered(&p, 90, RefresherNone, RefresherUAC)
	due := c.Next()
	acts := c.Fire(due+int64(7*time.Millisecond), &p, nil)
	if len(acts) != 2 {
		t.Fatalf("actions %v, want a refresh per leg", acts)
	}
	for _, a := range acts {
		if a.Kind != ActRefresh || a.Due != due {
			t.Errorf("action %+v, want ActRefresh with Due %d", a, due)
		}
	}
}
