package b2bua

import (
	"context"
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
)

// headerGetter is the header access of sipgo requests and responses.
type headerGetter interface {
	GetHeader(name string) sip.Header
	GetHeaders(name string) []sip.Header
}

// allow is what sbcd accepts in a dialog (RFC 3261 §20.5).
const allow = "INVITE, ACK, BYE, CANCEL, UPDATE, OPTIONS"

// onRequest runs in a sipgo goroutine for every new server transaction. It
// only routes: everything that touches a call is posted to its shard
// (DESIGN.md §1).
func (b *B2BUA) onRequest(req *sip.Request, tx *sip.ServerTx) {
	b.traceMsg("recv", req)
	toTag := ""
	if to := req.To(); to != nil {
		toTag, _ = to.Params.Get("tag")
	}
	switch {
	case req.IsAck():
		// ACK of a 2xx is its own transaction (RFC 3261 §17.1.1.3): nothing
		// to answer; the shard only updates the call.
		tx.Terminate()
		if s, ok := b.tagShard(toTag); ok {
			s.post(context.Background(), event{kind: evRequest, req: req})
		}
	case toTag != "":
		// RFC 3261 §12.2.2: a request with a To tag belongs to a dialog,
		// named by sbcd's tag, which names the shard.
		s, ok := b.tagShard(toTag)
		if !ok {
			b.respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
			tx.TerminateGracefully()
			return
		}
		s.post(context.Background(), event{kind: evRequest, req: req, tx: tx})
	case req.IsInvite():
		b.newInvite(req, tx)
	case req.Method == sip.OPTIONS:
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Allow", allow))
		res.AppendHeader(sip.NewHeader(header.Supported, header.OptionTimer))
		b.send(tx, res)
		tx.TerminateGracefully()
	case req.IsCancel() || req.Method == sip.BYE:
		// RFC 3261 §9.2, §15.1.2: no matching transaction or dialog.
		b.respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
		tx.TerminateGracefully()
	default:
		res := sip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil)
		res.AppendHeader(sip.NewHeader("Allow", allow))
		b.send(tx, res)
		tx.TerminateGracefully()
	}
}

// onStrayResponse gets responses that match no client transaction: the
// retransmissions of a 2xx to an INVITE sbcd already ACKed, which must be
// ACKed again (RFC 3261 §13.2.2.4).
func (b *B2BUA) onStrayResponse(res *sip.Response) {
	b.traceMsg("recv", res)
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
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	b.send(tx, res)
}

func (b *B2BUA) send(tx *sip.ServerTx, res *sip.Response) {
	b.traceMsg("send", res)
	if err := tx.Respond(res); err != nil {
		b.log.Debug("respond", "code", res.StatusCode, "error", err)
	}
}

// route is where a new call goes.
type route struct {
	dest    netip.AddrPort // the callee's address
	user    string         // Request-URI user of the B-leg INVITE
	network string         // "UDP" or "TCP"
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
	if b.upstream.IsValid() && match(b.upstream) {
		for a, name := range b.devices {
			if name == req.Recipient.User {
				return route{dest: a, user: name, network: network}, 0
			}
		}
		return route{}, 404
	}
	if _, ok := b.devices[src]; ok || b.deviceByAddr(src, reliable) {
		if !b.upstream.IsValid() {
			return route{}, 503
		}
		return route{dest: b.upstream, user: req.Recipient.User, network: network}, 0
	}
	return route{}, 403
}

func (b *B2BUA) deviceByAddr(src netip.AddrPort, reliable bool) bool {
	if !reliable {
		return false
	}
	for a := range b.devices {
		if a.Addr() == src.Addr() {
			return true
		}
	}
	return false
}

// timerValues collects the session-timer headers of m, in full and compact
// form (RFC 4028 §4: "x"; RFC 3261 §7.3.3: "k").
func timerValues(m headerGetter) *header.Values {
	var v header.Values
	for _, n := range [...]string{header.SessionExpires, header.SessionExpiresCompact} {
		if h := m.GetHeader(n); h != nil && v.SessionExpires == "" {
			v.SessionExpires = h.Value()
		}
	}
	if h := m.GetHeader(header.MinSE); h != nil {
		v.MinSE = h.Value()
	}
	for _, n := range [...]string{header.Supported, header.SupportedCompact} {
		for _, h := range m.GetHeaders(n) {
			v.Supported = append(v.Supported, h.Value())
		}
	}
	for _, h := range m.GetHeaders(header.Require) {
		v.Require = append(v.Require, h.Value())
	}
	return &v
}

// allowsUpdate reports whether m's Allow lists UPDATE (RFC 3311 §5.1).
func allowsUpdate(m headerGetter) bool {
	for _, h := range m.GetHeaders(header.Allow) {
		if header.ListHas(h.Value(), "UPDATE") {
			return true
		}
	}
	return false
}

func minSEHeader(v uint32) sip.Header {
	return sip.NewHeader(header.MinSE, strconv.FormatUint(uint64(v), 10))
}

// newInvite checks a caller's INVITE and posts it to its shard.
func (b *B2BUA) newInvite(req *sip.Request, tx *sip.ServerTx) {
	reject := func(code int, reason string, hdrs ...sip.Header) {
		b.respond(tx, req, code, reason, hdrs)
		tx.TerminateGracefully()
	}
	if b.closing.Load() {
		reject(503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return
	}
	if req.CallID() == nil || req.From() == nil || req.To() == nil || req.CSeq() == nil {
		reject(400, "Bad Request")
		return
	}
	if req.Contact() == nil {
		// RFC 3261 §8.1.1.8: an INVITE must carry a Contact, the remote
		// target of the dialog.
		reject(400, "Missing Contact")
		return
	}
	rt, code := b.classify(req)
	switch code {
	case 0:
	case 404:
		reject(404, "Not Found")
		return
	case 503:
		reject(503, "Service Unavailable")
		return
	default:
		reject(403, "Forbidden")
		return
	}
	v := timerValues(req)
	sreq, err := v.Request()
	if err != nil {
		// RFC 3261 §21.4.1: a malformed header field draws 400.
		reject(400, "Bad Session-Expires or Min-SE")
		return
	}
	sreq, min := b.o.Params.Check(sreq)
	if min != 0 {
		// RFC 4028 §9: Session-Expires below sbcd's Min-SE from a UAC
		// that supports timer draws 422 with Min-SE.
		reject(422, "Session Interval Too Small", minSEHeader(min))
		return
	}
	callID := req.CallID().Value()
	i := b.shardOf(callID)
	s := b.shards[i]
	tag := b.newTag(i)
	if !s.post(context.Background(), event{kind: evInvite, req: req, tx: tx, callID: callID, tag: tag, sreq: sreq, rt: rt,
		allowUpdate: allowsUpdate(req)}) {
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
