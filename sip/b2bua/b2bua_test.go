package b2bua

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/cdr"
	"sbcd/timers/session"
)

func TestMain(m *testing.M) {
	// Short SIP timers: a transaction that is never answered times out
	// after 64*T1 = 1.6 s instead of 32 s (Timer B/F).
	sip.SetTimers(25*time.Millisecond, 200*time.Millisecond, 250*time.Millisecond)
	// Timer D (absorbing retransmitted final answers to a client INVITE
	// over UDP) is a fixed 32 s in sipgo, not derived from T1 (RFC 3261
	// §17.1.1.2 only asks for at least 32 s): 64*T1 here too.
	sip.Timer_D = 64 * sip.T1
	// TuneSipgo (cmd/sbcd) is not called: the test phones are sipgo UACs
	// too, and some tests watch 2xx retransmissions through their
	// transactions' Timer M.
	os.Exit(m.Run())
}

// memCDR keeps records in memory.
type memCDR struct {
	mu   sync.Mutex
	recs []cdr.Record
	ch   chan cdr.Record
}

func newMemCDR() *memCDR { return &memCDR{ch: make(chan cdr.Record, 64)} }

func (m *memCDR) Append(r *cdr.Record, done func(error)) error {
	m.mu.Lock()
	m.recs = append(m.recs, *r)
	m.mu.Unlock()
	m.ch <- *r
	if done != nil {
		done(nil)
	}
	return nil
}

func (m *memCDR) next(ctx context.Context, t *testing.T) cdr.Record {
	t.Helper()
	select {
	case r := <-m.ch:
		return r
	case <-ctx.Done():
		t.Fatalf("no cdr: %v", ctx.Err())
		return cdr.Record{}
	}
}

// callerHangsUp ends call a with a BYE from the caller and checks that the
// callee gets the BYE and the CDR says caller_bye.
func (e *env) callerHangsUp(ctx context.Context, t *testing.T, a *ucall) {
	t.Helper()
	if r := e.caller.request(ctx, a, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE answered %d", r.StatusCode)
	}
	e.callee.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonCallerBye {
		t.Errorf("cdr %+v", rec)
	}
}

// fakeClock is the shards' clock in tests that drive virtual time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	time.Sleep(30 * time.Millisecond) // a few shard ticks
}

type env struct {
	t      *testing.T
	b      *B2BUA
	cdr    *memCDR
	addr   netip.AddrPort // sbcd's UDP address
	caller *phone         // a device
	callee *phone         // the upstream
	clock  *fakeClock
	// raw counts the responses the shards took without parsing them
	// (evResponseRaw), rawAcks the ACKs (evAck), rawByes the BYEs
	// (evBye), with withRawCount.
	raw, rawAcks, rawByes atomic.Int64

	callerBeh behavior
}

type envOpt func(*Options, *env)

// withClock drives the shards from a fake clock (virtual time).
func withClock() envOpt {
	return func(o *Options, e *env) {
		if o == nil {
			return
		}
		e.clock = &fakeClock{now: time.Unix(1_800_000_000, 0)}
		o.now = e.clock.Now
	}
}

// withRawCount counts in env.raw and env.rawAcks the responses and ACKs
// the shards took without parsing them, which change nothing a test can
// see but timers.
func withRawCount() envOpt {
	return func(o *Options, e *env) {
		if o == nil {
			return
		}
		o.handled = func(k evKind) {
			switch k {
			case evResponseRaw:
				e.raw.Add(1)
			case evAck:
				e.rawAcks.Add(1)
			case evBye:
				e.rawByes.Add(1)
			}
		}
	}
}

// withCaller sets the caller phone's behaviour.
func withCaller(beh behavior) envOpt {
	return func(o *Options, e *env) {
		if o == nil {
			e.callerBeh = beh
		}
	}
}

// shortTimers are session-timer parameters at their smallest.
func shortTimers(o *Options) {
	o.Params.TTL = 90 * time.Second
	o.Params.MinSE = 90 * time.Second
	o.Params.NoTimerReinviteInterval = 60 * time.Second
	o.Params.EarlyTimeout = 10 * time.Second
}

