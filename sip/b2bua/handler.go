package b2bua

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
)

// headerGetter is the header access of sipgo requests and responses
// (looked up with header.First and header.All).
type headerGetter interface {
	Headers() []sip.Header
}

// allow is what sbcd accepts in a dialog (RFC 3261 §20.5).
const allow = "INVITE, ACK, BYE, CANCEL, UPDATE, OPTIONS"

// onRequest runs in a sipgo goroutine for every new server transaction. It
// checks the request as a UAS (RFC 3261 §8.2, validate.go) and routes it:
// everything that touches a call is posted to its shard (DESIGN.md §1).
func (b *B2BUA) onRequest(req *sip.Request, tx *sip.ServerTx) {
	b.traceMsg("recv", req)
	b.trackServerTx(tx, req)
	if b.rtx.answerParsed(req) {
		// RFC 3261 §17.2.2: the retransmission of a request sbcd answered,
		// read before its response was cached (or keyed differently from
		// its bytes): it gets the same response again, and the new
		// transaction sipgo made for it ends.
		tx.Terminate()
		return
	}
	toTag := ""
	if to := req.To(); to != nil {
		toTag, _ = to.Params.Get("tag")
	}
	if req.IsAck() {
		// ACK of a 2xx is its own transaction (RFC 3261 §17.1.1.3): nothing
		// to answer, whatever it holds; the shard only updates the call.
		// Over UDP most never get here (ackDirect).
		tx.Terminate()
		b.routeAck(req, toTag, false)
		return
	}
	if b.refused(tx, req, checkMessage(req)) {
		return
	}
	if toTag != "" {
		// RFC 3261 §12.2.2: a request with a To tag belongs to a dialog,
		// named by sbcd's tag, which names the shard. Methods are not
		// inspected here: what sbcd does not handle itself is relayed to
		// the other leg.
		if b.refused(tx, req, checkCSeq(req)) || b.refused(tx, req, checkHeaders(req)) {
			return
		}
		s, ok := b.tagShard(toTag)
		if !ok {
			b.respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
			tx.TerminateGracefully()
			return
		}
		s.post(context.Background(), event{kind: evRequest, req: req, tx: tx})
		return
	}
	if req.Method == sip.REGISTER && b.o.Registrar != nil {
		// The registrar authenticates REGISTERs itself (digest, RFC 3261
		// §22) and answers them (§10.3).
		if b.refused(tx, req, checkCSeq(req)) || b.refused(tx, req, checkHeaders(req)) {
			return
		}
		b.register(req, tx)
		return
	}
	// RFC 3261 §8.2: authentication comes first. sbcd authenticates a new
	// call by its source (DESIGN.md §5); requests it answers itself
	// (OPTIONS, refusals) need none.
	if req.IsInvite() && !b.knownSource(req) {
		b.refused(tx, req, refusal{code: 403, reason: "Forbidden"})
		return
	}
	if b.refused(tx, req, checkMethod(req)) || b.refused(tx, req, checkHeaders(req)) {
		return
	}
	switch req.Method {
	case sip.INVITE:
		if b.refused(tx, req, checkContent(req)) || b.refused(tx, req, checkMaxForwards(req)) {
			return
		}
		b.newInvite(req, tx)
	case sip.OPTIONS:
		// RFC 3261 §11.2: an OPTIONS addressed to sbcd (whatever its
		// Max-Forwards: it is not forwarded) is answered as to an INVITE.
		b.respond(tx, req, 200, "OK", optionsHeaders())
		tx.TerminateGracefully()
	default:
		// BYE, CANCEL and UPDATE outside a dialog or transaction: RFC 3261
		// §9.2, §15.1.2, RFC 3311 §5.2.
		b.respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		tx.TerminateGracefully()
	}
}

