package b2bua

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"sbcd/sip/registrar"
	"sbcd/timers/keepalive"
)

// These tests run the registrar (sip/registrar) behind a live B2BUA on
// loopback: REGISTERs through sipgo, keep-alives from the SIP socket, calls
// routed to the binding. The keep-alive period is 1 s, the smallest the
// configuration allows, so a test sees a few periods in real time; the
// pacer's timing is tested in virtual time in timers/keepalive and
// sip/registrar.

// fastKeepalive is [nat_keepalive] with a 1-second period.
func fastKeepalive(mode keepalive.Mode, msg string) keepalive.Params {
	p := keepalive.DefaultParams()
	p.Period = time.Second
	p.Mode = mode
	p.Message = msg
	p.MaxFailures = 2
	return p
}

// withRegistrar gives the env's B2BUA a registrar and runs its pacer.
func withRegistrar(t *testing.T, o registrar.Options) (func(*Options), **registrar.Registrar) {
	var reg *registrar.Registrar
	mod := func(bo *Options) {
		if o.MaxBindings == 0 {
			o.MaxBindings = 16
		}
		if o.MinExpires == 0 {
			o.MinExpires = 60 * time.Second
			o.MaxExpires = time.Hour
		}
		o.Logger = testLogger()
		r, err := registrar.New(o)
		if err != nil {
			t.Fatal(err)
		}
		reg = r
		bo.Registrar = r
	}
	return mod, &reg
}

// runPacer runs the registrar's keep-alive pacer with the env's B2BUA as
// sender until the test ends.
func (e *env) runPacer(reg *registrar.Registrar) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = reg.Run(ctx, e.b)
	}()
	e.t.Cleanup(func() { cancel(); <-done })
}

// register sends a REGISTER for user from phone p with the given Contact
// (a private address, as a phone behind NAT advertises) and returns the
// final response.
func (e *env) register(ctx context.Context, p *phone, user, contact string, expires int, hdrs ...sip.Header) *sip.Response {
	e.t.Helper()
	c := &ucall{callID: "reg-" + user + "-" + p.name + "@test", localTag: sip.GenerateTagN(8), dest: e.addr,
		local:  sip.Uri{Scheme: "sip", User: user, Host: e.addr.Addr().String()},
		remote: sip.Uri{Scheme: "sip", User: user, Host: e.addr.Addr().String()},
		target: sip.Uri{Scheme: "sip", Host: e.addr.Addr().String(), Port: int(e.addr.Port())}}
	var ct sip.Uri
	if err := sip.ParseUri(contact, &ct); err != nil {
		e.t.Fatal(err)
	}
	all := append([]sip.Header{&sip.ContactHeader{Address: ct}, sip.NewHeader("Expires", fmt.Sprint(expires))}, hdrs...)
	req := p.build(c, sip.REGISTER, p.seq.Add(1), "", all...)
	req.Via().Params.Add("rport", "")
	tx, err := p.tl.Request(ctx, req)
	if err != nil {
		e.t.Fatalf("register: %v", err)
	}
	res, _ := final(ctx, e.t, tx)
	return res
}

// nextKeepalive waits for a keep-alive datagram at p.
func nextKeepalive(ctx context.Context, t *testing.T, p *phone) kaPacket {
	t.Helper()
	select {
	case k := <-p.ka:
		return k
	case <-ctx.Done():
		t.Fatalf("%s: no keep-alive: %v", p.name, ctx.Err())
		return kaPacket{}
	}
}

