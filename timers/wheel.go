package timers

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"
)

// Errors returned by Wheel. They are sentinels: compare with errors.Is.
var (
	// ErrFull is returned by Alloc when every timer of the wheel is
	// allocated. The wheel never grows.
	ErrFull = errors.New("timers: wheel full")
	// ErrStale is returned for a handle that does not name a live timer:
	// the zero Handle, a handle from another wheel whose index is out of
	// range, or a handle whose timer was freed (and possibly reused) since.
	// A stale handle is never acted on.
	ErrStale = errors.New("timers: stale handle")
	// ErrTooFar is returned by Schedule for a deadline more than MaxTicks
	// ticks after the last tick processed by Advance (about 24.8 days at
	// the default 1 ms tick). The timer is left as it was.
	ErrTooFar = errors.New("timers: deadline too far in the future")
	// ErrOptions is returned by New for invalid Options.
	ErrOptions = errors.New("timers: invalid options")
)

const (
	// DefaultTick is the wheel resolution used when Options.Tick is zero.
	DefaultTick = time.Millisecond
	// MinTick is the smallest accepted Options.Tick.
	MinTick = time.Microsecond
	// MaxCapacity is the largest accepted Options.Capacity.
	MaxCapacity = 1 << 30

	minBuckets = 1 << 8
	maxBuckets = 1 << 20
)

// Node links. A node index is a uint32; the values at the top of the range
// are markers, which is why MaxCapacity stays well below them.
const (
	nilIdx   = math.MaxUint32     // end of a list
	idleMark = math.MaxUint32 - 1 // in node.prev: allocated, not armed
	freeMark = math.MaxUint32 - 2 // in node.prev: on the free list
)

// node is one timer: 20 bytes, no pointers, so the node slice costs the
// garbage collector nothing to scan.
//
// State is encoded in prev:
//   - freeMark: free; next threads the free list;
//   - idleMark: allocated, not armed; next is nilIdx;
//   - otherwise: armed, linked in the bucket when&mask; prev is the previous
//     node of the bucket list, or nilIdx for the head of the bucket.
type node struct {
	next uint32
	prev uint32
	when uint32 // absolute tick of the deadline, wrapping (armed only)
	gen  uint32 // generation, never 0; bumped by Free
	data uint32 // caller's cookie
}

// Handle names one allocated timer of a Wheel. It carries the timer's slot
// index and the slot's generation, so a handle kept after Free is rejected
// with ErrStale even once the slot has been reused. The zero Handle is never
// valid. Handles are comparable and may be used as map keys.
type Handle struct{ idx, gen uint32 }

// IsZero reports whether h is the zero Handle.
func (h Handle) IsZero() bool { return h == Handle{} }

// Options configure a Wheel.
type Options struct {
	// Capacity is the number of timers, allocated once by New; it must be
	// in [1, MaxCapacity].
	Capacity int
	// Tick is the resolution of the wheel: DefaultTick (1 ms) when zero,
	// otherwise at least MinTick (1 µs).
	Tick time.Duration
	// Start is the owner's monotonic "now" at construction, in
	// nanoseconds. Tick t covers [Start+t*Tick, Start+(t+1)*Tick).
	Start int64
}

// Wheel is a hashed timing wheel with a fixed number of timers.
//
// All timers live in one preallocated slice of 20-byte nodes, linked into
// doubly-linked bucket lists by uint32 indices. The number of buckets is a
// power of two: the capacity rounded down to a power of two, clamped to
// [256, 1<<20]. A timer whose deadline falls in tick t sits in bucket
// t mod buckets; Advance walks the buckets of the ticks that elapsed and
// fires the nodes whose tick has come, leaving the ones due in a later
// rotation where they are. Memory is 20 bytes per timer plus 4 bytes per
// bucket, at most 24 bytes per timer.
//
// Time is the owner's: a monotonic clock in nanoseconds, passed to New (as
// Options.Start) and to Advance. Deadlines are rounded up to a tick
// boundary, so a timer never fires before its deadline and at most one tick
// after it (given Advance is called at least once per tick).
//
// A Wheel is not safe for concurrent use; none of its methods allocate
// (Advance only appends to the caller's buffer).
type Wheel struct {
	nodes   []node
	buckets []uint32
	mask    uint64 // len(buckets) - 1

	start    int64
	tick     uint64 // ns per tick
	tickInv  uint64 // floor(2^64 / tick), for division by multiplication
	maxAhead uint64 // MaxTicks for this wheel

	cur      uint64 // last processed tick, relative to start
	freeHead uint32
	used     int // allocated timers
	armed    int // armed timers
}