// routeAck hands an ACK outside any server transaction to the shard its To
// tag names; one without a tag, Call-ID or CSeq is dropped. From the
// socket's read loop (direct) it must not block.
func (b *B2BUA) routeAck(req *sip.Request, toTag string, direct bool) {
	s, ok := b.tagShard(toTag)
	if !ok || req.CallID() == nil || req.CSeq() == nil {
		return
	}
	e := event{kind: evRequest, req: req}
	if direct {
		s.postLater(e)
		return
	}
	s.post(context.Background(), e)
}

// ackDirect takes an ACK received over UDP out of sipgo's hands, from the
// socket's read filter: sipgo would make a server transaction of it, in a
// goroutine of its own, only for onRequest to end it at once (an ACK of a
// 2xx is a transaction of its own with nothing to answer, RFC 3261
// §17.1.1.3). It parses the datagram with sipgo's parser and routes it as
// onRequest does. It leaves to sipgo (false) what is not a well-formed
// ACK, and an ACK that matches an INVITE server transaction sipgo still
// holds: the ACK of a non-2xx final answer (§17.2.1, endAfter) or of a 2xx
// from a UA that reuses the INVITE's branch while the transaction lives
// (watchAck).
func (b *B2BUA) ackDirect(p sip.TransportReadProps, data []byte) bool {
	if len(data) < 4 || !asciiEqualFold(data[:4], "ack ") {
		return false
	}
	if a, ok := rawAck(data); ok {
		// The usual ACK, of a 2xx, read without parsing it: all a shard
		// needs of it is its dialog and CSeq number (onAck).
		var kb [256]byte
		key := appendInviteKey(kb[:0], a.branch, a.host, a.port)
		if s, ok := b.tagShard(string(a.toTag)); ok && b.invites.ownerBytes(key) == ownerNone {
			b.traceData("recv", data)
			s.postLater(event{kind: evAck, callID: string(a.callID), tag: string(a.toTag), seq: a.seq})
			return true
		}
	}
	req, _, ok := b.parseDirect(p, data)
	if !ok || !req.IsAck() {
		return false // sipgo drops what it cannot parse
	}
	key, err := sip.ServerTxKeyMake(req)
	if err != nil {
		return false
	}
	switch b.invites.owner(key) {
	case ownerSipgo:
		return false
	case ownerShard:
		// The ACK of a non-2xx answer of a shard's own INVITE
		// transaction (uas.go).
		b.traceMsg("recv", req)
		b.shards[b.shardOf(req.CallID().Value())].postLater(event{kind: evUAS, req: req, key: key})
		return true
	}
	b.traceMsg("recv", req)
	toTag, _ := req.To().Params.Get("tag")
	b.routeAck(req, toTag, true)
	return true
}

// byeDirect takes a BYE received over UDP out of sipgo's hands, from the
// socket's read filter, as ackDirect does ACKs: sipgo would make a server
// transaction of it in a goroutine of its own, only for the shard to
// answer 200 at once and the retransmission cache to take over (RFC 3261
// §17.2.2, rtx.go). It parses the datagram, checks it as onRequest does
// and posts it to the shard its To tag names; the shard answers from the
// socket it came in on (respondUDP). It leaves to sipgo (false) what does
// not parse, what has no To tag of a shard, and what a check refuses:
// onRequest answers those as before.
func (b *B2BUA) byeDirect(p sip.TransportReadProps, data []byte) bool {
	if len(data) < 4 || !asciiEqualFold(data[:4], "bye ") || b.rtx == nil {
		return false
	}
	if r, ok := rawBye(data); ok {
		// The usual BYE, read without parsing it: all a shard needs is
		// the dialog, the CSeq number and the datagram to answer from.
		s, ok := b.tagShard(string(r.toTag))
		sock, found := b.udpIndexOfAddr(p.LocalAddr)
		if ua, isUDP := p.RemoteAddr.(*net.UDPAddr); ok && found && isUDP {
			src := ua.AddrPort()
			b.traceData("recv", data)
			s.postLater(event{kind: evBye, callID: string(r.callID), tag: string(r.toTag), seq: r.seq,
				raw: bytes.Clone(data), sock: sock, src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port())})
			return true
		}
	}
	req, sock, ok := b.parseDirect(p, data)
	if !ok || req.Method != sip.BYE {
		return false
	}
	toTag, _ := req.To().Params.Get("tag")
	s, ok := b.tagShard(toTag)
	if !ok {
		return false
	}
	if checkMessage(req).code != 0 || checkCSeq(req).code != 0 || checkHeaders(req).code != 0 {
		return false
	}
	b.traceMsg("recv", req)
	if b.rtx.answerParsed(req) {
		return true // a retransmission, answered again (onRequest)
	}
	s.postLater(event{kind: evRequest, req: req, direct: true, sock: sock})
	return true
}