func TestRegisterNATedPhoneKeepalivesAndCalls(t *testing.T) {
	mod, reg := withRegistrar(t, registrar.Options{Keepalive: fastKeepalive(keepalive.ModeMessage, "HELLO")})
	e := newEnv(t, behavior{}, mod)
	e.runPacer(*reg)
	ctx := testCtx(t)
	carol := newPhone(t, "carol", behavior{})

	// The phone advertises a private Contact; its packets come from
	// another address: NATed (DESIGN.md §3).
	res := e.register(ctx, carol, "carol", "sip:carol@192.168.1.50:5062", 120)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER answered %d %s", res.StatusCode, res.Reason)
	}
	// RFC 3581 §4: received always, rport filled with the source port.
	via := res.Via()
	if r, _ := via.Params.Get("received"); r != "127.0.0.1" {
		t.Errorf("Via received %q", r)
	}
	if r, _ := via.Params.Get("rport"); r != fmt.Sprint(carol.addr.Port()) {
		t.Errorf("Via rport %q, want %d", r, carol.addr.Port())
	}
	if ct := res.Contact(); ct == nil || ct.Address.Port != 5062 {
		t.Errorf("200 lists contact %v", res.GetHeaders("Contact"))
	}

	// Keep-alives: "HELLO" from the SIP socket, once per period.
	k1 := nextKeepalive(ctx, t, carol)
	k2 := nextKeepalive(ctx, t, carol)
	for _, k := range []kaPacket{k1, k2} {
		if k.payload != "HELLO" || k.from != e.addr {
			t.Errorf("keep-alive %q from %v, want HELLO from the SIP socket %v", k.payload, k.from, e.addr)
		}
	}
	if gap := k2.at.Sub(k1.at); gap < 800*time.Millisecond || gap > 1300*time.Millisecond {
		t.Errorf("keep-alive gap %v, want the 1 s period", gap)
	}
	if st := (*reg).Stats(); st.Bindings != 1 || st.NATed != 1 || st.PingsSent < 2 {
		t.Errorf("registrar stats %+v", st)
	}

	// A call from the upstream for carol goes to the binding (the source
	// of the REGISTER), with the registered Contact as Request-URI.
	a, tx := e.callee.invite(ctx, e.addr, "carol")
	ok, _ := final(ctx, t, tx)
	if ok.StatusCode != 200 {
		t.Fatalf("call to registered user answered %d", ok.StatusCode)
	}
	e.callee.answered(a, ok)
	inv := carol.expect(ctx, sip.INVITE)
	if got := inv.Recipient.String(); got != "sip:carol@192.168.1.50:5062" {
		t.Errorf("B-leg Request-URI %s", got)
	}
	waitFor(ctx, t, func() bool { return e.b.Stats().Up == 1 })
	e.callee.request(ctx, a, sip.BYE, "")
	carol.expect(ctx, sip.BYE)
	e.cdr.next(ctx, t)

	// The phone calls out from its binding: it is a known source.
	c, tx := carol.invite(ctx, e.addr, "bob")
	if res, _ := final(ctx, t, tx); res.StatusCode != 200 {
		t.Fatalf("call from registered phone answered %d", res.StatusCode)
	} else {
		carol.answered(c, res)
	}
	e.callee.expect(ctx, sip.INVITE)
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.Up == 1 && st.Unacked == 0 })
	carol.request(ctx, c, sip.BYE, "")
	e.callee.expect(ctx, sip.BYE)
	e.cdr.next(ctx, t)

	// The NAT gave the phone a new port: the re-REGISTER of the same
	// Contact moves the binding; keep-alives and calls follow it.
	moved := newPhone(t, "carol2", behavior{})
	if res := e.register(ctx, moved, "carol", "sip:carol@192.168.1.50:5062", 120); res.StatusCode != 200 {
		t.Fatalf("re-REGISTER answered %d", res.StatusCode)
	}
	if k := nextKeepalive(ctx, t, moved); k.payload != "HELLO" || k.from != e.addr {
		t.Errorf("keep-alive after the move %q from %v", k.payload, k.from)
	}
	a, tx = e.callee.invite(ctx, e.addr, "carol")
	ok, _ = final(ctx, t, tx)
	if ok.StatusCode != 200 {
		t.Fatalf("call after the move answered %d", ok.StatusCode)
	}
	e.callee.answered(a, ok)
	moved.expect(ctx, sip.INVITE)
	waitFor(ctx, t, func() bool { return e.b.Stats().Up == 1 })
	e.callee.request(ctx, a, sip.BYE, "")
	moved.expect(ctx, sip.BYE)
	e.cdr.next(ctx, t)
	if st := (*reg).Stats(); st.Bindings != 1 {
		t.Errorf("bindings after the move: %d", st.Bindings)
	}

	// Un-register: the user is gone.
	if res := e.register(ctx, moved, "carol", "sip:carol@192.168.1.50:5062", 0); res.StatusCode != 200 {
		t.Fatalf("un-REGISTER answered %d", res.StatusCode)
	}
	_, tx = e.callee.invite(ctx, e.addr, "carol")
	if res, _ := final(ctx, t, tx); res.StatusCode != 404 {
		t.Errorf("call to an un-registered user answered %d, want 404", res.StatusCode)
	}
}

