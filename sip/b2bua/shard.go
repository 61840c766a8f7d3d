package b2bua

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/cdr"
	"sbcd/sip/header"
	"sbcd/timers"
	"sbcd/timers/dialog"
	"sbcd/timers/session"
)

const (
	legA = session.LegA
	legB = session.LegB
)

// evKind is what an event brings to a shard.
type evKind uint8

const (
	evInvite      evKind = iota + 1 // a caller's INVITE, checked and routed
	evCancel                        // the caller cancelled its INVITE
	evRequest                       // an in-dialog request (ACK, BYE, UPDATE, re-INVITE, ...)
	evResponse                      // a response to a request sbcd sent
	evTxDone                        // a client transaction ended without a final response
	evStray                         // a 2xx retransmission to ACK again
	evResponseUDP                   // a response to one of the shard's own client transactions (clienttx.go)
	evUAS                           // a retransmitted INVITE, CANCEL or ACK for one of the shard's INVITE transactions (uas.go)
	evResponseRaw                   // a 100, a 1xx to INVITE without body or a final answer to a BYE, of the shard's own client transactions, not parsed (clienttx.go)
	evAck                           // an ACK in a dialog, not parsed (ackDirect): callID, tag, seq
	evBye                           // a BYE in a dialog, not parsed (byeDirect): callID, tag, seq, raw, sock, src
	evCDRDone                       // the CDR of a call is durable
	evShutdown                      // end every call
)

// op is what a request sbcd sent was for.
type op uint8

const (
	opInvite  op = iota + 1 // the B-leg's initial INVITE
	opRefresh               // a session refresh (ActRefresh)
	opProbe                 // a no-timer probe (ActProbe)
	opRelay                 // a re-INVITE or UPDATE relayed from the other leg
	opBye
	opCancel
	opPass // a request sbcd does not handle, relayed from the other leg (INFO, MESSAGE, ...)
)

// event is one unit of work for a shard.
type event struct {
	kind   evKind
	req    *sip.Request // evInvite, evRequest; the request sbcd sent for evResponse/evTxDone
	tx     *sip.ServerTx
	res    *sip.Response
	id     dialog.ID
	leg    session.LegID
	op     op
	seq    uint32
	callID string
	tag    string
	// direct: evRequest or evInvite of a request sipgo never saw
	// (byeDirect, inviteDirect), to be answered from socket sock without
	// a sipgo transaction; key is the INVITE's transaction key (evInvite,
	// evUAS).
	direct bool
	sock   int
	key    string
	// evBye: the datagram, and where it came from.
	raw []byte
	src netip.AddrPort
	// evResponseRaw: the status code, Reason-Phrase and CSeq method of a
	// response read without sipgo's parser; key is its branch, seq its
	// CSeq number.
	code   int
	reason string
	method sip.RequestMethod
	// evInvite
	sreq        session.Request
	rt          route
	allowUpdate bool
}

// legState is the compact dialog state of one leg (DESIGN.md §1, memory
// model): what RFC 3261 §12.2.1.1 needs to build in-dialog requests.
type legState struct {
	callID    string
	localTag  string
	remoteTag string
	localURI  string // From URI of requests sbcd sends on the leg
	remoteURI string // To URI of requests sbcd sends on the leg
	localSeq  uint32
	remoteSeq uint32
	target    string   // remote target: the peer's Contact URI
	route     []string // route set, in the order of Route headers to send
	sdp       []byte   // the last SDP the leg's endpoint sent
	network   string   // "UDP" or "TCP"
	socket    int      // the UDP listening socket the leg uses
	dest      netip.AddrPort
	// established: the dialog exists and takes in-dialog requests.
	established bool
}

// relayState is a request received on one leg and relayed to the other,
// waiting for the other side's answer.
type relayState struct {
	tx   *sip.ServerTx
	req  *sip.Request
	sreq session.Request // its session-timer headers
}

// passState is a request sbcd does not handle itself (INFO, MESSAGE,
// NOTIFY, ...) received on one leg and relayed to the other.
type passState struct {
	tx  *sip.ServerTx
	req *sip.Request
	leg session.LegID // the leg it was relayed onto
	seq uint32        // its CSeq there
}

// callState is the sip layer's per-call state in the dialog slot.
type callState struct {
	legs [2]legState
	// The caller's INVITE transaction, until its final response: sipgo's
	// (inv) or the shard's own over UDP (uas).
	inv    *sip.ServerTx
	uas    *uasInvite
	invReq *sip.Request
	// The B-leg INVITE, until its final response (for CANCEL): built for
	// sipgo (binv), or written (bbranch, its branch: writeInvite).
	binv    *sip.Request
	bbranch string
	// bprov: the B-leg INVITE drew a provisional answer; cancelWait: the
	// call ended before it did, so the CANCEL waits for it (RFC 3261 §9.1).
	bprov, cancelWait bool
	sreq              session.Request // the caller's checked session-timer request
	allowA            bool            // the caller's Allow lists UPDATE
	offer             session.Offer   // what the B-leg INVITE offers
	tries422          int
	ctype             string // Content-Type of the caller's body

	caller, callee     string
	setup, answer, end time.Time
	code               int

	relay [2]relayState // indexed by the leg the request was relayed onto
	pass  []passState   // other requests relayed, until their answer
	reok  [2]reOK       // 2xx to a re-INVITE received on a leg, until its ACK
	opSeq [2]uint32     // CSeq of sbcd's refresh, probe or relay on a leg

	// The 2xx to the caller and its transaction, kept until the ACK for
	// retransmission over UDP (RFC 3261 §13.3.1.4).
	ok     *sip.Response
	okTx   *sip.ServerTx
	okUAS  *uasInvite // instead of okTx: where the 2xx goes (uas.go)
	okData []byte     // with okUAS, instead of ok: the 2xx's bytes
	okNext int64
	okIvl  time.Duration

	pending int  // client transactions in flight
	cdrDone bool // the CDR is durable (or there is none)
	counted uint8
}