// parseDirect parses a request the read filter takes from sipgo
// (ackDirect, byeDirect, inviteDirect) and finds the listening socket it
// came in on. It reports false for what does not parse as a request with
// Via, From, To, Call-ID and CSeq, and for a socket that is none of sbcd's
// listening ones.
func (b *B2BUA) parseDirect(p sip.TransportReadProps, data []byte) (*sip.Request, int, bool) {
	if p.RemoteAddr == nil {
		return nil, 0, false
	}
	sock, ok := b.udpIndexOfAddr(p.LocalAddr)
	if !ok {
		return nil, 0, false
	}
	m, err := b.parser.ParseSIP(data)
	if err != nil {
		return nil, 0, false
	}
	req, ok := m.(*sip.Request)
	if !ok || req.Via() == nil || req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return nil, 0, false
	}
	req.SetTransport("UDP")
	req.SetSource(p.RemoteAddr.String())
	return req, sock, true
}

// respondUDP answers req, which came in on socket sock without a sipgo
// transaction (byeDirect), with a final response to its source (RFC 3261
// §18.2.2, as sipgo answers; RFC 3581 received and rport when asked), and
// keeps the response in the retransmission cache for Timer J (§17.2.2).
//
// The response is written, not built (writeResponse); one above 100 to a
// request without a To tag gets a tag of sbcd's (RFC 3261 §8.2.6.2).
func (b *B2BUA) respondUDP(req *sip.Request, sock int, code int, reason string, hdrs []sip.Header) {
	dest, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		b.log.Debug("respond", "code", code, "error", fmt.Errorf("destination %q: %w", req.Source(), err))
		return
	}
	tag := ""
	if to := req.To(); code > 100 && to != nil && !to.Params.Has("tag") {
		tag = b.newTag(0)
	}
	w := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(w)
	w.Reset()
	writeResponse(w, req, code, reason, tag, nil, hdrs...)
	b.traceData("send", w.Bytes())
	// Cached before it leaves: a retransmission may follow at once.
	b.rtx.keepSent(req, w.Bytes(), dest, sock)
	if err := b.writeUDP(sock, dest, w.Bytes()); err != nil {
		b.log.Debug("respond", "code", code, "error", err)
	}
}

// respondRaw answers the request in data, which came in on socket sock
// from src and which rawBye read, as respondUDP answers a parsed one: the
// response written from the request's own lines (writeRawResponse), kept
// in the retransmission cache for Timer J (RFC 3261 §17.2.2) before it
// leaves.
func (b *B2BUA) respondRaw(data []byte, sock int, src netip.AddrPort, code int, reason string, hdrs []sip.Header) {
	w := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(w)
	w.Reset()
	writeRawResponse(w, data, code, reason, hdrs...)
	b.traceData("send", w.Bytes())
	b.rtx.keepSentRaw(data, w.Bytes(), src, sock)
	if err := b.writeUDP(sock, src, w.Bytes()); err != nil {
		b.log.Debug("respond", "code", code, "error", err)
	}
}

// txOwner is who runs an INVITE server transaction over UDP.
type txOwner uint8

const (
	ownerNone  txOwner = iota
	ownerSipgo         // sipgo's transaction layer (onRequest)
	ownerShard         // a shard (uas.go)
)

