package b2bua

import (
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/session"
)

// TestSetParamsKeepsNegotiatedValues: a live config apply changes the
// session timers of new calls; a call that is up keeps what it negotiated
// (DESIGN.md §5), and invalid parameters change nothing.
func TestSetParamsKeepsNegotiatedValues(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, nil)
	ctx := testCtx(t)
	a1, _, _, inv1 := e.call(ctx, sip.NewHeader("Supported", "timer"))
	if se := inv1.GetHeader("Session-Expires"); se == nil || se.Value() != "600;refresher=uac" {
		t.Fatalf("first call: B-leg Session-Expires %v", se)
	}

	p := session.DefaultParams()
	p.TTL = 1200 * time.Second
	if err := e.b.SetParams(p); err != nil {
		t.Fatalf("SetParams: %v", err)
	}
	bad := p
	bad.TTL = 10 * time.Second // below Min-SE
	if err := e.b.SetParams(bad); err == nil {
		t.Error("SetParams accepted a TTL below Min-SE")
	}

	a2, tx := e.caller.invite(ctx, e.addr, "bob", sip.NewHeader("Supported", "timer"))
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 200 {
		t.Fatalf("second call: %d %s", res.StatusCode, res.Reason)
	}
	e.caller.answered(a2, res)
	inv2 := e.callee.expect(ctx, sip.INVITE)
	if se := inv2.GetHeader("Session-Expires"); se == nil || se.Value() != "1200;refresher=uac" {
		t.Errorf("second call after SetParams: B-leg Session-Expires %v, want 1200", se)
	}
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.Up == 2 && st.Unacked == 0 })

	for _, a := range []*ucall{a1, a2} {
		if r := e.caller.request(ctx, a, sip.BYE, ""); r.StatusCode != 200 {
			t.Fatalf("BYE answered %d", r.StatusCode)
		}
		e.callee.expect(ctx, sip.BYE)
		rec := e.cdr.next(ctx, t)
		want := uint32(600)
		if a == a2 {
			want = 1200
		}
		if rec.A.SE != want || rec.B.SE != want {
			t.Errorf("call %s: CDR session expires A %d B %d, want %d on both legs", rec.CallID, rec.A.SE, rec.B.SE, want)
		}
	}
}

// TestSetRoutingAppliesToNewCalls: a device removed by a live apply can no
// longer place calls; a call it had up continues and ends normally.
func TestSetRoutingAppliesToNewCalls(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, nil)
	ctx := testCtx(t)
	a, _, _, _ := e.call(ctx)
	if err := e.b.SetRouting(e.callee.addr.String(), map[string]netip.AddrPort{"carol": netip.MustParseAddrPort("127.0.0.1:9")}); err != nil {
		t.Fatalf("SetRouting: %v", err)
	}
	if err := e.b.SetRouting("not an address", nil); err == nil {
		t.Error("SetRouting accepted a bad upstream")
	}
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	if res, _ := final(ctx, t, tx); res.StatusCode != 403 {
		t.Errorf("a call from a removed device: %d %s, want 403", res.StatusCode, res.Reason)
	}
	if r := e.caller.request(ctx, a, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE of the call that was up: %d", r.StatusCode)
	}
	e.callee.expect(ctx, sip.BYE)
	if rec := e.cdr.next(ctx, t); rec.Reason != session.ReasonCallerBye {
		t.Errorf("CDR of the call that was up: %+v", rec)
	}
}
