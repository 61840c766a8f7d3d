package dialog

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"sbcd/timers"
	"sbcd/timers/session"
)

// This file drives a timing wheel, a Table and session.Call together in
// virtual time, the way a shard of sbcd will (DESIGN.md §1 "Concurrency
// model"): one owner processes the events of its calls (new INVITEs, ACKs,
// outcomes of refresh transactions) in time order, interleaved with the
// expiries of its wheel, which it advances every 10 ms.

const simTick = 10 * time.Millisecond

type simKind uint8

const (
	evInvite  simKind = iota // call n arrives: set up both legs and answer
	evAck                    // the caller's ACK of the 2xx
	evOutcome                // a refresh transaction sbcd sent has ended
)

type simEvent struct {
	at      int64
	seq     uint64 // FIFO among events of the same time
	kind    simKind
	call    int
	leg     session.LegID
	outcome session.Outcome
}

type eventQueue []simEvent

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	return q[i].at < q[j].at || (q[i].at == q[j].at && q[i].seq < q[j].seq)
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// simCall is what the test records about call n; the shard itself only
// has the table.
type simCall struct {
	id        ID
	answered  int64
	ended     int64 // 0 while up
	reason    session.Reason
	endedBy   session.LegID
	sent      [2][]int64 // when each refresh was sent, per leg
	refreshes [2]uint32  // RefreshesSent at the end
}

// network says how the far end of leg answers a refresh sbcd sent: after
// delay, with outcome; ok=false means no answer ever comes back.
type network func(leg session.LegID) (delay time.Duration, o session.Outcome, ok bool)

// shard is the test's stand-in for a shard goroutine of the sip layer.
type shard struct {
	t      *testing.T
	p      session.Params
	wheel  *timers.Wheel
	tab    *Table[struct{}]
	rnd    *rand.Rand
	now    int64 // virtual time of the event or tick being handled
	tick   int64 // the last tick the wheel was advanced to
	seq    uint64
	events eventQueue

	// calleeRefresher is the refresher parameter of the callee's 2xx.
	calleeRefresher session.Refresher
	net             network

	calls    []simCall
	byID     map[ID]int
	expired  []timers.Handle
	acts     []session.Action
	late     int // outcomes that found their call gone
	maxLate  int64
	refTotal int
}

func newShard(t *testing.T, calls int, p session.Params) *shard {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	w, err := timers.New(timers.Options{Capacity: calls, Tick: simTick, Start: 0})
	if err != nil {
		t.Fatal(err)
	}
	return &shard{
		t:     t,
		p:     p,
		wheel: w,
		tab:   mustNew[struct{}](t, Options{Capacity: calls}),
		rnd:   rand.New(rand.NewPCG(4028, 5057)),
		calls: make([]simCall, calls),
		byID:  map[ID]int{},
	}
}

func (sh *shard) post(at int64, e simEvent) {
	e.at, e.seq = at, sh.seq
	sh.seq++
	heap.Push(&sh.events, e)
}

func keyOf(n int, leg session.LegID) (callID, tag string) {
	if leg == session.LegA {
		return fmt.Sprintf("%08x-%d@caller.example.com", uint32(n)*2654435761, n), fmt.Sprintf("as%d", n)
	}
	return fmt.Sprintf("%016x@sbcd.example.net", uint64(n)*0x9e3779b97f4a7c15), fmt.Sprintf("bs%d", n)
}

// run processes events and wheel ticks in time order up to until.
func (sh *shard) run(until int64) {
	for {
		nextTick := sh.tick + int64(simTick)
		if len(sh.events) > 0 && sh.events[0].at <= nextTick && sh.events[0].at <= until {
			e := heap.Pop(&sh.events).(simEvent)
			sh.now = e.at
			sh.handle(e)
			continue
		}
		if nextTick > until {
			sh.now = until
			return
		}
		sh.now, sh.tick = nextTick, nextTick
		sh.expired = sh.wheel.Advance(sh.now, sh.expired[:0])
		for _, h := range sh.expired {
			sh.expire(h)
		}
	}
}