// txKeys maps the keys of the live INVITE server transactions over UDP to
// their owner, so that the read filter sends a retransmitted INVITE, a
// CANCEL or an ACK to whoever runs the transaction (ackDirect,
// inviteDirect). A key has one owner at a time: the read filter gives a
// key to a shard only when it has none.
type txKeys struct {
	mu sync.Mutex
	m  map[string]txOwner
}

func (k *txKeys) add(key string, o txOwner) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]txOwner)
	}
	k.m[key] = o
	k.mu.Unlock()
}

func (k *txKeys) remove(key string) {
	k.mu.Lock()
	delete(k.m, key)
	k.mu.Unlock()
}

func (k *txKeys) owner(key string) txOwner {
	k.mu.Lock()
	o := k.m[key]
	k.mu.Unlock()
	return o
}

// ownerBytes is owner for a key in bytes, without allocating.
func (k *txKeys) ownerBytes(key []byte) txOwner {
	k.mu.Lock()
	o := k.m[string(key)]
	k.mu.Unlock()
	return o
}

// appendInviteKey appends to out sipgo's key of the INVITE server
// transaction whose top Via has branch and sent-by host and port: the
// key sip.ServerTxKeyMake gives the INVITE and its ACK (RFC 3261 §17.2.3).
func appendInviteKey(out, branch, host []byte, port int) []byte {
	out = append(out, branch...)
	out = append(out, sip.TxSeperator...)
	out = append(out, host...)
	out = append(out, sip.TxSeperator...)
	out = strconv.AppendInt(out, int64(port), 10)
	out = append(out, sip.TxSeperator...)
	return append(out, sip.INVITE...)
}

// refused answers req with r and ends tx when r is a refusal.
func (b *B2BUA) refused(tx *sip.ServerTx, req *sip.Request, r refusal) bool {
	if r.code == 0 {
		return false
	}
	b.respond(tx, req, r.code, r.reason, r.hdrs)
	b.endAfter(tx, r.code)
	return true
}

// endAfter ends tx once the final response code was sent on it. A non-2xx
// final answer to an INVITE over UDP is retransmitted by sipgo (Timer G)
// until the ACK comes (RFC 3261 §17.2.1); sipgo then keeps the transaction
// Confirmed for Timer I (T4, 5 s), only to absorb retransmitted ACKs.
// sbcd ends it at the ACK instead: a later copy of the ACK is a new
// transaction to sipgo, which onRequest ends at once and the shard
// ignores, so nothing of the call is kept for those 5 s. Any other
// transaction ends as sipgo's TerminateGracefully does.
func (b *B2BUA) endAfter(tx *sip.ServerTx, code int) {
	req := tx.Origin()
	if code < 300 || !req.IsInvite() || sip.NetworkToUpper(req.Transport()) != "UDP" {
		tx.TerminateGracefully()
		return
	}
	go func() {
		select {
		case <-tx.Acks():
		case <-tx.Done(): // Timer H: no ACK came
		}
		tx.Terminate()
	}()
}

// trackServerTx counts tx among the server transactions sipgo holds, until
// it terminates (Stats.ServerTx); the key of an INVITE's over UDP is in
// b.invites meanwhile (ackDirect).
func (b *B2BUA) trackServerTx(tx *sip.ServerTx, req *sip.Request) {
	b.serverTx.Add(1)
	key := ""
	if req.IsInvite() && sip.NetworkToUpper(req.Transport()) == "UDP" {
		key = tx.Key()
		b.invites.add(key, ownerSipgo)
	}
	end := func(string, error) {
		b.serverTx.Add(-1)
		if key != "" {
			b.invites.remove(key)
		}
	}
	if !tx.OnTerminate(end) {
		end("", nil)
	}
}

// trackClientTx counts tx among the client transactions sipgo holds
// (Stats.ClientTx).
func (b *B2BUA) trackClientTx(tx *sip.ClientTx) {
	b.clientTx.Add(1)
	if !tx.OnTerminate(func(string, error) { b.clientTx.Add(-1) }) {
		b.clientTx.Add(-1)
	}
}

