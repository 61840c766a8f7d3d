package dialog

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"sbcd/timers"
	"sbcd/timers/session"
)

// The obvious alternative to Table, benchmarked side by side with it: a Go
// map from callID+"|"+tag to a heap-allocated state per call, growing as
// calls arrive. It holds the same per-call state as a Slot.

type callState struct {
	Call  session.Call
	Timer timers.Handle
	Data  struct{}
	keys  [2]string // to delete both keys when the call ends
}

type mapTable struct {
	m     map[string]*callState
	calls int
}

func newMapTable() *mapTable { return &mapTable{m: map[string]*callState{}} }

func (t *mapTable) alloc() *callState {
	t.calls++
	return &callState{}
}

func (t *mapTable) bind(c *callState, leg session.LegID, callID, tag string) bool {
	k := callID + "|" + tag
	if _, ok := t.m[k]; ok {
		return false
	}
	if old := c.keys[leg&1]; old != "" {
		delete(t.m, old)
	}
	t.m[k] = c
	c.keys[leg&1] = k
	return true
}

func (t *mapTable) lookup(callID, tag string) (*callState, bool) {
	c, ok := t.m[callID+"|"+tag]
	return c, ok
}

func (t *mapTable) free(c *callState) {
	delete(t.m, c.keys[0])
	delete(t.m, c.keys[1])
	t.calls--
}

// benchKey is one leg's key with wire-like lengths: a 30-40 byte Call-ID
// and a 8-10 byte tag.
type benchKey struct{ callID, tag string }

func benchKeys(n int, salt uint64) [][2]benchKey {
	r := rand.New(rand.NewPCG(uint64(n), salt))
	keys := make([][2]benchKey, n)
	for i := range keys {
		keys[i] = [2]benchKey{
			{fmt.Sprintf("%016x-%d@192.0.2.17", r.Uint64(), i), fmt.Sprintf("%010d", r.Uint32())},
			{fmt.Sprintf("%016x%016x@sbcd", r.Uint64(), r.Uint64()), fmt.Sprintf("%08x", r.Uint32())},
		}
	}
	return keys
}

var benchSizes = []struct {
	name string
	n    int
}{{"1e4", 10_000}, {"1e5", 100_000}}

func fillTable(b *testing.B, n, calls int, keys [][2]benchKey) *Table[struct{}] {
	return fillTableKey(b, n, 0, calls, keys)
}

func fillTableKey(b *testing.B, n, maxKey, calls int, keys [][2]benchKey) *Table[struct{}] {
	tab := mustNew[struct{}](b, Options{Capacity: n, MaxKeyLen: maxKey})
	for i := range calls {
		id, _, err := tab.Alloc()
		if err != nil {
			b.Fatal(err)
		}
		for leg, k := range keys[i] {
			if err := tab.Bind(id, session.LegID(leg), k.callID, k.tag); err != nil {
				b.Fatal(err)
			}
		}
	}
	return tab
}

func fillMap(b *testing.B, calls int, keys [][2]benchKey) *mapTable {
	m := newMapTable()
	for i := range calls {
		c := m.alloc()
		for leg, k := range keys[i] {
			if !m.bind(c, session.LegID(leg), k.callID, k.tag) {
				b.Fatal("duplicate key")
			}
		}
	}
	return m
}

// BenchmarkAllocBindFree: a call arrives and ends (Alloc, Bind both legs,
// Free) in a table half full of n slots.
func BenchmarkAllocBindFree(b *testing.B) {
	for _, sz := range benchSizes {
		keys := benchKeys(sz.n/2, 1)
		cycle := benchKeys(1024, 2)
		b.Run("table/"+sz.name, func(b *testing.B) {
			tab := fillTable(b, sz.n, len(keys), keys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := &cycle[i&1023]
				i++
				id, _, err := tab.Alloc()
				if err != nil {
					b.Fatal(err)
				}
				if tab.Bind(id, session.LegA, k[0].callID, k[0].tag) != nil ||
					tab.Bind(id, session.LegB, k[1].callID, k[1].tag) != nil {
					b.Fatal("bind failed")
				}
				if tab.Free(id) != nil {
					b.Fatal("free failed")
				}
			}
		})
		b.Run("map/"+sz.name, func(b *testing.B) {
			m := fillMap(b, len(keys), keys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := &cycle[i&1023]
				i++
				c := m.alloc()
				if !m.bind(c, session.LegA, k[0].callID, k[0].tag) ||
					!m.bind(c, session.LegB, k[1].callID, k[1].tag) {
					b.Fatal("bind failed")
				}
				m.free(c)
			}
		})
	}
}

// BenchmarkLookup: find the call of a received message by Call-ID and tag,
// in a table of n calls bound on both legs, keys visited in random order.
func BenchmarkLookup(b *testing.B) {
	for _, sz := range benchSizes {
		keys := benchKeys(sz.n, 3)
		order := make([]benchKey, 0, 2*sz.n)
		for _, k := range keys {
			order = append(order, k[0], k[1])
		}
		rand.New(rand.NewPCG(7, 7)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		b.Run("table/"+sz.name, func(b *testing.B) {
			tab := fillTable(b, sz.n, sz.n, keys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := &order[i%len(order)]
				i++
				if _, _, ok := tab.Lookup(k.callID, k.tag); !ok {
					b.Fatal("miss")
				}
			}
		})
		b.Run("map/"+sz.name, func(b *testing.B) {
			m := fillMap(b, sz.n, keys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := &order[i%len(order)]
				i++
				if _, ok := m.lookup(k.callID, k.tag); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// heapGrowth returns how much the live heap grows by what build keeps.
func heapGrowth(build func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	kept := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(kept)
	return after.HeapAlloc - before.HeapAlloc
}

// BenchmarkMemory: 100,000 calls bound on both legs; reports the live heap
// per call (bytes/call, HeapAlloc after GC) and, as ns/op, the time to set
// them all up. The table's memory is fixed at New: it costs the same with
// one call or 100,000.
func BenchmarkMemory(b *testing.B) {
	const n = 100_000
	keys := benchKeys(n, 4) // made before measuring: both sides get them
	builds := []struct {
		name  string
		build func() any
	}{
		{"table/1e5", func() any { return fillTable(b, n, n, keys) }},
		// The key arena is MaxKeyLen bytes per leg whatever the key's
		// length: the default 256 is most of a slot's cost.
		{"table-maxkey128/1e5", func() any { return fillTableKey(b, n, 128, n, keys) }},
		{"map/1e5", func() any { return fillMap(b, n, keys) }},
	}
	for _, bl := range builds {
		b.Run(bl.name, func(b *testing.B) {
			perCall := float64(heapGrowth(bl.build)) / n
			b.ReportAllocs()
			for b.Loop() {
				runtime.KeepAlive(bl.build())
			}
			b.ReportMetric(perCall, "bytes/call")
		})
	}
}
