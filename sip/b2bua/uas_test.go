package b2bua

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// rawCall is a caller on a bare UDP socket, registered as a device, and
// an upstream on another: both ends of a call through sbcd's own INVITE
// server transaction (uas.go), every datagram visible.
type rawCall struct {
	e              *env
	caller, callee *rawPeer
	invite         string
}

func newRawCall(t *testing.T) *rawCall {
	t.Helper()
	caller, callee := newRawPeer(t), newRawPeer(t)
	e := newEnv(t, behavior{}, func(o *Options) {
		shortTimers(o)
		o.Upstream = callee.addr().String()
		o.Devices["raw"] = caller.addr()
	}, withClock(), withRawCount())
	caller.sbcd, callee.sbcd = e.addr, e.addr
	rc := &rawCall{e: e, caller: caller, callee: callee}
	rc.invite = rc.request("INVITE", "z9hG4bK-raw-1", 1, "")
	return rc
}

// request is a request of the raw caller's call, without a To tag.
func (rc *rawCall) request(method, branch string, seq int, toTag string) string {
	to := "<sip:bob@" + rc.e.addr.String() + ">"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	body := ""
	hdrs := ""
	if method == "INVITE" {
		body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
		hdrs = "Contact: <sip:raw@" + rc.caller.addr().String() + ">\r\nContent-Type: application/sdp\r\n"
	}
	return fmt.Sprintf("%s sip:bob@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:raw@%s>;tag=rawcaller\r\nTo: %s\r\nCall-ID: raw-call-1\r\nCSeq: %d %s\r\n%sContent-Length: %d\r\n\r\n%s",
		method, rc.e.addr, rc.caller.addr(), branch, rc.caller.addr().Addr(), to, seq, method, hdrs, len(body), body)
}

// start sends the caller's INVITE and returns it as the callee got it,
// once the caller had its 100: the caller sends the INVITE again, which
// gets the 100 at once (the clock stands still: tryingDelay never comes).
func (rc *rawCall) start(t *testing.T) *sip.Request {
	t.Helper()
	rc.send(t, rc.invite)
	inv, _ := rc.callee.expect(sip.INVITE)
	rc.send(t, rc.invite)
	rc.expect(t, 100)
	return inv
}

func (rc *rawCall) send(t *testing.T, msg string) {
	t.Helper()
	if _, err := rc.caller.c.WriteToUDPAddrPort([]byte(msg), rc.e.addr); err != nil {
		t.Fatal(err)
	}
}

