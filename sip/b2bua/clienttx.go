package b2bua

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
	"sbcd/timers/dialog"
	"sbcd/timers/session"
)

// This file is sbcd's own client transaction layer over UDP (RFC 3261
// §17.1), run by the shards (DESIGN.md §1).
//
// Why: through sipgo, every request sbcd sends (the B-leg INVITE, BYE,
// CANCEL, refreshes, relayed requests) cost a goroutine of sbcd's waiting
// on the transaction, sipgo's transaction with its state machine, timers
// and channels, and one more goroutine for every response sipgo read. At
// a few thousand calls a second that was most of sbcd's user CPU
// (BENCHMARKS.md). What a client transaction over UDP needs is small: the
// request's bytes for retransmission, two deadlines and the state, and the
// shard that sent the request already has a clock (its wheel tick) and an
// event loop. So a shard keeps its client transactions in a map keyed by
// branch and method (§17.1.3), retransmits and times them out from its
// tick, and gets their responses straight from the socket's read filter
// (responseDirect), which routes a response to the shard its branch names
// without sipgo's transaction layer.
//
// Requests that cannot go this way still go through sipgo's transaction
// layer (start): over TCP, to a destination that is a host name, or
// longer than sipgo sends over UDP (RFC 3261 §18.1.1).
//
// Timers, from sipgo's T1 and T2 (which tests shorten):
//   - INVITE (§17.1.1.2): Timer A retransmits at T1 doubling while
//     Calling; Timer B ends the transaction after 64*T1 without any
//     answer. Once Proceeding, nothing is retransmitted and only a CANCEL
//     sent for it re-arms a 64*T1 limit (§9.1: the UAC may consider the
//     INVITE cancelled after 64*T1 without a final answer), so a callee
//     that rings forever is ended by the call's early timeout and that
//     CANCEL, not by the transaction.
//   - non-INVITE (§17.1.2.2): Timer E retransmits at T1 doubling up to
//     T2 while Trying, at T2 once Proceeding; Timer F ends it after 64*T1.
//   - A 2xx ends an INVITE transaction: the shard ACKs it, and ACKs its
//     retransmissions again (onStray, §13.2.2.4). A 300–699 is ACKed by
//     the transaction (§17.1.1.3); the ACK goes to the retransmission
//     cache for Timer D, which answers the response's retransmissions.
//   - A final response ends a non-INVITE transaction at once: Timer K only
//     absorbs retransmitted responses, which sbcd drops anyway.

// branchMark starts the branch of every request sbcd builds; the two hex
// digits after it name the shard (tags do the same, tagShard).
const branchMark = sip.RFC3261BranchMagicCookie + "sb"

// newBranch returns a branch that routes the request's responses to s and
// is unique (RFC 3261 §8.1.1.7): random, and a counter of the shard's.
func (s *shard) newBranch() string {
	s.branches++
	var buf [len(branchMark) + 2 + 8 + 16]byte
	br := append(buf[:0], branchMark...)
	br = appendHex(br, uint64(s.idx), 2)
	br = appendHex(br, uint64(s.b.o.rand()), 8)
	return string(appendHex(br, s.branches, 0))
}

// branchShard is the shard a branch of newBranch names.
func (b *B2BUA) branchShard(branch string) (*shard, bool) {
	if len(branch) < len(branchMark)+2 || branch[:len(branchMark)] != branchMark {
		return nil, false
	}
	return b.tagShard(branch[len(branchMark):])
}

// ctKey names a client transaction (RFC 3261 §17.1.3): the branch of the
// top Via and the CSeq method; a CANCEL shares its INVITE's branch.
type ctKey struct {
	branch string
	method sip.RequestMethod
}

// clientTx is one client transaction over UDP.
type clientTx struct {
	id     dialog.ID
	leg    session.LegID
	op     op
	seq    uint32
	req    *sip.Request // nil for a request sbcd wrote (startWritten)
	data   []byte       // the request as sent
	sock   int          // index in b.udp
	dest   netip.AddrPort
	invite bool
	// proceeding: a provisional answer came (§17.1.1.2, §17.1.2.2).
	proceeding bool
	next       int64         // next retransmission, 0 for none (ns, mono)
	ivl        time.Duration // the interval after next
	until      int64         // Timer B or F, 0 for none
}