// newEnv starts a B2BUA on loopback with a caller phone listed as device
// "alice" and a callee phone as the upstream; it checks at the end that
// every slot is free and no goroutine leaked.
func newEnv(t *testing.T, calleeBeh behavior, mod func(*Options), opts ...envOpt) *env {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() { checkGoroutines(t, base) })
	e := &env{t: t, cdr: newMemCDR(), callerBeh: behavior{allowUpdate: true}}
	for _, f := range opts {
		f(nil, e)
	}
	e.caller = newPhone(t, "alice", e.callerBeh)
	e.callee = newPhone(t, "bob", calleeBeh)
	p := session.DefaultParams()
	o := Options{
		Listen:   []Listen{{Network: "udp", Addr: "127.0.0.1:0"}},
		Upstream: e.callee.addr.String(),
		Devices:  map[string]netip.AddrPort{"alice": e.caller.addr},
		Params:   p,
		MaxCalls: 8,
		Shards:   2,
		CDR:      e.cdr,
		Logger:   testLogger(),
		Trace:    os.Getenv("SBCD_TRACE") != "",
	}
	for _, f := range opts {
		f(&o, e)
	}
	if mod != nil {
		mod(&o)
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	e.addr = netip.MustParseAddrPort(b.Addrs()[0].Addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := b.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if st := b.Stats(); st.FreeSlots != o.MaxCalls {
			t.Errorf("slots in use after shutdown: %+v", st)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("serve did not return")
		}
	})
	return e
}

func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines: %d, baseline %d\n%s", n, base, buf)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call sets up a call from the caller to the callee and returns both views.
func (e *env) call(ctx context.Context, hdrs ...sip.Header) (a, b *ucall, ok *sip.Response, inv *sip.Request) {
	e.t.Helper()
	a, tx := e.caller.invite(ctx, e.addr, "bob", hdrs...)
	res, _ := final(ctx, e.t, tx)
	if res.StatusCode != 200 {
		e.t.Fatalf("call: %d %s", res.StatusCode, res.Reason)
	}
	e.caller.answered(a, res)
	inv = e.callee.expect(ctx, sip.INVITE)
	b = e.callee.dialogFrom(inv, e.addr)
	// Wait for the ACK to be processed.
	waitFor(ctx, e.t, func() bool { st := e.b.Stats(); return st.Up == 1 && st.Unacked == 0 })
	return a, b, res, inv
}

func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("condition not met: %v", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestBasicCallCallerHangsUp(t *testing.T) {
	e := newEnv(t, behavior{ring: true, allowUpdate: true}, nil)
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob", sip.NewHeader("Supported", "timer"))
	res, prov := final(ctx, t, tx)
	if res.StatusCode != 200 || string(res.Body()) != calleeSDP {
		t.Fatalf("answer %d body %q", res.StatusCode, res.Body())
	}
	// The test phone's sipgo hands each response to a goroutine of its
	// own, so sbcd's 100 may reach the transaction after the 180.
	if !slices.Contains(prov, 180) {
		t.Errorf("provisionals %v, want 180 relayed", prov)
	}
	if got := res.GetHeader("Session-Expires"); got == nil || got.Value() != "600;refresher=uas" {
		t.Errorf("Session-Expires %v", got)
	}
	if res.GetHeader("Supported") == nil {
		t.Errorf("2xx without Supported: timer")
	}
	if c := res.Contact(); c == nil || c.Address.Port != int(e.addr.Port()) {
		t.Errorf("2xx Contact %v is not sbcd's", c)
	}
	e.caller.answered(a, res)
	inv := e.callee.expect(ctx, sip.INVITE)
	if inv.CallID().Value() == a.callID {
		t.Errorf("B-leg reuses the A-leg Call-ID")
	}
	if string(inv.Body()) != testSDP || inv.CSeq().SeqNo != 1 {
		t.Errorf("B-leg INVITE body %q cseq %d", inv.Body(), inv.CSeq().SeqNo)
	}
	if se := inv.GetHeader("Session-Expires"); se == nil || se.Value() != "600;refresher=uac" {
		t.Errorf("B-leg Session-Expires %v", se)
	}
	if inv.GetHeader("Min-SE") == nil || inv.GetHeader("Supported") == nil {
		t.Errorf("B-leg INVITE lacks Min-SE or Supported")
	}
	e.callee.expect(ctx, sip.ACK)
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.Up == 1 && st.Unacked == 0 })
	if r := e.caller.request(ctx, a, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE answered %d", r.StatusCode)
	}
	bye := e.callee.expect(ctx, sip.BYE)
	if bye.CallID().Value() != inv.CallID().Value() {
		t.Errorf("BYE on the wrong dialog")
	}
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonCallerBye || rec.EndedBy != cdr.EndedByCaller || rec.Code != 200 || rec.CallID != a.callID ||
		rec.Source != e.caller.addr || rec.Transport != "udp" || rec.AnswerTime.IsZero() || rec.EndTime.Before(rec.AnswerTime) {
		t.Errorf("cdr %+v", rec)
	}
	if rec.A.SE != 600 || rec.B.SE != 600 {
		t.Errorf("cdr legs A %+v B %+v", rec.A, rec.B)
	}
	waitFor(ctx, t, func() bool { return e.b.Stats().FreeSlots == 8 })
}