// onStrayResponse gets responses that match no client transaction: the
// retransmissions of a 2xx to an INVITE sbcd already ACKed, which must be
// ACKed again (RFC 3261 §13.2.2.4), those of a non-2xx final answer to an
// INVITE whose transaction sbcd ended (§17.1.1.2, rtx.go), and the answers
// to the registrar's keep-alive OPTIONS, which are sent without a
// transaction.
func (b *B2BUA) onStrayResponse(res *sip.Response) {
	b.traceMsg("recv", res)
	if b.rtx.answerResponse(res) {
		return // a non-2xx answer to an INVITE, ACKed again (rtx.go)
	}
	if b.o.Registrar != nil && b.o.Registrar.KeepaliveAnswer(res) {
		return
	}
	cseq := res.CSeq()
	from := res.From()
	if cseq == nil || from == nil || cseq.MethodName != sip.INVITE || !res.IsSuccess() {
		return
	}
	tag, _ := from.Params.Get("tag")
	if s, ok := b.tagShard(tag); ok {
		s.post(context.Background(), event{kind: evStray, res: res})
	}
}

// respond answers req on tx with code and reason, logging failures.
func (b *B2BUA) respond(tx *sip.ServerTx, req *sip.Request, code int, reason string, hdrs []sip.Header) {
	b.send(tx, newResponse(req, code, reason, hdrs))
}

// newResponse is sbcd's answer to req, with hdrs added. sipgo copies the
// request's version; sbcd answers in its own (RFC 3261 §7.2), also the
// 505 to another version.
func newResponse(req *sip.Request, code int, reason string, hdrs []sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.SipVersion = sipVersion
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	return res
}

// send answers on tx. The final response of a non-INVITE transaction over
// UDP goes to the retransmission cache, and the transaction ends at once:
// the cache absorbs the request's retransmissions until Timer J (RFC 3261
// §17.2.2, rtx.go), which sipgo would otherwise keep the whole
// transaction for (DESIGN.md §10). The caller's TerminateGracefully after
// that does nothing.
func (b *B2BUA) send(tx *sip.ServerTx, res *sip.Response) {
	b.traceMsg("send", res)
	if err := tx.Respond(res); err != nil {
		b.log.Debug("respond", "code", res.StatusCode, "error", err)
		return
	}
	if res.StatusCode >= 200 && b.rtx.keep(tx.Origin(), res, b.udpIndex(tx.Connection())) {
		tx.Terminate()
	}
}

// resend sends res again on the connection of tx, which may have ended:
// the 2xx to an INVITE, retransmitted by the TU until the ACK (RFC 3261
// §13.3.1.4; RFC 6026 §7.1: the transaction only passes it on).
func (b *B2BUA) resend(tx *sip.ServerTx, res *sip.Response) {
	b.traceMsg("send", res)
	if err := tx.Connection().WriteMsg(res); err != nil {
		b.log.Debug("resend", "code", res.StatusCode, "error", err)
	}
}

// sendAccepted sends the 2xx res to the INVITE of tx over UDP and ends tx
// at once; it reports false (and sends nothing) when it cannot, and the
// caller sends res on tx as usual. After a 2xx the INVITE server
// transaction is Accepted (RFC 6026 §7.1) for Timer L (64*T1): it absorbs
// retransmitted INVITEs and passes the TU's 2xx retransmissions and the
// ACKs on. sbcd retransmits the 2xx itself (resend) and gets ACKs, which
// have their own branch, as new requests; what is left, absorbing the
// INVITE's retransmissions, the retransmission cache does with a record of
// the INVITE's key and no response. sipgo, which does not stop Timer L
// when its transaction ends, would keep the whole transaction for 64*T1.
func (b *B2BUA) sendAccepted(tx *sip.ServerTx, res *sip.Response) bool {
	req := tx.Origin()
	if b.rtx == nil || !req.IsInvite() || sip.NetworkToUpper(req.Transport()) != "UDP" {
		return false
	}
	if !b.rtx.absorb(req, b.udpIndex(tx.Connection())) {
		return false
	}
	// Ended before the 2xx leaves: an ACK that reuses the INVITE's branch
	// then never finds the transaction, which would swallow it, and goes
	// to the call (ackDirect, onRequest). The connection is the listening
	// socket's and stays usable, as it does for the retransmissions.
	tx.Terminate()
	b.resend(tx, res)
	return true
}