const (
	countNone uint8 = iota
	countEarly
	countUnacked // answered, the caller's ACK not seen yet
	countUp
)

// shard owns a part of the dialog table and its timing wheel; one
// goroutine runs it (DESIGN.md §1).
type shard struct {
	b        *B2BUA
	idx      int
	capacity int
	tab      *dialog.Table[callState]
	wheel    *timers.Wheel
	ev       chan event
	quit     chan struct{}
	expired  []timers.Handle
	acts     []session.Action
	awaitAck []dialog.ID // calls whose 2xx is retransmitted until the ACK

	// The shard's own client transactions over UDP (clienttx.go), the
	// earliest time one of them is due (0: none), those that timed out in
	// a tick, and the counter that makes branches unique.
	cts       map[ctKey]*clientTx
	ctNext    int64
	ctExpired []*clientTx
	branches  uint64
	// The shard's own INVITE server transactions (uas.go) by key, and the
	// earliest time one of them is due (0: none).
	uas     map[string]*uasInvite
	uasNext int64

	used, early, up, unacked atomic.Int64
	ended                    [32]atomic.Uint64
	// ticks counts wheel advances; asleep: the ticker is stopped (idle).
	// For tests and profiling.
	ticks  atomic.Uint64
	asleep atomic.Bool
}

func newShard(b *B2BUA, idx, capacity int) (*shard, error) {
	tab, err := dialog.New[callState](dialog.Options{Capacity: capacity})
	if err != nil {
		return nil, fmt.Errorf("dialog table: %w", err)
	}
	w, err := timers.New(timers.Options{Capacity: capacity, Tick: time.Millisecond, Start: b.mono()})
	if err != nil {
		return nil, fmt.Errorf("timing wheel: %w", err)
	}
	return &shard{
		b: b, idx: idx, capacity: capacity, tab: tab, wheel: w,
		ev:      make(chan event, 1024),
		quit:    make(chan struct{}),
		expired: make([]timers.Handle, 0, 256),
		acts:    make([]session.Action, 0, 4),
	}, nil
}

// post hands e to the shard; false when the shard stopped or ctx ended.
func (s *shard) post(ctx context.Context, e event) bool {
	select {
	case s.ev <- e:
		return true
	case <-s.quit:
		return false
	case <-ctx.Done():
		return false
	}
}

// postLater posts without blocking: from inside the shard goroutine, and
// from a socket's read loop (ackDirect).
func (s *shard) postLater(e event) {
	select {
	case s.ev <- e:
	default:
		go s.post(context.Background(), e)
	}
}

// shardTick is how often a busy shard advances its wheel.
const shardTick = 5 * time.Millisecond

// untilTick is how long from now to the next multiple of shardTick of the
// wall clock. Every shard ticks on that one grid, so the runtime wakes
// once for all of them, not once per shard at phases set by when each
// started (each wake-up of an idle process costs tens of µs in a VM).
func untilTick(now time.Time) time.Duration {
	return shardTick - time.Duration(now.UnixNano()%int64(shardTick))
}

// run is the shard goroutine: events in order, and the wheel advanced every
// shardTick (on the grid of untilTick) from the monotonic clock while the
// shard has something to time.
// An idle shard (no armed call timer, no 2xx awaiting its ACK) stops its
// ticker and blocks on its event channel alone, so a box without calls
// does not wake up 200 times a second per shard (DESIGN.md §10, keep-alive
// CPU); the first event after that advances the wheel to now (O(1): it is
// empty) before it is handled, and restarts the ticker. Timers are only
// ever armed by handling an event, so none can be missed while asleep.
func (s *shard) run() {
	t := time.NewTimer(untilTick(time.Now()))
	defer t.Stop()
	ticking := true
	for {
		if ticking && s.idle() {
			t.Stop()
			ticking = false
			s.asleep.Store(true)
		}
		var tc <-chan time.Time
		if ticking {
			tc = t.C
		}
		select {
		case e := <-s.ev:
			if !ticking {
				s.tick() // catch the wheel up with the clock
				t.Reset(untilTick(time.Now()))
				ticking = true
				s.asleep.Store(false)
			}
			s.handle(e)
			if s.b.o.handled != nil {
				s.b.o.handled(e.kind)
			}
		case <-tc:
			s.tick()
			t.Reset(untilTick(time.Now()))
		case <-s.quit:
			return
		}
	}
}

// idle reports whether the shard has nothing to do until its next event:
// no armed call timer, no 2xx retransmitted until its ACK and no client
// transaction of its own.
func (s *shard) idle() bool {
	return s.wheel.ArmedLen() == 0 && len(s.awaitAck) == 0 && len(s.cts) == 0 && len(s.uas) == 0
}

// tick fires the calls whose deadline passed.
func (s *shard) tick() {
	s.ticks.Add(1)
	now := s.b.mono()
	s.expired = s.wheel.Advance(now, s.expired[:0])
	for _, h := range s.expired {
		idx, ok := s.wheel.Data(h)
		if !ok {
			continue
		}
		id, slot, ok := s.tab.At(idx)
		if !ok || slot.Timer != h {
			continue // a timer of a call freed meanwhile
		}
		s.acts = slot.Call.Fire(now, s.b.params.Load(), s.acts[:0])
		for _, a := range s.acts {
			s.do(id, slot, a)
		}
		s.touch(id, slot)
	}
	if len(s.awaitAck) > 0 {
		s.retransmit(now)
	}
	s.retransmitUDP(now)
	s.retransmitUAS(now)
}