// TestByeRawOrParsed: a plain BYE is read without parsing it (rawBye), one
// with a header field rawBye does not take (Reason, RFC 3326) is parsed;
// both end the call the same way.
func TestByeRawOrParsed(t *testing.T) {
	for _, c := range []struct {
		name string
		hdrs []sip.Header
		raw  int64
	}{
		{"raw", nil, 1},
		{"parsed", []sip.Header{sip.NewHeader("Reason", "Q.850;cause=16")}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, behavior{allowUpdate: true}, nil, withRawCount())
			ctx := testCtx(t)
			a, _, _, inv := e.call(ctx)
			if r := e.caller.request(ctx, a, sip.BYE, "", c.hdrs...); r.StatusCode != 200 {
				t.Fatalf("BYE answered %d", r.StatusCode)
			}
			if bye := e.callee.expect(ctx, sip.BYE); bye.CallID().Value() != inv.CallID().Value() {
				t.Errorf("BYE on the wrong dialog")
			}
			if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonCallerBye || rec.Code != 200 {
				t.Errorf("cdr %+v", rec)
			}
			if n := e.rawByes.Load(); n != c.raw {
				t.Errorf("BYEs read without parsing: %d, want %d", n, c.raw)
			}
		})
	}
}

func TestCalleeHangsUp(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, nil)
	ctx := testCtx(t)
	_, b, _, _ := e.call(ctx)
	if r := e.callee.request(ctx, b, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE answered %d", r.StatusCode)
	}
	e.caller.expect(ctx, sip.BYE)
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonCalleeBye || rec.EndedBy != cdr.EndedByCallee {
		t.Errorf("cdr %+v", rec)
	}
}

// TestRemoteTargetRefresh: a refresh that carries a new Contact moves the
// leg's remote target (RFC 3261 §12.2.2; sipgo does not store it): sbcd's
// next request on that leg goes to the new URI.
func TestRemoteTargetRefresh(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, nil)
	ctx := testCtx(t)
	a, b, _, _ := e.call(ctx)
	moved := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "moved",
		Host: e.caller.addr.Addr().String(), Port: int(e.caller.addr.Port())}}
	if r := e.caller.request(ctx, a, sip.UPDATE, "", moved); r.StatusCode != 200 {
		t.Fatalf("UPDATE answered %d", r.StatusCode)
	}
	if r := e.callee.request(ctx, b, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE answered %d", r.StatusCode)
	}
	if bye := e.caller.expect(ctx, sip.BYE); bye.Recipient.User != "moved" {
		t.Errorf("BYE to the caller went to %s, want the refreshed target sip:moved@...", bye.Recipient.String())
	}
	e.cdr.next(ctx, t)
}