// route is where a new call goes.
type route struct {
	dest    netip.AddrPort // the callee's address
	user    string         // Request-URI user of the B-leg INVITE
	target  string         // Request-URI of the B-leg INVITE; sip:user@dest when ""
	network string         // "UDP" or "TCP"
	socket  int            // the UDP listening socket to send from
}

// classify finds the route of a caller's INVITE (DESIGN.md §5): from a
// device to the upstream, from the upstream to the device named by the
// Request-URI user. It returns the status code of the refusal otherwise.
func (b *B2BUA) classify(req *sip.Request) (route, int) {
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return route{}, 403
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	reliable := req.Transport() != "UDP"
	match := func(a netip.AddrPort) bool {
		// Over TCP the source port is ephemeral: the address decides.
		return a == src || (reliable && a.Addr() == src.Addr())
	}
	network := "UDP"
	if _, ok := b.via["UDP"]; !ok {
		network = "TCP"
	}
	rt := b.routes.Load()
	if rt.upstream.IsValid() && match(rt.upstream) {
		if a, ok := rt.byName[req.Recipient.User]; ok {
			return route{dest: a, user: req.Recipient.User, network: network, socket: b.socketFor(a.Addr(), "")}, 0
		}
		if b.o.Registrar != nil {
			// DESIGN.md §3: to the NAT binding, not to the private
			// Contact, through the socket the REGISTER came in on; the
			// Request-URI is the registered Contact (RFC 3261 §10, §16.5).
			if c, ok := b.o.Registrar.Locate(req.Recipient.User); ok {
				return route{dest: c.Source, user: req.Recipient.User, target: c.URI,
					network: c.Flow.Network, socket: c.Flow.Socket}, 0
			}
		}
		return route{}, 404
	}
	if _, ok := rt.byAddr[src]; ok || rt.deviceByAddr(src, reliable) ||
		(b.o.Registrar != nil && b.o.Registrar.Registered(src, sip.NetworkToUpper(req.Transport()))) {
		if !rt.upstream.IsValid() {
			return route{}, 503
		}
		return route{dest: rt.upstream, user: req.Recipient.User, network: network, socket: b.socketFor(rt.upstream.Addr(), "")}, 0
	}
	return route{}, 403
}

// knownSource reports whether req comes from the upstream or a device,
// the only sources that may start calls (DESIGN.md §5).
func (b *B2BUA) knownSource(req *sip.Request) bool {
	_, code := b.classify(req)
	return code != 403
}

func (rt *routing) deviceByAddr(src netip.AddrPort, reliable bool) bool {
	if !reliable {
		return false
	}
	for a := range rt.byAddr {
		if a.Addr() == src.Addr() {
			return true
		}
	}
	return false
}

// timerValues collects the session-timer headers of m, in full and compact
// form (RFC 4028 §4: "x"; RFC 3261 §7.3.3: "k"), in one pass over them: the
// full form of Session-Expires wins over the compact one, Supported lists
// the full form's values first.
func timerValues(m headerGetter) *header.Values {
	var v header.Values
	var seCompact string
	var supCompact []string
	var se, seC, mse bool // the first of each counts
	for _, h := range m.Headers() {
		switch n := h.Name(); {
		case strings.EqualFold(n, header.SessionExpires):
			if !se {
				v.SessionExpires, se = h.Value(), true
			}
		case strings.EqualFold(n, header.SessionExpiresCompact):
			if !seC {
				seCompact, seC = h.Value(), true
			}
		case strings.EqualFold(n, header.MinSE):
			if !mse {
				v.MinSE, mse = h.Value(), true
			}
		case strings.EqualFold(n, header.Supported):
			v.Supported = append(v.Supported, h.Value())
		case strings.EqualFold(n, header.SupportedCompact):
			supCompact = append(supCompact, h.Value())
		case strings.EqualFold(n, header.Require):
			v.Require = append(v.Require, h.Value())
		}
	}
	if v.SessionExpires == "" {
		v.SessionExpires = seCompact
	}
	v.Supported = append(v.Supported, supCompact...)
	return &v
}

