package b2bua

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
	"sbcd/timers/dialog"
	"sbcd/timers/session"
)

// onInDialog handles a request received in a dialog of a call of this
// shard (RFC 3261 §12.2.2).
func (s *shard) onInDialog(e event) {
	req, tx := e.req, e.tx
	reply := func(code int, reason string, hdrs ...sip.Header) {
		switch {
		case tx != nil:
			s.b.respond(tx, req, code, reason, hdrs)
			tx.TerminateGracefully()
		case e.direct:
			s.b.respondUDP(req, e.sock, code, reason, hdrs)
		}
	}
	cid, cseq := req.CallID(), req.CSeq()
	if cid == nil || cseq == nil {
		reply(400, "Bad Request")
		return
	}
	tag, _ := req.To().Params.Get("tag")
	switch req.Method {
	case sip.ACK:
		s.onAck(cid.Value(), tag, cseq.SeqNo)
		return
	case sip.BYE:
		s.onBye(cid.Value(), tag, cseq.SeqNo, reply)
		return
	}
	id, leg, ok := s.tab.Lookup(cid.Value(), tag)
	if !ok {
		// RFC 3261 §12.2.2: no such dialog.
		reply(481, "Call/Transaction Does Not Exist")
		return
	}
	slot, _ := s.tab.Get(id)
	defer s.touch(id, slot)
	st := &slot.Data
	l := &st.legs[leg]
	// RFC 3261 §12.2.2: a CSeq lower than the last one is out of order.
	if l.remoteSeq != 0 && cseq.SeqNo <= l.remoteSeq && req.Method != sip.CANCEL {
		reply(500, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	}
	l.remoteSeq = cseq.SeqNo
	switch req.Method {
	case sip.INVITE, sip.UPDATE:
		s.onSessionRequest(id, slot, leg, req, tx)
	case sip.CANCEL:
		// RFC 3261 §9.2: no pending transaction matches this CANCEL.
		reply(481, "Call/Transaction Does Not Exist")
	case sip.OPTIONS:
		reply(200, "OK", sip.NewHeader("Allow", allow), sip.NewHeader("Supported", "timer"))
	default:
		s.pass(id, slot, leg, req, tx)
	}
}

// onBye ends the call of the dialog callID and tag name on a BYE with
// seq as CSeq number, parsed (onInDialog) or not (byeDirect), and answers
// it with reply (RFC 3261 §15.1.2).
func (s *shard) onBye(callID, tag string, seq uint32, reply func(code int, reason string, hdrs ...sip.Header)) {
	id, leg, ok := s.tab.Lookup(callID, tag)
	if !ok {
		// RFC 3261 §12.2.2: no such dialog.
		reply(481, "Call/Transaction Does Not Exist")
		return
	}
	slot, _ := s.tab.Get(id)
	defer s.touch(id, slot)
	l := &slot.Data.legs[leg]
	if seq == l.remoteSeq && !l.established {
		// RFC 3261 §17.2.2: a retransmission of the BYE sbcd answered,
		// which got here before its answer was in the retransmission
		// cache, gets the same answer.
		reply(200, "OK")
		return
	}
	// RFC 3261 §12.2.2: a CSeq lower than the last one is out of order.
	if l.remoteSeq != 0 && seq <= l.remoteSeq {
		reply(500, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	}
	l.remoteSeq = seq
	reply(200, "OK")
	reason := session.ReasonCallerBye
	if leg == legB {
		reason = session.ReasonCalleeBye
	}
	l.established = false
	if slot.Call.End(reason, leg) {
		s.terminate(id, slot, leg)
	}
}

// onAck takes an ACK with seq as CSeq number in the dialog callID and
// tag names, parsed (onInDialog) or not (ackDirect). An ACK gets no
// answer: one that matches no dialog is dropped (RFC 3261 §12.2.2), as
// is one that a BYE overtook.
func (s *shard) onAck(callID, tag string, seq uint32) {
	id, leg, ok := s.tab.Lookup(callID, tag)
	if !ok {
		return
	}
	slot, _ := s.tab.Get(id)
	defer s.touch(id, slot)
	st := &slot.Data
	if leg == legA {
		// The caller's ACK of sbcd's 2xx (RFC 3261 §13.2.2.4): its
		// retransmissions stop.
		slot.Call.Acked()
		st.ackDone()
	}
	if r := &st.reok[leg]; r.res != nil && seq == r.seq {
		r.done() // the ACK of sbcd's 2xx to a re-INVITE
	}
}

// passHeaders are the header fields a relayed INFO, MESSAGE, NOTIFY,
// REFER, ... keeps: those that give its body and event their meaning
// (RFC 6086 Info-Package, RFC 6665 Event and Subscription-State, RFC 3515
// Refer-To, RFC 3892 Referred-By).
var passHeaders = [...]string{"Content-Type", "Content-Disposition", "Content-Encoding", "Content-Language",
	"Info-Package", "Recv-Info", "Event", "Subscription-State", "Refer-To", "Referred-By", "Accept", "Require"}

// pass relays a request sbcd does not handle itself (INFO, MESSAGE,
// NOTIFY, an unknown method, ...) received in the dialog of leg to the
// other leg's dialog, as a B2BUA does: the other side decides (it answers
// 501 or 405 if it does not know the method either), and its final answer
// comes back through onPassed.
func (s *shard) pass(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID, req *sip.Request, tx *sip.ServerTx) {
	st := &slot.Data
	reply := func(code int, reason string) {
		s.b.respond(tx, req, code, reason, nil)
		tx.TerminateGracefully()
	}
	other := leg ^ 1
	o := &st.legs[other]
	if slot.Call.Phase == session.PhaseEnded || !st.legs[leg].established || !o.established {
		// RFC 3261 §12.2.2: no dialog (yet) to carry it on the other side.
		reply(481, "Call/Transaction Does Not Exist")
		return
	}
	if r := checkMaxForwards(req); r.code != 0 {
		reply(r.code, r.reason)
		return
	}
	o.localSeq++
	out, err := s.newRequest(o, req.Method, o.localSeq)
	if err != nil {
		s.b.log.Error("build relayed request", "call", id.String(), "method", string(req.Method), "error", err)
		reply(500, "Server Internal Error")
		return
	}
	for _, name := range passHeaders {
		for _, h := range header.All(nil, req.Headers(), name) {
			out.AppendHeader(sip.NewHeader(name, h.Value()))
		}
	}
	out.SetBody(req.Body())
	st.pass = append(st.pass, passState{tx: tx, req: req, leg: other, seq: o.localSeq})
	s.start(id, slot, other, opPass, out, 0)
}

// onPassed answers a request relayed by pass with the other side's final
// answer (408 when there was none, RFC 3261 §17.1.2.2).
func (s *shard) onPassed(e event, slot *dialog.Slot[callState]) {
	st := &slot.Data
	i := slices.IndexFunc(st.pass, func(p passState) bool { return p.leg == e.leg && p.seq == e.seq })
	if i < 0 {
		return // answered already: the call ended
	}
	p := st.pass[i]
	st.pass = slices.Delete(st.pass, i, i+1)
	if e.kind != evResponse {
		s.b.respond(p.tx, p.req, 408, "Request Timeout", nil)
		p.tx.TerminateGracefully()
		return
	}
	res := sip.NewResponseFromRequest(p.req, e.res.StatusCode, e.res.Reason, e.res.Body())
	for _, name := range [...]string{"Content-Type", "Allow", "Accept", "Unsupported", "Retry-After"} {
		for _, h := range header.All(nil, e.res.Headers(), name) {
			res.AppendHeader(sip.NewHeader(name, h.Value()))
		}
	}
	s.b.send(p.tx, res)
	p.tx.TerminateGracefully()
}

// onSessionRequest handles a re-INVITE or UPDATE received on leg: a pure
// refresh is answered locally, a media change is relayed (DESIGN.md §2).
func (s *shard) onSessionRequest(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID, req *sip.Request, tx *sip.ServerTx) {
	st := &slot.Data
	l := &st.legs[leg]
	reply := func(code int, reason string, body []byte, hdrs ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, body)
		for _, h := range hdrs {
			res.AppendHeader(h)
		}
		s.b.send(tx, res)
		tx.TerminateGracefully()
		if code >= 200 && code < 300 {
			s.keep2xx(id, slot, leg, tx, res)
		}
	}
	if slot.Call.Phase == session.PhaseEnded {
		reply(481, "Call/Transaction Does Not Exist", nil)
		return
	}
	if !l.established || slot.Call.Phase == session.PhaseEarly {
		// RFC 3261 §14.2: an offer while the session is being set up.
		reply(491, "Request Pending", nil)
		return
	}
	// RFC 3261 §12.2.2: a re-INVITE or UPDATE refreshes the remote target.
	if c := req.Contact(); c != nil {
		l.target = c.Address.String()
	}
	sreq, err := timerValues(req).Request()
	if err != nil {
		reply(400, "Bad Session-Expires or Min-SE", nil)
		return
	}
	body := req.Body()
	pure := len(body) == 0 || (req.IsInvite() && bytes.Equal(body, l.sdp))
	if pure {
		// RFC 4028 §9, §10: a refresh is answered by sbcd on this leg;
		// each leg's timers are independent.
		ans, reject := slot.Call.Received(s.b.mono(), leg, sreq, s.b.params.Load())
		if reject != 0 {
			reply(422, "Session Interval Too Small", nil, minSEHeader(reject))
			return
		}
		hdrs := []sip.Header{s.contact(l.network), sip.NewHeader("Supported", "timer"), sip.NewHeader("Allow", allow)}
		hdrs = append(hdrs, answerHeaders(ans)...)
		var sdp []byte
		if req.IsInvite() {
			// The answer is the SDP sbcd already gave this leg.
			if sdp = st.legs[leg^1].sdp; len(sdp) > 0 {
				hdrs = append(hdrs, sip.NewHeader("Content-Type", "application/sdp"))
			}
		}
		reply(200, "OK", sdp, hdrs...)
		return
	}
	// A media change: 422 now if its Session-Expires is too small; the
	// sender's session is refreshed once the other side accepted it.
	if _, reject := s.b.params.Load().Check(sreq); reject != 0 {
		reply(422, "Session Interval Too Small", nil, minSEHeader(reject))
		return
	}
	other := leg ^ 1
	offer, ok := slot.Call.Relayed(other)
	if !ok || st.relay[other].tx != nil {
		// RFC 3261 §14.1: a transaction of sbcd's is under way there.
		reply(491, "Request Pending", nil)
		return
	}
	o := &st.legs[other]
	o.localSeq++
	out, err := s.newRequest(o, req.Method, o.localSeq)
	if err != nil {
		s.b.log.Error("build relayed request", "call", id.String(), "error", err)
		reply(500, "Server Internal Error", nil)
		return
	}
	addTimer(out, offer)
	out.AppendHeader(sip.NewHeader("Allow", allow))
	out.AppendHeader(contentType(req))
	out.SetBody(body)
	st.relay[other] = relayState{tx: tx, req: req, sreq: sreq}
	st.opSeq[other] = o.localSeq
	s.start(id, slot, other, opRelay, out, 0)
}

// onRelayed answers the sender of a relayed re-INVITE or UPDATE with the
// other side's answer and reports the outcome on the leg it was sent on.
func (s *shard) onRelayed(e event, slot *dialog.Slot[callState]) {
	st := &slot.Data
	rl := st.relay[e.leg]
	st.relay[e.leg] = relayState{}
	o := session.Outcome{}
	if e.kind == evResponse {
		o = s.readOutcome(e, slot)
	}
	if rl.tx != nil {
		from := e.leg ^ 1
		switch {
		case o.Code >= 200 && o.Code < 300:
			// RFC 4028 §10: the 2xx refreshes the sender's session too.
			ans, _ := slot.Call.Received(s.b.mono(), from, rl.sreq, s.b.params.Load())
			st.legs[e.leg].sdp = e.res.Body()
			st.legs[from].sdp = rl.req.Body()
			res := sip.NewResponseFromRequest(rl.req, o.Code, e.res.Reason, e.res.Body())
			res.AppendHeader(s.contact(st.legs[from].network))
			res.AppendHeader(sip.NewHeader("Supported", "timer"))
			for _, h := range answerHeaders(ans) {
				res.AppendHeader(h)
			}
			if len(e.res.Body()) > 0 {
				res.AppendHeader(contentType(e.res))
			}
			s.b.send(rl.tx, res)
			s.keep2xx(e.id, slot, from, rl.tx, res)
		case o.Code == 0:
			s.b.respond(rl.tx, rl.req, 408, "Request Timeout", nil)
		default:
			s.b.respond(rl.tx, rl.req, o.Code, e.res.Reason, nil)
		}
		rl.tx.TerminateGracefully()
	}
	s.outcome(e.id, slot, e.leg, o)
}

// newRequest builds a request in the dialog of leg l (RFC 3261 §12.2.1.1):
// Request-URI the remote target, Route the route set (loose routing), From
// and To with the dialog's URIs and tags, Call-ID, CSeq seq; sbcd's Via and
// Contact. Every request but ACK says Supported: timer (DESIGN.md §2).
func (s *shard) newRequest(l *legState, method sip.RequestMethod, seq uint32) (*sip.Request, error) {
	var ruri sip.Uri
	if err := sip.ParseUri(l.target, &ruri); err != nil {
		return nil, fmt.Errorf("parse remote target %q: %w", l.target, err)
	}
	req := sip.NewRequest(method, ruri)
	network := l.network
	if network == "" {
		network = "UDP"
	}
	ap, ok := s.b.via[network]
	if !ok {
		return nil, fmt.Errorf("no %s listener", network)
	}
	if network == "UDP" && l.socket > 0 && l.socket < len(s.b.udp) {
		ap = s.b.udp[l.socket].LocalAddr().(*net.UDPAddr).AddrPort()
	}
	host, port := s.b.sentBy(network)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: network,
		Host: host, Port: port, Params: sip.NewParams()}
	via.Params.Add("branch", s.newBranch())
	req.AppendHeader(via)
	dest := l.dest.String()
	for i, r := range l.route {
		var u sip.Uri
		if err := sip.ParseUri(r, &u); err != nil {
			return nil, fmt.Errorf("parse route %q: %w", r, err)
		}
		req.AppendHeader(&sip.RouteHeader{Address: u})
		if i == 0 {
			port := u.Port
			if port == 0 {
				port = 5060
			}
			dest = net.JoinHostPort(u.Host, strconv.Itoa(port))
		}
	}
	from := &sip.FromHeader{Params: sip.NewParams()}
	if err := sip.ParseUri(l.localURI, &from.Address); err != nil {
		return nil, fmt.Errorf("parse local uri %q: %w", l.localURI, err)
	}
	from.Params.Add("tag", l.localTag)
	to := &sip.ToHeader{Params: sip.NewParams()}
	if err := sip.ParseUri(l.remoteURI, &to.Address); err != nil {
		return nil, fmt.Errorf("parse remote uri %q: %w", l.remoteURI, err)
	}
	if l.remoteTag != "" {
		to.Params.Add("tag", l.remoteTag)
	}
	req.AppendHeader(from)
	req.AppendHeader(to)
	cid := sip.CallIDHeader(l.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	if method != sip.BYE && method != sip.ACK && method != sip.CANCEL {
		req.AppendHeader(s.contact(network))
	}
	if method != sip.ACK {
		req.AppendHeader(sip.NewHeader("Supported", "timer"))
	}
	req.SetBody(nil)
	req.SetTransport(network)
	req.SetDestination(dest)
	if network == "UDP" {
		// Send from the listening socket, so the peer's NAT binding that
		// carries SIP is the one used.
		req.Laddr = sip.Addr{IP: net.IP(ap.Addr().AsSlice()), Port: int(ap.Port())}
	}
	return req, nil
}

// contact is sbcd's Contact for a network.
func (s *shard) contact(network string) *sip.ContactHeader { return s.b.contact(network) }

// contactLine is contact(network) as a header to write: the one made at
// New for UDP, without building it again.
func (b *B2BUA) contactLine(network string) sip.Header {
	if network == "UDP" && b.contactUDP != nil {
		return b.contactUDP
	}
	return b.contact(network)
}

// contact is sbcd's Contact on network (RFC 3261 §8.1.1.8).
func (b *B2BUA) contact(network string) *sip.ContactHeader {
	host, port := b.sentBy(network)
	u := sip.Uri{Scheme: "sip", User: "sbcd", Host: host, Port: port}
	if network == "TCP" {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", "tcp")
	}
	return &sip.ContactHeader{Address: u}
}

// addTimer adds the session-timer headers of an INVITE or UPDATE sbcd sends
// (RFC 4028 §7.1, §7.4). Supported: timer is added by newRequest.
func addTimer(req *sip.Request, o session.Offer) {
	if o.SE != 0 {
		req.AppendHeader(sip.NewHeader(header.SessionExpires, string(header.AppendSessionExpires(nil, o.SE, o.Refresher))))
	}
	if o.MinSE != 0 {
		req.AppendHeader(minSEHeader(o.MinSE))
	}
}

// answerHeaders are the session-timer headers of a 2xx sbcd sends
// (RFC 4028 §9: refresher=uac requires Require: timer).
func answerHeaders(a session.Answer) []sip.Header {
	if a.SE == 0 {
		return nil
	}
	hs := []sip.Header{sip.NewHeader(header.SessionExpires, string(header.AppendSessionExpires(nil, a.SE, a.Refresher)))}
	if a.Require {
		hs = append(hs, sip.NewHeader(header.Require, header.OptionTimer))
	}
	return hs
}

// contentType copies the Content-Type of m, application/sdp when absent.
func contentType(m headerGetter) sip.Header {
	if ct := header.First(m.Headers(), "Content-Type"); ct != nil {
		return sip.NewHeader("Content-Type", ct.Value())
	}
	return sip.NewHeader("Content-Type", "application/sdp")
}

// parseUint reads delta-seconds such as Retry-After's (RFC 3261 §20.33),
// ignoring a comment and parameters.
func parseUint(v string) (uint32, error) {
	i := 0
	for i < len(v) && v[i] == ' ' {
		i++
	}
	j := i
	for j < len(v) && v[j] >= '0' && v[j] <= '9' {
		j++
	}
	n, err := strconv.ParseUint(v[i:j], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("parse delta-seconds %q: %w", v, err)
	}
	return uint32(n), nil
}

// reOK is sbcd's 2xx to a re-INVITE received on a leg over UDP, kept for
// retransmission until the ACK (RFC 3261 §13.3.1.4).
type reOK struct {
	res   *sip.Response
	tx    *sip.ServerTx
	seq   uint32        // the re-INVITE's CSeq, which its ACK carries
	next  int64         // when to send it again, shard clock
	ivl   time.Duration // T1 doubling to T2
	until int64         // give up: 64*T1 after the first send
}

// done drops the kept 2xx and ends its transaction.
func (r *reOK) done() {
	if r.tx != nil {
		r.tx.Terminate()
	}
	*r = reOK{}
}

// keep2xx keeps sbcd's 2xx res to a re-INVITE received on leg over UDP
// for retransmission until its ACK (RFC 3261 §13.3.1.4): the shard's
// retransmit resends it at T1 doubling up to T2 and gives up after 64*T1.
// Over TCP the transport is reliable and nothing is kept.
func (s *shard) keep2xx(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID, tx *sip.ServerTx, res *sip.Response) {
	req := tx.Origin()
	if !req.IsInvite() || sip.NetworkToUpper(req.Transport()) != "UDP" {
		return
	}
	now := s.b.mono()
	r := &slot.Data.reok[leg]
	r.done()
	*r = reOK{res: res, tx: tx, seq: req.CSeq().SeqNo, next: now + int64(t1), ivl: t1, until: now + int64(64*t1)}
	s.watchAcks(id)
}