// expire handles one timer of the wheel: the cookie is the slot index.
func (sh *shard) expire(h timers.Handle) {
	idx, ok := sh.wheel.Data(h)
	if !ok {
		return // freed by an earlier expiry of this batch
	}
	id, s, ok := sh.tab.At(idx)
	if !ok || s.Timer != h {
		sh.t.Fatalf("timer %v of slot %d outlived its call", h, idx)
	}
	due := [2]int64{s.Call.Legs[0].Due, s.Call.Legs[1].Due}
	sh.acts = s.Call.Fire(sh.now, &sh.p, sh.acts[:0])
	for _, a := range sh.acts {
		if a.Kind == session.ActRefresh {
			// DESIGN.md §10: refreshes go out on time (here: within the
			// wheel's tick of the leg's due time).
			late := sh.now - due[a.Leg]
			if late < 0 || late >= int64(simTick) {
				sh.t.Fatalf("call %d leg %v: refresh sent %v after its due time (now %v due %v answered %v legs %+v)", sh.byID[id], a.Leg, time.Duration(late), time.Duration(sh.now), due, time.Duration(sh.calls[sh.byID[id]].answered), s.Call.Legs)
			}
			sh.maxLate = max(sh.maxLate, late)
		}
	}
	sh.carry(id, s)
}

func (sh *shard) handle(e simEvent) {
	switch e.kind {
	case evInvite:
		sh.invite(e.call)
	case evAck:
		callID, tag := keyOf(e.call, session.LegA)
		id, leg, ok := sh.tab.Lookup(callID, tag)
		if !ok || leg != session.LegA {
			sh.t.Fatalf("ACK of call %d: no dialog", e.call)
		}
		s, _ := sh.tab.Get(id)
		s.Call.Acked()
		sh.acts = sh.acts[:0]
		sh.carry(id, s)
	case evOutcome:
		callID, tag := keyOf(e.call, e.leg)
		id, leg, ok := sh.tab.Lookup(callID, tag)
		if !ok {
			sh.late++ // the call ended meanwhile: a late answer is dropped
			return
		}
		if leg != e.leg {
			sh.t.Fatalf("call %d: key of leg %v found leg %v", e.call, e.leg, leg)
		}
		s, ok := sh.tab.Get(id)
		if !ok {
			sh.t.Fatalf("call %d: Lookup returned stale %v", e.call, id)
		}
		sh.acts = sh.acts[:0]
		if a := s.Call.Outcome(sh.now, leg, e.outcome, &sh.p, sh.rnd.Uint32()); a.Kind != session.ActNone {
			sh.acts = append(sh.acts, a)
		}
		sh.carry(id, s)
	}
}

// invite sets call n up the way the sip layer will: slot, keys, timer, the
// B-leg answered by the callee, the A-leg answered by sbcd.
func (sh *shard) invite(n int) {
	t, p, now := sh.t, &sh.p, sh.now
	id, s, err := sh.tab.Alloc()
	if err != nil {
		t.Fatalf("call %d: Alloc: %v", n, err)
	}
	for _, leg := range []session.LegID{session.LegA, session.LegB} {
		callID, tag := keyOf(n, leg)
		if err := sh.tab.Bind(id, leg, callID, tag); err != nil {
			t.Fatalf("call %d: Bind %v: %v", n, leg, err)
		}
	}
	if s.Timer, err = sh.wheel.Alloc(id.Index()); err != nil {
		t.Fatalf("call %d: wheel Alloc: %v", n, err)
	}
	sh.byID[id] = n
	sh.calls[n] = simCall{id: id, answered: now}

	// The caller asks for 90 s and supports the extension, without
	// choosing a refresher: sbcd chooses itself (RFC 4028 §9 Table 2).
	req, reject := p.Check(session.Request{SE: 90, MinSE: 90, Supported: true})
	if reject != 0 {
		t.Fatalf("call %d: 422 with Min-SE %d", n, reject)
	}
	s.Call.Invite(now, p)
	offer := p.Offer(req)
	s.Call.StartUAC(now, session.LegB, offer, session.Response{SE: 90, Refresher: sh.calleeRefresher}, true, p)
	ans := s.Call.StartUAS(now, session.LegA, req, s.Call.Legs[session.LegB].SE, true, p)
	if ans.SE != 90 || ans.Refresher != session.RefresherUAS {
		t.Fatalf("call %d: 2xx to the caller carries %+v, want SE 90, refresher=uas (sbcd)", n, ans)
	}
	s.Call.Answered(now, p)
	sh.post(now+int64(20*time.Millisecond), simEvent{kind: evAck, call: n})
	sh.acts = sh.acts[:0]
	sh.carry(id, s)
}

