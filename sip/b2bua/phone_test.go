package b2bua

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// This file holds a tiny SIP user agent on sipgo's transport and
// transaction layers, used as caller and callee on loopback.

const testSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
const calleeSDP = "v=0\r\no=- 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"

// behavior is how a phone answers requests.
type behavior struct {
	inviteCode  int           // final answer to a new INVITE: 200 when 0
	ring        bool          // send 180 first
	ringAfter   time.Duration // send 180 after this long (0: never)
	hold        chan struct{} // wait for this (or a CANCEL) before the final answer
	byeHold     chan struct{} // wait for this (or the transaction's end) before answering a BYE
	minSE       uint32        // answer 422 with this Min-SE when the offer is lower
	allowUpdate bool          // Allow lists UPDATE
	noTimer     bool          // no session timer: no Supported, no Session-Expires
	refresher   string        // refresher in the 2xx to a new INVITE: echo when ""
	updateCode  int           // answer in-dialog UPDATEs with this code, when set
	refreshCode int           // answer in-dialog INVITEs and UPDATEs with this code, when set
}

type phone struct {
	t       *testing.T
	name    string
	tp      *sip.TransportLayer
	tl      *sip.TransactionLayer
	conn    net.PacketConn
	addr    netip.AddrPort
	reqs    chan *sip.Request
	beh     behavior
	silent  atomic.Bool // do not answer in-dialog INVITE/UPDATE
	stopped atomic.Bool
	wg      sync.WaitGroup
	seq     atomic.Uint32
	// ka receives the keep-alive datagrams (anything that is not SIP)
	// the phone's socket gets; they never reach sipgo's parser.
	ka chan kaPacket
}

// kaPacket is a non-SIP datagram a phone received.
type kaPacket struct {
	from    netip.AddrPort
	payload string
	at      time.Time
}

// readFilter drops everything once the phone stops and diverts keep-alive
// datagrams (short, no SIP version) to p.ka.
func (p *phone) readFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	if p.stopped.Load() {
		return nil, nil
	}
	if len(data) < 64 && !strings.Contains(string(data), "SIP/2.0") {
		var from netip.AddrPort
		if ua, ok := props.RemoteAddr.(*net.UDPAddr); ok {
			from = ua.AddrPort()
		}
		select {
		case p.ka <- kaPacket{from: from, payload: string(data), at: time.Now()}:
		default:
		}
		return nil, nil
	}
	return data, nil
}

func newPhone(t *testing.T, name string, beh behavior) *phone {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{t: t, name: name, conn: conn, beh: beh, reqs: make(chan *sip.Request, 256),
		addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(), ka: make(chan kaPacket, 64)}
	p.seq.Store(100)
	p.tp = sip.NewTransportLayer(net.DefaultResolver, sip.NewParser(), nil,
		sip.WithTransportLayerReadFilter(p.readFilter))
	p.tl = sip.NewTransactionLayer(p.tp, sip.WithTransactionLayerUnhandledResponseHandler(func(*sip.Response) {}))
	p.tl.OnRequest(p.onRequest)
	p.wg.Go(func() { _ = p.tp.ServeUDP(conn) })
	waitListening(context.Background(), p.tp, conn.LocalAddr().String())
	t.Cleanup(func() {
		p.stopped.Store(true)
		time.Sleep(stopGrace)
		p.tl.Close()
		_ = conn.Close()
		p.wg.Wait()
		_ = p.tp.Close()
	})
	return p
}

func (p *phone) onRequest(req *sip.Request, tx *sip.ServerTx) {
	select {
	case p.reqs <- req:
	default:
	}
	toTag, _ := req.To().Params.Get("tag")
	respond := func(code int, body string, hdrs ...sip.Header) {
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		res := sip.NewResponseFromRequest(req, code, "X", b)
		if code > 100 && toTag == "" {
			res.To().Params.Add("tag", calleeTag)
		}
		for _, h := range hdrs {
			res.AppendHeader(h)
		}
		if body != "" {
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		}
		_ = tx.Respond(res)
	}
	switch {
	case req.IsAck():
		tx.Terminate()
	case req.IsInvite() && toTag == "":
		defer tx.TerminateGracefully()
		// The transaction layer answers a CANCEL itself; record it.
		tx.OnCancel(func(c *sip.Request) {
			select {
			case p.reqs <- c:
			default:
			}
		})
		if p.beh.minSE != 0 {
			if se := req.GetHeader("Session-Expires"); se != nil && atoi(se.Value()) < int(p.beh.minSE) {
				respond(422, "", sip.NewHeader("Min-SE", fmt.Sprint(p.beh.minSE)))
				return
			}
		}
		if p.beh.ring {
			respond(180, "", p.contact())
			// sipgo hands each message to its own goroutine: give the
			// 180 a head start over the final answer.
			time.Sleep(30 * time.Millisecond)
		}
		if p.beh.ringAfter > 0 {
			select {
			case <-time.After(p.beh.ringAfter):
				respond(180, "", p.contact())
			case <-tx.Done():
				return
			}
		}
		if p.beh.hold != nil {
			select {
			case <-p.beh.hold:
			case <-tx.Done():
				return // cancelled: the transaction layer answered 487
			}
		}
		code := p.beh.inviteCode
		if code == 0 {
			code = 200
		}
		if code != 200 {
			respond(code, "")
			return
		}
		respond(200, calleeSDP, p.answerHeaders(req, p.beh.refresher)...)
	case req.Method == sip.BYE:
		if p.beh.byeHold != nil {
			select {
			case <-p.beh.byeHold:
			case <-tx.Done():
				return
			}
		}
		respond(200, "")
		tx.TerminateGracefully()
	case req.IsInvite() || req.Method == sip.UPDATE:
		if p.silent.Load() {
			tx.Terminate()
			return
		}
		if c := p.beh.refreshCode; c != 0 {
			respond(c, "")
			tx.TerminateGracefully()
			return
		}
		if c := p.beh.updateCode; c != 0 && req.Method == sip.UPDATE {
			respond(c, "")
			tx.TerminateGracefully()
			return
		}
		body := ""
		if req.IsInvite() {
			body = calleeSDP
		}
		respond(200, body, p.answerHeaders(req, "")...)
		tx.TerminateGracefully()
	default:
		respond(200, "")
		tx.TerminateGracefully()
	}
}