func TestKeepaliveEmptyMessageDisables(t *testing.T) {
	mod, reg := withRegistrar(t, registrar.Options{Keepalive: fastKeepalive(keepalive.ModeMessage, "")})
	e := newEnv(t, behavior{}, mod)
	e.runPacer(*reg)
	ctx := testCtx(t)
	carol := newPhone(t, "carol", behavior{})
	if res := e.register(ctx, carol, "carol", "sip:carol@192.168.1.50:5062", 120); res.StatusCode != 200 {
		t.Fatalf("REGISTER answered %d", res.StatusCode)
	}
	select {
	case k := <-carol.ka:
		t.Errorf("keep-alive %q sent with an empty message", k.payload)
	case <-time.After(2500 * time.Millisecond): // two and a half periods
	}
}

func TestKeepaliveOptionsEvictsSilentPhone(t *testing.T) {
	mod, reg := withRegistrar(t, registrar.Options{Keepalive: fastKeepalive(keepalive.ModeOptions, "")})
	e := newEnv(t, behavior{}, mod)
	e.runPacer(*reg)
	ctx := testCtx(t)
	alive := newPhone(t, "carol", behavior{}) // answers OPTIONS with 200
	silent := newPhone(t, "dave", behavior{})
	for _, p := range []*phone{alive, silent} {
		if res := e.register(ctx, p, p.name, "sip:"+p.name+"@10.1.1.1:5060", 120); res.StatusCode != 200 {
			t.Fatalf("REGISTER %s answered %d", p.name, res.StatusCode)
		}
	}
	// dave's device dies: nothing it receives is answered any more.
	silent.stopped.Store(true)
	opt := alive.expect(ctx, sip.OPTIONS)
	if opt.Recipient.Host != "10.1.1.1" {
		t.Errorf("OPTIONS Request-URI %s, want the registered Contact", opt.Recipient.String())
	}
	if src, err := netip.ParseAddrPort(opt.Source()); err != nil || src != e.addr {
		t.Errorf("OPTIONS came from %s, want the SIP socket %v", opt.Source(), e.addr)
	}
	// max_failures 2 at a 1 s period: evicted within about 3 s.
	waitFor(ctx, t, func() bool { return (*reg).Stats().Evictions == 1 })
	st := (*reg).Stats()
	if st.Bindings != 1 {
		t.Errorf("bindings after eviction: %+v", st)
	}
	_, tx := e.callee.invite(ctx, e.addr, "dave")
	if res, _ := final(ctx, t, tx); res.StatusCode != 404 {
		t.Errorf("call to an evicted phone answered %d, want 404", res.StatusCode)
	}
	if _, ok := (*reg).Locate("carol"); !ok {
		t.Errorf("the phone that answers its pings was evicted too")
	}
}

func TestRegisterDigest(t *testing.T) {
	mod, reg := withRegistrar(t, registrar.Options{Auth: true, Users: map[string]string{"carol": "s3cret"},
		Keepalive: fastKeepalive(keepalive.ModeMessage, "")})
	e := newEnv(t, behavior{}, mod)
	_ = reg
	ctx := testCtx(t)
	carol := newPhone(t, "carol", behavior{})
	res := e.register(ctx, carol, "carol", "sip:carol@192.168.1.50:5062", 120)
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER without credentials answered %d, want 401", res.StatusCode)
	}
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		t.Fatal("401 without WWW-Authenticate")
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatalf("challenge %q: %v", h.Value(), err)
	}
	authz := func(password string) sip.Header {
		cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER",
			URI: fmt.Sprintf("sip:%s:%d", e.addr.Addr(), e.addr.Port()), Username: "carol", Password: password,
			Cnonce: "0a4f113b", Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		return sip.NewHeader("Authorization", cred.String())
	}
	if res := e.register(ctx, carol, "carol", "sip:carol@192.168.1.50:5062", 120, authz("wrong")); res.StatusCode != 403 {
		t.Errorf("wrong password answered %d, want 403", res.StatusCode)
	}
	if res := e.register(ctx, carol, "carol", "sip:carol@192.168.1.50:5062", 120, authz("s3cret")); res.StatusCode != 200 {
		t.Errorf("right password answered %d %s, want 200", res.StatusCode, res.Reason)
	}
}

