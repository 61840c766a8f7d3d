package b2bua

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/cdr"
	"sbcd/timers/session"
)

// Session-timer tests in virtual time: the shards read a fake clock that
// the test advances; SIP transactions run in real time with short timers.

func TestRefreshUpdateBothLegs(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock())
	ctx := testCtx(t)
	a, _, ok, _ := e.call(ctx, sip.NewHeader("Supported", "timer"))
	if se := ok.GetHeader("Session-Expires"); se == nil || se.Value() != "90;refresher=uas" {
		t.Fatalf("A-leg Session-Expires %v", se)
	}
	e.clock.Advance(44 * time.Second)
	if err := e.callee.none(sip.UPDATE, 50*time.Millisecond); err != nil {
		t.Fatal("refresh before SE/2:", err)
	}
	for round := range 2 {
		e.clock.Advance(2 * time.Second) // 46 s, then 92 s (46 s after the first refresh)
		for _, p := range []*phone{e.caller, e.callee} {
			u := p.expect(ctx, sip.UPDATE)
			if se := u.GetHeader("Session-Expires"); se == nil || se.Value() != "90;refresher=uac" {
				t.Errorf("round %d: %s: UPDATE Session-Expires %v", round, p.name, se)
			}
			if u.GetHeader("Supported") == nil || u.GetHeader("Min-SE") == nil || len(u.Body()) != 0 {
				t.Errorf("round %d: %s: UPDATE %q", round, p.name, u.String())
			}
		}
		if round == 0 {
			e.clock.Advance(44 * time.Second) // 90 s: 44 s after the first refresh
			if err := e.caller.none(sip.UPDATE, 50*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.caller.request(ctx, a, sip.BYE, "")
	rec := e.cdr.next(ctx, t)
	if rec.A.RefreshesSent != 2 || rec.B.RefreshesSent != 2 {
		t.Errorf("refreshes sent A %d B %d, want 2 each", rec.A.RefreshesSent, rec.B.RefreshesSent)
	}
	// Each refresh went out when the clock jumped, 1 s after its deadline
	// (45 s, then 91 s: 45 s after the refresh at 46 s).
	want := Lateness{Count: 4, P50: time.Second, P99: time.Second, Max: time.Second}
	if got := e.b.Stats().RefreshLate; got != want {
		t.Errorf("refresh lateness %+v, want %+v", got, want)
	}
}

func TestRefreshReinviteWithoutUpdate(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock(), withCaller(behavior{}))
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx, sip.NewHeader("Supported", "timer"))
	e.clock.Advance(46 * time.Second)
	re := e.caller.expect(ctx, sip.INVITE)
	if string(re.Body()) != calleeSDP {
		t.Errorf("re-INVITE refresh body %q, want the SDP sbcd sent before", re.Body())
	}
	if se := re.GetHeader("Session-Expires"); se == nil || se.Value() != "90;refresher=uac" {
		t.Errorf("re-INVITE Session-Expires %v", se)
	}
	e.callee.expect(ctx, sip.UPDATE)
	e.caller.expect(ctx, sip.ACK) // sbcd ACKs the 2xx of its re-INVITE
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}

func TestRefreshTimeoutEndsCall(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock())
	ctx := testCtx(t)
	e.call(ctx, sip.NewHeader("Supported", "timer"))
	e.callee.silent.Store(true)
	e.clock.Advance(46 * time.Second)
	e.callee.expect(ctx, sip.UPDATE)
	// The UPDATE times out after 64*T1 (1.6 s with the test's T1, Timer F
	// in the shard's clock): BYE on both legs (RFC 4028 §10).
	if err := e.caller.none(sip.BYE, 50*time.Millisecond); err != nil {
		t.Fatal("teardown before Timer F:", err)
	}
	e.clock.Advance(64 * sip.T1)
	e.caller.expect(ctx, sip.BYE)
	e.callee.expect(ctx, sip.BYE)
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonSessionTimeout || rec.EndedBy != cdr.EndedBySBCD {
		t.Errorf("cdr %+v", rec)
	}
}

