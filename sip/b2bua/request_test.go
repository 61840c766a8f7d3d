package b2bua

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"sbcd/timers/session"
)

// requestB2BUA is a B2BUA that is not served, for building requests;
// advertised is Options.Advertised.
func requestB2BUA(t testing.TB, advertised string) *B2BUA {
	t.Helper()
	b, err := New(Options{MaxCalls: 10, Shards: 1, Upstream: "127.0.0.1:5999", Params: session.DefaultParams(),
		CDR: newMemCDR(), Logger: testLogger(), Advertised: advertised,
		Listen: []Listen{{Network: "udp", Addr: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.closeSockets)
	return b
}

// canonicalURI is u as a leg keeps it: written by sipgo from its parse
// (Address.String, Uri.String); ok is false when sipgo does not parse it
// or writes it back differently a second time.
func canonicalURI(u string) (string, bool) {
	var p sip.Uri
	if err := sip.ParseUri(u, &p); err != nil {
		return "", false
	}
	c := p.String()
	var q sip.Uri
	if err := sip.ParseUri(c, &q); err != nil || q.String() != c {
		return "", false
	}
	return c, true
}

// checkSameRequest fails when writeRequest and newRequest, written by
// sipgo, differ for a request of method in the dialog of l.
func checkSameRequest(t testing.TB, s *shard, l *legState, method sip.RequestMethod, seq uint32) {
	t.Helper()
	req, err := s.newRequest(l, method, seq)
	if err != nil {
		t.Fatalf("newRequest %s: %v", method, err)
	}
	if _, ok := s.inDialogUDP(l); !ok {
		t.Fatalf("inDialogUDP refuses %+v", l)
	}
	branch, _ := req.Via().Params.Get("branch")
	var w bytes.Buffer
	s.writeRequest(&w, l, method, seq, branch)
	if diff := cmp.Diff(req.String(), w.String()); diff != "" {
		t.Fatalf("%s in %+v: writeRequest differs from newRequest (-sipgo +ours):\n%s", method, l, diff)
	}
}

// TestWriteRequest: for the requests sbcd sends in a dialog, over UDP
// without a route set, writeRequest writes what newRequest builds and
// sipgo writes, byte for byte; with sbcd's own address, an advertised
// name or IPv6 address, URIs with parameters, user parts and IPv6 hosts,
// and with and without the remote tag.
func TestWriteRequest(t *testing.T) {
	legs := []legState{
		{callID: "1-1234@127.0.0.1", localTag: "00aa", remoteTag: "1234SIPpTag001",
			localURI: "sip:callee@127.0.0.1:25060", remoteURI: "sip:caller@127.0.0.1:25061",
			target: "sip:caller@127.0.0.1:25061;transport=UDP", localSeq: 1, remoteSeq: 1},
		{callID: "00bb-x", localTag: "00bb", localURI: "sip:sbcd@example.net",
			remoteURI: "sip:+15551234;phone-context=example.com@[2001:db8::9]:5070;user=phone",
			target:    "sip:bob@[2001:db8::9]:5070;ob", localSeq: 7},
		{callID: "c@h", localTag: "01cc", remoteTag: "t", localURI: "sips:alice:secret@example.com",
			remoteURI: "sip:bob@192.0.2.7", target: "sip:192.0.2.7"},
	}
	for _, adv := range []string{"", "sbc.example.net", "2001:db8::5"} {
		b := requestB2BUA(t, adv)
		s := b.shards[0]
		for _, l := range legs {
			for _, u := range []*string{&l.target, &l.localURI, &l.remoteURI} {
				c, ok := canonicalURI(*u)
				if !ok {
					t.Fatalf("%q is no URI sipgo writes back the same", *u)
				}
				*u = c
			}
			l.network, l.dest = "UDP", netip.MustParseAddrPort("127.0.0.1:25061")
			for _, m := range []sip.RequestMethod{sip.ACK, sip.BYE, sip.INVITE, sip.UPDATE, sip.OPTIONS} {
				checkSameRequest(t, s, &l, m, l.localSeq+1)
			}
		}
	}
}

// TestInDialogUDP: only a leg over UDP without a route set, to an address,
// is written; the socket is the leg's own, else the first.
func TestInDialogUDP(t *testing.T) {
	b := requestB2BUA(t, "")
	s := b.shards[0]
	dest := netip.MustParseAddrPort("127.0.0.1:5070")
	for _, c := range []struct {
		name string
		l    legState
		sock int
		ok   bool
	}{
		{"udp", legState{network: "UDP", dest: dest}, 0, true},
		{"no network yet", legState{dest: dest}, 0, true},
		{"socket out of range", legState{network: "UDP", dest: dest, socket: 3}, 0, true},
		{"tcp", legState{network: "TCP", dest: dest}, 0, false},
		{"route set", legState{network: "UDP", dest: dest, route: []string{"sip:p.example.net;lr"}}, 0, false},
		{"no address", legState{network: "UDP"}, 0, false},
	} {
		sock, ok := s.inDialogUDP(&c.l)
		if sock != c.sock || ok != c.ok {
			t.Errorf("%s: inDialogUDP = %d, %v; want %d, %v", c.name, sock, ok, c.sock, c.ok)
		}
	}
}

// FuzzWriteRequest: for any URIs and tags a leg can keep, writeRequest
// writes what newRequest builds.
func FuzzWriteRequest(f *testing.F) {
	f.Add("sip:caller@127.0.0.1:25061;transport=UDP", "sip:callee@127.0.0.1", "sip:caller@127.0.0.1:25061", "00aa", "x", "1@h")
	f.Add("sip:[2001:db8::9]:5070;ob", "sips:a:b@example.com", "tel:+1555", "00bb", "", "c")
	b := requestB2BUA(f, "")
	s := b.shards[0]
	f.Fuzz(func(t *testing.T, target, local, remote, localTag, remoteTag, callID string) {
		l := legState{callID: callID, localTag: localTag, remoteTag: remoteTag, network: "UDP",
			dest: netip.MustParseAddrPort("127.0.0.1:5070")}
		var ok [3]bool
		l.target, ok[0] = canonicalURI(target)
		l.localURI, ok[1] = canonicalURI(local)
		l.remoteURI, ok[2] = canonicalURI(remote)
		if ok != [3]bool{true, true, true} || !token(localTag) || !token(remoteTag) || !token(callID) || localTag == "" || callID == "" {
			return // a leg keeps what sipgo parsed
		}
		for _, m := range []sip.RequestMethod{sip.ACK, sip.BYE, sip.INVITE} {
			checkSameRequest(t, s, &l, m, 2)
		}
		checkSameInvite(t, s, l, session.Offer{SE: 600, MinSE: 90}, "", []byte("v=0\r\n"))
	})
}

// checkSameInvite fails when writeInvite and buildInvite, written by
// sipgo, differ for the B-leg INVITE of leg b with offer o and the
// caller's SDP with Content-Type ctype.
func checkSameInvite(t testing.TB, s *shard, b legState, o session.Offer, ctype string, sdp []byte) {
	t.Helper()
	st := &callState{offer: o, ctype: ctype}
	st.legs[legA].sdp = sdp
	st.legs[legB] = b
	req, err := s.buildInvite(st)
	if err != nil {
		t.Fatalf("buildInvite: %v", err)
	}
	branch, _ := req.Via().Params.Get("branch")
	var w bytes.Buffer
	s.writeInvite(&w, &st.legs[legB], b.localSeq, branch, o, ctype, sdp)
	if diff := cmp.Diff(req.String(), w.String()); diff != "" {
		t.Fatalf("INVITE of %+v, offer %+v, type %q: writeInvite differs from buildInvite (-sipgo +ours):\n%s", b, o, ctype, diff)
	}
}

// TestWriteInvite: the B-leg INVITE writeInvite writes is what
// buildInvite builds and sipgo writes, byte for byte: with and without a
// session-timer offer, a refresher, Min-SE, a body and its Content-Type.
func TestWriteInvite(t *testing.T) {
	sdp := []byte("v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n")
	b := legState{callID: "0a1b2c@sbcd", localTag: "00aa", localURI: "sip:caller@127.0.0.1:5070",
		remoteURI: "sip:service@127.0.0.1:5080", target: "sip:service@127.0.0.1:5080", localSeq: 1,
		network: "UDP", dest: netip.MustParseAddrPort("127.0.0.1:5080")}
	for _, adv := range []string{"", "sbc.example.net", "2001:db8::5"} {
		s := requestB2BUA(t, adv).shards[0]
		for _, c := range []struct {
			o     session.Offer
			ctype string
			sdp   []byte
		}{
			{session.Offer{SE: 600, MinSE: 90}, "", sdp},
			{session.Offer{SE: 1800, MinSE: 90, Refresher: session.RefresherUAC}, "application/sdp", sdp},
			{session.Offer{SE: 90, Refresher: session.RefresherUAS}, "multipart/mixed;boundary=x", sdp},
			{session.Offer{}, "", sdp},
			{session.Offer{SE: 600, MinSE: 90}, "", nil}, // late offer: no body, no Content-Type
		} {
			checkSameInvite(t, s, b, c.o, c.ctype, c.sdp)
			l := b
			l.localSeq = 2 // after a 422
			checkSameInvite(t, s, l, c.o, c.ctype, c.sdp)
		}
	}
}

// token reports whether v is an RFC 3261 §25.1 token or word, as a tag
// or Call-ID sipgo parsed is.
func token(v string) bool {
	for i := range len(v) {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == ';' || c == ',' || c == '"' || c == '<' || c == '>' || c == '=' {
			return false
		}
	}
	return true
}

// BenchmarkRequest compares writeRequest with newRequest and sipgo's write
// for the BYE sbcd sends to SIPp's callee in bench/load.sh.
func BenchmarkRequest(b *testing.B) {
	s := requestB2BUA(b, "").shards[0]
	l := legState{callID: "00bb-1@127.0.0.1", localTag: "00bb0000000000000a", remoteTag: "1234SIPpTag011",
		localURI: "sip:caller@127.0.0.1:25060", remoteURI: "sip:callee@127.0.0.1:25062",
		target: "sip:callee@127.0.0.1:25062;transport=UDP", network: "UDP",
		dest: netip.MustParseAddrPort("127.0.0.1:25062"), localSeq: 2}
	var w bytes.Buffer
	b.Run("sipgo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, err := s.newRequest(&l, sip.BYE, 2)
			if err != nil {
				b.Fatal(err)
			}
			w.Reset()
			req.StringWrite(&w)
		}
	})
	b.Run("write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Reset()
			s.writeRequest(&w, &l, sip.BYE, 2, s.newBranch())
		}
	})
	// The B-leg INVITE of bench/load.sh's calls, with the caller's SDP.
	st := &callState{offer: session.Offer{SE: 600, MinSE: 90}}
	st.legs[legA].sdp = []byte("v=0\r\no=caller 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
	st.legs[legB] = l
	st.legs[legB].remoteTag, st.legs[legB].localSeq = "", 1
	b.Run("invite-sipgo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, err := s.buildInvite(st)
			if err != nil {
				b.Fatal(err)
			}
			w.Reset()
			req.StringWrite(&w)
		}
	})
	b.Run("invite-write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Reset()
			s.writeInvite(&w, &st.legs[legB], 1, s.newBranch(), st.offer, st.ctype, st.legs[legA].sdp)
		}
	})
}
