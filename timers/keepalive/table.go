package keepalive

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	"sbcd/timers/huge"
	"sbcd/timers/index"
)

// Errors returned by the table.
var (
	// ErrFull means every binding slot is in use. The registrar answers the
	// REGISTER with 503; every existing binding keeps being paced.
	ErrFull = errors.New("keepalive: binding table full")
	// ErrKeyTooLong means address-of-record and contact together are longer
	// than the maxKeyLen given to New.
	ErrKeyTooLong = errors.New("keepalive: binding key too long")
)

const none = ^uint32(0)

// ID names a binding: the slot index in the low 32 bits and the slot's
// generation in the high 32 bits. Once the binding is removed its ID is
// stale: every method rejects it, also after the slot has been reused. The
// zero ID is never valid.
type ID uint64

// Index is the slot number of id, in [0, Cap()): an owner can keep its own
// per-binding data in an array of Cap() entries indexed by it.
func (id ID) Index() int { return int(uint32(id)) }

func makeID(i, gen uint32) ID { return ID(uint64(gen)<<32 | uint64(i)) }

// Binding is what the table keeps about one registered contact.
type Binding struct {
	// Source is where the REGISTER came from (the NAT binding, RFC 3581
	// received/rport): keep-alives go there. An IPv6 zone is not kept.
	Source netip.AddrPort
	// Flow is the registrar's transport or connection id for the binding
	// (which socket or TCP connection the keep-alive leaves from).
	Flow uint32
	// Expires is the registration's deadline in the owner's monotonic
	// nanoseconds. The binding is expired once now >= Expires; an owner that
	// wants no expiry uses math.MaxInt64.
	Expires int64
	// NATed tells whether Source differs from the Contact address. With
	// Params.NATedOnly only NATed bindings are pinged.
	NATed bool
}

const (
	flagUsed        = 1 << iota
	flagV4          // addr holds an IPv4 address in its last 4 bytes
	flagV6          // addr holds an IPv6 address
	flagNATed       //
	flagOutstanding // options mode: the last ping is not answered yet
)

// entry is one binding slot: 56 bytes, no pointers (the garbage collector
// never scans the table).
type entry struct {
	addr    [16]byte
	expires int64
	flow    uint32
	next    uint32 // pacer: next binding in the same tick slot
	prev    uint32 // pacer: previous binding in the same tick slot
	key     uint32 // entry number in the index
	gen     uint32
	tick    uint32 // pacer tick slot
	port    uint16
	flags   uint8
	fails   uint8 // options mode: consecutive unanswered pings
}

// Table is the fixed-capacity binding table with its keep-alive pacer. It
// is not safe for concurrent use: one owner (the registrar goroutine) calls
// all its methods.
//
// # Pacing
//
// The period is divided into B = Period/SendInterval ticks and every binding
// lives in one tick slot (an intrusive list). Advance visits the slots in
// order, one tick per SendInterval, so a binding is pinged exactly once per
// period and the gap between two of its pings is the period (when Advance is
// called on time). A new binding goes to the least-loaded tick slot, ties
// broken in bit-reversed (van der Corput) order, so the slots' loads never
// differ by more than one as long as bindings are only added, a removal
// leaves a hole that the next addition fills, and a few bindings are spread
// over the whole period rather than bunched at its start. A slot holds more
// than SendOneTime bindings only when the table holds more than
// Params.Capacity bindings.
//
// # Fuller batches, fewer wake-ups
//
// An owner that calls Advance half an interval after BatchDue (the
// registrar does) gets several ticks in one call when their bindings fit
// SendOneTime, never more than 1 % of the period's worth of ticks (see
// BatchDue): batches are at least SendInterval apart and at most
// SendOneTime large, as VOS3000's SEND_INTERVAL and SEND_ONE_TIME ask, but
// a box with few bindings does not wake every SendInterval to send one.
//
// # Bounded batches and a late driver
//
// One call of Advance visits at most SendOneTime bindings, so it never asks
// for more than SendOneTime keep-alives, whatever the number of bindings and
// however late it is called; it remembers where it stopped and continues on
// the next call. Ticks that came due since the last call are caught up, as
// long as the oldest of them is at most MaxLag late: 1 % of the period or 10
// send intervals, whichever is longer, but at most half a period (300 ms
// with the defaults). A pacer further behind shifts its whole schedule
// later instead, so it never compresses more than MaxLag of schedule into a
// burst, never visits a slot twice in one catch-up, and no two pings of one
// binding are ever closer than Period − MaxLag (a SetParams that changes the
// period aside). Consequences:
//   - A driver that calls late (say every 50 ms for a 10 ms SendInterval)
//     gets the ticks that came due in between; each ping is late by less
//     than the calling gap, and a binding's interval stays within that gap
//     of the period.
//   - After a stall longer than MaxLag the schedule resumes where it
//     stopped: the bindings due during the stall get an interval of
//     Period + stall once, then exactly Period again.
//   - With more bindings than Capacity the slots hold more than SendOneTime
//     bindings and the pacer runs at its full rate of SendOneTime per
//     SendInterval, MaxLag behind: every binding is still pinged once per
//     round, but a round takes Period × bindings/Capacity instead of Period
//     (the stretch). Params.Capacity and `sbcd check` tell when this
//     happens.
//
// # Expiry and eviction
//
// Expiry is checked when a binding's slot comes round, so an expired
// registration is removed (event Expired) within one period of its deadline,
// not at it. In ModeOptions a binding whose previous ping was not Answered
// counts a failure when its next ping is due; at MaxFailures consecutive
// failures it is removed (event Evicted) instead of pinged, one period after
// its last unanswered ping.
type Table struct {
	p      Params
	idx    *index.Index
	e      []entry  // on huge pages where it can (New)
	huge   bool     // e was advised MADV_HUGEPAGE
	vacant []uint64 // one bit per binding slot, set while the slot is free
	n      int      // bindings
	nated  int      // NATed bindings
	maxKey int

	// The schedule: tick k is due at start + k*interval and visits tick
	// slot k mod nticks.
	interval int64
	lag      int64 // Params.maxLag
	nticks   uint32
	start    int64
	next     uint64 // next tick to visit (or being visited, when mid)
	mid      bool   // tick next is partly visited: continue at cur
	cur      uint32 // next binding to visit in tick next, none at its end

	// Per tick slot (the first nticks entries are in use).
	head  []uint32 // first binding of the slot
	load  []uint32 // number of bindings in the slot
	bnext []uint32 // circular list of the slots with the same load
	bprev []uint32

	bucket  []uint32 // per load value: first slot of its list, or none
	minLoad uint32   // lowest load of any slot

	pings, evictions, expirations uint64
}

