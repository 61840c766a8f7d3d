package keepalive

import (
	"fmt"
	"math/bits"
	"net/netip"
)

// EventKind says what the owner has to do for an Event.
type EventKind uint8

const (
	// Ping: send one keep-alive (Params.Mode) to Source over Flow now.
	Ping EventKind = iota + 1
	// Expired: the registration's expiry passed; the binding was removed.
	Expired
	// Evicted: in ModeOptions, MaxFailures consecutive pings went
	// unanswered; the binding was removed.
	Evicted
)

// String returns "ping", "expired" or "evicted".
func (k EventKind) String() string {
	switch k {
	case Ping:
		return "ping"
	case Expired:
		return "expired"
	case Evicted:
		return "evicted"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one thing Advance asks the owner to do. For Expired and Evicted
// the binding is already gone (its ID is stale); Source and Flow say which
// one it was.
type Event struct {
	ID     ID
	Kind   EventKind
	Flow   uint32
	Source netip.AddrPort
}

// Stats is a snapshot for status pages and LEDs.
type Stats struct {
	Bindings    int    // bindings in the table
	NATed       int    // of which NATed
	PingsSent   uint64 // Ping events emitted, cumulative
	Evictions   uint64 // Evicted events, cumulative
	Expirations uint64 // Expired events, cumulative
}

// Stats returns the counters.
func (t *Table) Stats() Stats {
	return Stats{
		Bindings:    t.n,
		NATed:       t.nated,
		PingsSent:   t.pings,
		Evictions:   t.evictions,
		Expirations: t.expirations,
	}
}

// setTicks installs the schedule of p with tick 0 due at start, growing the
// per-slot arrays when p needs more slots than they have. The caller fills
// head and load and builds the buckets.
func (t *Table) setTicks(p Params, start int64) {
	b := int(p.ticks())
	if b > len(t.head) {
		t.head = make([]uint32, b)
		t.load = make([]uint32, b)
		t.bnext = make([]uint32, b)
		t.bprev = make([]uint32, b)
	}
	t.p = p
	t.lag = p.maxLag()
	t.interval = int64(p.SendInterval)
	t.nticks = uint32(b)
	t.start = start
	t.next = 0
	t.mid = false
	t.cur = none
}

// buildBuckets sorts the tick slots into lists by load. Each list is in van
// der Corput order (slot = reverse(r)/2^k × B for r = 0, 1, 2, ..., first
// occurrence wins), so slots of equal load are handed out spread over the
// period: the first two at 0 and 1/2 of it, the next two at 1/4 and 3/4, and
// so on.
func (t *Table) buildBuckets() {
	for l := range t.bucket {
		t.bucket[l] = none
	}
	b := t.nticks
	for s := range b {
		t.bnext[s] = none // not linked yet
	}
	t.minLoad = ^uint32(0)
	k := uint(bits.Len32(b - 1)) // 2^k >= b
	for r := uint32(0); r < 1<<k; r++ {
		v := uint64(bits.Reverse32(r) >> (32 - k))
		s := uint32(v * uint64(b) >> k)
		if t.bnext[s] != none {
			continue
		}
		t.bucketLink(s, false)
		t.minLoad = min(t.minLoad, t.load[s])
	}
}

func (t *Table) bucketUnlink(s uint32) {
	l := t.load[s]
	n, p := t.bnext[s], t.bprev[s]
	if n == s {
		t.bucket[l] = none
		return
	}
	t.bnext[p] = n
	t.bprev[n] = p
	if t.bucket[l] == s {
		t.bucket[l] = n
	}
}

// bucketLink adds s to the list of its load, at the front (taken next) or
// at the back.
func (t *Table) bucketLink(s uint32, front bool) {
	l := t.load[s]
	h := t.bucket[l]
	if h == none {
		t.bnext[s], t.bprev[s] = s, s
		t.bucket[l] = s
		return
	}
	tail := t.bprev[h]
	t.bnext[s], t.bprev[s] = h, tail
	t.bnext[tail] = s
	t.bprev[h] = s
	if front {
		t.bucket[l] = s
	}
}

// place gives binding i the least-loaded tick slot.
func (t *Table) place(i uint32) {
	s := t.bucket[t.minLoad]
	t.bucketUnlink(s)
	t.load[s]++
	t.bucketLink(s, false)
	if t.bucket[t.minLoad] == none {
		t.minLoad++
	}
	t.link(i, s)
}

// link puts binding i at the head of tick slot s. While slot s is being
// visited a binding linked to it waits for the next round.
func (t *Table) link(i, s uint32) {
	e := &t.e[i]
	e.tick = s
	e.prev = none
	e.next = t.head[s]
	if e.next != none {
		t.e[e.next].prev = i
	}
	t.head[s] = i
}

// unplace takes binding i out of its tick slot; the hole goes to the front
// of its load list, so the next new binding fills it.
func (t *Table) unplace(i uint32) {
	e := &t.e[i]
	s := e.tick
	if t.mid && t.cur == i {
		t.cur = e.next
	}
	if e.prev != none {
		t.e[e.prev].next = e.next
	} else {
		t.head[s] = e.next
	}
	if e.next != none {
		t.e[e.next].prev = e.prev
	}
	t.bucketUnlink(s)
	t.load[s]--
	t.bucketLink(s, true)
	if t.load[s] < t.minLoad {
		t.minLoad = t.load[s]
	}
}

// maxLag is how far behind its schedule the pacer catches up: 1 % of the
// period or 10 send intervals, whichever is longer, but at most half a
// period. A pacer further behind shifts its schedule instead (see Table).
func (p Params) maxLag() int64 {
	return min(max(int64(p.Period)/100, 10*int64(p.SendInterval)), int64(p.Period)/2)
}

// Advance runs the pacer up to now: it visits the bindings of every tick
// due by now (tick k is due at start + k×SendInterval), at most
// Params.SendOneTime bindings per call, and appends one event for each
// visited binding that needs one: Ping, or Expired / Evicted for a binding
// it removed. Bindings that are not pinged (not NATed under NATedOnly, or
// keep-alives disabled) are visited for expiry only. Call it every
// SendInterval; an out with SendOneTime spare capacity never grows, so
// Advance allocates nothing. Time going backwards does nothing.
func (t *Table) Advance(now int64, out []Event) []Event {
	if now < t.start {
		return out
	}
	elapsed := uint64(now) - uint64(t.start)
	iv := uint64(t.interval)
	if elapsed/iv < t.next {
		return out
	}
	if late := elapsed - t.next*iv; late > uint64(t.lag) {
		// Too far behind: move the schedule, keep the position.
		shift := late - uint64(t.lag)
		t.start += int64(shift)
		elapsed -= shift
	}
	due := elapsed / iv
	b := uint64(t.nticks)
	budget := t.p.SendOneTime
	for t.next <= due {
		if !t.mid {
			t.cur = t.head[t.next%b]
			t.mid = true
		}
		for t.cur != none && budget > 0 {
			i := t.cur
			t.cur = t.e[i].next
			budget--
			out = t.visit(i, now, out)
		}
		if t.cur != none {
			break // budget spent: continue here on the next call
		}
		t.mid = false
		t.next++
	}
	return out
}

// NextDue returns when the pacer's next tick is (or was) due, on the
// owner's clock: Advance releases it from then on. A tick partly visited
// because the budget ran out is due already. Owners time their Advance
// calls off it (between two due times, not on them: a call on a due time
// releases one tick or two depending on timer jitter).
func (t *Table) NextDue() int64 { return t.start + int64(t.next)*t.interval }

// batchSpan is how far past a tick's due time the pacer lets its owner
// wait to release it with the ticks after it in one batch: 1 % of the
// period or half of MaxLag, whichever is shorter, in whole send intervals.
// It keeps every binding's interval within 1 % of the period (DESIGN.md
// §10), and leaves the owner's timer half of MaxLag of slack before the
// pacer would shift its schedule.
func (p Params) batchSpan() int64 {
	iv := int64(p.SendInterval)
	span := min(int64(p.Period)/100, p.maxLag()/2)
	return span / iv * iv
}

// BatchDue returns when the owner should next call Advance so that one
// call releases as many ticks as one batch can hold: the due time of the
// last of the ticks from the next one (NextDue) on whose bindings add up
// to at most SendOneTime, at most batchSpan/SendInterval ticks after the
// next one (batchSpan: 1 % of the period or half of MaxLag, whichever is
// shorter; 15 ticks of 10 ms with the defaults) and not past the last tick
// slot of the period. With 100,000 bindings and the defaults (33 or 34 per
// tick, 100 per batch) a batch is two or three ticks: up to 100
// keep-alives every 20 or 30 ms instead of 33 every 10 ms; with a few
// bindings, one batch every 160 ms instead of a mostly empty tick every
// 10 ms. A binding is then pinged up to batchSpan after its tick. The
// batches of a period are cut greedily from its first tick slot on, so
// while the loads stay as they are every tick is released at the same
// place in every period and a binding's interval is the period; while
// bindings come and go it stays within batchSpan of it. (Until change 34
// in BENCHMARKS.md the cuts were fixed groups of 16 ticks: at 100,000
// bindings six batches a group, 37.5 a second, where batches of up to
// three ticks take about 34.) Fewer, fuller batches cost fewer wake-ups,
// most of the CPU of a keep-alive besides the send itself. A tick partly
// visited (the budget ran out) is due at once, and so is a tick that alone
// holds more than SendOneTime. Bindings added after the call may make the
// batch larger than SendOneTime; Advance then stops at the budget as ever.
func (t *Table) BatchDue() int64 {
	due := t.NextDue()
	if t.mid {
		return due
	}
	b := uint64(t.nticks)
	budget := uint64(t.p.SendOneTime)
	sum := uint64(t.load[t.next%b])
	// A batch ends at the period's last tick slot at the latest, so the
	// cuts start over at slot 0 in every period and fall at the same
	// places while the loads do not change: a binding's interval stays
	// the period.
	span := uint64(t.p.batchSpan() / t.interval)
	slot := t.next % b
	last := t.next + min(span, b-1-slot)
	for k := t.next + 1; k <= last; k++ {
		if sum += uint64(t.load[k%b]); sum > budget {
			break
		}
		due += t.interval
	}
	return due
}

func (t *Table) visit(i uint32, now int64, out []Event) []Event {
	e := &t.e[i]
	ev := Event{ID: makeID(i, e.gen), Kind: Ping, Flow: e.flow}
	if now >= e.expires {
		ev.Kind = Expired
		ev.Source = e.source()
		t.remove(i)
		t.expirations++
		return append(out, ev)
	}
	if !t.p.Enabled() || (t.p.NATedOnly && e.flags&flagNATed == 0) {
		e.flags &^= flagOutstanding
		return out
	}
	ev.Source = e.source()
	if t.p.Mode == ModeOptions {
		if e.flags&flagOutstanding != 0 {
			if e.fails < ^uint8(0) {
				e.fails++
			}
			if int(e.fails) >= t.p.MaxFailures {
				ev.Kind = Evicted
				t.remove(i)
				t.evictions++
				return append(out, ev)
			}
		}
		e.flags |= flagOutstanding
	}
	t.pings++
	return append(out, ev)
}

// SetParams changes the parameters live. An invalid p changes nothing and
// returns Validate's error. A change of Mode clears every binding's
// options-mode failure state. A change of Period or SendInterval re-spreads
// all bindings evenly over the new period (slot loads differ by at most
// one), keeping their order: the binding that was due next is due first,
// at the time the next old tick was due (or now, when the pacer was behind),
// so during the change each binding's interval lies between the old and the
// new period, give or take what the old spread had of unevenness. SetParams
// allocates only when the new period has more ticks than any before.
func (t *Table) SetParams(p Params, now int64) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Mode != t.p.Mode {
		for i := range t.e {
			t.e[i].flags &^= flagOutstanding
			t.e[i].fails = 0
		}
	}
	if p.Period == t.p.Period && p.SendInterval == t.p.SendInterval {
		t.p = p
		return nil
	}

	// Chain the bindings in the order they are due, through next.
	first, last := none, none
	appendList := func(from, stop uint32) {
		for x := from; x != stop; {
			nx := t.e[x].next
			t.e[x].next = none
			if last == none {
				first = x
			} else {
				t.e[last].next = x
			}
			last = x
			x = nx
		}
	}
	b0 := uint64(t.nticks)
	s0 := t.next % b0
	if t.mid {
		appendList(t.cur, none)
	} else {
		appendList(t.head[s0], none)
	}
	for k := uint64(1); k < b0; k++ {
		appendList(t.head[(s0+k)%b0], none)
	}
	if t.mid {
		appendList(t.head[s0], t.cur)
	}

	start := t.start + int64(t.next)*t.interval
	if start < now || start < t.start {
		start = now
	}
	t.setTicks(p, start)
	b := uint64(t.nticks)
	for s := range t.nticks {
		t.head[s] = none
		t.load[s] = 0
	}
	n := uint64(t.n)
	var k uint64
	for x := first; x != none; k++ {
		nx := t.e[x].next
		s := uint32(k * b / n)
		t.load[s]++
		t.link(x, s)
		x = nx
	}
	t.buildBuckets()
	return nil
}
