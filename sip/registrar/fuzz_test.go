package registrar

import (
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/keepalive"
)

// FuzzRegister feeds arbitrary bytes through sipgo's parser and, when they
// make a request, through Register (with digest auth on and off), then
// through KeepaliveAnswer as a response; nothing may panic and every
// response must carry received.
func FuzzRegister(f *testing.F) {
	seeds := []string{
		rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.text(),
		rq{contacts: []string{"<sip:1001@10.0.0.5:5060>;expires=30;q=0.5", "<sip:1001@h>"}, expires: "99"}.text(),
		rq{contacts: []string{"*"}, expires: "0"}.text(),
		rq{contacts: []string{"*", "<sip:a@b>"}, expires: "x"}.text(),
		rq{contacts: []string{"<sip:1001@10.0.0.5>"}, extra: []string{`Authorization: Digest username="1001", realm="sbcd", nonce="00000000692449c0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", uri="sip:example.net", response="00", qop=auth, nc=00000001, cnonce="x"`}}.text(),
		rq{extra: []string{"Require: outbound"}}.text(),
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKsbcdka0000000100000000deadbeefdeadbeef;rport\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	open, _ := newTest(f, func(o *Options) { o.MaxBindings = 8 })
	authed, _ := newTest(f, func(o *Options) {
		o.MaxBindings = 8
		o.Auth = true
		o.Users = map[string]string{"1001": "secret"}
		o.Keepalive.Mode = keepalive.ModeOptions
	})
	s := &fakeSender{}
	src := netip.MustParseAddrPort("203.0.113.9:40000")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := sip.NewParser().ParseSIP(data)
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *sip.Request:
			for _, r := range []*Registrar{open, authed} {
				res := r.Register(m, src, udp0)
				if res == nil {
					t.Fatal("nil response")
				}
				if v := res.Via(); v != nil && !v.Params.Has("received") {
					t.Errorf("response without received: %s", res)
				}
				if n := r.panics.Load(); n != 0 {
					t.Fatalf("Register recovered from %d panics", n)
				}
				if to := m.To(); to != nil {
					r.Locate(to.Address.User)
				}
				r.tick(t0.Add(time.Second), s)
				s.take()
			}
		case *sip.Response:
			open.KeepaliveAnswer(m)
			authed.KeepaliveAnswer(m)
		}
	})
}

// FuzzDecodeBranch: the keep-alive branch decoder never panics and only
// accepts what appendHex produced.
func FuzzDecodeBranch(f *testing.F) {
	f.Add(branchMarker + "00000001000000020000000000000003")
	f.Add("z9hG4bK-74bf9")
	f.Fuzz(func(t *testing.T, b string) {
		id, tag, ok := decodeBranch(b)
		if !ok {
			return
		}
		re := string(appendHex(appendHex([]byte(branchMarker), uint64(id)), tag))
		if !equalFoldASCII(re, b) {
			t.Errorf("decodeBranch(%q) = %x %x, re-encoded %q", b, id, tag, re)
		}
	})
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