// response reads the next response the raw caller gets; nil after d.
func (rc *rawCall) response(t *testing.T, d time.Duration) *sip.Response {
	t.Helper()
	buf := make([]byte, 65536)
	_ = rc.caller.c.SetReadDeadline(time.Now().Add(d))
	for {
		n, err := rc.caller.c.Read(buf)
		if err != nil {
			var ne net.Error
			if ok := asNetErr(err, &ne); ok && ne.Timeout() {
				return nil
			}
			t.Fatal(err)
		}
		m, err := sip.ParseMessage(buf[:n])
		if err != nil {
			t.Fatalf("sbcd sent what does not parse: %v", err)
		}
		if res, ok := m.(*sip.Response); ok {
			return res
		}
	}
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

func (rc *rawCall) expect(t *testing.T, code int) *sip.Response {
	t.Helper()
	res := rc.response(t, 3*time.Second)
	if res == nil {
		t.Fatalf("raw caller: no %d", code)
	}
	if res.StatusCode != code {
		t.Fatalf("raw caller: got %d %s, want %d", res.StatusCode, res.Reason, code)
	}
	return res
}

func (rc *rawCall) noResponse(t *testing.T, d time.Duration) {
	t.Helper()
	if res := rc.response(t, d); res != nil {
		t.Fatalf("raw caller: unexpected %d", res.StatusCode)
	}
}

// ack acknowledges a non-2xx answer (RFC 3261 §17.1.1.3: the INVITE's
// branch, the response's To).
func (rc *rawCall) ackNon2xx(t *testing.T, res *sip.Response) {
	t.Helper()
	tag, _ := res.To().Params.Get("tag")
	rc.send(t, rc.request("ACK", "z9hG4bK-raw-1", 1, tag))
}

func waitServerTx(t *testing.T, b *B2BUA, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for b.Stats().ServerTx != want {
		if time.Now().After(deadline) {
			t.Fatalf("server transactions: %+v, want %d", b.Stats(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUASRejectedRetransmitUntilAck: the shard's INVITE transaction
// answers a retransmitted INVITE with its 100 (rawCall.start) and the next
// one with it again, relays the
// callee's 486, retransmits it at T1 doubling (Timer G) until the ACK,
// which ends it (RFC 3261 §17.2.1).
func TestUASRejectedRetransmitUntilAck(t *testing.T) {
	rc := newRawCall(t)
	inv := rc.start(t)
	// The counters follow the B-leg INVITE out (touch).
	waitFor(testCtx(t), t, func() bool { st := rc.e.b.Stats(); return st.ServerTx == 1 && st.Early == 1 })
	rc.send(t, rc.invite) // a retransmission: the last response again
	rc.expect(t, 100)
	rc.callee.none(50 * time.Millisecond)
	if st := rc.e.b.Stats(); st.Early != 1 || st.FreeSlots != 7 {
		t.Errorf("a retransmitted INVITE made a call: %+v", st)
	}
	rc.callee.answer(inv, 486, "Busy Here", "rawtag")
	res := rc.expect(t, 486)
	rc.callee.expect(sip.ACK)
	retransmissions(rc.e.clock, []time.Duration{sip.T1, 2 * sip.T1}, func() { rc.noResponse(t, 20*time.Millisecond) },
		func() { rc.expect(t, 486) })
	rc.send(t, rc.invite) // in Completed: the 486 again
	rc.expect(t, 486)
	rc.ackNon2xx(t, res)
	waitServerTx(t, rc.e.b, 0)
	rc.e.clock.Advance(64 * sip.T1)
	rc.noResponse(t, 50*time.Millisecond)
}

// TestUASTrying: the shard's INVITE transaction sends 100 Trying when it
// has sent the caller nothing for tryingDelay (RFC 3261 §17.2.1: 200 ms),
// and none when the callee's 180 came first.
func TestUASTrying(t *testing.T) {
	t.Run("callee silent", func(t *testing.T) {
		rc := newRawCall(t)
		rc.send(t, rc.invite)
		inv, _ := rc.callee.expect(sip.INVITE)
		// The callee's 100 stops Timer A, so the clock can move.
		rawTaken(t, rc.e, func() { rc.callee.answer(inv, 100, "Trying", "") })
		rc.e.clock.Advance(tryingDelay - 5*time.Millisecond)
		rc.noResponse(t, 50*time.Millisecond)
		rc.e.clock.Advance(5 * time.Millisecond)
		rc.expect(t, 100)
		rc.e.clock.Advance(tryingDelay)
		rc.noResponse(t, 50*time.Millisecond) // one 100, not one per tryingDelay
		rc.callee.answer(inv, 486, "Busy Here", "rawtag")
		res := rc.expect(t, 486)
		rc.callee.expect(sip.ACK)
		rc.ackNon2xx(t, res)
		waitServerTx(t, rc.e.b, 0)
	})
	t.Run("callee rings", func(t *testing.T) {
		rc := newRawCall(t)
		rc.send(t, rc.invite)
		inv, _ := rc.callee.expect(sip.INVITE)
		rc.callee.answer(inv, 180, "Ringing", "rawtag")
		rc.expect(t, 180)
		rc.e.clock.Advance(2 * tryingDelay)
		rc.noResponse(t, 50*time.Millisecond)
		rc.send(t, rc.invite) // a retransmission: the 180 again, no 100
		rc.expect(t, 180)
		rc.callee.answer(inv, 486, "Busy Here", "rawtag")
		res := rc.expect(t, 486)
		rc.callee.expect(sip.ACK)
		rc.ackNon2xx(t, res)
		waitServerTx(t, rc.e.b, 0)
	})
}

// TestUASTimerH: a non-2xx answer nobody ACKs is retransmitted up to T2
// apart and given up after 64*T1.
func TestUASTimerH(t *testing.T) {
	rc := newRawCall(t)
	inv := rc.start(t)
	rc.callee.answer(inv, 603, "Decline", "rawtag")
	rc.expect(t, 603)
	steps := []time.Duration{sip.T1, 2 * sip.T1, 4 * sip.T1, sip.T2, sip.T2}
	elapsed := retransmissions(rc.e.clock, steps, func() { rc.noResponse(t, 20*time.Millisecond) },
		func() { rc.expect(t, 603) })
	rc.e.clock.Advance(64*sip.T1 - elapsed)
	waitServerTx(t, rc.e.b, 0)
	for rc.response(t, 20*time.Millisecond) != nil { // a last one may cross
	}
	rc.e.clock.Advance(sip.T2)
	rc.noResponse(t, 50*time.Millisecond)
}

// TestUASCancel: a CANCEL of the shard's INVITE transaction gets 200, the
// INVITE 487, the callee a CANCEL; a CANCEL that matches nothing is left
// to sipgo, which answers 481 (RFC 3261 §9.2).
func TestUASCancel(t *testing.T) {
	rc := newRawCall(t)
	inv := rc.start(t)
	rc.callee.answer(inv, 180, "Ringing", "rawtag")
	rc.expect(t, 180)
	rc.send(t, rc.request("CANCEL", "z9hG4bK-raw-2", 1, "")) // another branch: no match
	if res := rc.expect(t, 481); res.CSeq().MethodName != sip.CANCEL {
		t.Errorf("481 to %s", res.CSeq().MethodName)
	}
	rc.send(t, rc.request("CANCEL", "z9hG4bK-raw-1", 1, ""))
	got := map[string]int{}
	var r487 *sip.Response
	for range 2 {
		res := rc.response(t, 3*time.Second)
		if res == nil {
			t.Fatal("no answer")
		}
		got[string(res.CSeq().MethodName)] = res.StatusCode
		if res.StatusCode == 487 {
			r487 = res
		}
	}
	if got["CANCEL"] != 200 || got["INVITE"] != 487 {
		t.Fatalf("answers %v, want 200 to CANCEL and 487 to INVITE", got)
	}
	bc, _ := rc.callee.expect(sip.CANCEL)
	if branchOf(bc) != branchOf(inv) {
		t.Errorf("CANCEL to the callee on branch %q, INVITE's %q", branchOf(bc), branchOf(inv))
	}
	rc.callee.answer(bc, 200, "OK", "rawtag")
	rc.callee.answer(inv, 487, "Request Terminated", "rawtag")
	rc.callee.expect(sip.ACK)
	rc.ackNon2xx(t, r487)
	waitServerTx(t, rc.e.b, 0)
	rec := rc.e.cdr.next(testCtx(t), t)
	if rec.Code != 487 {
		t.Errorf("cdr code %d, want 487", rec.Code)
	}
}

// TestUASAnswered: a 2xx ends the transaction at once; a retransmitted
// INVITE then makes no second call (the retransmission cache absorbs it,
// RFC 6026 §7.1), and the 2xx is retransmitted until the ACK.
func TestUASAnswered(t *testing.T) {
	rc := newRawCall(t)
	inv := rc.start(t)
	rc.callee.answer(inv, 200, "OK", "rawtag")
	ok := rc.expect(t, 200)
	rc.callee.expect(sip.ACK)
	waitServerTx(t, rc.e.b, 0)
	rc.send(t, rc.invite)
	rc.noResponse(t, 50*time.Millisecond)
	if st := rc.e.b.Stats(); st.FreeSlots != 7 || st.Up != 1 {
		t.Errorf("stats %+v, want one call", st)
	}
	rc.e.clock.Advance(t1)
	rc.expect(t, 200) // until the ACK (RFC 3261 §13.3.1.4)
	tag, _ := ok.To().Params.Get("tag")
	rc.send(t, rc.request("ACK", "z9hG4bK-raw-ack", 1, tag))
	waitFor(testCtx(t), t, func() bool { return rc.e.b.Stats().Unacked == 0 })
	rc.e.clock.Advance(t2)
	rc.noResponse(t, 50*time.Millisecond)
	rc.send(t, rc.request("BYE", "z9hG4bK-raw-bye", 2, tag))
	rc.expect(t, 200)
	bye, _ := rc.callee.expect(sip.BYE)
	rc.callee.answer(bye, 200, "OK", "")
	rc.e.cdr.next(testCtx(t), t)
}

// TestInviteDirect: what the read filter leaves to sipgo.
func TestInviteDirect(t *testing.T) {
	rc := newRawCall(t)
	props := sip.TransportReadProps{Transport: "UDP", LocalAddr: rc.e.b.udp[0].LocalAddr(),
		RemoteAddr: net.UDPAddrFromAddrPort(rc.caller.addr())}
	stranger := props
	stranger.RemoteAddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	for _, c := range []struct {
		name  string
		props sip.TransportReadProps
		data  string
	}{
		{"a re-INVITE (To tag)", props, rc.request("INVITE", "z9hG4bK-x", 1, "sometag")},
		{"an RFC 2543 branch", props, strings.Replace(rc.invite, "z9hG4bK-raw-1", "old-branch", 1)},
		{"an unknown source (403)", stranger, rc.invite},
		{"Max-Forwards 0 (483)", props, strings.Replace(rc.invite, "Max-Forwards: 70", "Max-Forwards: 0", 1)},
		{"no Contact (400)", props, strings.Replace(rc.invite, "Contact:", "X-Contact:", 1)},
		{"a CANCEL of nothing", props, rc.request("CANCEL", "z9hG4bK-raw-1", 1, "")},
		{"unparsable", props, "INVITE sip:x SIP/2.0\r\nVia: \r\n\r\n"},
		{"short", props, "INVI"},
	} {
		if rc.e.b.inviteDirect(c.props, []byte(c.data)) {
			t.Errorf("%s: taken", c.name)
		}
	}
	if st := rc.e.b.Stats(); st.ServerTx != 0 || st.FreeSlots != 8 {
		t.Errorf("stats %+v after INVITEs left to sipgo", st)
	}
	// A retransmission of an INVITE sipgo holds (one it refused) goes
	// back to sipgo, unchecked.
	key, err := sip.ServerTxKeyMake(mustRequest(t, rc.invite))
	if err != nil {
		t.Fatal(err)
	}
	rc.e.b.invites.add(key, ownerSipgo)
	if rc.e.b.inviteDirect(props, []byte(rc.invite)) {
		t.Error("an INVITE of sipgo's transaction: taken")
	}
	rc.e.b.invites.remove(key)
	if !rc.e.b.inviteDirect(props, []byte(rc.invite)) {
		t.Fatal("a new INVITE from a device: not taken")
	}
	inv, _ := rc.callee.expect(sip.INVITE)
	rc.callee.answer(inv, 404, "Not Found", "rawtag")
	res := rc.expect(t, 404)
	rc.ackNon2xx(t, res)
	waitServerTx(t, rc.e.b, 0)
}

func mustRequest(t testing.TB, data string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		t.Fatalf("not a request: %q", data)
	}
	return req
}

func TestInviteKeyOf(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"z9hG4bK1__host__5060__CANCEL", "z9hG4bK1__host__5060__INVITE"},
		{"z9hG4bK1__host__5060__INVITE", ""},
		{"CANCEL", ""},
		{"", ""},
	} {
		got, ok := inviteKeyOf(c.in)
		if got != c.want || ok != (c.want != "") {
			t.Errorf("inviteKeyOf(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
}
