// Package dialog is the dialog table of sbcd: a fixed-capacity, preallocated
// table of call slots, each holding the RFC 4028 timer state of both legs of
// one call (session.Call), the handle of the call's timer on the owner's
// timing wheel, and the sip layer's compact per-call protocol state.
//
// Why it looks like this (DESIGN.md §1, "Memory model"): the table is
// allocated once, at start, with the capacity from the configuration
// (sip.max_calls). A full table is an answer, not a reason to grow: Alloc
// returns ErrFull and the sip layer answers the new INVITE with 503 and
// Retry-After, while every call already in the table keeps running. Because
// nothing on the call path allocates (Alloc, Bind, Lookup, Get, At and Free
// allocate nothing), the garbage collector never sees per-call churn, and
// the memory the box needs for its calls is known when it starts.
//
// Each leg of a call is a dialog of its own (DESIGN.md §2: the A-leg where
// sbcd is UAS, the B-leg where sbcd is UAC). A message is matched to its
// dialog by the Call-ID and sbcd's own tag (RFC 3261 §12: a dialog is named
// by Call-ID, local tag and remote tag; the local tag is sbcd's, unique per
// dialog it creates, so Call-ID and local tag already name the dialog, even
// before the remote tag is known and across forked answers). Both legs' keys
// live in one index.Index that stores a copy of every key and checks it on
// lookup, so a hash collision is never mistaken for a match.
//
// Slots are named by an ID that carries the slot's index and its
// generation. Free bumps the generation, so an ID kept after its call ended
// (a late event, a timer that fired for a call freed meanwhile) is rejected
// with ErrStale or false, even once the slot holds another call (ABA).
//
// Concurrency (DESIGN.md §1, "Concurrency model"): a Table is owned by one
// shard goroutine together with that shard's timing wheel, and is not safe
// for concurrent use; the shard serialises every event of its calls.
package dialog

import (
	"errors"
	"fmt"

	"sbcd/timers"
	"sbcd/timers/index"
	"sbcd/timers/session"
)

// Errors returned by the table. They are sentinels: compare with errors.Is.
var (
	// ErrFull is returned by Alloc when every slot holds a call. The table
	// never grows: the sip layer answers 503 with Retry-After (DESIGN.md §1).
	ErrFull = errors.New("dialog: table full")
	// ErrStale is returned for an ID that does not name a call in the
	// table: the zero ID, an ID from another table whose index is out of
	// range, or the ID of a call freed since (even when its slot now holds
	// another call).
	ErrStale = errors.New("dialog: stale call id")
	// ErrExists is returned by Bind when the key already names another
	// dialog: a leg of another call, or the other leg of the same call.
	ErrExists = errors.New("dialog: key bound to another dialog")
	// ErrKeyTooLong is returned by Bind when Call-ID and tag together are
	// longer than Options.MaxKeyLen.
	ErrKeyTooLong = errors.New("dialog: key too long")
	// ErrLeg is returned by Bind for a leg other than session.LegA and
	// session.LegB.
	ErrLeg = errors.New("dialog: no such leg")
)

const (
	// DefaultMaxKeyLen is Options.MaxKeyLen when it is zero: room for a
	// Call-ID and a tag of usual length with a wide margin.
	DefaultMaxKeyLen = 256
	// MaxCapacity is the largest Options.Capacity: the index holds two keys
	// per call and stores slot<<1|leg in a uint32.
	MaxCapacity = 1<<29 - 1
	// MaxKeyLen is the largest Options.MaxKeyLen the index supports.
	MaxKeyLen = 1 << 15

	none = ^uint32(0) // end of the free list
)

// Options size a table.
type Options struct {
	// Capacity is the number of calls, allocated once by New
	// (sip.max_calls), in [1, MaxCapacity].
	Capacity int
	// MaxKeyLen is the longest Call-ID plus tag of one leg, in bytes;
	// DefaultMaxKeyLen when 0. Every leg reserves this much key space.
	MaxKeyLen int
}

// ID names one call in a table: the slot index and the slot's generation.
// The zero ID is never valid. IDs are comparable and may be map keys.
type ID struct{ idx, gen uint32 }