// retransmit resends the 2xx of calls waiting for the caller's ACK over
// UDP, at T1 doubling up to T2 (RFC 3261 §13.3.1.4); Timer H ends the call
// when no ACK comes (session.Call.Fire). It also resends the 2xx to
// re-INVITEs (keep2xx), which it drops after 64*T1 without an ACK.
func (s *shard) retransmit(now int64) {
	keep := s.awaitAck[:0]
	for _, id := range s.awaitAck {
		slot, ok := s.tab.Get(id)
		if !ok {
			continue
		}
		st := &slot.Data
		waiting := false
		if st.ok != nil || st.okData != nil {
			if slot.Call.Phase != session.PhaseAnswered {
				st.ackDone()
			} else {
				if now >= st.okNext {
					s.resendOK(st)
					st.okIvl = min(2*st.okIvl, t2)
					st.okNext = now + int64(st.okIvl)
				}
				waiting = true
			}
		}
		for i := range st.reok {
			r := &st.reok[i]
			if r.res == nil {
				continue
			}
			if slot.Call.Phase == session.PhaseEnded || now >= r.until {
				r.done()
				continue
			}
			if now >= r.next {
				s.b.resend(r.tx, r.res)
				r.ivl = min(2*r.ivl, t2)
				r.next = now + int64(r.ivl)
			}
			waiting = true
		}
		if waiting {
			keep = append(keep, id)
		}
	}
	clear(s.awaitAck[len(keep):])
	s.awaitAck = keep
}

// watchAcks puts a call on the list retransmit goes through, once.
func (s *shard) watchAcks(id dialog.ID) {
	if !slices.Contains(s.awaitAck, id) {
		s.awaitAck = append(s.awaitAck, id)
	}
}

// watchAck passes on an ACK that sipgo matched to the INVITE transaction
// (a UA that reuses the INVITE's branch, or an RFC 2543 UA without one)
// instead of handing it to onRequest. It ends with the transaction, which
// the shard terminates once the call is ACKed or over.
func (s *shard) watchAck(tx *sip.ServerTx) {
	select {
	case ack := <-tx.Acks():
		s.b.traceMsg("recv", ack)
		s.post(context.Background(), event{kind: evRequest, req: ack})
	case <-tx.Done():
	}
}

// ackDone drops what the 2xx retransmission kept and ends the INVITE
// transaction: once the call is ACKed or over, it has nothing left to
// absorb, and sipgo would otherwise keep it for Timer L (DESIGN.md §10).
func (st *callState) ackDone() {
	if st.okTx != nil {
		st.okTx.Terminate()
	}
	st.ok, st.okTx, st.okUAS, st.okData = nil, nil, nil, nil
}

// resendOK sends the 2xx to the caller's INVITE again (RFC 3261
// §13.3.1.4), on sipgo's connection or from the shard's socket.
func (s *shard) resendOK(st *callState) {
	if st.okTx != nil {
		s.b.resend(st.okTx, st.ok)
		return
	}
	if u := st.okUAS; u != nil {
		s.b.traceData("send", st.okData)
		s.writeUDP(u.sock, u.dest, st.okData)
	}
}

// RFC 3261 §17.1.1.1 timer values for the 2xx retransmission.
const (
	t1 = 500 * time.Millisecond
	t2 = 4 * time.Second
)

func (s *shard) handle(e event) {
	switch e.kind {
	case evInvite:
		s.onInvite(e)
	case evShutdown:
		for id, slot := range s.tab.All {
			if slot.Call.End(session.ReasonShutdown, session.LegNone) {
				s.terminate(id, slot, session.LegNone)
			}
			s.touch(id, slot)
		}
	case evCancel:
		id, leg, ok := s.tab.Lookup(e.callID, e.tag)
		if !ok || leg != legA {
			return
		}
		slot, _ := s.tab.Get(id)
		s.onCancel(id, slot)
		s.touch(id, slot)
	case evRequest:
		s.onInDialog(e)
	case evAck:
		s.onAck(e.callID, e.tag, e.seq)
	case evBye:
		s.onBye(e.callID, e.tag, e.seq, func(code int, reason string, hdrs ...sip.Header) {
			s.b.respondRaw(e.raw, e.sock, e.src, code, reason, hdrs)
		})
	case evResponse, evTxDone:
		slot, ok := s.tab.Get(e.id)
		if !ok {
			return
		}
		final := e.kind == evTxDone || e.res.StatusCode >= 200
		if final {
			slot.Data.pending--
		}
		switch e.op {
		case opInvite:
			s.onBInvite(e, slot)
		case opRefresh, opProbe:
			if final {
				s.onOutcome(e, slot)
			}
		case opRelay:
			if final {
				s.onRelayed(e, slot)
			}
		case opPass:
			if final {
				s.onPassed(e, slot)
			}
		}
		s.touch(e.id, slot)
	case evStray:
		s.onStray(e.res)
	case evResponseUDP:
		s.onResponseUDP(e.res)
	case evResponseRaw:
		s.onResponseRaw(e)
	case evUAS:
		s.onUAS(e)
	case evCDRDone:
		if slot, ok := s.tab.Get(e.id); ok {
			slot.Data.cdrDone = true
			s.touch(e.id, slot)
		}
	}
}

// touch brings the counters, the slot's life and its timer up to date after
// anything happened to a call.
func (s *shard) touch(id dialog.ID, slot *dialog.Slot[callState]) {
	st := &slot.Data
	want := countNone
	switch slot.Call.Phase {
	case session.PhaseEarly:
		want = countEarly
	case session.PhaseAnswered:
		want = countUnacked
	case session.PhaseConfirmed:
		want = countUp
	}
	if want != st.counted {
		s.count(st.counted, -1)
		s.count(want, 1)
		st.counted = want
	}
	if slot.Call.Phase == session.PhaseEnded && st.cdrDone && st.pending <= 0 {
		// DESIGN.md §4: the slot is freed only once the CDR is durable.
		_ = s.wheel.Free(slot.Timer)
		_ = s.tab.Free(id)
		s.used.Add(-1)
		return
	}
	next := slot.Call.Next()
	if next == 0 {
		_ = s.wheel.Cancel(slot.Timer)
		return
	}
	if err := s.wheel.Schedule(slot.Timer, next); err != nil {
		s.b.log.Error("schedule call timer", "call", id.String(), "error", err)
	}
}

func (s *shard) count(c uint8, d int64) {
	switch c {
	case countEarly:
		s.early.Add(d)
	case countUnacked:
		s.up.Add(d)
		s.unacked.Add(d)
	case countUp:
		s.up.Add(d)
	}
}

