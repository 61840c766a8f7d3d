// Package index is a fixed-capacity hash index from a two-part string key
// (for example Call-ID and tag, or address-of-record and contact) to a
// uint32 value. The dialog and binding tables of sbcd use it to find a slot
// from what arrives on the wire.
//
// Everything is allocated once by New (large arrays on huge pages,
// timers/huge): entries, the probe table and an arena that holds a copy of
// every key, so a lookup checks the stored key and never
// trusts the hash alone. Hashing is seeded per index (hash/maphash), so
// colliding keys cannot be precomputed by a sender. Insert, Lookup and Delete
// allocate nothing. A full index returns ErrFull; it never grows.
package index

import (
	"errors"
	"fmt"
	"hash/maphash"

	"sbcd/timers/huge"
)

// Errors returned by the index.
var (
	// ErrFull means every entry is in use.
	ErrFull = errors.New("index: full")
	// ErrKeyTooLong means the key does not fit the per-entry key space.
	ErrKeyTooLong = errors.New("index: key too long")
	// ErrExists means the key is already present.
	ErrExists = errors.New("index: key exists")
)

const none = ^uint32(0)

// entry is the metadata of one stored key, 16 bytes, kept together so that a
// probe touches one cache line before it compares key bytes.
type entry struct {
	hash  uint64 // full hash of the key
	value uint32 // the caller's value; next free entry while free
	lenA  uint16 // length of the first key part
	lenB  uint16 // length of the second key part
}

// Options sizes an index.
type Options struct {
	// Capacity is the number of keys the index holds at most.
	Capacity int
	// MaxKeyLen is the longest key (both parts together) it stores.
	MaxKeyLen int
}

// Index is the fixed-capacity hash index. It is not safe for concurrent use:
// each owner (a dialog shard, the registrar) keeps its own.
type Index struct {
	seed   maphash.Seed
	maxKey int
	mask   uint32
	table  []uint32 // probe table: entry number + 1, 0 = empty
	ent    []entry  // per entry: what a probe compares, in one cache line
	keys   []byte   // per entry: MaxKeyLen bytes of key storage
	huge   bool     // keys was advised huge pages
	free   uint32   // head of the free entry list
	used   int

	// hashMask is all ones; tests narrow it to force hash collisions and
	// long probe clusters.
	hashMask uint64
}

// New allocates an index for o.Capacity keys of at most o.MaxKeyLen bytes.
func New(o Options) (*Index, error) {
	if o.Capacity <= 0 || o.Capacity >= 1<<30 {
		return nil, fmt.Errorf("index: capacity %d out of range (1..%d)", o.Capacity, 1<<30-1)
	}
	if o.MaxKeyLen <= 0 || o.MaxKeyLen > 1<<15 {
		return nil, fmt.Errorf("index: max key length %d out of range (1..%d)", o.MaxKeyLen, 1<<15)
	}
	size := uint32(1)
	for size < uint32(o.Capacity)*2 { // load factor at most 1/2
		size <<= 1
	}
	x := &Index{
		seed:   maphash.MakeSeed(),
		maxKey: o.MaxKeyLen,
		mask:   size - 1,

		hashMask: ^uint64(0),
	}
	// On huge pages outside the Go heap from 2 MiB on (timers/huge): the
	// key arena of the registrar's 111,000 bindings is 28 MB, every page
	// of it touched once the bindings are there.
	x.table, _ = huge.Make[uint32](x, int(size))
	x.ent, _ = huge.Make[entry](x, o.Capacity)
	x.keys, x.huge = huge.Make[byte](x, o.Capacity*o.MaxKeyLen)
	for i := range x.ent {
		x.ent[i].value = uint32(i + 1)
	}
	x.ent[o.Capacity-1].value = none
	x.free = 0
	return x, nil
}

// Len is the number of keys stored.
func (x *Index) Len() int { return x.used }

