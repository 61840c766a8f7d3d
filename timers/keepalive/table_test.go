package keepalive

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sbcd/timers/huge"
	"sbcd/timers/huge/hugetest"
)

const sec = int64(time.Second)

func mustNew(t testing.TB, capacity int, p Params, start int64) *Table {
	t.Helper()
	tab, err := New(capacity, 64, p, start)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func src(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5060)
}

func aor(i int) string { return fmt.Sprintf("sip:%d@example.net", i) }

func forever(i int) Binding {
	return Binding{Source: src(i), Flow: uint32(i), Expires: math.MaxInt64, NATed: true}
}

// checkInvariants walks every internal structure of the table.
func checkInvariants(t testing.TB, tab *Table) {
	t.Helper()
	seen := make([]bool, len(tab.e))
	minLoad := ^uint32(0)
	total, nated := 0, 0
	for s := range tab.nticks {
		n := uint32(0)
		prev := none
		for x := tab.head[s]; x != none; x = tab.e[x].next {
			e := &tab.e[x]
			if e.flags&flagUsed == 0 || seen[x] || e.tick != s || e.prev != prev {
				t.Fatalf("slot %d: bad binding %d (flags %x seen %v tick %d prev %d want %d)", s, x, e.flags, seen[x], e.tick, e.prev, prev)
			}
			seen[x] = true
			if e.flags&flagNATed != 0 {
				nated++
			}
			prev = x
			n++
		}
		if n != tab.load[s] {
			t.Fatalf("slot %d: %d bindings, load %d", s, n, tab.load[s])
		}
		minLoad = min(minLoad, n)
		total += int(n)
	}
	// Every slot is in exactly one bucket list, the one of its load.
	inBucket := make([]bool, tab.nticks)
	listed := 0
	for l, h := range tab.bucket {
		if h == none {
			continue
		}
		x := h
		for {
			if int(x) >= int(tab.nticks) || inBucket[x] || tab.load[x] != uint32(l) || tab.bprev[tab.bnext[x]] != x {
				t.Fatalf("bucket %d: bad slot %d", l, x)
			}
			inBucket[x] = true
			listed++
			x = tab.bnext[x]
			if x == h {
				break
			}
		}
	}
	if listed != int(tab.nticks) {
		t.Fatalf("%d slots in buckets, want %d", listed, tab.nticks)
	}
	if minLoad != tab.minLoad {
		t.Fatalf("minLoad %d, want %d", tab.minLoad, minLoad)
	}
	if total != tab.n || nated != tab.nated || tab.idx.Len() != tab.n {
		t.Fatalf("counts: listed %d nated %d index %d; table n %d nated %d", total, nated, tab.idx.Len(), tab.n, tab.nated)
	}
	// A slot is vacant exactly when it is not in use; no bit past the
	// capacity is set.
	if len(tab.vacant) != (len(tab.e)+63)/64 {
		t.Fatalf("vacant bitmap of %d words for %d slots", len(tab.vacant), len(tab.e))
	}
	free := 0
	for x := range len(tab.vacant) * 64 {
		v := tab.vacant[x/64]&(1<<(x%64)) != 0
		switch {
		case x >= len(tab.e):
			if v {
				t.Fatalf("vacant bit %d set past the capacity %d", x, len(tab.e))
			}
		case v && (tab.e[x].flags&flagUsed != 0 || seen[x]):
			t.Fatalf("vacant slot %d in use", x)
		case !v && tab.e[x].flags&flagUsed == 0:
			t.Fatalf("slot %d neither vacant nor in use", x)
		case v:
			free++
		}
	}
	if free+tab.n != len(tab.e) {
		t.Fatalf("free %d + used %d != cap %d", free, tab.n, len(tab.e))
	}
}