// Index returns the slot index of the call, for use as a timer cookie
// (timers.Wheel.Alloc): At turns it back into the call's current ID.
func (id ID) Index() uint32 { return id.idx }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// String formats id as index.generation, for logs.
func (id ID) String() string { return fmt.Sprintf("%d.%d", id.idx, id.gen) }

// Slot is one call of the table. The pointer returned by Alloc, Get and At
// is valid until the call is freed; do not keep it across Free.
type Slot[T any] struct {
	// Call is the per-leg RFC 4028 timer state (Session-Expires,
	// refresher, Min-SE, due times, refresh counters, the refresh method
	// learned for the peer) and the call-level deadlines.
	Call session.Call
	// Timer is the call's timer on the owner's wheel. The table only
	// stores it (zero on Alloc); the owner allocates, schedules and frees
	// it.
	Timer timers.Handle
	// Data is the sip layer's compact per-call protocol state (DESIGN.md
	// §1: identifiers, CSeq, remote target, route set, last SDP).
	Data T

	gen  uint32    // generation, never 0; bumped by Free
	next uint32    // next free slot while free
	key  [2]uint32 // per leg: index entry of the bound key + 1, 0 if none
	used bool
}

// Table is the fixed-capacity dialog table. It is not safe for concurrent
// use: each shard owns its own (DESIGN.md §1).
type Table[T any] struct {
	slots  []Slot[T]
	keys   *index.Index // both legs' keys; value slot<<1 | leg
	maxKey int          // Options.MaxKeyLen
	free   uint32       // head of the free list
	used   int
}

// New allocates a table of o.Capacity calls: every slot and the key index,
// once.
func New[T any](o Options) (*Table[T], error) {
	if o.Capacity <= 0 || o.Capacity > MaxCapacity {
		return nil, fmt.Errorf("dialog: capacity %d out of range (1..%d)", o.Capacity, MaxCapacity)
	}
	if o.MaxKeyLen == 0 {
		o.MaxKeyLen = DefaultMaxKeyLen
	}
	if o.MaxKeyLen < 0 || o.MaxKeyLen > MaxKeyLen {
		return nil, fmt.Errorf("dialog: max key length %d out of range (1..%d)", o.MaxKeyLen, MaxKeyLen)
	}
	keys, err := index.New(index.Options{Capacity: 2 * o.Capacity, MaxKeyLen: o.MaxKeyLen})
	if err != nil {
		return nil, fmt.Errorf("dialog: %w", err)
	}
	t := &Table[T]{slots: make([]Slot[T], o.Capacity), keys: keys, maxKey: o.MaxKeyLen}
	for i := range t.slots {
		t.slots[i].gen = 1
		t.slots[i].next = uint32(i + 1)
	}
	t.slots[len(t.slots)-1].next = none
	return t, nil
}

// Len returns the number of calls in the table.
func (t *Table[T]) Len() int { return t.used }

// Cap returns the number of calls the table holds at most.
func (t *Table[T]) Cap() int { return len(t.slots) }

// slot returns the in-use slot named by id, or nil for a stale ID.
func (t *Table[T]) slot(id ID) *Slot[T] {
	if uint64(id.idx) >= uint64(len(t.slots)) {
		return nil
	}
	s := &t.slots[id.idx]
	if !s.used || s.gen != id.gen { // gen is never 0: the zero ID fails here
		return nil
	}
	return s
}

// clear zeroes the public part of s: the previous call's state never leaks
// into the next, and a freed Data releases what it references.
func (s *Slot[T]) clear() {
	var zero T
	s.Call = session.Call{}
	s.Timer = timers.Handle{}
	s.Data = zero
}

// Alloc takes a free slot for a new call and returns its ID and the zeroed
// slot, with no key bound. It returns ErrFull when every slot holds a call:
// answer 503 (DESIGN.md §1); the calls in the table are not affected.
func (t *Table[T]) Alloc() (ID, *Slot[T], error) {
	i := t.free
	if i == none {
		return ID{}, nil, ErrFull
	}
	s := &t.slots[i]
	t.free = s.next
	s.next = none
	s.used = true
	s.key = [2]uint32{}
	s.clear()
	t.used++
	return ID{idx: i, gen: s.gen}, s, nil
}