func TestEndpointRefresherSilent(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock())
	ctx := testCtx(t)
	_, _, ok, _ := e.call(ctx, sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "90;refresher=uac"))
	if se := ok.GetHeader("Session-Expires"); se == nil || se.Value() != "90;refresher=uac" || ok.GetHeader("Require") == nil {
		t.Fatalf("A-leg Session-Expires %v, Require %v", se, ok.GetHeader("Require"))
	}
	// The caller is the refresher and never refreshes: teardown at
	// SE − min(32, SE/3) = 60 s (RFC 4028 §10).
	e.clock.Advance(59 * time.Second)
	e.callee.expect(ctx, sip.UPDATE) // sbcd refreshes the B-leg at 45 s
	if err := e.caller.none(sip.BYE, 50*time.Millisecond); err != nil {
		t.Fatal("teardown before 60 s:", err)
	}
	e.clock.Advance(1500 * time.Millisecond)
	e.caller.expect(ctx, sip.BYE)
	e.callee.expect(ctx, sip.BYE)
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonSessionTimeout || rec.EndTime.Sub(rec.SetupTime) < 60*time.Second || rec.EndTime.Sub(rec.SetupTime) > 61*time.Second {
		t.Errorf("cdr %+v after %v", rec, rec.EndTime.Sub(rec.SetupTime))
	}
}

func TestNoAck(t *testing.T) {
	e := newEnv(t, behavior{}, shortTimers, withClock())
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	if res, _ := final(ctx, t, tx); res.StatusCode != 200 {
		t.Fatalf("answer %d", res.StatusCode)
	}
	// No ACK: Timer H (32 s) ends the call with BYE on both legs.
	e.clock.Advance(31 * time.Second)
	if err := e.callee.none(sip.BYE, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	e.callee.expect(ctx, sip.BYE)
	e.caller.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonNoAck {
		t.Errorf("cdr %+v", rec)
	}
}

func TestEarlyTimeout(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	e := newEnv(t, behavior{ring: true, hold: hold}, shortTimers, withClock())
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	e.callee.expect(ctx, sip.INVITE)
	// The 180 must have reached sbcd before the clock jumps: the jump also
	// passes Timer B (64*T1 = 1.6 s here), which ends an INVITE that has
	// no provisional answer yet (RFC 3261 §17.1.1.2) and with it the
	// CANCEL held back for one (§9.1).
	until(ctx, t, tx, 180)
	e.clock.Advance(11 * time.Second)
	if res, _ := final(ctx, t, tx); res.StatusCode != 408 {
		t.Errorf("answer %d, want 408", res.StatusCode)
	}
	e.callee.expect(ctx, sip.CANCEL)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonEarlyTimeout {
		t.Errorf("cdr %+v", rec)
	}
}

func TestProbeCalleeWithoutTimer(t *testing.T) {
	e := newEnv(t, behavior{noTimer: true}, shortTimers, withClock())
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx, sip.NewHeader("Supported", "timer"))
	e.clock.Advance(61 * time.Second)
	probe := e.callee.expect(ctx, sip.INVITE)
	if string(probe.Body()) != testSDP || !strings.Contains(probe.GetHeader("Supported").Value(), "timer") {
		t.Errorf("probe %q", probe.String())
	}
	e.caller.request(ctx, a, sip.BYE, "")
	if rec := e.cdr.next(ctx, t); rec.B.Mode != session.ModeProbe {
		t.Errorf("B-leg mode %v, want probe", rec.B.Mode)
	}
}