// TestLocality: the bindings of one tick slot lie together in the binding
// array (Table.home), also after churn, so Advance streams through a few
// KiB per tick instead of missing the cache on every binding. 100,000
// bindings in 111,000 slots, the defaults (3,000 ticks: regions of 37
// slots, 33 or 34 bindings each).
func TestLocality(t *testing.T) {
	const n, capacity = 100000, 111000
	tab := mustNew(t, capacity, DefaultParams(), 0)
	ids := make([]ID, n)
	for i := range n {
		id, err := tab.Upsert(aor(i), "c", forever(i))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	spread := func(step string) {
		t.Helper()
		region := float64(capacity) / float64(tab.nticks)
		var sum float64
		worst := 0
		for s := range tab.nticks {
			lo, hi := uint32(capacity), uint32(0)
			for x := tab.head[s]; x != none; x = tab.e[x].next {
				lo, hi = min(lo, x), max(hi, x)
			}
			if lo > hi {
				continue
			}
			sum += float64(hi - lo + 1)
			worst = max(worst, int(hi-lo+1))
		}
		mean := sum / float64(tab.nticks)
		t.Logf("%s: bindings of a tick span %.1f slots on average, %d at the most (regions of %.1f)", step, mean, worst, region)
		if mean > 1.5*region {
			t.Errorf("%s: the bindings of a tick span %.1f slots on average: want about a region, %.1f", step, mean, region)
		}
	}
	spread("filled")
	checkInvariants(t, tab)

	// Churn: a tenth leave, as many others arrive, three times over.
	next := n
	for round := range 3 {
		for i := round; i < n; i += 10 {
			if !tab.Remove(ids[i]) {
				t.Fatalf("Remove %d", i)
			}
			id, err := tab.Upsert(aor(next), "c", forever(next))
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
			next++
		}
	}
	spread("after churn")
	checkInvariants(t, tab)
}

// TestTakeWraps: take finds the one free slot wherever it starts
// looking: at it, before it in the same word, or past the end of the
// bitmap (wrapping round).
func TestTakeWraps(t *testing.T) {
	const capacity = 130 // three bitmap words, the last one partly used
	tab := mustNew(t, capacity, DefaultParams(), 0)
	ids := make(map[int]ID)
	for i := range capacity {
		id, err := tab.Upsert(aor(i), "c", forever(i))
		if err != nil {
			t.Fatalf("Upsert %d: %v", i, err)
		}
		ids[id.Index()] = id
	}
	for _, free := range []uint32{0, 3, 63, 64, 129} {
		if !tab.Remove(ids[int(free)]) {
			t.Fatalf("Remove slot %d", free)
		}
		for _, from := range []uint32{0, 1, free, free + 1, 64, 100, 129} {
			if from >= capacity {
				continue
			}
			if got := tab.take(from); got != free {
				t.Errorf("free slot %d: take(%d) = %d", free, from, got)
			}
			tab.vacant[free/64] |= 1 << (free % 64) // free again
		}
		id, err := tab.Upsert(fmt.Sprint("again", free), "c", forever(int(free)))
		if err != nil || id.Index() != int(free) {
			t.Fatalf("Upsert into the one free slot %d: %d, %v", free, id.Index(), err)
		}
		ids[int(free)] = id
		if _, err := tab.Upsert("full", "c", forever(1001)); !errors.Is(err, ErrFull) {
			t.Errorf("Upsert into a full table = %v, want ErrFull", err)
		}
		checkInvariants(t, tab)
	}
}

func TestNewRejects(t *testing.T) {
	p := DefaultParams()
	bad := p
	bad.Period = 0
	tests := []struct {
		name     string
		capacity int
		maxKey   int
		p        Params
	}{
		{"zero capacity", 0, 64, p},
		{"negative capacity", -5, 64, p},
		{"huge capacity", 1 << 30, 64, p},
		{"zero key", 10, 0, p},
		{"invalid params", 10, 64, bad},
	}
	for _, tt := range tests {
		if _, err := New(tt.capacity, tt.maxKey, tt.p, 0); err == nil {
			t.Errorf("%s: New succeeded", tt.name)
		} else if !strings.HasPrefix(err.Error(), "keepalive: ") {
			t.Errorf("%s: error %q lacks the package prefix", tt.name, err)
		}
	}
}

func TestUpsertLookupGetRemove(t *testing.T) {
	tab := mustNew(t, 2, DefaultParams(), 0)
	v6 := netip.MustParseAddrPort("[2001:db8::1]:5062")
	b1 := Binding{Source: src(1), Flow: 7, Expires: 100 * sec, NATed: true}
	b2 := Binding{Source: v6, Flow: 9, Expires: 200 * sec}

	id1, err := tab.Upsert("sip:alice@x", "sip:alice@192.168.1.2", b1)
	if err != nil {
		t.Fatal(err)
	}
	if id1 == 0 {
		t.Fatal("zero ID")
	}
	id2, err := tab.Upsert("sip:bob@x", "sip:bob@[fd00::2]", b2)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 2 || tab.NATedLen() != 1 || tab.Cap() != 2 {
		t.Fatalf("Len %d NATedLen %d Cap %d", tab.Len(), tab.NATedLen(), tab.Cap())
	}
	if got, ok := tab.Get(id1); !ok || got != b1 {
		t.Errorf("Get(id1) = %+v, %v; want %+v", got, ok, b1)
	}
	if got, ok := tab.Get(id2); !ok || got != b2 {
		t.Errorf("Get(id2) = %+v, %v; want %+v", got, ok, b2)
	}
	if id, ok := tab.Lookup("sip:alice@x", "sip:alice@192.168.1.2"); !ok || id != id1 {
		t.Errorf("Lookup = %v, %v; want %v", id, ok, id1)
	}
	if _, ok := tab.Lookup("sip:alice@x", "sip:alice@192.168.1.3"); ok {
		t.Error("Lookup of an unknown contact succeeded")
	}

	// Full table: a new key fails, an update of an existing key works.
	if _, err := tab.Upsert("sip:carol@x", "c", b1); !errors.Is(err, ErrFull) {
		t.Fatalf("Upsert into full table = %v, want ErrFull", err)
	}
	moved := b1
	moved.Source = netip.AddrPortFrom(b1.Source.Addr(), 40000)
	moved.NATed = false
	if id, err := tab.Upsert("sip:alice@x", "sip:alice@192.168.1.2", moved); err != nil || id != id1 {
		t.Fatalf("update = %v, %v; want %v", id, err, id1)
	}
	if got, _ := tab.Get(id1); got != moved {
		t.Errorf("after update Get = %+v, want %+v", got, moved)
	}
	if tab.NATedLen() != 0 {
		t.Errorf("NATedLen after update = %d", tab.NATedLen())
	}

	// Key too long.
	if _, err := tab.Upsert(strings.Repeat("a", 40), strings.Repeat("b", 25), b1); !errors.Is(err, ErrKeyTooLong) {
		t.Errorf("long key = %v, want ErrKeyTooLong", err)
	}
	if _, ok := tab.Lookup(strings.Repeat("a", 40), strings.Repeat("b", 25)); ok {
		t.Error("long key found")
	}

	// Remove, then stale IDs are rejected even after the slot is reused.
	if !tab.Remove(id1) {
		t.Fatal("Remove(id1) = false")
	}
	if tab.Remove(id1) {
		t.Error("second Remove(id1) = true")
	}
	id3, err := tab.Upsert("sip:carol@x", "c", b1)
	if err != nil {
		t.Fatal(err)
	}
	if id3.Index() != id1.Index() {
		t.Fatalf("slot not reused: %d vs %d", id3.Index(), id1.Index())
	}
	if id3 == id1 {
		t.Fatal("reused slot kept the generation")
	}
	for _, stale := range []ID{id1, 0, makeID(5, 1), makeID(uint32(id3.Index()), 0), ^ID(0)} {
		if _, ok := tab.Get(stale); ok {
			t.Errorf("Get(%#x) succeeded", uint64(stale))
		}
		if tab.Answered(stale) {
			t.Errorf("Answered(%#x) succeeded", uint64(stale))
		}
		if tab.Remove(stale) {
			t.Errorf("Remove(%#x) succeeded", uint64(stale))
		}
	}
	if got, ok := tab.Get(id3); !ok || got != b1 {
		t.Errorf("Get(id3) = %+v, %v", got, ok)
	}
	checkInvariants(t, tab)
}

func TestSourceRoundTrip(t *testing.T) {
	tab := mustNew(t, 8, DefaultParams(), 0)
	for i, s := range []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:5060"),
		netip.MustParseAddrPort("[2001:db8::5]:1"),
		netip.MustParseAddrPort("[::ffff:192.0.2.1]:65535"),
		netip.MustParseAddrPort("0.0.0.0:0"),
		{},
		netip.AddrPortFrom(netip.Addr{}, 77),
	} {
		id, err := tab.Upsert("a", fmt.Sprint(i), Binding{Source: s, Expires: 1})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := tab.Get(id); got.Source != s {
			t.Errorf("source %v came back as %v", s, got.Source)
		}
	}
	// The zone of a link-local address is not kept.
	id, _ := tab.Upsert("z", "z", Binding{Source: netip.MustParseAddrPort("[fe80::1%eth0]:5060")})
	if got, _ := tab.Get(id); got.Source != netip.MustParseAddrPort("[fe80::1]:5060") {
		t.Errorf("zoned source came back as %v", got.Source)
	}
}

