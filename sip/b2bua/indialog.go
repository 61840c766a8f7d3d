package b2bua

import (
	"bytes"
	"fmt"
	"net"
	"strconv"

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
		if tx != nil {
			s.b.respond(tx, req, code, reason, hdrs)
			tx.TerminateGracefully()
		}
	}
	cid, cseq := req.CallID(), req.CSeq()
	if cid == nil || cseq == nil {
		reply(400, "Bad Request")
		return
	}
	tag, _ := req.To().Params.Get("tag")
	id, leg, ok := s.tab.Lookup(cid.Value(), tag)
	if !ok {
		// RFC 3261 §12.2.2: no such dialog. An ACK gets no answer.
		reply(481, "Call/Transaction Does Not Exist")
		return
	}
	slot, _ := s.tab.Get(id)
	defer s.touch(id, slot)
	st := &slot.Data
	l := &st.legs[leg]
	if req.IsAck() {
		// The caller's ACK of sbcd's 2xx. After a BYE that overtook it
		// the call has ended and the ACK is simply ignored.
		if leg == legA {
			slot.Call.Acked()
			st.ackDone()
		}
		return
	}
	// RFC 3261 §12.2.2: a CSeq lower than the last one is out of order.
	if l.remoteSeq != 0 && cseq.SeqNo <= l.remoteSeq && req.Method != sip.CANCEL {
		reply(500, "Server Internal Error", sip.NewHeader("Retry-After", "1"))
		return
	}
	l.remoteSeq = cseq.SeqNo
	switch req.Method {
	case sip.BYE:
		reply(200, "OK")
		reason := session.ReasonCallerBye
		if leg == legB {
			reason = session.ReasonCalleeBye
		}
		l.established = false
		if slot.Call.End(reason, leg) {
			s.terminate(id, slot, leg)
		}
	case sip.INVITE, sip.UPDATE:
		s.onSessionRequest(id, slot, leg, req, tx)
	case sip.CANCEL:
		// RFC 3261 §9.2: no pending transaction matches this CANCEL.
		reply(481, "Call/Transaction Does Not Exist")
	case sip.OPTIONS:
		reply(200, "OK", sip.NewHeader("Allow", allow), sip.NewHeader("Supported", "timer"))
	default:
		reply(501, "Not Implemented")
	}
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
		ans, reject := slot.Call.Received(s.b.mono(), leg, sreq, &s.b.o.Params)
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
	if _, reject := s.b.o.Params.Check(sreq); reject != 0 {
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
	s.start(id, slot, other, opRelay, out)
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
			ans, _ := slot.Call.Received(s.b.mono(), from, rl.sreq, &s.b.o.Params)
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
	host, port := s.b.sentBy(network)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: network,
		Host: host, Port: port, Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranch())
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
func (s *shard) contact(network string) *sip.ContactHeader {
	host, port := s.b.sentBy(network)
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
	if ct := m.GetHeader("Content-Type"); ct != nil {
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