// New returns a wheel of o.Capacity timers, all free, whose clock starts at
// o.Start. It allocates all the memory the wheel will ever use: 20 bytes per
// timer and 4 bytes per bucket.
func New(o Options) (*Wheel, error) {
	if o.Capacity <= 0 || o.Capacity > MaxCapacity {
		return nil, fmt.Errorf("%w: capacity %d not in [1, %d]", ErrOptions, o.Capacity, MaxCapacity)
	}
	tick := o.Tick
	if tick == 0 {
		tick = DefaultTick
	}
	if tick < MinTick {
		return nil, fmt.Errorf("%w: tick %v below %v", ErrOptions, tick, MinTick)
	}
	nb := 1 << (bits.Len(uint(o.Capacity)) - 1) // rounded down to a power of two
	nb = min(max(nb, minBuckets), maxBuckets)

	w := &Wheel{
		nodes:   make([]node, o.Capacity),
		buckets: make([]uint32, nb),
		mask:    uint64(nb - 1),
		start:   o.Start,
		tick:    uint64(tick),
	}
	w.tickInv = math.MaxUint64 / w.tick
	w.maxAhead = math.MaxInt32 - uint64(nb)
	for i := range w.buckets {
		w.buckets[i] = nilIdx
	}
	for i := range w.nodes {
		w.nodes[i] = node{next: uint32(i + 1), prev: freeMark, gen: 1}
	}
	w.nodes[len(w.nodes)-1].next = nilIdx
	w.freeHead = 0
	return w, nil
}

// Cap returns the number of timers of the wheel.
func (w *Wheel) Cap() int { return len(w.nodes) }

// Len returns the number of allocated timers (armed or idle).
func (w *Wheel) Len() int { return w.used }

// ArmedLen returns the number of armed timers.
func (w *Wheel) ArmedLen() int { return w.armed }

// Tick returns the resolution of the wheel.
func (w *Wheel) Tick() time.Duration { return time.Duration(w.tick) }

// Buckets returns the number of buckets of the wheel.
func (w *Wheel) Buckets() int { return len(w.buckets) }

// MaxTicks returns how many ticks after the last processed tick a deadline
// may lie: 2^31-1 minus the number of buckets (at a 1 ms tick, about 24.8
// days). Schedule returns ErrTooFar beyond it.
func (w *Wheel) MaxTicks() int64 { return int64(w.maxAhead) }

// lookup returns the index of the allocated timer named by h, or ok false
// for a stale handle.
func (w *Wheel) lookup(h Handle) (uint32, bool) {
	if uint64(h.idx) >= uint64(len(w.nodes)) {
		return 0, false
	}
	n := &w.nodes[h.idx]
	if n.gen != h.gen || n.prev == freeMark { // gen is never 0: the zero Handle fails here
		return 0, false
	}
	return h.idx, true
}

// Alloc takes a timer from the free list and returns its handle. The timer
// is idle (not armed) and carries data, a cookie for the caller (typically
// the index of the owner's slot). It returns ErrFull when every timer is
// allocated.
func (w *Wheel) Alloc(data uint32) (Handle, error) {
	i := w.freeHead
	if i == nilIdx {
		return Handle{}, ErrFull
	}
	n := &w.nodes[i]
	w.freeHead = n.next
	n.next = nilIdx
	n.prev = idleMark
	n.data = data
	w.used++
	return Handle{idx: i, gen: n.gen}, nil
}