// startUDP sends req as a client transaction of the shard's own and
// reports whether it did; false leaves req to sipgo (nothing was sent).
func (s *shard) startUDP(id dialog.ID, leg session.LegID, o op, req *sip.Request, seq uint32, due int64) bool {
	b := s.b
	if sip.NetworkToUpper(req.Transport()) != "UDP" || len(b.udp) == 0 {
		return false
	}
	via, cseq := req.Via(), req.CSeq()
	if via == nil || cseq == nil {
		return false
	}
	branch, _ := via.Params.Get("branch")
	if _, ok := b.branchShard(branch); !ok {
		return false
	}
	dest, err := netip.ParseAddrPort(req.Destination())
	if err != nil {
		return false // a host name: sipgo resolves it
	}
	sock := b.udpIndexOf(req.Laddr)
	if _, ok := b.udp[sock].(addrPortWriter); !ok {
		return false
	}
	buf := rtxBufPool.Get().(*bytes.Buffer)
	buf.Reset()
	req.StringWrite(buf)
	if buf.Len() > sip.UDPMTUSize-200 {
		// RFC 3261 §18.1.1: too large for UDP; sipgo's transport
		// refuses it, as it always did.
		rtxBufPool.Put(buf)
		return false
	}
	ct := &clientTx{id: id, leg: leg, op: o, seq: seq, req: req, data: bytes.Clone(buf.Bytes()),
		sock: sock, dest: dest, invite: req.IsInvite()}
	rtxBufPool.Put(buf)
	return s.launch(ct, ctKey{branch: branch, method: cseq.MethodName}, due)
}

// startWritten is startUDP for a request in the dialog of leg l that
// inDialogUDP accepts from socket sock: written (writeRequest), not built,
// so the transaction has no *sip.Request (for a BYE, whose outcome only
// counts). It reports false, having sent nothing, for a request too large
// for UDP.
func (s *shard) startWritten(id dialog.ID, leg session.LegID, o op, l *legState, method sip.RequestMethod, seq uint32, sock int) bool {
	branch := s.newBranch()
	buf := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(buf)
	buf.Reset()
	s.writeRequest(buf, l, method, seq, branch)
	return s.startBytes(id, leg, o, method, seq, sock, l.dest, branch, buf.Bytes())
}

// startBytes runs the client transaction of a request written as data
// (writeRequest, writeInvite), with branch, from socket sock to dest;
// it keeps a copy of data. It reports false, having sent nothing, for a
// request too large for UDP (RFC 3261 §18.1.1, as startUDP) or a branch
// already taken.
func (s *shard) startBytes(id dialog.ID, leg session.LegID, o op, method sip.RequestMethod, seq uint32, sock int, dest netip.AddrPort, branch string, data []byte) bool {
	if len(data) > sip.UDPMTUSize-200 {
		return false
	}
	ct := &clientTx{id: id, leg: leg, op: o, seq: seq, data: bytes.Clone(data),
		sock: sock, dest: dest, invite: method == sip.INVITE}
	return s.launch(ct, ctKey{branch: branch, method: method}, 0)
}

// launch keeps ct under key and sends its request; false when key is taken
// (nothing was sent).
func (s *shard) launch(ct *clientTx, key ctKey, due int64) bool {
	b := s.b
	if _, dup := s.cts[key]; dup {
		return false
	}
	// Counted and kept before the request leaves: its answer may be back
	// before the write returns.
	now := b.mono()
	ct.ivl = sip.T1
	ct.next = now + int64(ct.ivl)
	ct.until = now + int64(64*sip.T1)
	if s.cts == nil {
		s.cts = make(map[ctKey]*clientTx)
	}
	s.cts[key] = ct
	b.clientTx.Add(1)
	b.traceData("send", ct.data)
	if err := b.writeUDP(ct.sock, ct.dest, ct.data); err != nil {
		// A transport error ends the transaction (RFC 3261 §17.1.4), as
		// sipgo's Request did: the outcome comes back as an event.
		b.log.Debug("send request", "method", string(key.method), "error", err)
		s.endUDP(key)
		s.postLater(event{kind: evTxDone, id: ct.id, leg: ct.leg, op: ct.op, seq: ct.seq, req: ct.req})
		return true
	}
	if due != 0 {
		b.late.add(time.Duration(b.mono() - due))
	}
	if key.method == sip.CANCEL {
		// §9.1: the INVITE it cancels gets 64*T1 from now for its final
		// answer.
		if inv, ok := s.cts[ctKey{branch: key.branch, method: sip.INVITE}]; ok && inv.until == 0 {
			inv.until = ct.until
		}
	}
	if s.ctNext == 0 || ct.next < s.ctNext {
		s.ctNext = ct.next
	}
	return true
}