// answerHeaders are a timer-capable UAS's 2xx headers: Session-Expires as
// asked (RFC 4028 §9), Require: timer when the refresher is uac.
func (p *phone) answerHeaders(req *sip.Request, refresher string) []sip.Header {
	hs := []sip.Header{p.contact(), p.allowHeader()}
	if p.beh.noTimer {
		return hs
	}
	hs = append(hs, sip.NewHeader("Supported", "timer"))
	se := req.GetHeader("Session-Expires")
	if se == nil {
		return hs
	}
	v := se.Value()
	delta, _, _ := strings.Cut(v, ";")
	if refresher == "" {
		refresher = "uac"
		if strings.Contains(v, "refresher=uas") {
			refresher = "uas"
		}
	}
	hs = append(hs, sip.NewHeader("Session-Expires", delta+";refresher="+refresher))
	if refresher == "uac" {
		hs = append(hs, sip.NewHeader("Require", "timer"))
	}
	return hs
}

func (p *phone) allowHeader() sip.Header {
	if p.beh.allowUpdate {
		return sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")
	}
	return sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL")
}

func (p *phone) contact() sip.Header {
	return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: p.name, Host: p.addr.Addr().String(), Port: int(p.addr.Port())}}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// ucall is a dialog as a test phone sees it.
type ucall struct {
	callID    string
	localTag  string
	remoteTag string
	local     sip.Uri
	remote    sip.Uri
	target    sip.Uri
	dest      netip.AddrPort
	inviteSeq uint32
}

func (p *phone) build(c *ucall, method sip.RequestMethod, seq uint32, body string, hdrs ...sip.Header) *sip.Request {
	req := sip.NewRequest(method, c.target)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: p.addr.Addr().String(), Port: int(p.addr.Port()), Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranch())
	req.AppendHeader(via)
	from := &sip.FromHeader{Address: c.local, Params: sip.NewParams()}
	from.Params.Add("tag", c.localTag)
	to := &sip.ToHeader{Address: c.remote, Params: sip.NewParams()}
	if c.remoteTag != "" {
		to.Params.Add("tag", c.remoteTag)
	}
	req.AppendHeader(from)
	req.AppendHeader(to)
	cid := sip.CallIDHeader(c.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	own := true // the phone's Contact, unless the test passes another
	for _, h := range hdrs {
		if strings.EqualFold(h.Name(), "Contact") {
			own = false
		}
	}
	if own {
		req.AppendHeader(p.contact())
	}
	for _, h := range hdrs {
		req.AppendHeader(h)
	}
	if body != "" {
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(body))
	} else {
		req.SetBody(nil)
	}
	req.SetTransport("UDP")
	req.SetDestination(c.dest.String())
	req.Laddr = sip.Addr{IP: net.IP(p.addr.Addr().AsSlice()), Port: int(p.addr.Port())}
	return req
}

// invite starts a call to user at dest; responses come on the returned
// transaction.
func (p *phone) invite(ctx context.Context, dest netip.AddrPort, user string, hdrs ...sip.Header) (*ucall, *sip.ClientTx) {
	p.t.Helper()
	c := &ucall{
		callID:    fmt.Sprintf("%s-%d@test", p.name, time.Now().UnixNano()),
		localTag:  sip.GenerateTagN(8),
		local:     sip.Uri{Scheme: "sip", User: p.name, Host: p.addr.Addr().String()},
		remote:    sip.Uri{Scheme: "sip", User: user, Host: dest.Addr().String()},
		target:    sip.Uri{Scheme: "sip", User: user, Host: dest.Addr().String(), Port: int(dest.Port())},
		dest:      dest,
		inviteSeq: 1,
	}
	req := p.build(c, sip.INVITE, 1, testSDP, append([]sip.Header{p.allowHeader()}, hdrs...)...)
	tx, err := p.tl.Request(ctx, req)
	if err != nil {
		p.t.Fatalf("%s: invite: %v", p.name, err)
	}
	return c, tx
}