func TestUpdateRefusedFallsBackToReinvite(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true, updateCode: 405}, shortTimers, withClock())
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx, sip.NewHeader("Supported", "timer"))
	e.clock.Advance(46 * time.Second)
	e.callee.expect(ctx, sip.UPDATE)
	// DESIGN.md §2: 405 to UPDATE falls back to re-INVITE at once and
	// remembers it.
	re := e.callee.expect(ctx, sip.INVITE)
	if string(re.Body()) != testSDP {
		t.Errorf("fallback re-INVITE body %q", re.Body())
	}
	e.clock.Advance(46 * time.Second)
	e.callee.expect(ctx, sip.INVITE)
	e.caller.request(ctx, a, sip.BYE, "")
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonCallerBye {
		t.Errorf("cdr %+v", rec)
	}
}

func TestRefresh481EndsCall(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true, refreshCode: 481}, shortTimers, withClock())
	ctx := testCtx(t)
	e.call(ctx, sip.NewHeader("Supported", "timer"))
	e.clock.Advance(46 * time.Second)
	e.caller.expect(ctx, sip.BYE)
	e.callee.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonRefreshRejected481 {
		t.Errorf("cdr %+v", rec)
	}
}

func TestMaxCallDuration(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, func(o *Options) {
		shortTimers(o)
		o.Params.TTL, o.Params.MaxCallDuration = 600*time.Second, 100*time.Second
	}, withClock())
	ctx := testCtx(t)
	e.call(ctx, sip.NewHeader("Supported", "timer"))
	e.clock.Advance(101 * time.Second)
	e.caller.expect(ctx, sip.BYE)
	e.callee.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonMaxDuration {
		t.Errorf("cdr %+v", rec)
	}
}

func TestAnswerRetransmittedUntilAck(t *testing.T) {
	t.Run("ack read raw", func(t *testing.T) { answerRetransmittedUntilAck(t, nil, 1) })
	// An ACK rawAck does not read (a quoted display name in To) is parsed,
	// and stops the retransmissions all the same.
	t.Run("ack parsed", func(t *testing.T) {
		answerRetransmittedUntilAck(t, func(ack *sip.Request) { ack.To().DisplayName = "Bob" }, 0)
	})
}

// answerRetransmittedUntilAck checks that sbcd's 2xx to the caller is
// retransmitted until the caller's ACK, changed by edit when not nil,
// and that the shard took rawAcks ACKs without parsing them.
func answerRetransmittedUntilAck(t *testing.T, edit func(*sip.Request), rawAcks int64) {
	e := newEnv(t, behavior{}, shortTimers, withClock(), withRawCount())
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob")
	res, _ := final(ctx, t, tx)
	var n atomic.Int32
	tx.OnRetransmission(func(*sip.Response) { n.Add(1) })
	// RFC 3261 §13.3.1.4: 2xx again at T1, 2*T1, 4*T1, ... until the ACK.
	for range 4 {
		e.clock.Advance(time.Second)
	}
	waitFor(ctx, t, func() bool { return n.Load() >= 3 })
	if st := e.b.Stats(); st.Unacked != 1 {
		t.Errorf("stats before the ACK %+v", st)
	}
	a.remoteTag, _ = res.To().Params.Get("tag")
	ack := e.caller.build(a, sip.ACK, a.inviteSeq, "")
	if edit != nil {
		edit(ack)
	}
	if err := e.caller.tp.WriteMsg(ack); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { return e.b.Stats().Unacked == 0 })
	if n := e.rawAcks.Load(); n != rawAcks {
		t.Errorf("ACKs taken without parsing: %d, want %d", n, rawAcks)
	}
	time.Sleep(20 * time.Millisecond) // a retransmission already on its way
	got := n.Load()
	e.clock.Advance(8 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if n.Load() != got {
		t.Errorf("2xx retransmitted after the ACK")
	}
	tx.Terminate()
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}

