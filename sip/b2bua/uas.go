package b2bua

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/dialog"
)

// This file is sbcd's own INVITE server transaction over UDP (RFC 3261
// §17.2.1) for a caller's initial INVITE, run by the call's shard; the
// client side is clienttx.go, and the reasons are the same: sipgo's
// transaction cost a goroutine per message, a state machine, timers and
// channels per call, for what is a few fields and two deadlines.
//
// The socket's read filter (inviteDirect) checks a new INVITE as onRequest
// and newInvite do and posts it to its shard, which creates the
// transaction (uasInvite) with the call; what a check refuses is left to
// sipgo, which answers as before. Until the transaction ends, its key is in
// b.invites as the shard's, and the read filter routes to the shard what
// belongs to it:
// a retransmitted INVITE (answered with the last response, §17.2.1), a
// CANCEL (§9.2: 200 to the CANCEL, 487 to the INVITE) and the ACK of a
// non-2xx final answer (it ends the transaction).
//
// Timers, in the shard's clock from sipgo's T1 and T2:
//   - 100 Trying (§17.2.1: the server transaction MUST send one unless the
//     TU answers within 200 ms) goes out 200 ms after the INVITE
//     (tryingDelay) when nothing else has by then, or at once for a
//     retransmission of the INVITE that finds nothing sent yet. The
//     callee's 180 usually comes first and is all the caller needs to
//     stop retransmitting: one datagram less per call.
//   - A 2xx ends the transaction at once, as sendAccepted does for sipgo's:
//     the retransmission cache absorbs retransmitted INVITEs for Timer L
//     (RFC 6026 §7.1), and the shard retransmits the 2xx until the ACK.
//   - A 300–699 answer is retransmitted by Timer G, T1 doubling up to T2,
//     until the ACK, and Timer H gives up after 64*T1 (§17.2.1). The ACK
//     ends the transaction at once (Timer I only absorbs ACKs, which the
//     shard ignores anyway, as endAfter does for sipgo's).

// uasInvite is an INVITE server transaction over UDP.
type uasInvite struct {
	key  string // RFC 3261 §17.2.3, as sip.ServerTxKeyMake makes it
	req  *sip.Request
	id   dialog.ID // the call, while it has one
	sock int
	dest netip.AddrPort
	last []byte // the last response sent, for retransmitted INVITEs
	// final: the code of the final answer, 0 before.
	final int
	// trying: when the 100 is due (tryingDelay), 0 once anything was
	// sent.
	trying int64
	next   int64 // Timer G, 0 for none (ns, mono)
	ivl    time.Duration
	until  int64 // Timer H, 0 for none
}

// tryingDelay is how long after the INVITE a shard's server transaction
// sends 100 Trying when the call has sent the caller nothing yet (RFC
// 3261 §17.2.1: 200 ms).
const tryingDelay = 200 * time.Millisecond

// newUAS creates the transaction of the INVITE of e, an evInvite of
// inviteDirect.
func (s *shard) newUAS(e event) *uasInvite {
	dest, _ := netip.ParseAddrPort(e.req.Source())
	u := &uasInvite{key: e.key, req: e.req, sock: e.sock, dest: dest}
	if s.uas == nil {
		s.uas = make(map[string]*uasInvite)
	}
	s.uas[u.key] = u
	s.b.serverTx.Add(1)
	return u
}

// uasDue makes the shard's tick look at its INVITE transactions at t.
func (s *shard) uasDue(t int64) {
	if t != 0 && (s.uasNext == 0 || t < s.uasNext) {
		s.uasNext = t
	}
}

// endUAS ends u: its key no longer routes anything to the shard.
func (s *shard) endUAS(u *uasInvite) {
	if s.uas[u.key] == u {
		delete(s.uas, u.key)
		s.b.invites.remove(u.key)
		s.b.serverTx.Add(-1)
	}
}

// respondUAS sends on u the response with code whose bytes are data
// (writeResponse). A 2xx ends u, after its key went to the retransmission
// cache (Timer L); a 300–699 makes it Completed (Timer G and H) until the
// ACK. u keeps its own copy of what it may send again.
func (s *shard) respondUAS(u *uasInvite, code int, data []byte) {
	if u.final != 0 {
		return
	}
	u.trying = 0
	s.b.traceData("send", data)
	if code >= 200 && code < 300 {
		// Absorb first, then end: a retransmitted INVITE finds one or
		// the other.
		s.b.rtx.absorb(u.req, u.sock)
		u.final = code
		s.endUAS(u)
		s.writeUDP(u.sock, u.dest, data)
		return
	}
	if code >= 200 {
		// Timed from before the write: the peer may act on the answer
		// (and a test move its clock) before the write returns.
		now := s.b.mono()
		u.final = code
		u.ivl = sip.T1
		u.next = now + int64(u.ivl)
		u.until = now + int64(64*sip.T1)
		s.uasDue(u.next)
	}
	u.last = append(u.last[:0], data...)
	s.writeUDP(u.sock, u.dest, data)
}