// until reads responses of tx until one with code, failing on a final
// response before it.
func until(ctx context.Context, t *testing.T, tx *sip.ClientTx, code int) {
	t.Helper()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode == code {
				return
			}
			if res.StatusCode >= 200 {
				t.Fatalf("answer %d before %d", res.StatusCode, code)
			}
		case <-tx.Done():
			t.Fatalf("transaction ended before %d: %v", code, tx.Err())
		case <-ctx.Done():
			t.Fatalf("no %d: %v", code, ctx.Err())
		}
	}
}

// final reads responses of tx until a final one.
func final(ctx context.Context, t *testing.T, tx *sip.ClientTx) (*sip.Response, []int) {
	t.Helper()
	var prov []int
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode < 200 {
				prov = append(prov, res.StatusCode)
				continue
			}
			return res, prov
		case <-tx.Done():
			t.Fatalf("transaction ended without final response: %v", tx.Err())
		case <-ctx.Done():
			t.Fatalf("no final response: %v", ctx.Err())
		}
	}
}

// answered completes c from the 2xx and ACKs it.
func (p *phone) answered(c *ucall, res *sip.Response) {
	c.remoteTag, _ = res.To().Params.Get("tag")
	if ct := res.Contact(); ct != nil {
		c.target = ct.Address
	}
	p.ack(c, c.inviteSeq)
}

func (p *phone) ack(c *ucall, seq uint32) {
	ack := p.build(c, sip.ACK, seq, "")
	if err := p.tp.WriteMsg(ack); err != nil {
		p.t.Errorf("%s: ack: %v", p.name, err)
	}
}

// cancel cancels the INVITE of inv (RFC 3261 §9.1: its Via, Call-ID,
// From, To and CSeq number), checks that the CANCEL gets 200 and the
// INVITE 487.
func (p *phone) cancel(ctx context.Context, c *ucall, inv *sip.ClientTx) {
	p.t.Helper()
	req := p.build(c, sip.CANCEL, inv.Origin().CSeq().SeqNo, "")
	req.RemoveHeader("Via")
	req.PrependHeader(inv.Origin().Via().Clone())
	tx, err := p.tl.Request(ctx, req)
	if err != nil {
		p.t.Fatalf("%s: cancel: %v", p.name, err)
	}
	if r, _ := final(ctx, p.t, tx); r.StatusCode != 200 {
		p.t.Errorf("%s: CANCEL answered %d", p.name, r.StatusCode)
	}
	if res, _ := final(ctx, p.t, inv); res.StatusCode != 487 {
		p.t.Errorf("%s: INVITE answered %d, want 487", p.name, res.StatusCode)
	}
}

// request sends an in-dialog request and waits for its final response.
func (p *phone) request(ctx context.Context, c *ucall, method sip.RequestMethod, body string, hdrs ...sip.Header) *sip.Response {
	p.t.Helper()
	seq := p.seq.Add(1)
	req := p.build(c, method, seq, body, hdrs...)
	tx, err := p.tl.Request(ctx, req)
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, method, err)
	}
	res, _ := final(ctx, p.t, tx)
	if method == sip.INVITE && res.IsSuccess() {
		tx.Terminate()
		p.ack(c, seq)
	}
	return res
}

// dialogFrom is the callee's view of the dialog created by the INVITE req it
// answered with a 2xx.
func (p *phone) dialogFrom(req *sip.Request, sbcd netip.AddrPort) *ucall {
	c := &ucall{callID: req.CallID().Value(), local: req.To().Address, remote: req.From().Address, dest: sbcd}
	c.remoteTag, _ = req.From().Params.Get("tag")
	c.localTag = calleeTag
	if ct := req.Contact(); ct != nil {
		c.target = ct.Address
	}
	return c
}

// expect waits for a request with method, skipping others.
func (p *phone) expect(ctx context.Context, method sip.RequestMethod) *sip.Request {
	p.t.Helper()
	for {
		select {
		case req := <-p.reqs:
			if req.Method == method {
				return req
			}
		case <-ctx.Done():
			p.t.Fatalf("%s: no %s: %v", p.name, method, ctx.Err())
			return nil
		}
	}
}

// none checks that no request with method arrives within d.
func (p *phone) none(method sip.RequestMethod, d time.Duration) error {
	deadline := time.After(d)
	for {
		select {
		case req := <-p.reqs:
			if req.Method == method {
				return fmt.Errorf("%s: unexpected %s", p.name, req.Method)
			}
		case <-deadline:
			return nil
		}
	}
}

// calleeTag is the To tag of every dialog a phone answers: Call-IDs
// differ, so it names the dialog together with them.
const calleeTag = "ctag"