// carry carries out the actions in sh.acts for call id, then keeps the
// call's timer at Call.Next (or cancels it when nothing is due).
func (sh *shard) carry(id ID, s *Slot[struct{}]) {
	n := sh.byID[id]
	c := &sh.calls[n]
	for _, a := range sh.acts {
		switch a.Kind {
		case session.ActRefresh:
			c.sent[a.Leg] = append(c.sent[a.Leg], sh.now)
			sh.refTotal++
			if delay, o, ok := sh.net(a.Leg); ok {
				sh.post(sh.now+int64(delay), simEvent{kind: evOutcome, call: n, leg: a.Leg, outcome: o})
			}
		case session.ActEnd:
			// BYE on both legs and a CDR would go out here.
			c.ended, c.reason, c.endedBy = sh.now, a.Reason, a.Leg
			c.refreshes = [2]uint32{s.Call.Legs[0].RefreshesSent, s.Call.Legs[1].RefreshesSent}
			if err := sh.wheel.Free(s.Timer); err != nil {
				sh.t.Fatalf("call %d: wheel Free: %v", n, err)
			}
			if err := sh.tab.Free(id); err != nil {
				sh.t.Fatalf("call %d: Free: %v", n, err)
			}
			delete(sh.byID, id)
			return
		default:
			sh.t.Fatalf("call %d: unexpected action %+v", n, a)
		}
	}
	var err error
	if next := s.Call.Next(); next == 0 {
		err = sh.wheel.Cancel(s.Timer)
	} else {
		err = sh.wheel.Schedule(s.Timer, next)
	}
	if err != nil {
		sh.t.Fatalf("call %d: timer: %v", n, err)
	}
}

func answer2xx(time.Duration) network {
	return func(session.LegID) (time.Duration, session.Outcome, bool) {
		return 50 * time.Millisecond, session.Outcome{Code: 200, Response: session.Response{SE: 90, Refresher: session.RefresherUAC}}, true
	}
}

// startCalls posts n INVITEs, one every 7.3 ms (off the tick grid, so that
// deadlines get rounded up by the wheel).
func (sh *shard) startCalls(n int) {
	for i := range n {
		sh.post(int64(time.Second)+int64(i)*int64(7300*time.Microsecond), simEvent{kind: evInvite, call: i})
	}
}

const simCalls = 1000

func simParams() session.Params {
	p := session.DefaultParams()
	p.TTL = 90 * time.Second
	return p
}

// TestShardRefreshesAnswered: sbcd refreshes both legs of 1,000 calls with
// SE 90, every refresh answered 2xx after 50 ms: after 10 virtual minutes
// every call is up and every leg sent exactly 13 refreshes.
func TestShardRefreshesAnswered(t *testing.T) {
	sh := newShard(t, simCalls, simParams())
	sh.calleeRefresher = session.RefresherUAC // the callee leaves it to sbcd
	sh.net = answer2xx(50 * time.Millisecond)
	sh.startCalls(simCalls)
	sh.run(int64(10 * time.Minute))

	// RFC 4028 §10 with update_segment 2: the first refresh goes out 45 s
	// after the answer, each next one 45 s after the previous one's 2xx,
	// that is every 45.05 s (plus at most a 10 ms tick of rounding each
	// time). Calls are answered between 1 s and 8.3 s, so the 13th refresh
	// is sent by 8.3+45+12*45.06 = 594 s and the 14th not before
	// 1+45+13*45.05 = 631.7 s: exactly 13 within 600 s, about
	// 10 min/(0.75 min) as expected.
	const want = 13
	if sh.tab.Len() != simCalls || sh.wheel.ArmedLen() != simCalls {
		t.Fatalf("calls up %d, timers armed %d; want %d", sh.tab.Len(), sh.wheel.ArmedLen(), simCalls)
	}
	for n, c := range sh.calls {
		s, ok := sh.tab.Get(c.id)
		if !ok || c.ended != 0 {
			t.Fatalf("call %d ended at %v with %v", n, time.Duration(c.ended), c.reason)
		}
		if s.Call.Phase != session.PhaseConfirmed {
			t.Fatalf("call %d in phase %v", n, s.Call.Phase)
		}
		for leg := range 2 {
			if got := s.Call.Legs[leg].RefreshesSent; got != want || len(c.sent[leg]) != want {
				t.Fatalf("call %d leg %d: %d refreshes sent (%d seen), want %d", n, leg, got, len(c.sent[leg]), want)
			}
			if first := c.sent[leg][0] - c.answered; first < int64(45*time.Second) || first >= int64(45*time.Second+simTick) {
				t.Fatalf("call %d leg %d: first refresh %v after the answer, want 45 s", n, leg, time.Duration(first))
			}
		}
	}
	if sh.late != 0 {
		t.Fatalf("%d outcomes found no call", sh.late)
	}
	t.Logf("%d refreshes, latest %v after its due time", sh.refTotal, time.Duration(sh.maxLate))
}