func TestZeroAllocs(t *testing.T) {
	p := DefaultParams()
	p.Mode = ModeOptions
	const n = 10000
	tab := mustNew(t, n+1, p, 0)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = aor(i)
	}
	for i := range n {
		if _, err := tab.Upsert(keys[i], "c", forever(i)); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]Event, 0, p.SendOneTime)
	now := int64(0)
	var k int
	b := forever(n)
	cases := []struct {
		name string
		f    func()
	}{
		{"Upsert new + Remove", func() {
			id, err := tab.Upsert("sip:new@x", "c", b)
			if err != nil || !tab.Remove(id) {
				t.Fatal("upsert/remove failed")
			}
		}},
		{"Upsert update", func() {
			k = (k + 1) % n
			if _, err := tab.Upsert(keys[k], "c", b); err != nil {
				t.Fatal(err)
			}
		}},
		{"Lookup", func() {
			k = (k + 1) % n
			if _, ok := tab.Lookup(keys[k], "c"); !ok {
				t.Fatal("lookup failed")
			}
		}},
		{"Get + Answered", func() {
			k = (k + 1) % n
			id, _ := tab.Lookup(keys[k], "c")
			tab.Get(id)
			tab.Answered(id)
		}},
		{"Upsert full", func() {
			tab.Upsert("sip:x@x", "1", b)
			if _, err := tab.Upsert("sip:y@x", "2", b); !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
			id, _ := tab.Lookup("sip:x@x", "1")
			tab.Remove(id)
		}},
		{"Advance", func() {
			now += int64(p.SendInterval)
			out = tab.Advance(now, out[:0])
		}},
		{"Advance late", func() {
			now += 50 * int64(p.SendInterval)
			out = tab.Advance(now, out[:0])
		}},
		{"Advance at BatchDue", func() {
			now = tab.BatchDue() + int64(p.SendInterval)/2
			out = tab.Advance(now, out[:0])
		}},
		{"Stats", func() { _ = tab.Stats() }},
	}
	for _, c := range cases {
		if a := testing.AllocsPerRun(1000, c.f); a != 0 {
			t.Errorf("%s: %v allocs per run, want 0", c.name, a)
		}
	}
	if tab.Stats().PingsSent == 0 {
		t.Error("Advance sent nothing")
	}
	checkInvariants(t, tab)
}

// TestEntriesHugePages: the binding array of 100,000 bindings is advised
// huge pages wherever the kernel has them (timers/huge tests the mapping);
// one of 1,000 stays on the Go heap.
func TestEntriesHugePages(t *testing.T) {
	small, err := New(1000, 64, DefaultParams(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if small.huge {
		t.Errorf("a table of 1,000 bindings was mapped apart: want the Go heap below %d bytes", huge.Page)
	}
	tab, err := New(100000, 64, DefaultParams(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if hugetest.Enabled() && !tab.huge {
		t.Errorf("transparent huge pages are on but the binding array of 100,000 bindings was not advised")
	}
}