func TestRejectedCall(t *testing.T) {
	e := newEnv(t, behavior{inviteCode: 486}, nil)
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 486 {
		t.Fatalf("answer %d, want 486 relayed", res.StatusCode)
	}
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonRejected || rec.Code != 486 {
		t.Errorf("cdr %+v", rec)
	}
}

func TestCancel(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	e := newEnv(t, behavior{ring: true, hold: hold}, nil)
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob")
	until(ctx, t, tx, 180)
	inv := e.callee.expect(ctx, sip.INVITE)
	if st := e.b.Stats(); st.Early != 1 || st.Up != 0 || st.FreeSlots != 7 {
		t.Errorf("stats while ringing %+v", st)
	}
	e.caller.cancel(ctx, a, tx)
	c := e.callee.expect(ctx, sip.CANCEL)
	if c.CallID().Value() != inv.CallID().Value() {
		t.Errorf("CANCEL on the wrong call")
	}
	rec := e.cdr.next(ctx, t)
	if rec.Reason != session.ReasonCancelled || rec.Code != 487 {
		t.Errorf("cdr %+v", rec)
	}
}

func Test422FromCalleeThenSuccess(t *testing.T) {
	e := newEnv(t, behavior{minSE: 1200}, nil)
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob", sip.NewHeader("Supported", "timer"))
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 200 {
		t.Fatalf("answer %d, want 200 after the 422 retry", res.StatusCode)
	}
	first := e.callee.expect(ctx, sip.INVITE)
	second := e.callee.expect(ctx, sip.INVITE)
	if first.CallID().Value() != second.CallID().Value() || second.CSeq().SeqNo != first.CSeq().SeqNo+1 {
		t.Errorf("retry: call-id %s/%s cseq %d/%d", first.CallID().Value(), second.CallID().Value(), first.CSeq().SeqNo, second.CSeq().SeqNo)
	}
	if se := second.GetHeader("Session-Expires"); se == nil || !strings.HasPrefix(se.Value(), "1200") {
		t.Errorf("retry Session-Expires %v", se)
	}
	if m := second.GetHeader("Min-SE"); m == nil || m.Value() != "1200" {
		t.Errorf("retry Min-SE %v", m)
	}
	e.caller.answered(a, res)
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.Up == 1 && st.Unacked == 0 })
	e.caller.request(ctx, a, sip.BYE, "")
	if rec := e.cdr.next(ctx, t); rec.B.SE != 1200 {
		t.Errorf("B-leg SE %d, want 1200", rec.B.SE)
	}
}

func TestCallerSETooSmall(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob", sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "60"))
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 422 {
		t.Fatalf("answer %d, want 422", res.StatusCode)
	}
	if m := res.GetHeader("Min-SE"); m == nil || m.Value() != "90" {
		t.Errorf("Min-SE %v", m)
	}
	if err := e.callee.none(sip.INVITE, 100*time.Millisecond); err != nil {
		t.Error(err)
	}
}

func TestMalformedSessionExpires(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob", sip.NewHeader("Session-Expires", "soon"))
	if res, _ := final(ctx, t, tx); res.StatusCode != 400 {
		t.Fatalf("answer %d, want 400", res.StatusCode)
	}
}

func TestTableFull(t *testing.T) {
	e := newEnv(t, behavior{}, func(o *Options) { o.MaxCalls, o.Shards = 1, 1 })
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("answer %d, want 503 with Retry-After", res.StatusCode)
	}
	if st := e.b.Stats(); st.Ended[session.ReasonTableFull] != 1 || st.Up != 1 {
		t.Errorf("stats %+v", st)
	}
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonTableFull || rec.Code != 503 ||
		rec.EndedBy != cdr.EndedBySBCD || rec.Caller == "" || !rec.Source.IsValid() {
		t.Errorf("refusal cdr %+v", rec)
	}
	// The call in the table is not affected.
	e.callerHangsUp(ctx, t, a)
}

func TestUnknownSourceForbidden(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	stranger := newPhone(t, "mallory", behavior{})
	_, tx := stranger.invite(ctx, e.addr, "bob")
	if res, _ := final(ctx, t, tx); res.StatusCode != 403 {
		t.Fatalf("answer %d, want 403", res.StatusCode)
	}
}