// New allocates a table for capacity bindings whose address-of-record and
// contact together are at most maxKeyLen bytes, paced by p, with its first
// tick due at start (monotonic nanoseconds).
func New(capacity, maxKeyLen int, p Params, start int64) (*Table, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if capacity <= 0 || capacity >= 1<<30 {
		return nil, fmt.Errorf("keepalive: capacity %d out of range (1..%d)", capacity, 1<<30-1)
	}
	idx, err := index.New(index.Options{Capacity: capacity, MaxKeyLen: maxKeyLen})
	if err != nil {
		return nil, fmt.Errorf("keepalive: %w", err)
	}
	t := &Table{
		p:      p,
		idx:    idx,
		maxKey: maxKeyLen,
		bucket: make([]uint32, capacity+1),
	}
	// The binding array is the part of the table the pacer walks: 100,000
	// bindings are 5.6 MB, 1,400 pages of 4 KiB, and each batch reads
	// another part of it. On base pages Advance was 14 % of sbcd's CPU in
	// bench/keepalive.sh, nearly all of it on the load of the next
	// binding, and 4.9 % on huge pages (BENCHMARKS.md, change 30).
	t.e, t.huge = huge.Make[entry](t, capacity)
	for i := range t.e {
		t.e[i].gen = 1
	}
	t.vacant = make([]uint64, (capacity+63)/64)
	for i := range capacity {
		t.vacant[i/64] |= 1 << (i % 64)
	}
	t.setTicks(p, start)
	for s := range t.nticks {
		t.head[s] = none
		t.load[s] = 0
	}
	t.buildBuckets()
	return t, nil
}

// Len is the number of bindings.
func (t *Table) Len() int { return t.n }

// NATedLen is the number of bindings marked NATed.
func (t *Table) NATedLen() int { return t.nated }

// Cap is the number of bindings the table holds at most.
func (t *Table) Cap() int { return len(t.e) }

// MaxLag is how late the pacer still catches up before it shifts its
// schedule: max(Period/100, 10×SendInterval), at most Period/2.
func (t *Table) MaxLag() time.Duration { return time.Duration(t.lag) }

// Params returns the parameters in force.
func (t *Table) Params() Params { return t.p }

// slot returns the slot of a live id.
func (t *Table) slot(id ID) (uint32, bool) {
	i := uint32(id)
	if int(i) >= len(t.e) {
		return 0, false
	}
	e := &t.e[i]
	if e.flags&flagUsed == 0 || e.gen != uint32(id>>32) {
		return 0, false
	}
	return i, true
}