func TestCallerWithoutTimerIsProbed(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock())
	ctx := testCtx(t)
	a, _, ok, _ := e.call(ctx) // no Supported: timer, no Session-Expires
	if se := ok.GetHeader("Session-Expires"); se != nil {
		t.Errorf("2xx to a caller without timer support has Session-Expires %v (RFC 4028 §9)", se)
	}
	e.clock.Advance(46 * time.Second)
	e.callee.expect(ctx, sip.UPDATE) // the B-leg still runs its timer
	e.clock.Advance(15 * time.Second)
	probe := e.caller.expect(ctx, sip.INVITE)
	if string(probe.Body()) != calleeSDP {
		t.Errorf("probe body %q", probe.Body())
	}
	e.caller.request(ctx, a, sip.BYE, "")
	if rec := e.cdr.next(ctx, t); rec.A.Mode != session.ModeProbe || rec.B.Mode != session.ModeTimer {
		t.Errorf("modes A %v B %v", rec.A.Mode, rec.B.Mode)
	}
}

func TestCalleeRefresherRefreshesThenVanishes(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true, refresher: "uas"}, shortTimers, withClock())
	ctx := testCtx(t)
	_, b, _, _ := e.call(ctx, sip.NewHeader("Supported", "timer"))
	// The callee is the B-leg's refresher; its refresh at 40 s is a pure
	// refresh, answered by sbcd without bothering the caller.
	e.clock.Advance(40 * time.Second)
	res := e.callee.request(ctx, b, sip.UPDATE, "", sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "90;refresher=uac"))
	if res.StatusCode != 200 {
		t.Fatalf("refresh answered %d", res.StatusCode)
	}
	if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "90;refresher=uac" || res.GetHeader("Require") == nil {
		t.Errorf("refresh answer Session-Expires %v", se)
	}
	// sbcd refreshes the A-leg at 45 s; nothing ends at 60 s.
	e.clock.Advance(21 * time.Second)
	e.caller.expect(ctx, sip.UPDATE)
	if err := e.callee.none(sip.BYE, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Then the callee goes silent: teardown 60 s after its refresh.
	e.clock.Advance(38 * time.Second) // 99 s
	if err := e.callee.none(sip.BYE, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second) // 101 s
	e.callee.expect(ctx, sip.BYE)
	e.caller.expect(ctx, sip.BYE)
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonSessionTimeout || rec.B.RefreshesReceived != 1 {
		t.Errorf("cdr %+v", rec)
	}
}

func Test422FromCalleeGivesUp(t *testing.T) {
	e := newEnv(t, behavior{minSE: 100000}, nil)
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob", sip.NewHeader("Supported", "timer"))
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 500 {
		t.Fatalf("answer %d, want 500 (never the callee's 422)", res.StatusCode)
	}
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonRejected || rec.Code != 500 {
		t.Errorf("cdr %+v", rec)
	}
}

// TestReinviteAnswerRetransmittedUntilAck: sbcd's 2xx to a re-INVITE over
// UDP is resent until the ACK (RFC 3261 §13.3.1.4), for a relayed media
// change as for a refresh answered locally.
func TestReinviteAnswerRetransmittedUntilAck(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock())
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx)
	newSDP := strings.Replace(testSDP, "o=- 1 1", "o=- 1 2", 1)
	for _, name := range []string{"relayed", "refresh"} {
		seq := e.caller.seq.Add(1)
		req := e.caller.build(a, sip.INVITE, seq, newSDP, sip.NewHeader("Supported", "timer"))
		tx, err := e.caller.tl.Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := final(ctx, t, tx); res.StatusCode != 200 {
			t.Fatalf("%s: re-INVITE answered %d", name, res.StatusCode)
		}
		var n atomic.Int32
		tx.OnRetransmission(func(*sip.Response) { n.Add(1) })
		for range 3 {
			e.clock.Advance(time.Second)
		}
		waitFor(ctx, t, func() bool { return n.Load() >= 2 })
		e.caller.ack(a, seq)
		time.Sleep(100 * time.Millisecond) // the ACK reaches the shard
		got := n.Load()
		for range 3 {
			e.clock.Advance(4 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
		// One retransmission may cross a late ACK; without the ACK there
		// would be one per Advance.
		if n.Load() > got+1 {
			t.Errorf("%s: 2xx retransmitted after the ACK (%d, then %d)", name, got, n.Load())
		}
		tx.Terminate()
	}
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}