func TestUnknownDeviceNotFound(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	// From the upstream to a user that is no device.
	_, tx := e.callee.invite(ctx, e.addr, "nobody")
	if res, _ := final(ctx, t, tx); res.StatusCode != 404 {
		t.Fatalf("answer %d, want 404", res.StatusCode)
	}
}

func TestCallFromUpstreamToDevice(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	// The callee phone is the upstream; it calls device alice.
	a, tx := e.callee.invite(ctx, e.addr, "alice")
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 200 {
		t.Fatalf("answer %d", res.StatusCode)
	}
	e.callee.answered(a, res)
	inv := e.caller.expect(ctx, sip.INVITE)
	if inv.Recipient.User != "alice" {
		t.Errorf("B-leg Request-URI %s", inv.Recipient.String())
	}
	waitFor(ctx, t, func() bool { return e.b.Stats().Up == 1 })
	e.callee.request(ctx, a, sip.BYE, "")
	e.caller.expect(ctx, sip.BYE)
	e.cdr.next(ctx, t)
}

func TestByeBeforeAck(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob")
	res, _ := final(ctx, t, tx)
	a.remoteTag, _ = res.To().Params.Get("tag")
	a.target = res.Contact().Address
	// The BYE overtakes the ACK.
	if r := e.caller.request(ctx, a, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE answered %d", r.StatusCode)
	}
	e.caller.ack(a, 1)
	e.callee.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonCallerBye {
		t.Errorf("cdr %+v", rec)
	}
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.FreeSlots == 8 && st.Up == 0 })
}

func TestShutdownByesCalls(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	e.call(ctx)
	if err := e.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	e.caller.expect(ctx, sip.BYE)
	e.callee.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonShutdown {
		t.Errorf("cdr %+v", rec)
	}
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	if res, _ := final(ctx, t, tx); res.StatusCode != 503 {
		t.Errorf("INVITE after shutdown answered %d, want 503", res.StatusCode)
	}
}

func TestReinviteMediaChangeRelayed(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, nil)
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx)
	newSDP := strings.Replace(testSDP, "o=- 1 1", "o=- 1 2", 1)
	res := e.caller.request(ctx, a, sip.INVITE, newSDP, sip.NewHeader("Supported", "timer"))
	if res.StatusCode != 200 || string(res.Body()) != calleeSDP {
		t.Fatalf("re-INVITE answered %d %q", res.StatusCode, res.Body())
	}
	re := e.callee.expect(ctx, sip.INVITE)
	if string(re.Body()) != newSDP {
		t.Errorf("relayed body %q", re.Body())
	}
	// A pure refresh with the same SDP is answered locally.
	res = e.caller.request(ctx, a, sip.INVITE, newSDP, sip.NewHeader("Supported", "timer"), sip.NewHeader("Session-Expires", "600;refresher=uac"))
	if res.StatusCode != 200 {
		t.Fatalf("refresh answered %d", res.StatusCode)
	}
	if se := res.GetHeader("Session-Expires"); se == nil || se.Value() != "600;refresher=uac" {
		t.Errorf("refresh Session-Expires %v", se)
	}
	if err := e.callee.none(sip.INVITE, 100*time.Millisecond); err != nil {
		t.Error(err)
	}
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SBCD_TRACE") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// lockedBuffer is an io.Writer for logs written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestTraceLogsMessages(t *testing.T) {
	var buf lockedBuffer
	e := newEnv(t, behavior{}, func(o *Options) {
		o.Trace = true
		o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx)
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
	out := buf.String()
	for _, want := range []string{`msg="sip recv" trace="INVITE sip:bob@`, `msg="sip send" trace="INVITE sip:bob@`,
		`msg="sip send" trace="SIP/2.0 200 OK`, `msg="sip send" trace="ACK sip:bob@`, `msg="sip recv" trace="BYE `} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %s", want)
		}
	}
}