// Upsert creates the binding (aor, contact) or updates it. An update (a
// re-REGISTER) replaces source, flow, expiry and NAT flag, clears the
// options-mode failure count (the device is evidently alive) and keeps the
// binding's place in the pacer, so the gap between its keep-alives stays
// exactly one period even when its source moved to a new port. The ID of a
// binding does not change on update. Errors: ErrKeyTooLong, ErrFull.
func (t *Table) Upsert(aor, contact string, b Binding) (ID, error) {
	if len(aor)+len(contact) > t.maxKey {
		return 0, ErrKeyTooLong
	}
	if v, ok := t.idx.Lookup(aor, contact); ok {
		t.store(v, b)
		return makeID(v, t.e[v].gen), nil
	}
	if t.n >= len(t.e) {
		return 0, ErrFull
	}
	i := t.take(t.home(t.bucket[t.minLoad])) // near the tick slot place gives it
	if i == none {
		return 0, ErrFull // not reached: t.n counts the slots in use
	}
	k, err := t.idx.Insert(aor, contact, i)
	if err != nil { // not reached: same capacity, length checked above
		t.vacant[i/64] |= 1 << (i % 64)
		return 0, fmt.Errorf("keepalive: %w", err)
	}
	e := &t.e[i]
	e.key = k
	e.flags = flagUsed
	t.n++
	t.store(i, b)
	t.place(i)
	return makeID(i, e.gen), nil
}

// store writes b into slot i and resets its failure state.
func (t *Table) store(i uint32, b Binding) {
	e := &t.e[i]
	if e.flags&flagNATed != 0 {
		t.nated--
	}
	e.flags &^= flagV4 | flagV6 | flagNATed | flagOutstanding
	e.fails = 0
	a := b.Source.Addr()
	switch {
	case a.Is4():
		e.flags |= flagV4
	case a.Is6():
		e.flags |= flagV6
	}
	e.addr = a.As16()
	e.port = b.Source.Port()
	e.flow = b.Flow
	e.expires = b.Expires
	if b.NATed {
		e.flags |= flagNATed
		t.nated++
	}
}

func (e *entry) source() netip.AddrPort {
	switch {
	case e.flags&flagV4 != 0:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(e.addr[12:])), e.port)
	case e.flags&flagV6 != 0:
		return netip.AddrPortFrom(netip.AddrFrom16(e.addr), e.port)
	}
	return netip.AddrPortFrom(netip.Addr{}, e.port)
}

// Lookup finds the binding (aor, contact).
func (t *Table) Lookup(aor, contact string) (ID, bool) {
	v, ok := t.idx.Lookup(aor, contact)
	if !ok {
		return 0, false
	}
	return makeID(v, t.e[v].gen), true
}

// Get returns the binding id names; false for a stale or invalid id.
func (t *Table) Get(id ID) (Binding, bool) {
	i, ok := t.slot(id)
	if !ok {
		return Binding{}, false
	}
	e := &t.e[i]
	return Binding{Source: e.source(), Flow: e.flow, Expires: e.expires, NATed: e.flags&flagNATed != 0}, true
}

// Remove deletes the binding id names and reports whether it was there (a
// stale id removes nothing).
func (t *Table) Remove(id ID) bool {
	i, ok := t.slot(id)
	if !ok {
		return false
	}
	t.remove(i)
	return true
}

func (t *Table) remove(i uint32) {
	t.unplace(i)
	t.idx.DeleteEntry(t.e[i].key)
	e := &t.e[i]
	if e.flags&flagNATed != 0 {
		t.nated--
	}
	t.n--
	*e = entry{gen: e.gen + 1}
	if e.gen == 0 {
		e.gen = 1
	}
	t.vacant[i/64] |= 1 << (i % 64)
}

// home is the first binding slot of tick slot s's region: the binding
// array is cut into nticks regions, in tick order, and a new binding takes
// a free slot in (or after) the region of its tick slot. Advance follows
// the list of one tick slot; with its bindings in one region that is a few
// KiB of memory that the CPU streams in, instead of a cache miss per
// binding: the bindings of one tick were registered a period apart, and
// from one free list they lay anywhere in the array (change 33 in
// BENCHMARKS.md). A SetParams that changes the number of ticks re-spreads
// the bindings over new tick slots but leaves them where they are: the
// order comes back as bindings come and go.
func (t *Table) home(s uint32) uint32 {
	return uint32(uint64(s) * uint64(len(t.e)) / uint64(t.nticks))
}

// take claims the first free binding slot at or after from, wrapping
// around. The caller has checked that one is free. It looks at one word
// of the bitmap per 64 slots: with the loads of the tick slots even, the
// region of a tick has room and take looks at one or two.
func (t *Table) take(from uint32) uint32 {
	nw := len(t.vacant)
	w := int(from / 64)
	m := t.vacant[w] &^ (1<<(from%64) - 1)
	for range nw + 1 {
		if m != 0 {
			i := uint32(w*64 + bits.TrailingZeros64(m))
			t.vacant[w] &^= 1 << (i % 64)
			return i
		}
		if w++; w == nw {
			w = 0
		}
		m = t.vacant[w]
	}
	return none // not reached: t.n < len(t.e)
}

// Answered records that the binding answered its OPTIONS ping: its
// consecutive failures go back to zero. It reports whether id is live.
func (t *Table) Answered(id ID) bool {
	i, ok := t.slot(id)
	if !ok {
		return false
	}
	e := &t.e[i]
	e.flags &^= flagOutstanding
	e.fails = 0
	return true
}