// allowsUpdate reports whether m's Allow lists UPDATE (RFC 3311 §5.1).
func allowsUpdate(m headerGetter) bool {
	for _, h := range header.All(nil, m.Headers(), header.Allow) {
		if header.ListHas(h.Value(), "UPDATE") {
			return true
		}
	}
	return false
}

func minSEHeader(v uint32) sip.Header {
	return sip.NewHeader(header.MinSE, strconv.FormatUint(uint64(v), 10))
}

// admitInvite checks a new INVITE that passed the UAS checks as a call
// (RFC 3261 §8.2, DESIGN.md §5, RFC 4028 §9) and makes the shard's event
// for it; a refusal says how to answer instead.
func (b *B2BUA) admitInvite(req *sip.Request) (event, refusal) {
	if b.closing.Load() {
		return event{}, refusal{code: 503, reason: "Service Unavailable", hdrs: []sip.Header{sip.NewHeader("Retry-After", "30")}}
	}
	if req.Contact() == nil {
		// RFC 3261 §8.1.1.8: an INVITE must carry a Contact, the remote
		// target of the dialog.
		return event{}, refusal{code: 400, reason: "Missing Contact"}
	}
	rt, code := b.classify(req)
	switch code {
	case 0:
	case 404:
		return event{}, refusal{code: 404, reason: "Not Found"}
	case 503:
		return event{}, refusal{code: 503, reason: "Service Unavailable"}
	default:
		return event{}, refusal{code: 403, reason: "Forbidden"}
	}
	v := timerValues(req)
	sreq, err := v.Request()
	if err != nil {
		// RFC 3261 §21.4.1: a malformed header field draws 400.
		return event{}, refusal{code: 400, reason: "Bad Session-Expires or Min-SE"}
	}
	sreq, min := b.params.Load().Check(sreq)
	if min != 0 {
		// RFC 4028 §9: Session-Expires below sbcd's Min-SE from a UAC
		// that supports timer draws 422 with Min-SE.
		return event{}, refusal{code: 422, reason: "Session Interval Too Small", hdrs: []sip.Header{minSEHeader(min)}}
	}
	callID := req.CallID().Value()
	return event{kind: evInvite, req: req, callID: callID, tag: b.newTag(b.shardOf(callID)), sreq: sreq, rt: rt,
		allowUpdate: allowsUpdate(req)}, refusal{}
}

// newInvite checks a caller's INVITE and posts it to its shard.
func (b *B2BUA) newInvite(req *sip.Request, tx *sip.ServerTx) {
	e, r := b.admitInvite(req)
	if r.code != 0 {
		b.respond(tx, req, r.code, r.reason, r.hdrs)
		b.endAfter(tx, r.code)
		return
	}
	e.tx = tx
	callID, tag := e.callID, e.tag
	s := b.shards[b.shardOf(callID)]
	if !s.post(context.Background(), e) {
		return
	}
	// RFC 3261 §9.2: sipgo answers the CANCEL and the 487 itself; the shard
	// learns of it here. The callback is registered after the INVITE was
	// posted, so the cancel event always follows it; a CANCEL that came
	// before the registration makes OnCancel report false. (A cancel
	// posted twice is harmless: only an early call can be cancelled.)
	cancel := func(*sip.Request) {
		s.post(context.Background(), event{kind: evCancel, callID: callID, tag: tag})
	}
	if !tx.OnCancel(cancel) {
		cancel(nil)
	}
}