func TestTCPListener(t *testing.T) {
	e := newEnv(t, behavior{}, func(o *Options) {
		o.Listen = append(o.Listen, Listen{Network: "tcp", Addr: "127.0.0.1:0"})
	})
	ctx := testCtx(t)
	addrs := e.b.Addrs()
	if len(addrs) != 2 || addrs[1].Network != "tcp" || strings.HasSuffix(addrs[1].Addr, ":0") {
		t.Fatalf("addrs %v", addrs)
	}
	dest := netip.MustParseAddrPort(addrs[1].Addr)
	c := &ucall{callID: "tcp-options@test", localTag: "x", dest: dest,
		local:  sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"},
		remote: sip.Uri{Scheme: "sip", Host: "127.0.0.1"},
		target: sip.Uri{Scheme: "sip", Host: dest.Addr().String(), Port: int(dest.Port())}}
	req := e.caller.build(c, sip.OPTIONS, 1, "")
	req.Via().Transport = "TCP"
	req.Via().Port = 0
	req.Via().Host = ""
	req.Laddr = sip.Addr{}
	req.SetTransport("TCP")
	tx, err := e.caller.tl.Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 200 || res.GetHeader("Allow") == nil {
		t.Errorf("OPTIONS over TCP answered %d", res.StatusCode)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := func() Options {
		return Options{Listen: []Listen{{Network: "udp", Addr: "127.0.0.1:0"}}, Upstream: "127.0.0.1:5060",
			Params: session.DefaultParams(), MaxCalls: 10}
	}
	for name, mod := range map[string]func(*Options){
		"no listener":   func(o *Options) { o.Listen = nil },
		"bad network":   func(o *Options) { o.Listen[0].Network = "sctp" },
		"few calls":     func(o *Options) { o.MaxCalls = 1 },
		"many shards":   func(o *Options) { o.Shards = 300 },
		"bad params":    func(o *Options) { o.Params.MinSE = time.Second },
		"bad device":    func(o *Options) { o.Devices = map[string]netip.AddrPort{"pbx": {}} },
		"bad upstream":  func(o *Options) { o.Upstream = "no port" },
		"bound address": func(o *Options) { o.Listen[0].Addr = "192.0.2.1:0" },
	} {
		o := good()
		mod(&o)
		if b, err := New(o); err == nil {
			b.closeSockets()
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	o := good()
	o.MaxCalls, o.Shards = 10, 3
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.closeSockets()
	if st := b.Stats(); st.FreeSlots != 10 {
		t.Errorf("free slots %d, want all 10", st.FreeSlots)
	}
}

func TestReinviteRefusedByOtherSide(t *testing.T) {
	e := newEnv(t, behavior{refreshCode: 488}, nil)
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx)
	newSDP := strings.Replace(testSDP, "o=- 1 1", "o=- 1 2", 1)
	if res := e.caller.request(ctx, a, sip.INVITE, newSDP); res.StatusCode != 488 {
		t.Fatalf("re-INVITE answered %d, want the callee's 488", res.StatusCode)
	}
	// RFC 5057 §5.1: a 488 affects only the transaction; the call goes on.
	e.callerHangsUp(ctx, t, a)
}

func TestAckOnInviteBranch(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob")
	res, _ := final(ctx, t, tx)
	a.remoteTag, _ = res.To().Params.Get("tag")
	a.target = res.Contact().Address
	// An ACK that reuses the INVITE's branch reaches sbcd through the
	// INVITE's server transaction, not as a request of its own.
	ack := e.caller.build(a, sip.ACK, 1, "")
	ack.RemoveHeader("Via")
	ack.PrependHeader(tx.Origin().Via().Clone())
	if err := e.caller.tp.WriteMsg(ack); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.Up == 1 && st.Unacked == 0 })
	tx.Terminate()
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}

// TestCancelWaitsForProvisional: a caller that cancels before the callee
// sent any provisional answer makes sbcd hold its CANCEL until one comes
// (RFC 3261 §9.1): here the callee rings only after 300 ms.
func TestCancelWaitsForProvisional(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	e := newEnv(t, behavior{hold: hold, ringAfter: 300 * time.Millisecond}, nil)
	ctx := testCtx(t)
	a, tx := e.caller.invite(ctx, e.addr, "bob")
	e.callee.expect(ctx, sip.INVITE)
	got := time.Now()
	e.caller.cancel(ctx, a, tx)
	e.callee.expect(ctx, sip.CANCEL)
	// Without the wait it comes within milliseconds; 150 ms leaves room
	// for a loaded machine.
	if d := time.Since(got); d < 150*time.Millisecond {
		t.Errorf("CANCEL reached the callee %v after its INVITE, before any provisional answer", d)
	}
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonCancelled {
		t.Errorf("cdr %+v", rec)
	}
}