// retransmitUDP runs the retransmission and timeout timers of the shard's
// client transactions that are due at now, and finds the next due time.
func (s *shard) retransmitUDP(now int64) {
	if len(s.cts) == 0 || s.ctNext == 0 || now < s.ctNext {
		return
	}
	next := int64(0)
	expired := s.ctExpired[:0]
	for key, ct := range s.cts {
		if ct.until != 0 && now >= ct.until {
			// Timer B or F: no final answer (RFC 3261 §17.1.1.2,
			// §17.1.2.2).
			s.endUDP(key)
			expired = append(expired, ct)
			continue
		}
		if ct.next != 0 && now >= ct.next {
			s.b.traceData("send", ct.data)
			s.writeUDP(ct.sock, ct.dest, ct.data)
			switch {
			case ct.invite:
				ct.ivl *= 2 // Timer A, no cap
			case ct.proceeding:
				ct.ivl = sip.T2
			default:
				ct.ivl = min(2*ct.ivl, sip.T2) // Timer E
			}
			ct.next = now + int64(ct.ivl)
		}
		for _, t := range [2]int64{ct.next, ct.until} {
			if t != 0 && (next == 0 || t < next) {
				next = t
			}
		}
	}
	s.ctNext = next
	// Handled after the walk: what they start is timed from s.ctNext on.
	for i, ct := range expired {
		s.handle(event{kind: evTxDone, id: ct.id, leg: ct.leg, op: ct.op, seq: ct.seq, req: ct.req})
		expired[i] = nil
	}
	s.ctExpired = expired[:0]
}

// endUDP drops a client transaction.
func (s *shard) endUDP(key ctKey) {
	if _, ok := s.cts[key]; ok {
		delete(s.cts, key)
		s.b.clientTx.Add(-1)
	}
}

// onResponseUDP takes a response responseDirect routed here: it goes to
// its transaction, or is a stray one.
func (s *shard) onResponseUDP(res *sip.Response) {
	via, cseq := res.Via(), res.CSeq()
	if via == nil || cseq == nil {
		return
	}
	branch, _ := via.Params.Get("branch")
	key := ctKey{branch: branch, method: cseq.MethodName}
	ct, ok := s.cts[key]
	if !ok || cseq.SeqNo != ct.seq {
		s.onStrayUDP(res)
		return
	}
	s.clientResponse(key, ct, res)
}

// onResponseRaw takes a response responseDirect did not parse
// (rawClientResponse): to its transaction it is a response with that
// status line and nothing else to read; a stray one is dropped, as
// onStrayUDP drops a stray provisional answer or answer to a BYE.
func (s *shard) onResponseRaw(e event) {
	key := ctKey{branch: e.key, method: e.method}
	if ct, ok := s.cts[key]; ok && ct.seq == e.seq {
		s.clientResponse(key, ct, sip.NewResponse(e.code, e.reason))
	}
}

// clientResponse hands res, a response to the shard's client transaction
// ct under key, to the transaction and to the call.
func (s *shard) clientResponse(key ctKey, ct *clientTx, res *sip.Response) {
	e := event{kind: evResponse, id: ct.id, leg: ct.leg, op: ct.op, seq: ct.seq, req: ct.req, res: res}
	if res.StatusCode < 200 {
		if !ct.proceeding {
			ct.proceeding = true
			if ct.invite {
				// §17.1.1.2: Proceeding stops Timer A and Timer B.
				ct.next, ct.until = 0, 0
			}
			// §17.1.2.2: Timer E fires as armed, then every T2
			// (retransmitUDP).
		}
		s.handle(e)
		return
	}
	s.endUDP(key)
	if ct.invite && res.StatusCode >= 300 {
		s.ackNon2xx(key.branch, ct, res)
	}
	s.handle(e)
}

// ackNon2xx sends the ACK of res, a 300–699 final answer to the INVITE of
// ct with branch (RFC 3261 §17.1.1.3), and keeps it for Timer D in the
// retransmission cache, which sends it again for each retransmission of
// the answer. A written INVITE (writeInvite) gets a written ACK, from the
// same leg state: the INVITE's Request-URI, Via, From, Call-ID and CSeq
// number, the response's To tag.
func (s *shard) ackNon2xx(branch string, ct *clientTx, res *sip.Response) {
	keep := func(data []byte) { s.b.rtx.keepAckData(branch, data, ct.dest, ct.sock) }
	if ct.req != nil {
		if ack := non2xxAck(ct.req, res); ack != nil {
			s.sendUDP(ct.sock, ct.dest, ack, keep)
		}
		return
	}
	slot, ok := s.tab.Get(ct.id)
	to := res.To()
	if !ok || to == nil {
		return
	}
	tag, _ := to.Params.Get("tag")
	buf := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(buf)
	buf.Reset()
	s.writeRequestHead(buf, &slot.Data.legs[ct.leg], sip.ACK, ct.seq, branch, tag)
	buf.WriteString("Content-Length: 0\r\n\r\n")
	s.b.traceData("send", buf.Bytes())
	keep(buf.Bytes())
	s.writeUDP(ct.sock, ct.dest, buf.Bytes())
}