// answerUAS answers u's INVITE with code and reason, and hdrs; any answer
// but 100 with a To tag of its own, the call's A-leg tag when it has one
// (RFC 3261 §8.2.6.2).
func (s *shard) answerUAS(u *uasInvite, code int, reason, tag string, hdrs ...sip.Header) {
	if code > 100 && tag == "" {
		tag = s.b.newTag(s.idx)
	}
	w := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(w)
	w.Reset()
	writeResponse(w, u.req, code, reason, tag, nil, hdrs...)
	s.respondUAS(u, code, w.Bytes())
}

// writeUDP sends data from listening socket sock to dest; a failure is
// logged at debug level: the transaction retransmits or times out as it
// would have after a loss.
func (s *shard) writeUDP(sock int, dest netip.AddrPort, data []byte) {
	if err := s.b.writeUDP(sock, dest, data); err != nil {
		s.b.log.Debug("send", "error", err)
	}
}

// sendUDP is writeUDP for a message, traced; keep, when not nil, gets its
// bytes before they leave.
func (s *shard) sendUDP(sock int, dest netip.AddrPort, m sip.Message, keep func([]byte)) {
	if err := s.b.sendUDP(sock, dest, m, keep); err != nil {
		s.b.log.Debug("send", "error", err)
	}
}

// sendUDP writes m from listening socket sock to dest, traced; keep, when
// not nil, gets its bytes before they leave (to keep them for
// retransmission: an answer may come back before the write returns).
func (b *B2BUA) sendUDP(sock int, dest netip.AddrPort, m sip.Message, keep func([]byte)) error {
	b.traceMsg("send", m)
	buf := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(buf)
	buf.Reset()
	m.StringWrite(buf)
	if keep != nil {
		keep(buf.Bytes())
	}
	return b.writeUDP(sock, dest, buf.Bytes())
}

// errNoSocket is writeUDP's error for a socket index that is no
// listening UDP socket of sbcd's.
var errNoSocket = errors.New("no such udp socket")

// writeUDP sends data from listening socket sock to dest.
func (b *B2BUA) writeUDP(sock int, dest netip.AddrPort, data []byte) error {
	if sock < 0 || sock >= len(b.udp) {
		return fmt.Errorf("write to %s: %w", dest, errNoSocket)
	}
	w, ok := b.udp[sock].(addrPortWriter)
	if !ok {
		return fmt.Errorf("write to %s: %w", dest, errNoSocket)
	}
	if _, err := w.WriteToUDPAddrPort(data, dest); err != nil {
		return fmt.Errorf("write to %s: %w", dest, err)
	}
	return nil
}

// retransmitUAS runs Timer G and Timer H of the shard's INVITE
// transactions that are due at now.
func (s *shard) retransmitUAS(now int64) {
	if len(s.uas) == 0 || s.uasNext == 0 || now < s.uasNext {
		return
	}
	s.uasNext = 0
	for _, u := range s.uas {
		switch {
		case u.until != 0 && now >= u.until:
			// Timer H: no ACK came (RFC 3261 §17.2.1).
			s.endUAS(u)
			continue
		case u.next != 0 && now >= u.next:
			s.writeUDP(u.sock, u.dest, u.last) // Timer G
			u.ivl = min(2*u.ivl, sip.T2)
			u.next = now + int64(u.ivl)
		case u.trying != 0 && now >= u.trying:
			s.answerUAS(u, 100, "Trying", "") // §17.2.1: 200 ms without an answer
		}
		s.uasDue(u.trying)
		s.uasDue(u.next)
		s.uasDue(u.until)
	}
}

