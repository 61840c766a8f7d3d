package b2bua

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/session"
)

// rawPeer is an upstream on a bare UDP socket: it sees every datagram
// sbcd sends, retransmissions included, and answers only when told.
type rawPeer struct {
	t    *testing.T
	c    *net.UDPConn
	sbcd netip.AddrPort
}

func newRawPeer(t *testing.T) *rawPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawPeer{t: t, c: c}
}

func (p *rawPeer) addr() netip.AddrPort { return p.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// next reads the next request, skipping responses; nil after d without one.
func (p *rawPeer) next(d time.Duration) (*sip.Request, string) {
	p.t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for {
		_ = p.c.SetReadDeadline(deadline)
		n, _, err := p.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, ""
			}
			p.t.Fatalf("raw peer read: %v", err)
		}
		m, err := sip.ParseMessage(buf[:n])
		if err != nil {
			p.t.Fatalf("sbcd sent what does not parse: %v: %q", err, buf[:n])
		}
		if req, ok := m.(*sip.Request); ok {
			return req, string(buf[:n])
		}
	}
}

// expect reads the next request and checks its method.
func (p *rawPeer) expect(method sip.RequestMethod) (*sip.Request, string) {
	p.t.Helper()
	req, raw := p.next(3 * time.Second)
	if req == nil {
		p.t.Fatalf("raw peer: no %s", method)
	}
	if req.Method != method {
		p.t.Fatalf("raw peer: got %s, want %s", req.Method, method)
	}
	return req, raw
}

// none checks that no request comes within d.
func (p *rawPeer) none(d time.Duration) {
	p.t.Helper()
	if req, _ := p.next(d); req != nil {
		p.t.Fatalf("raw peer: unexpected %s", req.Method)
	}
}

// answer sends a response to req with toTag (none for 100).
func (p *rawPeer) answer(req *sip.Request, code int, reason, toTag string) {
	p.t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if toTag != "" {
		if to := res.To(); to != nil {
			to.Params.Add("tag", toTag)
		}
	}
	if code >= 200 && code < 300 && req.IsInvite() {
		res.AppendHeader(sip.NewHeader("Contact", "<sip:bob@"+p.addr().String()+">"))
	}
	if _, err := p.c.WriteToUDPAddrPort([]byte(res.String()), p.sbcd); err != nil {
		p.t.Fatal(err)
	}
}

func branchOf(req *sip.Request) string {
	b, _ := req.Via().Params.Get("branch")
	return b
}

// newRawEnv is an env whose upstream is a raw peer, on the virtual clock.
func newRawEnv(t *testing.T) (*env, *rawPeer) {
	peer := newRawPeer(t)
	e := newEnv(t, behavior{}, func(o *Options) {
		shortTimers(o)
		o.Upstream = peer.addr().String()
	}, withClock(), withRawCount())
	peer.sbcd = e.addr
	return e, peer
}