// onInvite takes a caller's INVITE into a slot and starts the B-leg.
func (s *shard) onInvite(e event) {
	req, tx := e.req, e.tx
	p := s.b.params.Load()
	var u *uasInvite
	if e.direct {
		u = s.newUAS(e)
	}
	if s.b.closing.Load() {
		s.answerInvite(tx, u, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return
	}
	id, slot, err := s.tab.Alloc()
	if err != nil {
		// DESIGN.md §1: a full table answers 503 with Retry-After; the
		// calls in the table are not affected. The refusal still gets a
		// CDR line (DESIGN.md §4 reason table_full), so operators can
		// count the attempts the box turned away; with no slot to free
		// there is nothing to wait for.
		s.ended[session.ReasonTableFull].Add(1)
		s.answerInvite(tx, u, req, 503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		s.refusalCDR(e, 503, session.ReasonTableFull)
		return
	}
	s.used.Add(1)
	h, err := s.wheel.Alloc(id.Index())
	if err != nil {
		// Not reachable: the wheel has a timer per slot.
		_ = s.tab.Free(id)
		s.used.Add(-1)
		s.b.log.Error("allocate call timer", "error", err)
		s.answerInvite(tx, u, req, 500, "Server Internal Error")
		return
	}
	slot.Timer = h
	st := &slot.Data
	st.inv, st.uas, st.invReq = tx, u, req
	if u != nil {
		u.id = id
	}
	st.sreq, st.allowA = e.sreq, e.allowUpdate
	st.setup = s.b.o.now()
	st.caller = req.From().Address.String()
	st.callee = req.Recipient.String()
	if ct := req.ContentType(); ct != nil {
		st.ctype = ct.Value()
	}
	a := &st.legs[legA]
	a.callID = e.callID
	a.localTag = e.tag
	a.remoteTag, _ = req.From().Params.Get("tag")
	a.localURI = req.To().Address.String()
	a.remoteURI = req.From().Address.String()
	a.remoteSeq = req.CSeq().SeqNo
	if c := req.Contact(); c != nil {
		a.target = c.Address.String()
	}
	// RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in
	// order.
	for _, h := range header.All(nil, req.Headers(), "Record-Route") {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			a.route = append(a.route, rr.Address.String())
		}
	}
	a.sdp = req.Body()
	a.network = sip.NetworkToUpper(req.Transport())
	if src, err := netip.ParseAddrPort(req.Source()); err == nil {
		a.dest = src // RFC 3581 §4: back to where the caller sent from
		a.socket = s.b.socketFor(src.Addr(), req.Recipient.Host)
	}

	b := &st.legs[legB]
	b.callID = s.b.newTag(s.idx) + "@sbcd"
	b.localTag = s.b.newTag(s.idx)
	b.localURI = st.caller
	target := sip.Uri{Scheme: "sip", User: e.rt.user, Host: e.rt.dest.Addr().String(), Port: int(e.rt.dest.Port())}
	b.remoteURI = target.String()
	b.target = b.remoteURI
	if e.rt.target != "" {
		// A registered user: the Request-URI is its Contact (RFC 3261
		// §10), the To its address of record at sbcd's host.
		b.target = e.rt.target
		host, _ := s.b.sentBy(e.rt.network)
		b.remoteURI = (&sip.Uri{Scheme: "sip", User: e.rt.user, Host: host}).String()
	}
	b.localSeq = 1
	b.network = e.rt.network
	b.dest = e.rt.dest
	b.socket = e.rt.socket

	slot.Call.Invite(s.b.mono(), p)
	if err := s.tab.Bind(id, legA, a.callID, a.localTag); err != nil {
		s.fail(id, slot, fmt.Errorf("bind a-leg: %w", err))
		return
	}
	if err := s.tab.Bind(id, legB, b.callID, b.localTag); err != nil {
		s.fail(id, slot, fmt.Errorf("bind b-leg: %w", err))
		return
	}
	if u != nil {
		// RFC 3261 §17.2.1: 100 Trying only if nothing else went to the
		// caller within 200 ms (uas.go).
		u.trying = s.b.mono() + int64(tryingDelay)
		s.uasDue(u.trying)
	} else {
		// sipgo's transaction: answer 100 at once; the B-leg may take a
		// while.
		s.answerInvite(tx, u, req, 100, "Trying")
	}
	st.offer = p.Offer(st.sreq)
	s.sendInvite(id, slot)
	s.touch(id, slot)
}

// answerInvite answers the caller's INVITE req on its transaction:
// sipgo's tx or the shard's own u, whichever is not nil. A final answer
// ends sipgo's transaction as endAfter says; respondUAS runs the shard's.
func (s *shard) answerInvite(tx *sip.ServerTx, u *uasInvite, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	if u != nil {
		s.answerUAS(u, code, reason, "", hdrs...)
		return
	}
	s.b.respond(tx, req, code, reason, hdrs)
	if code >= 200 {
		s.b.endAfter(tx, code)
	}
}

// fail ends a call sbcd could not set up.
func (s *shard) fail(id dialog.ID, slot *dialog.Slot[callState], err error) {
	s.b.log.Error("call setup", "call", id.String(), "error", err)
	if slot.Call.End(session.ReasonRejected, session.LegNone) {
		slot.Data.code = 500
		s.terminate(id, slot, session.LegNone)
	}
	s.touch(id, slot)
}

// sendInvite sends (or, after a 422, resends) the B-leg INVITE: written
// as bytes and sent by the shard's own client transaction over UDP
// (writeInvite), else built for sipgo (buildInvite).
func (s *shard) sendInvite(id dialog.ID, slot *dialog.Slot[callState]) {
	st := &slot.Data
	b := &st.legs[legB]
	st.binv, st.bbranch, st.bprov, st.cancelWait = nil, "", false, false
	if sock, ok := s.inDialogUDP(b); ok {
		branch := s.newBranch()
		buf := rtxBufPool.Get().(*bytes.Buffer)
		buf.Reset()
		s.writeInvite(buf, b, b.localSeq, branch, st.offer, st.ctype, st.legs[legA].sdp)
		st.pending++
		sent := s.startBytes(id, legB, opInvite, sip.INVITE, b.localSeq, sock, b.dest, branch, buf.Bytes())
		rtxBufPool.Put(buf)
		if sent {
			st.bbranch = branch
			return
		}
		st.pending--
	}
	req, err := s.buildInvite(st)
	if err != nil {
		s.fail(id, slot, err)
		return
	}
	st.binv = req
	s.start(id, slot, legB, opInvite, req, 0)
}

// buildInvite builds the B-leg INVITE of st for sipgo: newRequest's
// header fields, the session-timer offer (RFC 4028 §7.1), Allow and the
// caller's SDP.
func (s *shard) buildInvite(st *callState) (*sip.Request, error) {
	b := &st.legs[legB]
	req, err := s.newRequest(b, sip.INVITE, b.localSeq)
	if err != nil {
		return nil, err
	}
	addTimer(req, st.offer)
	req.AppendHeader(sip.NewHeader("Allow", allow))
	if sdp := st.legs[legA].sdp; len(sdp) > 0 {
		req.AppendHeader(sip.NewHeader("Content-Type", inviteContentType(st.ctype)))
		req.SetBody(sdp)
	}
	return req, nil
}

// inviteContentType is the Content-Type of the B-leg INVITE's body: the
// caller's, application/sdp when it gave none.
func inviteContentType(ctype string) string {
	if ctype == "" {
		return "application/sdp"
	}
	return ctype
}

// invitePending reports whether the B-leg INVITE awaits its final answer.
func (st *callState) invitePending() bool { return st.binv != nil || st.bbranch != "" }

// inviteDone forgets the B-leg INVITE: it had its final answer, or none
// will come.
func (st *callState) inviteDone() { st.binv, st.bbranch = nil, "" }

// start runs a client transaction: over UDP the shard's own (clienttx.go),
// else sipgo's in a goroutine of its own; its responses and end come back
// as events (DESIGN.md §1: nothing blocks inside a shard).
// due, when not 0, is the deadline of the refresh or probe req carries: how
// late it went out is recorded in b.late (Stats.RefreshLate).
func (s *shard) start(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID, o op, req *sip.Request, due int64) {
	slot.Data.pending++
	seq := req.CSeq().SeqNo
	if s.startUDP(id, leg, o, req, seq, due) {
		return
	}
	b := s.b
	b.traceMsg("send", req)
	go func() {
		bg := context.Background()
		base := event{id: id, leg: leg, op: o, seq: seq, req: req}
		tx, err := b.tl.Request(bg, req)
		if err != nil {
			b.log.Debug("send request", "method", string(req.Method), "error", err)
			base.kind = evTxDone
			s.post(bg, base)
			return
		}
		if due != 0 {
			// The request has been written (sipgo sends in Request).
			b.late.add(time.Duration(b.mono() - due))
		}
		b.trackClientTx(tx)
		for {
			select {
			case res := <-tx.Responses():
				b.traceMsg("recv", res)
				e := base
				e.kind, e.res = evResponse, res
				s.post(bg, e)
				if res.StatusCode >= 200 {
					switch {
					case !req.IsInvite():
						// RFC 3261 §17.1.2.2: a non-INVITE client
						// transaction stays Completed only to absorb
						// retransmissions of its final response (Timer K,
						// T4; sipgo arms its 32-s Timer_D instead). Without
						// it they reach onStrayResponse, which drops them
						// just the same, and nothing is kept.
						tx.Terminate()
					case res.IsSuccess():
						// The shard ACKs; retransmissions of the 2xx
						// reach onStrayResponse.
						tx.Terminate()
					case b.rtx.keepAck(req, res, b.udpIndexOf(req.Laddr)):
						// RFC 3261 §17.1.1.2: sipgo ACKed the non-2xx
						// answer; its Completed state (Timer D, 32 s) only
						// ACKs retransmissions of it again, which the
						// retransmission cache does now.
						tx.Terminate()
					}
					return
				}
			case <-tx.Done():
				base.kind = evTxDone
				s.post(bg, base)
				return
			}
		}
	}()
}

// onBInvite handles a response to the B-leg INVITE.
func (s *shard) onBInvite(e event, slot *dialog.Slot[callState]) {
	st := &slot.Data
	b := &st.legs[legB]
	p := s.b.params.Load()
	now := s.b.mono()
	if e.seq != b.localSeq {
		return // an earlier attempt (before a 422 retry)
	}
	ended := slot.Call.Phase != session.PhaseEarly
	if e.kind == evTxDone {
		st.inviteDone()
		if !ended && slot.Call.End(session.ReasonRejected, legB) {
			// RFC 3261 §17.1.1.2: Timer B; the caller learns 408.
			st.code = 408
			s.answerA(slot, 408, "Request Timeout", nil)
			s.terminate(e.id, slot, legB)
		}
		return
	}
	res := e.res
	code := res.StatusCode
	switch {
	case code < 200:
		st.bprov = true
		if st.cancelWait && st.invitePending() {
			// RFC 3261 §9.1: the CANCEL held back for a provisional.
			st.cancelWait = false
			s.sendCancel(e.id, slot)
			return
		}
		if code == 100 || ended {
			return
		}
		var hdrs []sip.Header
		if len(res.Body()) > 0 {
			hdrs = append(hdrs, contentType(res))
		}
		// Relay the provisional answer with sbcd's A-leg tag.
		s.answerA(slot, code, res.Reason, res.Body(), hdrs...)
	case code < 300:
		st.inviteDone()
		if to := res.To(); to != nil {
			b.remoteTag, _ = to.Params.Get("tag")
		}
		if c := res.Contact(); c != nil {
			b.target = c.Address.String()
		}
		// RFC 3261 §12.1.2: the UAC's route set is the Record-Route list
		// of the 2xx in reverse order.
		b.route = b.route[:0]
		rrs := header.All(nil, res.Headers(), "Record-Route")
		for i := len(rrs) - 1; i >= 0; i-- {
			if rr, ok := rrs[i].(*sip.RecordRouteHeader); ok {
				b.route = append(b.route, rr.Address.String())
			}
		}
		b.sdp = res.Body()
		b.established = true
		// RFC 3261 §13.2.2.4: ACK the 2xx at once.
		s.sendAck(b, e.seq)
		if ended {
			// Cancelled or shut down while the 2xx was on its way.
			s.sendBye(e.id, slot, legB)
			return
		}
		resp, err := timerValues(res).Response()
		if err != nil {
			s.b.log.Debug("callee session-timer headers", "error", err)
			resp = session.Response{}
		}
		slot.Call.StartUAC(now, legB, st.offer, resp, allowsUpdate(res), p)
		var capSE uint32
		if slot.Call.Legs[legB].Mode == session.ModeTimer {
			capSE = slot.Call.Legs[legB].SE
		}
		ans := slot.Call.StartUAS(now, legA, st.sreq, capSE, st.allowA, p)
		hdrs := []sip.Header{sip.NewHeader("Allow", allow), sip.NewHeader("Supported", "timer")}
		hdrs = append(hdrs, answerHeaders(ans)...)
		if len(b.sdp) > 0 {
			hdrs = append(hdrs, contentType(res))
		}
		st.code = code
		st.answer = s.b.o.now()
		st.legs[legA].established = true
		tx, u := st.inv, st.uas
		ok, okData := s.answerA(slot, code, res.Reason, b.sdp, hdrs...)
		slot.Call.Answered(now, p)
		if (ok != nil || okData != nil) && st.legs[legA].network == "UDP" {
			st.ok, st.okData, st.okTx, st.okUAS = ok, okData, tx, u
			st.okIvl, st.okNext = t1, now+int64(t1)
			s.watchAcks(e.id)
			if tx != nil {
				select {
				case <-tx.Done():
					// sendAccepted ended the transaction: ACKs come as
					// requests of their own (onRequest, ackDirect).
				default:
					go s.watchAck(tx)
				}
			}
		}
	default:
		st.inviteDone()
		if ended {
			return
		}
		if code == 422 {
			resp, _ := timerValues(res).Response()
			// RFC 4028 §7.3: retry with the callee's Min-SE, higher CSeq,
			// same Call-ID; the 422 never reaches the caller.
			if off, ok := session.Retry422(st.offer, resp.MinSE, st.tries422); ok {
				st.tries422++
				st.offer = off
				b.localSeq++
				s.sendInvite(e.id, slot)
				return
			}
			// The callee's demands cannot be met: the caller gets 500,
			// never the 422 (DESIGN.md §2).
			code = 500
			res.Reason = "Session Interval Negotiation Failed"
		}
		if slot.Call.End(session.ReasonRejected, legB) {
			st.code = code
			s.answerA(slot, code, res.Reason, nil)
			s.terminate(e.id, slot, legB)
		}
	}
}

// answerA answers the caller's INVITE with sbcd's A-leg tag and Contact.
// What a 2xx needs for its retransmission comes back: the response on
// sipgo's transaction, or its bytes on the shard's own (okData).
func (s *shard) answerA(slot *dialog.Slot[callState], code int, reason string, body []byte, hdrs ...sip.Header) (ok *sip.Response, okData []byte) {
	st := &slot.Data
	if st.inv == nil && st.uas == nil {
		return nil, nil
	}
	if u := st.uas; u != nil {
		var all [8]sip.Header
		h, tag := all[:0], ""
		if code > 100 {
			tag = st.legs[legA].localTag
			if code < 300 {
				h = append(h, s.b.contactLine(st.legs[legA].network))
			}
		}
		h = append(h, hdrs...)
		w := rtxBufPool.Get().(*bytes.Buffer)
		defer rtxBufPool.Put(w)
		w.Reset()
		writeResponse(w, st.invReq, code, reason, tag, body, h...)
		if code >= 200 && code < 300 {
			okData = bytes.Clone(w.Bytes())
		}
		s.respondUAS(u, code, w.Bytes())
		if code >= 200 {
			st.uas, st.invReq = nil, nil
		}
		return nil, okData
	}
	res := sip.NewResponseFromRequest(st.invReq, code, reason, body)
	if code > 100 {
		if to := res.To(); to != nil {
			to.Params.Add("tag", st.legs[legA].localTag)
		}
		if code < 300 {
			res.AppendHeader(s.contact(st.legs[legA].network))
		}
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if code >= 200 && code < 300 && s.b.sendAccepted(st.inv, res) {
		st.inv, st.invReq = nil, nil
		return res, nil
	}
	s.b.send(st.inv, res)
	if code >= 200 {
		s.b.endAfter(st.inv, code)
		st.inv, st.invReq = nil, nil
	}
	return res, nil
}

// onCancel handles the caller's CANCEL (RFC 3261 §9.2): sipgo already
// answered 200 to it and 487 to the INVITE.
func (s *shard) onCancel(id dialog.ID, slot *dialog.Slot[callState]) {
	if slot.Call.Phase != session.PhaseEarly {
		return // the 2xx crossed the CANCEL: the call goes on
	}
	if slot.Call.End(session.ReasonCancelled, legA) {
		if slot.Data.inv != nil {
			// sipgo answered 487 (RFC 3261 §9.2); it ends at the ACK.
			s.b.endAfter(slot.Data.inv, 487)
		}
		slot.Data.inv, slot.Data.invReq = nil, nil
		slot.Data.code = 487
		s.terminate(id, slot, legA)
	}
}

// terminate tears down both legs of a call that just ended (skip is the leg
// whose BYE ended it) and writes its CDR. Every timeout ends with BYE on
// both legs (DESIGN.md §2).
func (s *shard) terminate(id dialog.ID, slot *dialog.Slot[callState], skip session.LegID) {
	st := &slot.Data
	st.end = s.b.o.now()
	st.ackDone()
	for i := range st.reok {
		st.reok[i].done()
	}
	r := slot.Call.Reason
	s.ended[r&31].Add(1)
	if st.inv != nil || st.uas != nil {
		code, reason := 500, "Server Internal Error"
		switch r {
		case session.ReasonShutdown:
			code, reason = 480, "Temporarily Unavailable"
		case session.ReasonEarlyTimeout:
			code, reason = 408, "Request Timeout"
		}
		st.code = code
		s.answerA(slot, code, reason, nil)
	} else if st.legs[legA].established && skip != legA {
		s.sendBye(id, slot, legA)
	}
	if st.invitePending() {
		// RFC 3261 §9.1: a CANCEL only after a provisional answer; until
		// then it waits (onBInvite), and a final answer that comes first
		// makes it needless (a 2xx is ACKed and BYEd).
		if st.bprov {
			s.sendCancel(id, slot)
		} else {
			st.cancelWait = true
		}
	} else if st.legs[legB].established && skip != legB {
		s.sendBye(id, slot, legB)
	}
	for i := range st.relay {
		if rl := &st.relay[i]; rl.tx != nil {
			s.b.respond(rl.tx, rl.req, 487, "Request Terminated", nil)
			rl.tx.TerminateGracefully()
			*rl = relayState{}
		}
	}
	for _, p := range st.pass {
		// RFC 3261 §15.1.2: the dialog is gone.
		s.b.respond(p.tx, p.req, 481, "Call/Transaction Does Not Exist", nil)
		p.tx.TerminateGracefully()
	}
	st.pass = nil
	s.writeCDR(id, slot)
}

func (s *shard) writeCDR(id dialog.ID, slot *dialog.Slot[callState]) {
	st := &slot.Data
	if s.b.o.CDR == nil {
		st.cdrDone = true
		return
	}
	rec := &cdr.Record{
		CallID: st.legs[legA].callID, Caller: st.caller, Callee: st.callee,
		Source: st.legs[legA].dest, Transport: strings.ToLower(st.legs[legA].network),
		SetupTime: st.setup, AnswerTime: st.answer, EndTime: st.end,
		Reason: slot.Call.Reason, EndedBy: endedBy(slot.Call.Reason), Code: st.code,
		A: cdr.LegFields(&slot.Call.Legs[session.LegA]), B: cdr.LegFields(&slot.Call.Legs[session.LegB]),
	}
	done := func(err error) {
		if err != nil {
			s.b.log.Error("cdr", "call_id", rec.CallID, "error", err)
		}
		s.postLater(event{kind: evCDRDone, id: id})
	}
	if err := s.b.o.CDR.Append(rec, done); err != nil {
		s.b.log.Error("cdr append", "call_id", rec.CallID, "error", err)
		st.cdrDone = true
	}
}

// endedBy names who ended a call, for the CDR.
// refusalCDR writes the CDR of a call refused before it got a slot.
func (s *shard) refusalCDR(e event, code int, reason session.Reason) {
	if s.b.o.CDR == nil {
		return
	}
	now := s.b.o.now()
	rec := &cdr.Record{
		CallID: e.req.CallID().Value(), Caller: e.req.From().Address.String(), Callee: e.req.Recipient.String(),
		Transport: strings.ToLower(e.req.Transport()),
		SetupTime: now, EndTime: now, Reason: reason, EndedBy: cdr.EndedBySBCD, Code: code,
	}
	if src, err := netip.ParseAddrPort(e.req.Source()); err == nil {
		rec.Source = src
	}
	if err := s.b.o.CDR.Append(rec, nil); err != nil {
		s.b.log.Error("cdr append", "call_id", rec.CallID, "error", err)
	}
}

func endedBy(r session.Reason) cdr.EndedBy {
	switch r {
	case session.ReasonCallerBye, session.ReasonCancelled:
		return cdr.EndedByCaller
	case session.ReasonCalleeBye, session.ReasonRejected:
		return cdr.EndedByCallee
	}
	return cdr.EndedBySBCD
}

// do carries out an action of the session-timer state machine.
func (s *shard) do(id dialog.ID, slot *dialog.Slot[callState], a session.Action) {
	switch a.Kind {
	case session.ActRefresh:
		s.sendRefresh(id, slot, a.Leg, opRefresh, a.Method, a.Offer, a.Due)
	case session.ActProbe:
		s.sendRefresh(id, slot, a.Leg, opProbe, session.MethodInvite, session.Offer{}, a.Due)
	case session.ActEnd:
		s.terminate(id, slot, session.LegNone)
	}
}

// sendRefresh sends a session refresh (RFC 4028 §7.4, §8.1: UPDATE without
// body or re-INVITE with the unchanged SDP, Session-Expires with
// refresher=uac) or a probe on leg. due is the deadline it answers (0: none,
// e.g. a retry), against which b.late measures when it went out.
func (s *shard) sendRefresh(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID, o op, m session.Method, offer session.Offer, due int64) {
	st := &slot.Data
	l := &st.legs[leg]
	method := sip.INVITE
	if m == session.MethodUpdate {
		method = sip.UPDATE
	}
	l.localSeq++
	req, err := s.newRequest(l, method, l.localSeq)
	if err != nil {
		s.b.log.Error("build refresh", "call", id.String(), "error", err)
		s.outcome(id, slot, leg, session.Outcome{})
		return
	}
	if offer.SE != 0 {
		addTimer(req, offer)
	}
	if method == sip.INVITE {
		// The SDP sbcd last sent on this leg: the other leg's, unchanged
		// (same o= version: no media change).
		if sdp := st.legs[leg^1].sdp; len(sdp) > 0 {
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			req.SetBody(sdp)
		}
	}
	st.opSeq[leg] = l.localSeq
	s.start(id, slot, leg, o, req, due)
}

// outcome reports the end of a refresh or probe to the state machine and
// does what it asks.
func (s *shard) outcome(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID, o session.Outcome) {
	a := slot.Call.Outcome(s.b.mono(), leg, o, s.b.params.Load(), s.b.o.rand())
	if a.Kind != session.ActNone {
		s.do(id, slot, a)
	}
}

// onOutcome handles the final response (or the timeout) of a refresh or
// probe sbcd sent.
func (s *shard) onOutcome(e event, slot *dialog.Slot[callState]) {
	st := &slot.Data
	if e.seq != st.opSeq[e.leg] {
		return
	}
	o := session.Outcome{}
	if e.kind == evResponse {
		o = s.readOutcome(e, slot)
	}
	s.outcome(e.id, slot, e.leg, o)
}

// readOutcome turns a final response to a request sbcd sent on e.leg into
// an Outcome, ACKing a 2xx to a re-INVITE and taking its target refresh.
func (s *shard) readOutcome(e event, slot *dialog.Slot[callState]) session.Outcome {
	res := e.res
	o := session.Outcome{Code: res.StatusCode}
	l := &slot.Data.legs[e.leg]
	if res.IsSuccess() {
		if e.req.IsInvite() {
			s.sendAck(l, e.seq) // RFC 3261 §13.2.2.4
		}
		if c := res.Contact(); c != nil {
			l.target = c.Address.String() // RFC 3261 §12.2.1.2
		}
	}
	if res.IsSuccess() || res.StatusCode == 422 {
		r, err := timerValues(res).Response()
		if err != nil {
			s.b.log.Debug("session-timer headers of a response", "error", err)
		}
		o.Response = r
	}
	if h := header.First(res.Headers(), "Retry-After"); h != nil {
		if n, err := parseUint(h.Value()); err == nil {
			o.RetryAfter = n
		}
	}
	return o
}

// sendBye ends the dialog of leg (RFC 3261 §15.1.1).
func (s *shard) sendBye(id dialog.ID, slot *dialog.Slot[callState], leg session.LegID) {
	l := &slot.Data.legs[leg]
	if !l.established {
		return
	}
	l.established = false
	l.localSeq++
	if sock, ok := s.inDialogUDP(l); ok {
		slot.Data.pending++
		if s.startWritten(id, leg, opBye, l, sip.BYE, l.localSeq, sock) {
			return
		}
		slot.Data.pending--
	}
	req, err := s.newRequest(l, sip.BYE, l.localSeq)
	if err != nil {
		s.b.log.Error("build bye", "call", id.String(), "error", err)
		return
	}
	s.start(id, slot, leg, opBye, req, 0)
}

// sendCancel cancels the B-leg INVITE (RFC 3261 §9.1).
func (s *shard) sendCancel(id dialog.ID, slot *dialog.Slot[callState]) {
	st := &slot.Data
	inv, branch := st.binv, st.bbranch
	st.inviteDone()
	if branch != "" {
		// Written as the INVITE was: its branch, Request-URI, Call-ID,
		// From, To and CSeq number, from the same leg state.
		b := &st.legs[legB]
		if sock, ok := s.inDialogUDP(b); ok {
			buf := rtxBufPool.Get().(*bytes.Buffer)
			defer rtxBufPool.Put(buf)
			buf.Reset()
			s.writeRequestHead(buf, b, sip.CANCEL, b.localSeq, branch, "")
			buf.WriteString("Content-Length: 0\r\n\r\n")
			st.pending++
			if !s.startBytes(id, legB, opCancel, sip.CANCEL, b.localSeq, sock, b.dest, branch, buf.Bytes()) {
				st.pending--
			}
		}
		return
	}
	c := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	// RFC 3261 §9.1: the same top Via (branch), Request-URI, Call-ID,
	// From, To and CSeq number as the INVITE.
	c.AppendHeader(inv.Via().Clone())
	for _, h := range header.All(nil, inv.Headers(), "Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	c.AppendHeader(sip.HeaderClone(inv.From()))
	c.AppendHeader(sip.HeaderClone(inv.To()))
	c.AppendHeader(sip.HeaderClone(inv.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(sip.NewHeader("Supported", "timer"))
	c.SetBody(nil)
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	c.Laddr = inv.Laddr
	s.start(id, slot, legB, opCancel, c, 0)
}

// sendAck acknowledges a 2xx to an INVITE sbcd sent on l (RFC 3261
// §13.2.2.4: same CSeq number, method ACK).
func (s *shard) sendAck(l *legState, seq uint32) {
	if sock, ok := s.inDialogUDP(l); ok {
		// Written, not built (writeRequest): no transaction keeps it.
		buf := rtxBufPool.Get().(*bytes.Buffer)
		defer rtxBufPool.Put(buf)
		buf.Reset()
		s.writeRequest(buf, l, sip.ACK, seq, s.newBranch())
		s.b.traceData("send", buf.Bytes())
		s.writeUDP(sock, l.dest, buf.Bytes())
		return
	}
	ack, err := s.newRequest(l, sip.ACK, seq)
	if err != nil {
		s.b.log.Error("build ack", "error", err)
		return
	}
	if dest, err := netip.ParseAddrPort(ack.Destination()); err == nil && l.network != "TCP" && len(s.b.udp) > 0 {
		// Over UDP straight from the listening socket, as newRequest
		// chose it (Laddr): an ACK of a 2xx is no transaction (§17).
		s.sendUDP(s.b.udpIndexOf(ack.Laddr), dest, ack, nil)
		return
	}
	s.b.traceMsg("send", ack)
	if err := s.b.tp.WriteMsg(ack); err != nil {
		s.b.log.Debug("send ack", "error", err)
	}
}

// onStray ACKs a retransmitted 2xx again (RFC 3261 §13.2.2.4).
func (s *shard) onStray(res *sip.Response) {
	tag, _ := res.From().Params.Get("tag")
	if res.CallID() == nil {
		return
	}
	id, leg, ok := s.tab.Lookup(res.CallID().Value(), tag)
	if !ok {
		return
	}
	slot, _ := s.tab.Get(id)
	l := &slot.Data.legs[leg]
	if l.remoteTag == "" || !l.established {
		return
	}
	s.sendAck(l, res.CSeq().SeqNo)
}