// onUAS handles what the read filter routed to an INVITE transaction of
// the shard: a retransmission of the INVITE, a CANCEL or an ACK.
func (s *shard) onUAS(e event) {
	req := e.req
	u, ok := s.uas[e.key]
	switch req.Method {
	case sip.INVITE:
		// RFC 3261 §17.2.1: the last response again; none yet, the 100
		// now rather than at tryingDelay.
		switch {
		case ok && len(u.last) > 0:
			s.writeUDP(u.sock, u.dest, u.last)
		case ok && u.final == 0:
			s.answerUAS(u, 100, "Trying", "")
		}
	case sip.ACK:
		// The ACK of the non-2xx final answer: Confirmed, and without
		// Timer I nothing is left (endAfter). The ACK of a 2xx never
		// gets here: the key leaves b.invites before the 2xx does.
		if ok && u.final >= 300 {
			s.endUAS(u)
		}
	case sip.CANCEL:
		// RFC 3261 §9.2: a CANCEL that matches the transaction gets 200,
		// and the INVITE 487 if it has no final answer yet; one that
		// matches none gets 481.
		if !ok {
			s.b.respondUDP(req, e.sock, 481, "Call/Transaction Does Not Exist", nil)
			return
		}
		s.b.respondUDP(req, e.sock, 200, "OK", nil)
		if u.final != 0 {
			return
		}
		slot, live := s.tab.Get(u.id)
		if !live || slot.Data.uas != u {
			s.answerUAS(u, 487, "Request Terminated", "")
			return
		}
		s.answerA(slot, 487, "Request Terminated", nil)
		s.onCancel(u.id, slot)
		s.touch(u.id, slot)
	}
}

// inviteDirect takes an INVITE received over UDP out of sipgo's hands,
// from the socket's read filter: a new call's, checked as onRequest and
// newInvite do, goes to its shard, which runs its transaction (uas.go);
// a retransmission of one, a CANCEL of one and the ACK of its non-2xx
// answer go to that shard too. It leaves to sipgo (false) what does not
// parse, what a check refuses (sipgo's transaction answers it, as
// before), re-INVITEs (they have a To tag) and INVITEs without an RFC 3261
// branch.
func (b *B2BUA) inviteDirect(p sip.TransportReadProps, data []byte) bool {
	if len(data) < 7 || b.rtx == nil {
		return false
	}
	cancel := asciiEqualFold(data[:7], "cancel ")
	if !cancel && !asciiEqualFold(data[:7], "invite ") {
		return false
	}
	req, sock, ok := b.parseDirect(p, data)
	if !ok || req.Method != sip.INVITE && req.Method != sip.CANCEL {
		return false
	}
	if req.To().Params.Has("tag") {
		return false // a re-INVITE, or a CANCEL sipgo matches
	}
	branch, _ := req.Via().Params.Get("branch")
	if !rfc3261Branch(branch) {
		return false
	}
	key, err := sip.ServerTxKeyMake(req)
	if err != nil {
		return false
	}
	if cancel {
		// The CANCEL's key names the INVITE's with its own method.
		ikey, ok := inviteKeyOf(key)
		if !ok || b.invites.owner(ikey) != ownerShard || checkCSeq(req).code != 0 {
			return false
		}
		b.traceMsg("recv", req)
		if b.rtx.answerParsed(req) {
			return true
		}
		b.shards[b.shardOf(req.CallID().Value())].postLater(event{kind: evUAS, req: req, key: ikey, sock: sock})
		return true
	}
	switch b.invites.owner(key) {
	case ownerSipgo:
		return false // a retransmission of an INVITE sipgo answers
	case ownerShard:
		b.traceMsg("recv", req)
		b.shards[b.shardOf(req.CallID().Value())].postLater(event{kind: evUAS, req: req, key: key, sock: sock})
		return true
	}
	if b.rtx.answerParsed(req) {
		return true // a retransmission of an INVITE answered 2xx (Timer L)
	}
	for _, r := range [...]func(*sip.Request) refusal{checkMessage, checkMethod, checkHeaders, checkContent, checkMaxForwards} {
		if r(req).code != 0 {
			return false
		}
	}
	if !b.knownSource(req) {
		return false
	}
	e, r := b.admitInvite(req)
	if r.code != 0 {
		return false
	}
	b.traceMsg("recv", req)
	e.direct, e.sock, e.key = true, sock, key
	b.invites.add(key, ownerShard)
	b.shards[b.shardOf(e.callID)].postLater(e)
	return true
}

// inviteKeyOf turns the key of a CANCEL into the key of the INVITE it
// cancels: sipgo's keys end in the method after a "__" separator.
func inviteKeyOf(key string) (string, bool) {
	sep := sip.TxSeperator
	i := len(key) - len(sip.CANCEL) - len(sep)
	if i <= 0 || key[i:] != sep+string(sip.CANCEL) {
		return "", false
	}
	return key[:i] + sep + string(sip.INVITE), true
}