// Bind registers the dialog key of a leg of the call: the leg's Call-ID and
// sbcd's local tag on that leg (RFC 3261 §12). It replaces the key the leg
// had, so a leg can be rebound when sbcd starts a new dialog for it (for
// example a B-leg retried towards another destination). Binding the key the
// leg already has does nothing.
//
// It returns ErrStale for a stale ID, ErrLeg for a leg other than LegA and
// LegB, ErrKeyTooLong when len(callID)+len(tag) exceeds MaxKeyLen, and
// ErrExists when the key names another dialog; on error nothing changes.
func (t *Table[T]) Bind(id ID, leg session.LegID, callID, tag string) error {
	s := t.slot(id)
	if s == nil {
		return ErrStale
	}
	if leg != session.LegA && leg != session.LegB {
		return ErrLeg
	}
	if len(callID)+len(tag) > t.maxKey {
		return ErrKeyTooLong
	}
	want := id.idx<<1 | uint32(leg)
	if v, ok := t.keys.Lookup(callID, tag); ok {
		if v == want {
			return nil
		}
		return ErrExists
	}
	// Drop the old key first: the index holds exactly two keys per slot,
	// so the insert below cannot find it full.
	t.unbind(s, leg)
	e, err := t.keys.Insert(callID, tag, want)
	if err != nil {
		// Not reachable: length, presence and room were checked above.
		return fmt.Errorf("dialog: bind: %w", err)
	}
	s.key[leg] = e + 1
	return nil
}

// unbind removes the key of leg of s, if it has one.
func (t *Table[T]) unbind(s *Slot[T], leg session.LegID) {
	if e := s.key[leg]; e != 0 {
		t.keys.DeleteEntry(e - 1)
		s.key[leg] = 0
	}
}

// Lookup finds the dialog named by a Call-ID and sbcd's local tag
// (RFC 3261 §12.2.2: the To tag of a request received in a dialog sbcd
// created, the From tag of a response to a request sbcd sent). It returns
// the call's current ID and which of its legs the dialog is.
func (t *Table[T]) Lookup(callID, tag string) (ID, session.LegID, bool) {
	v, ok := t.keys.Lookup(callID, tag)
	if !ok {
		return ID{}, session.LegNone, false
	}
	i := v >> 1
	if uint64(i) >= uint64(len(t.slots)) || !t.slots[i].used {
		return ID{}, session.LegNone, false // not reachable: Free unbinds
	}
	return ID{idx: i, gen: t.slots[i].gen}, session.LegID(v & 1), true
}

// Get returns the slot of the call named by id, or false when id is stale
// (the call was freed, whether or not its slot holds another call now).
func (t *Table[T]) Get(id ID) (*Slot[T], bool) {
	s := t.slot(id)
	return s, s != nil
}

// At returns the current ID and the slot at index, for a timer cookie
// (ID.Index), or false when the slot holds no call or index is out of range.
// The caller checks that the timer that fired is still the slot's Timer: a
// timer of a call freed meanwhile must not act on the slot's next call.
func (t *Table[T]) At(index uint32) (ID, *Slot[T], bool) {
	if uint64(index) >= uint64(len(t.slots)) {
		return ID{}, nil, false
	}
	s := &t.slots[index]
	if !s.used {
		return ID{}, nil, false
	}
	return ID{idx: index, gen: s.gen}, s, true
}

// Free ends the call named by id: it unbinds both legs' keys, zeroes the
// slot, bumps its generation (every copy of id is stale from then on) and
// returns it to the free list. It returns ErrStale for a stale ID. The
// owner frees the call's Timer on its wheel itself.
func (t *Table[T]) Free(id ID) error {
	s := t.slot(id)
	if s == nil {
		return ErrStale
	}
	t.unbind(s, session.LegA)
	t.unbind(s, session.LegB)
	s.clear()
	s.used = false
	s.gen++
	if s.gen == 0 {
		s.gen = 1 // the zero ID must never become valid
	}
	s.next = t.free
	t.free = id.idx
	t.used--
	return nil
}

// All iterates over the calls in the table in slot order, for status and
// shutdown: for id, s := range t.All { ... }. The loop body may Free any
// call, including the current one; a call allocated during the loop may or
// may not be visited.
func (t *Table[T]) All(yield func(ID, *Slot[T]) bool) {
	for i := range t.slots {
		s := &t.slots[i]
		if s.used && !yield(ID{idx: uint32(i), gen: s.gen}, s) {
			return
		}
	}
}