// TestShardCalleeStopsAnswering: the far end of the B-leg stops answering;
// each refresh sbcd sends there times out after 32 s (Timer F, 64*T1), and
// RFC 4028 §10 ends the call: session_timeout, at refresh time + 32 s.
func TestShardCalleeStopsAnswering(t *testing.T) {
	sh := newShard(t, simCalls, simParams())
	sh.calleeRefresher = session.RefresherUAC
	ok2xx := answer2xx(50 * time.Millisecond)
	sh.net = func(leg session.LegID) (time.Duration, session.Outcome, bool) {
		if leg == session.LegB {
			return session.TransactionTimeout, session.Outcome{Code: 0}, true
		}
		return ok2xx(leg)
	}
	sh.startCalls(simCalls)
	sh.run(int64(5 * time.Minute))

	if sh.tab.Len() != 0 || sh.wheel.Len() != 0 {
		t.Fatalf("calls left %d, timers left %d; want 0, 0", sh.tab.Len(), sh.wheel.Len())
	}
	for n, c := range sh.calls {
		if c.reason != session.ReasonSessionTimeout || c.endedBy != session.LegB {
			t.Fatalf("call %d ended by leg %v with %v, want session_timeout on B", n, c.endedBy, c.reason)
		}
		if len(c.sent[session.LegB]) != 1 || c.refreshes[session.LegB] != 1 {
			t.Fatalf("call %d: %d B-leg refreshes, want 1", n, len(c.sent[session.LegB]))
		}
		if got, want := c.ended, c.sent[session.LegB][0]+int64(32*time.Second); got != want {
			t.Fatalf("call %d ended at %v, want refresh time + 32 s = %v", n, time.Duration(got), time.Duration(want))
		}
		if d := c.ended - c.answered; d < int64(77*time.Second) || d >= int64(77*time.Second+simTick) {
			t.Fatalf("call %d ended %v after the answer, want 45 s + 32 s", n, time.Duration(d))
		}
	}
}

// TestShardCalleeRefresherSilent: the B-leg's endpoint is the refresher
// (refresher=uas in its 2xx) and never refreshes: sbcd ends each call at
// SE − min(32, SE/3) = 60 s after the answer (RFC 4028 §10), within one
// wheel tick (DESIGN.md §10: within 100 ms).
func TestShardCalleeRefresherSilent(t *testing.T) {
	sh := newShard(t, simCalls, simParams())
	sh.calleeRefresher = session.RefresherUAS
	sh.net = answer2xx(50 * time.Millisecond)
	sh.startCalls(simCalls)
	sh.run(int64(5 * time.Minute))

	if sh.tab.Len() != 0 || sh.wheel.Len() != 0 {
		t.Fatalf("calls left %d, timers left %d; want 0, 0", sh.tab.Len(), sh.wheel.Len())
	}
	want := int64(session.TeardownAfter(90 * time.Second))
	if want != int64(60*time.Second) {
		t.Fatalf("TeardownAfter(90 s) = %v, want 60 s", time.Duration(want))
	}
	for n, c := range sh.calls {
		if c.reason != session.ReasonSessionTimeout || c.endedBy != session.LegB {
			t.Fatalf("call %d ended by leg %v with %v, want session_timeout on B", n, c.endedBy, c.reason)
		}
		if d := c.ended - c.answered; d < want || d >= want+int64(simTick) {
			t.Fatalf("call %d ended %v after the answer, want 60 s (+ < 1 tick)", n, time.Duration(d))
		}
		if len(c.sent[session.LegB]) != 0 || len(c.sent[session.LegA]) != 1 {
			t.Fatalf("call %d: refreshes sent A %d, B %d; want 1, 0", n, len(c.sent[session.LegA]), len(c.sent[session.LegB]))
		}
	}
	if sh.late != 0 {
		t.Fatalf("%d outcomes found no call", sh.late)
	}
}