// Cap is the number of keys the index can hold.
func (x *Index) Cap() int { return len(x.ent) }

func (x *Index) sum(a, b string) uint64 {
	var h maphash.Hash
	h.SetSeed(x.seed)
	h.WriteString(a)
	h.WriteByte(0) // "ab"+"c" and "a"+"bc" are different keys
	h.WriteString(b)
	return h.Sum64() & x.hashMask
}

func (x *Index) equal(e uint32, a, b string) bool {
	if int(x.ent[e].lenA) != len(a) || int(x.ent[e].lenB) != len(b) {
		return false
	}
	k := x.keys[int(e)*x.maxKey:]
	return string(k[:len(a)]) == a && string(k[len(a):len(a)+len(b)]) == b
}

// find returns the probe position holding key (a, b), or ok=false with the
// first empty position of its probe sequence.
func (x *Index) find(h uint64, a, b string) (pos uint32, ok bool) {
	pos = uint32(h) & x.mask
	for {
		t := x.table[pos]
		if t == 0 {
			return pos, false
		}
		if e := t - 1; x.ent[e].hash == h && x.equal(e, a, b) {
			return pos, true
		}
		pos = (pos + 1) & x.mask
	}
}

// Insert stores key (a, b) with value v and returns the entry number, which
// stays valid until the key is deleted.
func (x *Index) Insert(a, b string, v uint32) (uint32, error) {
	if len(a)+len(b) > x.maxKey {
		return 0, ErrKeyTooLong
	}
	h := x.sum(a, b)
	pos, ok := x.find(h, a, b)
	if ok {
		return 0, ErrExists
	}
	if x.free == none {
		return 0, ErrFull
	}
	e := x.free
	x.free = x.ent[e].value
	x.ent[e] = entry{hash: h, value: v, lenA: uint16(len(a)), lenB: uint16(len(b))}
	k := x.keys[int(e)*x.maxKey:]
	copy(k[copy(k, a):], b)
	x.table[pos] = e + 1
	x.used++
	return e, nil
}

// Lookup returns the value stored for key (a, b).
func (x *Index) Lookup(a, b string) (uint32, bool) {
	if len(a)+len(b) > x.maxKey {
		return 0, false
	}
	pos, ok := x.find(x.sum(a, b), a, b)
	if !ok {
		return 0, false
	}
	return x.ent[x.table[pos]-1].value, true
}

// Delete removes key (a, b) and reports whether it was there.
func (x *Index) Delete(a, b string) bool {
	if len(a)+len(b) > x.maxKey {
		return false
	}
	pos, ok := x.find(x.sum(a, b), a, b)
	if !ok {
		return false
	}
	x.remove(pos)
	return true
}

// DeleteEntry removes the key stored in entry e (as returned by Insert) and
// reports whether e was in use.
func (x *Index) DeleteEntry(e uint32) bool {
	if int(e) >= len(x.ent) {
		return false
	}
	pos := uint32(x.ent[e].hash) & x.mask
	for {
		t := x.table[pos]
		if t == 0 {
			return false
		}
		if t-1 == e {
			x.remove(pos)
			return true
		}
		pos = (pos + 1) & x.mask
	}
}

// remove clears probe position pos and closes the gap by shifting later
// members of the cluster back (linear probing without tombstones, so lookups
// never slow down with churn).
func (x *Index) remove(pos uint32) {
	e := x.table[pos] - 1
	x.ent[e] = entry{value: x.free}
	x.free = e
	x.used--

	hole := pos
	next := (pos + 1) & x.mask
	for {
		t := x.table[next]
		if t == 0 {
			break
		}
		home := uint32(x.ent[t-1].hash) & x.mask
		// The entry at next may move into the hole when its home position
		// is not cyclically inside (hole, next].
		if (next-home)&x.mask >= (next-hole)&x.mask {
			x.table[hole] = t
			hole = next
		}
		next = (next + 1) & x.mask
	}
	x.table[hole] = 0
}