// TestClientInviteRetransmitAndReject follows the B-leg INVITE through
// sbcd's own client transaction: Timer A retransmissions at T1 doubling
// while Calling, none once Proceeding, and the ACK of a non-2xx final
// answer, sent again for its retransmission (RFC 3261 §17.1.1).
func TestClientInviteRetransmitAndReject(t *testing.T) {
	e, peer := newRawEnv(t)
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	inv, raw := peer.expect(sip.INVITE)
	if b := branchOf(inv); !strings.HasPrefix(b, branchMark) {
		t.Fatalf("branch %q lacks %q", b, branchMark)
	}
	if st := e.b.Stats(); st.ClientTx != 1 {
		t.Errorf("client transactions %d, want 1", st.ClientTx)
	}
	peer.none(50 * time.Millisecond) // the clock stands still
	retransmissions(e.clock, []time.Duration{sip.T1, 2 * sip.T1, 4 * sip.T1}, func() { peer.none(20 * time.Millisecond) }, func() {
		if _, again := peer.expect(sip.INVITE); again != raw {
			t.Fatalf("retransmission differs:\n%s\nfirst:\n%s", again, raw)
		}
	})
	peer.answer(inv, 180, "Ringing", "rawtag")
	until(ctx, t, tx, 180)       // relayed: the shard has it
	e.clock.Advance(64 * sip.T1) // neither Timer A nor Timer B once Proceeding
	peer.none(50 * time.Millisecond)

	peer.answer(inv, 486, "Busy Here", "rawtag")
	ack, _ := peer.expect(sip.ACK)
	to, _ := ack.To().Params.Get("tag")
	if branchOf(ack) != branchOf(inv) || to != "rawtag" || ack.CSeq().SeqNo != inv.CSeq().SeqNo ||
		ack.CallID().Value() != inv.CallID().Value() || ack.Recipient.String() != inv.Recipient.String() {
		t.Errorf("ACK does not match RFC 3261 §17.1.1.3:\n%s\nINVITE:\n%s", ack, inv)
	}
	// The retransmitted 486 gets the ACK again, the INVITE no more.
	peer.answer(inv, 486, "Busy Here", "rawtag")
	if again, _ := peer.expect(sip.ACK); branchOf(again) != branchOf(inv) {
		t.Errorf("second ACK branch %q", branchOf(again))
	}
	if res, _ := final(ctx, t, tx); res.StatusCode != 486 {
		t.Errorf("caller got %d, want 486", res.StatusCode)
	}
	waitClientTx(t, e.b)
}

// TestClientInviteTimerB: an INVITE nobody answers ends after 64*T1 in the
// shard's clock, and the caller gets 408.
func TestClientInviteTimerB(t *testing.T) {
	e, peer := newRawEnv(t)
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	peer.expect(sip.INVITE)
	e.clock.Advance(64*sip.T1 - sip.T1/2)
	if st := e.b.Stats(); st.ClientTx != 1 {
		t.Errorf("client transactions %d before Timer B, want 1", st.ClientTx)
	}
	e.clock.Advance(sip.T1)
	if res, _ := final(ctx, t, tx); res.StatusCode != 408 {
		t.Errorf("caller got %d, want 408", res.StatusCode)
	}
	waitClientTx(t, e.b)
}