// Free cancels the timer if it is armed and returns it to the free list.
// The handle, and every copy of it, is stale from then on, even after the
// slot is reused by Alloc.
func (w *Wheel) Free(h Handle) error {
	i, ok := w.lookup(h)
	if !ok {
		return ErrStale
	}
	n := &w.nodes[i]
	if n.prev != idleMark {
		w.unlink(i)
		w.armed--
	}
	n.gen++
	if n.gen == 0 {
		n.gen = 1
	}
	n.prev = freeMark
	n.next = w.freeHead
	n.data = 0
	w.freeHead = i
	w.used--
	return nil
}

// Schedule arms the timer to fire at the absolute monotonic time when (ns),
// or moves it there if it is already armed (reschedule). It is O(1).
//
// The deadline is rounded up to a tick boundary: the timer fires at the
// first Advance whose now is at least the rounded deadline, never before
// when and at most one tick after it. A deadline at or before the last
// processed tick (a deadline in the past) fires at the next tick. A
// deadline more than MaxTicks ticks after the last processed tick is
// refused with ErrTooFar and the timer is left as it was.
func (w *Wheel) Schedule(h Handle, when int64) error {
	i, ok := w.lookup(h)
	if !ok {
		return ErrStale
	}
	t := w.tickOf(when)
	if t <= w.cur {
		t = w.cur + 1
	} else if t-w.cur > w.maxAhead {
		return ErrTooFar
	}
	n := &w.nodes[i]
	if n.prev == idleMark {
		w.armed++
	} else {
		if n.when == uint32(t) {
			return nil // already there
		}
		w.unlink(i)
	}
	n.when = uint32(t)
	b := &w.buckets[t&w.mask]
	head := *b
	n.prev = nilIdx
	n.next = head
	if head != nilIdx {
		w.nodes[head].prev = i
	}
	*b = i
	return nil
}

// Cancel disarms the timer. The timer stays allocated, idle, with its data.
// Cancelling an idle timer does nothing.
func (w *Wheel) Cancel(h Handle) error {
	i, ok := w.lookup(h)
	if !ok {
		return ErrStale
	}
	n := &w.nodes[i]
	if n.prev == idleMark {
		return nil
	}
	w.unlink(i)
	n.prev = idleMark
	n.next = nilIdx
	w.armed--
	return nil
}

// Armed reports whether h names an armed timer.
func (w *Wheel) Armed(h Handle) bool {
	i, ok := w.lookup(h)
	return ok && w.nodes[i].prev != idleMark
}

// When returns the time at which an armed timer is due, in nanoseconds of
// the owner's clock: the deadline given to Schedule rounded up to a tick
// boundary (and no earlier than the tick after the last processed one). It
// returns false for an idle timer or a stale handle.
func (w *Wheel) When(h Handle) (int64, bool) {
	i, ok := w.lookup(h)
	if !ok || w.nodes[i].prev == idleMark {
		return 0, false
	}
	t := w.cur + uint64(w.nodes[i].when-uint32(w.cur))
	hi, lo := bits.Mul64(t, w.tick)
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64, true
	}
	d := int64(lo)
	if w.start > math.MaxInt64-d {
		return math.MaxInt64, true
	}
	return w.start + d, true
}

// Data returns the cookie of an allocated timer, or false for a stale
// handle.
func (w *Wheel) Data(h Handle) (uint32, bool) {
	i, ok := w.lookup(h)
	if !ok {
		return 0, false
	}
	return w.nodes[i].data, true
}

// SetData replaces the cookie of an allocated timer.
func (w *Wheel) SetData(h Handle, data uint32) error {
	i, ok := w.lookup(h)
	if !ok {
		return ErrStale
	}
	w.nodes[i].data = data
	return nil
}