// TestKeepaliveTCP registers over TCP: sbcd keeps the connection's NAT
// binding with CRLF keep-alives on it, and answers a double-CRLF ping
// with a single CRLF (RFC 5626 §4.4.1, §3.5.1).
func TestKeepaliveTCP(t *testing.T) {
	mod, reg := withRegistrar(t, registrar.Options{Keepalive: fastKeepalive(keepalive.ModeMessage, "HELLO")})
	e := newEnv(t, behavior{}, func(o *Options) {
		o.Listen = append(o.Listen, Listen{Network: "tcp", Addr: "127.0.0.1:0"})
		mod(o)
	})
	e.runPacer(*reg)
	ctx := testCtx(t)
	dst := e.b.Addrs()[1].Addr
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	local := conn.LocalAddr().String()
	reg1 := "REGISTER sip:127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + local + ";branch=z9hG4bK-tcpreg1;rport\r\n" +
		"From: <sip:erin@127.0.0.1>;tag=e1\r\nTo: <sip:erin@127.0.0.1>\r\n" +
		"Call-ID: tcp-reg@test\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n" +
		"Contact: <sip:erin@192.168.7.7:5060;transport=tcp>\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n"
	if _, err := io.WriteString(conn, reg1); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	res, err := readResponse(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res, "SIP/2.0 200") {
		t.Fatalf("REGISTER over TCP answered %q", res)
	}
	// sbcd's keep-alive on the flow: a double CRLF, never the UDP message.
	ka := make([]byte, 4)
	if _, err := io.ReadFull(r, ka); err != nil || string(ka) != "\r\n\r\n" {
		t.Fatalf("keep-alive on TCP: %q, %v", ka, err)
	}
	// The device's ping right after it: a single CRLF pong, well before
	// sbcd's next keep-alive a period later.
	if _, err := io.WriteString(conn, "\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	pong := make([]byte, 4)
	n, err := r.Read(pong)
	if string(pong[:n]) != "\r\n" {
		t.Errorf("pong %q (%v), want a single CRLF", pong[:n], err)
	}
	// A call for erin goes down the device's TCP connection.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, tx := e.callee.invite(ctx, e.addr, "erin")
	inv, err := readRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	if got := inv.Recipient.String(); inv.Method != sip.INVITE || got != "sip:erin@192.168.7.7:5060;transport=tcp" {
		t.Errorf("on the device's connection: %s %s", inv.Method, got)
	}
	busy := sip.NewResponseFromRequest(inv, 486, "Busy Here", nil)
	busy.To().Params.Add("tag", "erin1")
	if _, err := io.WriteString(conn, busy.String()); err != nil {
		t.Fatal(err)
	}
	if res, _ := final(ctx, t, tx); res.StatusCode != 486 {
		t.Errorf("the upstream got %d, want the device's 486", res.StatusCode)
	}
	e.cdr.next(ctx, t)
}

// readResponse reads one SIP message's header block from r (the tests'
// messages carry no body) and returns it.
func readResponse(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return b.String(), fmt.Errorf("read message: %w", err)
		}
		if line == "\r\n" && b.Len() == 0 {
			// A keep-alive before the start line (RFC 3261 §7.5): on a
			// slow machine the pacer's first CRLFCRLF on a new binding
			// can overtake the 200 of its REGISTER.
			continue
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// readRequest skips keep-alive CRLFs and reads one request with its body.
func readRequest(r *bufio.Reader) (*sip.Request, error) {
	var b strings.Builder
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read request: %w", err)
		}
		if line == "\r\n" {
			if b.Len() == 0 {
				continue // a keep-alive between messages
			}
			b.WriteString(line)
			break
		}
		if name, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			length = atoi(strings.TrimSpace(v))
		}
		b.WriteString(line)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	b.Write(body)
	m, err := sip.NewParser().ParseSIP([]byte(b.String()))
	if err != nil {
		return nil, fmt.Errorf("parse request: %w", err)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		return nil, fmt.Errorf("not a request: %s", firstLine(m))
	}
	return req, nil
}