// TestClientCancelRingingForever: a callee that rings, takes the CANCEL
// and never sends its 487 holds the call's slot for 64*T1 after the
// CANCEL, no longer (RFC 3261 §9.1).
func TestClientCancelRingingForever(t *testing.T) {
	e, peer := newRawEnv(t)
	ctx := testCtx(t)
	c, tx := e.caller.invite(ctx, e.addr, "bob")
	inv, _ := peer.expect(sip.INVITE)
	peer.answer(inv, 180, "Ringing", "rawtag")
	until(ctx, t, tx, 180)
	bc := cancelRaw(ctx, t, e, peer, c, tx, inv)
	peer.answer(bc, 200, "OK", "rawtag")
	waitFor(ctx, t, func() bool { return e.b.Stats().ClientTx == 1 }) // the CANCEL's ended
	e.clock.Advance(64*sip.T1 - sip.T1/2)
	if st := e.b.Stats(); st.FreeSlots == 8 || st.ClientTx != 1 {
		t.Errorf("before 64*T1: free slots %d, client transactions %d; want the INVITE's held", st.FreeSlots, st.ClientTx)
	}
	e.clock.Advance(sip.T1)
	waitClientTx(t, e.b)
	deadline := time.Now().Add(3 * time.Second)
	for e.b.Stats().FreeSlots != 8 {
		if time.Now().After(deadline) {
			t.Fatalf("slot still held: %+v", e.b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cancelToEnd has the caller cancel its ringing call (cancelRaw) and the
// raw peer answer the CANCEL 200 and the INVITE 487, which sbcd ACKs
// (RFC 3261 §17.1.1.3); no client transaction is left.
func cancelToEnd(ctx context.Context, t *testing.T, e *env, peer *rawPeer, c *ucall, tx *sip.ClientTx, inv *sip.Request) {
	t.Helper()
	bc := cancelRaw(ctx, t, e, peer, c, tx, inv)
	peer.answer(bc, 200, "OK", "")
	peer.answer(inv, 487, "Request Terminated", "rawtag")
	peer.expect(sip.ACK)
	waitClientTx(t, e.b)
}

// cancelRaw has the caller cancel its call c (INVITE transaction tx) and
// returns sbcd's CANCEL of inv, the B-leg INVITE, checked for its branch
// (RFC 3261 §9.1).
func cancelRaw(ctx context.Context, t *testing.T, e *env, peer *rawPeer, c *ucall, tx *sip.ClientTx, inv *sip.Request) *sip.Request {
	t.Helper()
	e.caller.cancel(ctx, c, tx)
	bc, _ := peer.expect(sip.CANCEL)
	if branchOf(bc) != branchOf(inv) {
		t.Errorf("CANCEL branch %q, INVITE's %q (RFC 3261 §9.1)", branchOf(bc), branchOf(inv))
	}
	// §9.1: the INVITE's Request-URI, Call-ID, From, To and CSeq number.
	if bc.Recipient.String() != inv.Recipient.String() || bc.CallID().Value() != inv.CallID().Value() ||
		bc.From().Value() != inv.From().Value() || bc.To().Value() != inv.To().Value() ||
		bc.CSeq().SeqNo != inv.CSeq().SeqNo {
		t.Errorf("CANCEL does not match its INVITE (RFC 3261 §9.1):\n%s\nINVITE:\n%s", bc, inv)
	}
	return bc
}

// TestProvisionalRelay: the callee's 180 without a body, which the read
// filter hands over without parsing it (rawClientResponse), and its 183
// with SDP, which it parses, both reach the caller with their status line,
// sbcd's own To tag (RFC 3261 §12.1.1: the B2BUA is the UAS of the
// A-leg) and, for the 183, the body and its Content-Type.
func TestProvisionalRelay(t *testing.T) {
	e, peer := newRawEnv(t)
	ctx := testCtx(t)
	c, tx := e.caller.invite(ctx, e.addr, "bob")
	inv, _ := peer.expect(sip.INVITE)
	rawTaken(t, e, func() { peer.answer(inv, 180, "Ringing", "rawtag") })
	res183 := sip.NewResponseFromRequest(inv, 183, "Session Progress", []byte(calleeSDP))
	res183.To().Params.Add("tag", "rawtag")
	res183.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if _, err := peer.c.WriteToUDPAddrPort([]byte(res183.String()), peer.sbcd); err != nil {
		t.Fatal(err)
	}
	var got []*sip.Response
	for len(got) < 2 {
		select {
		case res := <-tx.Responses():
			if res.StatusCode != 100 {
				got = append(got, res)
			}
		case <-ctx.Done():
			t.Fatalf("caller got %d provisional answers, want 180 and 183", len(got))
		}
	}
	for i, want := range []struct {
		code         int
		reason, body string
		contentType  string
	}{{180, "Ringing", "", ""}, {183, "Session Progress", calleeSDP, "application/sdp"}} {
		res := got[i]
		tag, _ := res.To().Params.Get("tag")
		ct := ""
		if h := res.ContentType(); h != nil {
			ct = h.Value()
		}
		if res.StatusCode != want.code || res.Reason != want.reason || string(res.Body()) != want.body ||
			ct != want.contentType || tag == "" || tag == "rawtag" {
			t.Errorf("caller got %d %q tag %q body %q type %q; want %d %q, sbcd's tag, body %q type %q",
				res.StatusCode, res.Reason, tag, res.Body(), ct, want.code, want.reason, want.body, want.contentType)
		}
	}
	if n := e.raw.Load(); n != 1 {
		t.Errorf("responses taken without parsing: %d, want the 180's", n)
	}
	cancelToEnd(ctx, t, e, peer, c, tx, inv)
}

// TestClientInviteTrying: a 100 to the B-leg INVITE, which the read
// filter hands over without parsing it (rawClientResponse), stops Timer A
// and Timer B (RFC 3261 §17.1.1.2) and lets the caller's CANCEL go out at
// once (§9.1: not before a provisional answer); the caller's CANCEL gets
// 200 and its INVITE 487 (phone.cancel checks both).
func TestClientInviteTrying(t *testing.T) {
	e, peer := newRawEnv(t)
	ctx := testCtx(t)
	c, tx := e.caller.invite(ctx, e.addr, "bob")
	inv, _ := peer.expect(sip.INVITE)
	rawTaken(t, e, func() { peer.answer(inv, 100, "Trying", "") })
	e.clock.Advance(64*sip.T1 - sip.T1/2)
	peer.none(50 * time.Millisecond) // no Timer A
	if st := e.b.Stats(); st.ClientTx != 1 {
		t.Errorf("client transactions %d, want the INVITE's", st.ClientTx)
	}
	cancelToEnd(ctx, t, e, peer, c, tx, inv)
}

// TestRawClientResponse: rawClientResponse takes a 100 to any request, a
// provisional answer to an INVITE without a body and a final answer to a
// BYE, and only when it reads them as sipgo would.
func TestRawClientResponse(t *testing.T) {
	const br = branchMark + "01abc"
	res := func(status, cseq string) string {
		return "SIP/2.0 " + status + "\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=" + br + "\r\n" +
			"From: <sip:a@x>;tag=00aa\r\nTo: <sip:b@y>;tag=1\r\nCall-ID: rd\r\nCSeq: " + cseq + "\r\nContent-Length: 0\r\n\r\n"
	}
	for _, c := range []struct {
		name, data string
		code       int
		method     string
		seq        uint32
		ok         bool
	}{
		{"100 to INVITE", res("100 Trying", "1 INVITE"), 100, "INVITE", 1, true},
		{"100 to BYE", res("100 Trying", "7 BYE"), 100, "BYE", 7, true},
		{"200 to BYE", res("200 OK", "2147483647 BYE"), 200, "BYE", 1<<31 - 1, true},
		{"481 to BYE", res("481 Call/Transaction Does Not Exist", "3 BYE"), 481, "BYE", 3, true},
		{"180 to INVITE", res("180 Ringing", "1 INVITE"), 180, "INVITE", 1, true},
		{"183 without Content-Length", strings.Replace(res("183 Session Progress", "4 INVITE"), "Content-Length: 0\r\n", "", 1), 183, "INVITE", 4, true},
		{"181 with l: 00", strings.Replace(res("181 Forwarded", "5 INVITE"), "Content-Length: 0", "l: 00", 1), 181, "INVITE", 5, true},
		{"183 with a body", strings.Replace(res("183 Session Progress", "1 INVITE"), "Content-Length: 0\r\n\r\n", "Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n", 1), 0, "", 0, false},
		{"180 with a body and no Content-Length", strings.Replace(res("180 Ringing", "1 INVITE"), "Content-Length: 0\r\n\r\n", "\r\nv=0\n", 1), 0, "", 0, false},
		{"180 with Content-Length 4 and none", strings.Replace(res("180 Ringing", "1 INVITE"), "Content-Length: 0", "Content-Length: 4", 1), 0, "", 0, false},
		{"180 with two Content-Length", strings.Replace(res("180 Ringing", "1 INVITE"), "Content-Length: 0", "Content-Length: 0\r\nl: 0", 1), 0, "", 0, false},
		{"180 with a folded Content-Length", strings.Replace(res("180 Ringing", "1 INVITE"), "Content-Length: 0", "Content-Length:\r\n 0", 1), 0, "", 0, false},
		{"180 to BYE", res("180 Odd", "1 BYE"), 0, "", 0, false},
		{"180 to UPDATE", res("180 Odd", "1 UPDATE"), 0, "", 0, false},
		{"200 to INVITE", res("200 OK", "1 INVITE"), 0, "", 0, false},
		{"200 to UPDATE", res("200 OK", "2 UPDATE"), 0, "", 0, false},
		{"CSeq too large", res("200 OK", "2147483648 BYE"), 0, "", 0, false},
		{"no reason", "SIP/2.0 100\r\nVia: SIP/2.0/UDP h;branch=" + br + "\r\nCSeq: 1 INVITE\r\n\r\n", 0, "", 0, false},
		{"status 099", res("099 Low", "1 BYE"), 0, "", 0, false},
		{"folded CSeq", strings.Replace(res("200 OK", "1 BYE"), "CSeq: 1 BYE", "CSeq: 1\r\n BYE", 1), 0, "", 0, false},
		{"branch without the cookie", strings.Replace(res("100 Trying", "1 INVITE"), "branch="+br, "branch=xyz", 1), 0, "", 0, false},
		{"a request", "BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=" + br + "\r\nCSeq: 1 BYE\r\n\r\n", 0, "", 0, false},
	} {
		r, ok := rawClientResponse([]byte(c.data))
		if ok != c.ok || r.code != c.code || string(r.method) != c.method || r.seq != c.seq || ok && string(r.branch) != br {
			t.Errorf("%s: %d %q %q %d %v; want %d %q %q %d %v", c.name, r.code, r.branch, r.method, r.seq, ok, c.code, br, c.method, c.seq, c.ok)
		}
		if ok {
			checkSameRawResponse(t, []byte(c.data))
		}
	}
}

// checkSameRawResponse fails when rawClientResponse reads from data what
// sipgo's parse of data does not give: the status line, the branch, the
// CSeq and, for a provisional answer to an INVITE, no body.
func checkSameRawResponse(t testing.TB, data []byte) {
	r, ok := rawClientResponse(data)
	if !ok {
		return
	}
	code, branch, method, seq := r.code, r.branch, r.method, r.seq
	m, err := sip.ParseMessage(bytes.Clone(data))
	if err != nil {
		return // sipgo would drop it; the peer sent it all the same
	}
	res, isRes := m.(*sip.Response)
	if !isRes || res.Via() == nil || res.CSeq() == nil {
		t.Fatalf("rawClientResponse read %q, sipgo reads no such response", data)
	}
	b, _ := res.Via().Params.Get("branch")
	if res.StatusCode != code || b != string(branch) || string(res.CSeq().MethodName) != string(method) || res.CSeq().SeqNo != seq {
		t.Fatalf("rawClientResponse read %d %q %q %d from %q, sipgo %d %q %q %d",
			code, branch, method, seq, data, res.StatusCode, b, res.CSeq().MethodName, res.CSeq().SeqNo)
	}
	if reasonString(r.reason) != res.Reason {
		t.Fatalf("rawClientResponse read reason %q from %q, sipgo %q", r.reason, data, res.Reason)
	}
	if code > 100 && code < 200 && len(res.Body()) != 0 {
		t.Fatalf("rawClientResponse read no body in %q, sipgo %q", data, res.Body())
	}
}

// FuzzRawClientResponse: what rawClientResponse reads, sipgo reads too.
func FuzzRawClientResponse(f *testing.F) {
	for _, data := range corpusFiles(f) {
		f.Add(data)
	}
	f.Add([]byte("SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=" + branchMark + "01a\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Add([]byte("SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h:5;rport;branch=" + branchMark + "00b\r\nCSeq: 9 BYE\r\nl: 0\r\n\r\n"))
	f.Add([]byte("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=" + branchMark + "00c\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameRawResponse(t, data)
	})
}

// answeredRaw sets up a call to the raw peer, answered and ACKed, and
// has the caller hang up: it returns sbcd's BYE to the peer, as sent.
func answeredRaw(t *testing.T, e *env, peer *rawPeer) (*sip.Request, string) {
	t.Helper()
	ctx := testCtx(t)
	c, tx := e.caller.invite(ctx, e.addr, "bob")
	inv, _ := peer.expect(sip.INVITE)
	peer.answer(inv, 200, "OK", "rawtag")
	res, _ := final(ctx, t, tx)
	if res.StatusCode != 200 {
		t.Fatalf("caller got %d", res.StatusCode)
	}
	e.caller.answered(c, res) // and ACKs
	peer.expect(sip.ACK)      // sbcd's ACK of the 2xx
	if r := e.caller.request(ctx, c, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("caller's BYE answered %d", r.StatusCode)
	}
	return peer.expect(sip.BYE)
}

// TestClientByeTimerF: Timer E retransmits an unanswered BYE at T1
// doubling up to T2, and Timer F ends it after 64*T1, which frees the
// call's slot (RFC 3261 §17.1.2.2).
func TestClientByeTimerF(t *testing.T) {
	e, peer := newRawEnv(t)
	_, raw := answeredRaw(t, e, peer)
	steps := []time.Duration{sip.T1, 2 * sip.T1, 4 * sip.T1, sip.T2, sip.T2}
	elapsed := retransmissions(e.clock, steps, func() { peer.none(20 * time.Millisecond) }, func() {
		if _, again := peer.expect(sip.BYE); again != raw {
			t.Fatalf("retransmission differs")
		}
	})
	if st := e.b.Stats(); st.ClientTx != 1 || st.FreeSlots == 8 {
		t.Errorf("before Timer F: %+v", st)
	}
	e.clock.Advance(64*sip.T1 - elapsed)
	waitClientTx(t, e.b)
	deadline := time.Now().Add(3 * time.Second)
	for e.b.Stats().FreeSlots != 8 {
		if time.Now().After(deadline) {
			t.Fatalf("slot still held: %+v", e.b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientByeProceeding: once a provisional answer came, Timer E is
// reset to T2 each time it fires; the final answer ends the transaction
// (RFC 3261 §17.1.2.2).
func TestClientByeProceeding(t *testing.T) {
	e, peer := newRawEnv(t)
	bye, _ := answeredRaw(t, e, peer)
	e.clock.Advance(sip.T1)
	peer.expect(sip.BYE) // Timer E, next at 2*T1
	rawTaken(t, e, func() { peer.answer(bye, 100, "Trying", "") })
	// Timer E fires in Proceeding at 2*T1, and is reset to T2.
	retransmissions(e.clock, []time.Duration{2 * sip.T1, sip.T2}, func() { peer.none(20 * time.Millisecond) },
		func() { peer.expect(sip.BYE) })
	peer.answer(bye, 200, "OK", "")
	waitClientTx(t, e.b)
	e.clock.Advance(64 * sip.T1)
	peer.none(50 * time.Millisecond)
}

// TestResponseDirect: the read filter takes responses to sbcd's own
// branches and leaves everything else to sipgo.
func TestResponseDirect(t *testing.T) {
	e, _ := newRawEnv(t)
	from := sip.TransportReadProps{Transport: "UDP", RemoteAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5999}}
	res := func(branch string) []byte {
		return []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch + "\r\n" +
			"From: <sip:a@x>;tag=00aa\r\nTo: <sip:b@y>;tag=1\r\nCall-ID: rd\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n")
	}
	for _, c := range []struct {
		name string
		data []byte
		want bool
	}{
		{"own branch, shard 1", res(branchMark + "01abc"), true},
		{"own branch, no such shard", res(branchMark + "7fabc"), false},
		{"sipgo's branch", res("z9hG4bK.0123456789abcdef"), false},
		{"a request", []byte("BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=" + branchMark + "01x\r\n\r\n"), false},
		{"does not parse", []byte("SIP/2.0 200 OK\r\nVia: " + branchMark + "01\r\n"), false},
		{"empty", nil, false},
	} {
		if got := e.b.responseDirect(from, c.data); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// retransmissions advances the virtual clock through each step in turn:
// 1 ms short of it quiet must hold (nothing sent), at it got must (a
// retransmission). It returns the time it advanced.
func retransmissions(clock *fakeClock, steps []time.Duration, quiet, got func()) time.Duration {
	total := time.Duration(0)
	for _, d := range steps {
		clock.Advance(d - time.Millisecond)
		quiet()
		clock.Advance(time.Millisecond)
		got()
		total += d
	}
	return total
}

// answeredCall places a call from the caller phone through sbcd and
// checks it is answered 200; the caller has not ACKed it.
func (e *env) answeredCall(ctx context.Context) (*ucall, *sip.ClientTx, *sip.Response) {
	e.t.Helper()
	a, tx := e.caller.invite(ctx, e.addr, "bob")
	res, _ := final(ctx, e.t, tx)
	if res.StatusCode != 200 {
		e.t.Fatalf("answer %d", res.StatusCode)
	}
	return a, tx, res
}

// rawTaken runs send, which sends a response the read filter hands to a
// shard without parsing it, and waits until a shard took it: nothing else
// shows that it did (it only stops timers).
func rawTaken(t *testing.T, e *env, send func()) {
	t.Helper()
	n := e.raw.Load()
	send()
	waitFor(testCtx(t), t, func() bool { return e.raw.Load() > n })
}

// TestByeTwiceBeforeCached: a BYE retransmission the shard gets before
// the answer to the first is in the retransmission cache (the read filter
// handed both over at once) is answered 200 again, not 500 for an
// out-of-order CSeq (RFC 3261 §17.2.2, §12.2.2). The callee holds its
// answer to sbcd's BYE until both are answered: the test posts the two
// one after the other, and the callee's 200 must not end the call in
// between (from a socket's read loop they are queued together).
func TestByeTwiceBeforeCached(t *testing.T) {
	hold := make(chan struct{})
	bc := newByeCall(t, behavior{byeHold: hold})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release) // before the phones stop, should the test fail
	req := mustRequest(t, bc.bye)
	req.SetTransport("UDP")
	req.SetSource(bc.src.addr().String())
	s, ok := bc.e.b.tagShard(bc.tag)
	if !ok {
		t.Fatal("no shard for the call's tag")
	}
	for range 2 {
		s.post(bc.ctx, event{kind: evRequest, req: req, direct: true, sock: 0})
	}
	bc.read200()
	bc.read200()
	release()
	bc.e.callee.expect(bc.ctx, sip.BYE)
	bc.e.cdr.next(bc.ctx, t)
}

// byeCall is a call through sbcd between the phones, answered and ACKed,
// the caller's BYE for it (not sent), and a raw socket as the BYE's source
// to receive its answers.
type byeCall struct {
	t        *testing.T
	e        *env
	ctx      context.Context
	src      *rawPeer
	bye, seq string
	tag      string // sbcd's A-leg tag
}

func newByeCall(t *testing.T, callee behavior) *byeCall {
	t.Helper()
	e := newEnv(t, callee, nil)
	ctx := testCtx(t)
	a, tx, res := e.answeredCall(ctx)
	t.Cleanup(tx.Terminate)
	e.caller.answered(a, res)
	waitFor(ctx, t, func() bool { return e.b.Stats().Up == 1 && e.b.Stats().Unacked == 0 })
	bc := &byeCall{t: t, e: e, ctx: ctx, src: newRawPeer(t)}
	bc.bye = e.caller.build(a, sip.BYE, e.caller.seq.Add(1), "").String()
	bc.seq = strings.Split(strings.Split(bc.bye, "CSeq: ")[1], " ")[0]
	bc.tag, _ = res.To().Params.Get("tag")
	return bc
}

// read200 reads the next answer at the source: 200 to the BYE.
func (bc *byeCall) read200() {
	bc.t.Helper()
	buf := make([]byte, 4096)
	_ = bc.src.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := bc.src.c.Read(buf)
	if err != nil {
		bc.t.Fatalf("no answer to the BYE: %v", err)
	}
	if !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 OK\r\n") || !strings.Contains(string(buf[:n]), "CSeq: "+bc.seq+" BYE") {
		bc.t.Fatalf("answer %q", buf[:n])
	}
}

func waitClientTx(t *testing.T, b *B2BUA) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for b.Stats().ClientTx != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("client transactions left: %+v", b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestByeDirect: the read filter takes a BYE of a call over UDP from
// sipgo, the shard answers it from the socket, and the retransmission
// cache answers its retransmission; what a check refuses, what does not
// parse and what names no shard is left to sipgo.
func TestByeDirect(t *testing.T) {
	bc := newByeCall(t, behavior{})
	e, ctx, src, bye, seq, tag := bc.e, bc.ctx, bc.src, bc.bye, bc.seq, bc.tag
	props := sip.TransportReadProps{Transport: "UDP", LocalAddr: e.b.udp[0].LocalAddr(),
		RemoteAddr: net.UDPAddrFromAddrPort(src.addr())}
	for _, c := range []struct {
		name  string
		props sip.TransportReadProps
		data  string
	}{
		{"not a BYE", props, strings.Replace(bye, "BYE ", "FOO ", 1)},
		{"unparsable", props, "BYE sip:bob@127.0.0.1 SIP/2.0\r\nVia: \r\n\r\n"},
		{"empty", props, ""},
		{"no shard's tag", props, strings.Replace(bye, "tag="+tag, "tag=zz"+tag, 1)},
		{"CSeq method mismatch (400)", props, strings.Replace(bye, "CSeq: "+seq+" BYE", "CSeq: "+seq+" INVITE", 1)},
		{"unknown socket", sip.TransportReadProps{Transport: "UDP", LocalAddr: src.c.LocalAddr(), RemoteAddr: props.RemoteAddr}, bye},
	} {
		if e.b.byeDirect(c.props, []byte(c.data)) {
			t.Errorf("%s: taken", c.name)
		}
	}
	if st := e.b.Stats(); st.Up != 1 {
		t.Fatalf("a BYE left to sipgo reached the call: %+v", st)
	}
	if !e.b.byeDirect(props, []byte(bye)) {
		t.Fatal("BYE of the call: not taken")
	}
	bc.read200()
	e.callee.expect(ctx, sip.BYE)
	e.cdr.next(ctx, t)
	// A retransmission, as the socket's read loop hands it over: the
	// retransmission cache answers it before byeDirect sees it.
	resent := e.b.Stats().RtxResent
	if rest, _ := e.b.readFilter(props, []byte(bye)); rest != nil {
		t.Fatal("retransmitted BYE: not taken")
	}
	bc.read200()
	if got := e.b.Stats().RtxResent; got != resent+1 {
		t.Errorf("retransmissions answered from the cache: %d, want %d", got, resent+1)
	}
}

func TestAppendHex(t *testing.T) {
	for _, tc := range []struct {
		v     uint64
		width int
	}{
		{0, 0}, {0, 2}, {1, 0}, {0xab, 2}, {0x1ff, 2}, {7, 8}, {0xdeadbeef, 8},
		{1<<64 - 1, 0}, {1<<64 - 1, 8}, {0x10, 16}, {5, 40},
	} {
		want := fmt.Sprintf("%0*x", min(tc.width, 16), tc.v)
		if got := string(appendHex([]byte("x"), tc.v, tc.width)); got != "x"+want {
			t.Errorf("appendHex(%#x, %d) = %q, want %q", tc.v, tc.width, got, "x"+want)
		}
	}
}

func TestTagAndBranchNameTheirShard(t *testing.T) {
	b, err := New(Options{MaxCalls: 300, Shards: 3, Upstream: "127.0.0.1:5999", Params: session.DefaultParams(),
		CDR: newMemCDR(), Logger: testLogger(), Listen: []Listen{{Network: "udp", Addr: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range b.shards {
		tag := b.newTag(i)
		if got, ok := b.tagShard(tag); !ok || got != s {
			t.Errorf("tag %q of shard %d names shard %v", tag, i, got)
		}
		if len(tag) != 18 {
			t.Errorf("tag %q: %d characters, want 18", tag, len(tag))
		}
		br, br2 := s.newBranch(), s.newBranch()
		if got, ok := b.branchShard(br); !ok || got != s {
			t.Errorf("branch %q of shard %d names shard %v", br, i, got)
		}
		if br == br2 || !strings.HasPrefix(br, branchMark) {
			t.Errorf("branches %q, %q: want distinct, starting %q", br, br2, branchMark)
		}
	}
}