// Advance moves the wheel to now (ns, the owner's monotonic clock): it
// appends to expired the handle of every armed timer whose rounded deadline
// is at or before now, disarms those timers (they stay allocated, idle, and
// may be rescheduled at once) and returns the extended slice. With enough
// capacity in expired it allocates nothing.
//
// Handles are appended in deadline order, tick by tick; timers due in the
// same tick come most recently scheduled first. A now that is not past the
// last processed tick (including a now that went backwards) does nothing.
//
// Advance walks one bucket per elapsed tick; after a pause longer than one
// rotation it walks every bucket once instead, so its cost is bounded by
// the number of buckets plus the number of timers it visits.
func (w *Wheel) Advance(now int64, expired []Handle) []Handle {
	if now <= w.start {
		return expired
	}
	target := (uint64(now) - uint64(w.start)) / w.tick
	if target <= w.cur {
		return expired
	}
	if w.armed == 0 {
		w.cur = target
		return expired
	}
	elapsed := target - w.cur
	if elapsed <= uint64(len(w.buckets)) {
		// Every node of the bucket of tick t is due at t or at a later
		// rotation (t + k*buckets); only those due at t fire.
		for t := w.cur + 1; t <= target; t++ {
			expired = w.fire(t&w.mask, uint32(t), expired)
			if w.armed == 0 {
				break
			}
		}
		w.cur = target
		return expired
	}
	// Long pause: one pass over every bucket, firing whatever is due by
	// target, then restore deadline order.
	base := uint32(w.cur)
	first := len(expired)
	sorted := true
	for b := w.cur + 1; b <= w.cur+uint64(len(w.buckets)); b++ {
		var late bool
		expired, late = w.fireUpTo(b&w.mask, base, elapsed, expired)
		sorted = sorted && !late
	}
	w.cur = target
	if !sorted {
		nodes := w.nodes
		slices.SortStableFunc(expired[first:], func(x, y Handle) int {
			dx, dy := nodes[x.idx].when-base, nodes[y.idx].when-base
			switch {
			case dx < dy:
				return -1
			case dx > dy:
				return 1
			}
			return 0
		})
	}
	return expired
}

// fire fires every node of bucket b whose tick is t.
func (w *Wheel) fire(b uint64, t uint32, expired []Handle) []Handle {
	i := w.buckets[b]
	for i != nilIdx {
		n := &w.nodes[i]
		next := n.next
		if n.when == t {
			w.unlink(i)
			n.prev = idleMark
			n.next = nilIdx
			w.armed--
			expired = append(expired, Handle{idx: i, gen: n.gen})
		}
		i = next
	}
	return expired
}

// fireUpTo fires every node of bucket b due at most elapsed ticks after
// base. late reports whether a fired node was due more than one rotation
// after base, which breaks the deadline order of a single pass.
func (w *Wheel) fireUpTo(b uint64, base uint32, elapsed uint64, expired []Handle) ([]Handle, bool) {
	late := false
	rot := uint32(len(w.buckets))
	i := w.buckets[b]
	for i != nilIdx {
		n := &w.nodes[i]
		next := n.next
		if d := n.when - base; uint64(d) <= elapsed {
			late = late || d > rot
			w.unlink(i)
			n.prev = idleMark
			n.next = nilIdx
			w.armed--
			expired = append(expired, Handle{idx: i, gen: n.gen})
		}
		i = next
	}
	return expired, late
}

// unlink removes armed node i from its bucket list. It leaves i's own links
// for the caller to overwrite.
func (w *Wheel) unlink(i uint32) {
	n := &w.nodes[i]
	if n.prev == nilIdx {
		w.buckets[uint64(n.when)&w.mask] = n.next
	} else {
		w.nodes[n.prev].next = n.next
	}
	if n.next != nilIdx {
		w.nodes[n.next].prev = n.prev
	}
}

// tickOf returns the tick of deadline when rounded up, relative to start;
// 0 for a deadline at or before start.
func (w *Wheel) tickOf(when int64) uint64 {
	if when <= w.start {
		return 0
	}
	d := uint64(when) - uint64(w.start)
	// q = floor(d / tick) by multiplication: with inv = floor(2^64/tick)
	// the estimate is floor(d/tick) or one less, fixed by the remainder.
	q, _ := bits.Mul64(d, w.tickInv)
	r := d - q*w.tick
	if r >= w.tick {
		q++
		r -= w.tick
	}
	if r != 0 {
		q++
	}
	return q
}