// TestInDialogInfoRelayed: requests sbcd does not handle itself (INFO, an
// unknown method) are relayed to the other leg's dialog, with their body,
// and the other side's answer comes back.
func TestInDialogInfoRelayed(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	a, b, _, _ := e.call(ctx)
	for _, m := range []sip.RequestMethod{sip.INFO, "FOO"} {
		req := e.caller.build(a, m, e.caller.seq.Add(1), "", sip.NewHeader("Content-Type", "application/dtmf-relay"),
			sip.NewHeader("Info-Package", "dtmf"))
		req.SetBody([]byte("Signal=5\r\nDuration=160\r\n"))
		tx, err := e.caller.tl.Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := final(ctx, t, tx); res.StatusCode != 200 {
			t.Errorf("%s answered %d, want the callee's 200", m, res.StatusCode)
		}
		got := e.callee.expect(ctx, m)
		if got.CallID().Value() != b.callID || string(got.Body()) != "Signal=5\r\nDuration=160\r\n" {
			t.Errorf("%s relayed on call %s with body %q", m, got.CallID().Value(), got.Body())
		}
		if ct := got.GetHeader("Content-Type"); ct == nil || ct.Value() != "application/dtmf-relay" {
			t.Errorf("%s relayed with Content-Type %v", m, ct)
		}
	}
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}

// TestAckDirect: the read filter routes an ACK of sbcd's 2xx received
// over UDP itself, without a sipgo transaction, and leaves to sipgo what
// is not an ACK, what it cannot parse, and an ACK that matches an INVITE
// server transaction sipgo still holds.
func TestAckDirect(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	a, tx, res := e.answeredCall(ctx)
	a.remoteTag, _ = res.To().Params.Get("tag")
	a.target = res.Contact().Address
	waitFor(ctx, t, func() bool { return e.b.Stats().Unacked == 1 })
	props := sip.TransportReadProps{Transport: "UDP", LocalAddr: e.b.udp[0].LocalAddr(),
		RemoteAddr: net.UDPAddrFromAddrPort(e.caller.addr)}
	ack := e.caller.build(a, sip.ACK, a.inviteSeq, "")
	key, err := sip.ServerTxKeyMake(ack)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		data string
	}{
		{"not an ACK", strings.Replace(ack.String(), "ACK ", "BYE ", 1)},
		{"unparsable", "ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: \r\n\r\n"},
		{"empty", ""},
	} {
		if e.b.ackDirect(props, []byte(tc.data)) {
			t.Errorf("%s: taken", tc.name)
		}
	}
	e.b.invites.add(key, ownerSipgo)
	if e.b.ackDirect(props, []byte(ack.String())) {
		t.Error("ACK of a live INVITE server transaction of sipgo's: taken, want it left to sipgo")
	}
	// A shard's INVITE transaction takes it (uas.go); this shard has
	// none of that key, so it ends nowhere, and not in the call.
	e.b.invites.add(key, ownerShard)
	if !e.b.ackDirect(props, []byte(ack.String())) {
		t.Error("ACK of a live INVITE server transaction of a shard's: not taken")
	}
	e.b.invites.remove(key)
	time.Sleep(20 * time.Millisecond)
	if e.b.Stats().Unacked != 1 {
		t.Fatal("an ACK of a transaction reached the call")
	}
	if !e.b.ackDirect(props, []byte(ack.String())) {
		t.Fatal("ACK of the 2xx: not taken")
	}
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.Up == 1 && st.Unacked == 0 })
	tx.Terminate()
	e.caller.request(ctx, a, sip.BYE, "")
	e.cdr.next(ctx, t)
}