// onStrayUDP is onStrayResponse for responses of sbcd's branches that
// match no live transaction: a retransmitted 2xx to an INVITE is ACKed
// again (RFC 3261 §13.2.2.4), a retransmitted non-2xx final answer gets
// its ACK from the retransmission cache, anything else is dropped.
func (s *shard) onStrayUDP(res *sip.Response) {
	if s.b.rtx.answerResponse(res) {
		return
	}
	if cseq := res.CSeq(); cseq != nil && cseq.MethodName == sip.INVITE && res.IsSuccess() && res.From() != nil {
		s.onStray(res)
	}
}

// responseDirect takes a response received over UDP to a request of the
// shards' own client transactions out of sipgo's hands, from the socket's
// read filter: it parses the datagram and routes it to the shard its
// branch names. It leaves to sipgo (false) what is not a well-formed
// response with such a branch (the answers to the registrar's keep-alive
// OPTIONS, stray answers, what does not parse).
func (b *B2BUA) responseDirect(p sip.TransportReadProps, data []byte) bool {
	if len(data) < 8 || !asciiEqualFold(data[:8], "sip/2.0 ") || p.RemoteAddr == nil {
		return false
	}
	// The branch names the shard: look before parsing, so that answers to
	// other requests cost nothing more.
	if !bytes.Contains(data, []byte(branchMark)) {
		return false
	}
	if r, ok := rawClientResponse(data); ok {
		s, ok := b.branchShard(string(r.branch))
		if !ok {
			return false
		}
		b.traceData("recv", data)
		s.postLater(event{kind: evResponseRaw, key: string(r.branch), method: sip.RequestMethod(r.method), seq: r.seq,
			code: r.code, reason: reasonString(r.reason)})
		return true
	}
	m, err := b.parser.ParseSIP(data)
	if err != nil {
		return false
	}
	res, ok := m.(*sip.Response)
	if !ok {
		return false
	}
	via := res.Via()
	if via == nil {
		return false
	}
	branch, _ := via.Params.Get("branch")
	s, ok := b.branchShard(branch)
	if !ok {
		return false
	}
	res.SetTransport("UDP")
	res.SetSource(p.RemoteAddr.String())
	b.traceMsg("recv", res)
	s.postLater(event{kind: evResponseUDP, res: res})
	return true
}

// rawClientResponse reads, without parsing the datagram, the kinds of
// response to sbcd's own client transactions that a shard needs no more
// of than the status line and the transaction they belong to:
//   - a 100 (Trying) to any request, which only stops the request's
//     retransmissions (RFC 3261 §17.1.1.2, §17.1.2.2);
//   - any other provisional answer to an INVITE without a body (the
//     callee's 180 Ringing), which a shard relays to the caller with its
//     status line only;
//   - a final answer to a BYE, which only ends its transaction.
//
// It returns false for any other response, and for one scanHeaders does
// not read exactly as sipgo would, which is then parsed. Such a response
// that sipgo would refuse for another header field counts all the same:
// the peer sent it.
func rawClientResponse(data []byte) (rawRes, bool) {
	r, ok := rawResponse(data)
	if !ok || !rfc3261Branch(r.branch) {
		return rawRes{}, false
	}
	switch {
	case r.code == 100,
		r.code < 200 && r.noBody && string(r.method) == "INVITE",
		r.code >= 200 && string(r.method) == "BYE":
		return r, true
	}
	return rawRes{}, false
}

// reasonString is the Reason-Phrase reason as a string, without
// allocating for the usual ones.
func reasonString(reason []byte) string {
	switch string(reason) {
	case "Ringing":
		return "Ringing"
	case "OK":
		return "OK"
	case "Trying":
		return "Trying"
	}
	return string(reason)
}

// non2xxAck builds the ACK of res, a 300–699 final answer to inv (RFC 3261
// §17.1.1.3): the INVITE's Request-URI, top Via, Route, From, Call-ID and
// CSeq number, the response's To; nil when inv or res lack one of them.
func non2xxAck(inv *sip.Request, res *sip.Response) *sip.Request {
	via, from, to, cid, cseq := inv.Via(), inv.From(), res.To(), inv.CallID(), inv.CSeq()
	if via == nil || from == nil || to == nil || cid == nil || cseq == nil {
		return nil
	}
	ack := sip.NewRequest(sip.ACK, inv.Recipient)
	ack.AppendHeader(via)
	for _, h := range header.All(nil, inv.Headers(), "Route") {
		ack.AppendHeader(h)
	}
	ack.AppendHeader(from)
	ack.AppendHeader(to)
	ack.AppendHeader(cid)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: cseq.SeqNo, MethodName: sip.ACK})
	mf := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&mf)
	ack.SetBody(nil)
	return ack
}
