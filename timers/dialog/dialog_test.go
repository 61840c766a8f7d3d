package dialog

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"sbcd/timers"
	"sbcd/timers/session"
)

func mustNew[T any](t testing.TB, o Options) *Table[T] {
	t.Helper()
	tab, err := New[T](o)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		o       Options
		ok      bool
		wantKey int
	}{
		{o: Options{Capacity: 0}},
		{o: Options{Capacity: -1}},
		{o: Options{Capacity: MaxCapacity + 1}},
		{o: Options{Capacity: 4, MaxKeyLen: -1}},
		{o: Options{Capacity: 4, MaxKeyLen: MaxKeyLen + 1}},
		{o: Options{Capacity: 1}, ok: true, wantKey: DefaultMaxKeyLen},
		{o: Options{Capacity: 4, MaxKeyLen: 1}, ok: true, wantKey: 1},
		{o: Options{Capacity: 4, MaxKeyLen: 64}, ok: true, wantKey: 64},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%+v", tt.o), func(t *testing.T) {
			tab, err := New[int](tt.o)
			if !tt.ok {
				if err == nil {
					t.Fatal("New succeeded, want error")
				}
				if !strings.HasPrefix(err.Error(), "dialog: ") {
					t.Errorf("error %q lacks the dialog: prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tab.Cap() != tt.o.Capacity || tab.Len() != 0 {
				t.Fatalf("Cap, Len = %d, %d; want %d, 0", tab.Cap(), tab.Len(), tt.o.Capacity)
			}
			id, _, err := tab.Alloc()
			if err != nil {
				t.Fatal(err)
			}
			if err := tab.Bind(id, session.LegA, strings.Repeat("c", tt.wantKey), ""); err != nil {
				t.Errorf("key of MaxKeyLen bytes: %v", err)
			}
			if err := tab.Bind(id, session.LegB, strings.Repeat("c", tt.wantKey), "t"); !errors.Is(err, ErrKeyTooLong) {
				t.Errorf("key of MaxKeyLen+1 bytes: %v, want ErrKeyTooLong", err)
			}
		})
	}
}

func TestErrorsLowercasePrefixed(t *testing.T) {
	for _, err := range []error{ErrFull, ErrStale, ErrExists, ErrKeyTooLong, ErrLeg} {
		if !strings.HasPrefix(err.Error(), "dialog: ") {
			t.Errorf("%q lacks the dialog: prefix", err)
		}
	}
}

// TestFull fills tables of several sizes: Alloc then says ErrFull, the calls
// in the table are untouched, and a freed slot is taken again.
func TestFull(t *testing.T) {
	for _, capacity := range []int{1, 2, 7, 64} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			tab := mustNew[int](t, Options{Capacity: capacity, MaxKeyLen: 32})
			ids := make([]ID, capacity)
			for i := range ids {
				id, s, err := tab.Alloc()
				if err != nil {
					t.Fatalf("Alloc %d: %v", i, err)
				}
				s.Data = 1000 + i
				s.Call.Legs[session.LegA].SE = uint32(90 + i)
				if err := tab.Bind(id, session.LegA, fmt.Sprintf("call-%d", i), "a"); err != nil {
					t.Fatal(err)
				}
				if err := tab.Bind(id, session.LegB, fmt.Sprintf("call-%d", i), "b"); err != nil {
					t.Fatal(err)
				}
				ids[i] = id
			}
			check := func(skip int) {
				t.Helper()
				for i, id := range ids {
					if i == skip {
						continue
					}
					s, ok := tab.Get(id)
					if !ok || s.Data != 1000+i || s.Call.Legs[session.LegA].SE != uint32(90+i) {
						t.Fatalf("call %d (%v) damaged: ok=%v slot=%+v", i, id, ok, s)
					}
					for _, leg := range []session.LegID{session.LegA, session.LegB} {
						got, gotLeg, ok := tab.Lookup(fmt.Sprintf("call-%d", i), "ab"[leg:leg+1])
						if !ok || got != id || gotLeg != leg {
							t.Fatalf("Lookup call %d leg %v = %v,%v,%v", i, leg, got, gotLeg, ok)
						}
					}
				}
			}
			for range 3 {
				if id, s, err := tab.Alloc(); !errors.Is(err, ErrFull) || !id.IsZero() || s != nil {
					t.Fatalf("Alloc on a full table = %v,%v,%v; want ErrFull", id, s, err)
				}
			}
			if tab.Len() != capacity {
				t.Fatalf("Len = %d, want %d", tab.Len(), capacity)
			}
			check(-1)

			victim := capacity / 2
			if err := tab.Free(ids[victim]); err != nil {
				t.Fatal(err)
			}
			check(victim)
			id, s, err := tab.Alloc()
			if err != nil {
				t.Fatalf("Alloc after Free: %v", err)
			}
			if id == ids[victim] {
				t.Fatal("reused slot kept its ID")
			}
			if s.Data != 0 || s.Call.Legs[session.LegA].SE != 0 || !s.Timer.IsZero() {
				t.Fatalf("reused slot not zeroed: %+v", s)
			}
			if _, _, ok := tab.Lookup(fmt.Sprintf("call-%d", victim), "a"); ok {
				t.Fatal("freed call's key still found")
			}
			if _, _, err := tab.Alloc(); !errors.Is(err, ErrFull) {
				t.Fatalf("Alloc = %v, want ErrFull", err)
			}
			check(victim)
		})
	}
}

// TestScript runs table-driven scripts of operations on named calls.
func TestScript(t *testing.T) {
	type step struct {
		op      string // alloc, bind, lookup, get, free, at, same
		call    string // name of the call the step acts on
		other   string // same: a second name
		leg     session.LegID
		callID  string
		tag     string
		wantErr error
		wantOK  bool
		want    string // lookup, at: the call expected
	}
	const A, B = session.LegA, session.LegB
	scripts := []struct {
		name  string
		steps []step
	}{
		{"both legs", []step{
			{op: "alloc", call: "x"},
			{op: "bind", call: "x", leg: A, callID: "c1", tag: "t1"},
			{op: "bind", call: "x", leg: B, callID: "c2", tag: "t2"},
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "x", leg: A},
			{op: "lookup", callID: "c2", tag: "t2", wantOK: true, want: "x", leg: B},
			{op: "lookup", callID: "c1", tag: "t2"},
			{op: "lookup", callID: "c2", tag: "t1"},
			{op: "lookup", callID: "c1t", tag: "1"},
			{op: "lookup", callID: "", tag: ""},
		}},
		{"same call-id, different tags", []step{
			{op: "alloc", call: "x"},
			{op: "alloc", call: "y"},
			{op: "bind", call: "x", leg: A, callID: "c1", tag: "t1"},
			{op: "bind", call: "y", leg: A, callID: "c1", tag: "t2"},
			{op: "bind", call: "x", leg: B, callID: "c1", tag: "t3"},
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "x", leg: A},
			{op: "lookup", callID: "c1", tag: "t2", wantOK: true, want: "y", leg: A},
			{op: "lookup", callID: "c1", tag: "t3", wantOK: true, want: "x", leg: B},
			{op: "free", call: "y"},
			{op: "lookup", callID: "c1", tag: "t2"},
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "x", leg: A},
		}},
		{"rebind replaces", []step{
			{op: "alloc", call: "x"},
			{op: "bind", call: "x", leg: B, callID: "c1", tag: "t1"},
			{op: "bind", call: "x", leg: B, callID: "c1", tag: "t1"}, // no-op
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "x", leg: B},
			{op: "bind", call: "x", leg: B, callID: "c9", tag: "t9"},
			{op: "lookup", callID: "c1", tag: "t1"},
			{op: "lookup", callID: "c9", tag: "t9", wantOK: true, want: "x", leg: B},
			// The old key is free for anyone.
			{op: "alloc", call: "y"},
			{op: "bind", call: "y", leg: A, callID: "c1", tag: "t1"},
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "y", leg: A},
		}},
		{"exists", []step{
			{op: "alloc", call: "x"},
			{op: "alloc", call: "y"},
			{op: "bind", call: "x", leg: A, callID: "c1", tag: "t1"},
			{op: "bind", call: "y", leg: B, callID: "c2", tag: "t2"},
			{op: "bind", call: "y", leg: A, callID: "c1", tag: "t1", wantErr: ErrExists},
			{op: "bind", call: "y", leg: B, callID: "c1", tag: "t1", wantErr: ErrExists},
			// The other leg of the same call is another dialog.
			{op: "bind", call: "x", leg: B, callID: "c1", tag: "t1", wantErr: ErrExists},
			// A failed rebind keeps the leg's old key.
			{op: "lookup", callID: "c2", tag: "t2", wantOK: true, want: "y", leg: B},
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "x", leg: A},
		}},
		{"bad legs", []step{
			{op: "alloc", call: "x"},
			{op: "bind", call: "x", leg: 2, callID: "c1", tag: "t1", wantErr: ErrLeg},
			{op: "bind", call: "x", leg: session.LegNone, callID: "c1", tag: "t1", wantErr: ErrLeg},
			{op: "lookup", callID: "c1", tag: "t1"},
		}},
		{"stale after free and after reuse", []step{
			{op: "alloc", call: "x"},
			{op: "bind", call: "x", leg: A, callID: "c1", tag: "t1"},
			{op: "free", call: "x"},
			{op: "get", call: "x"},
			{op: "at", call: "x"},
			{op: "bind", call: "x", leg: B, callID: "c2", tag: "t2", wantErr: ErrStale},
			{op: "free", call: "x", wantErr: ErrStale},
			{op: "lookup", callID: "c1", tag: "t1"},
			{op: "lookup", callID: "c2", tag: "t2"},
			// z takes x's slot (the free list is LIFO): x must stay stale.
			{op: "alloc", call: "z"},
			{op: "same-index", call: "z", other: "x"},
			{op: "get", call: "x"},
			{op: "get", call: "z", wantOK: true},
			{op: "at", call: "z", wantOK: true, want: "z"},
			{op: "bind", call: "x", leg: A, callID: "c3", tag: "t3", wantErr: ErrStale},
			{op: "free", call: "x", wantErr: ErrStale},
			{op: "get", call: "z", wantOK: true},
			{op: "lookup", callID: "c3", tag: "t3"},
			{op: "bind", call: "z", leg: A, callID: "c1", tag: "t1"},
			{op: "lookup", callID: "c1", tag: "t1", wantOK: true, want: "z", leg: A},
			{op: "free", call: "z"},
			{op: "free", call: "z", wantErr: ErrStale},
		}},
		{"zero and foreign ids", []step{
			{op: "alloc", call: "x"},
			{op: "get", call: "zero"},
			{op: "free", call: "zero", wantErr: ErrStale},
			{op: "bind", call: "zero", leg: A, callID: "c", tag: "t", wantErr: ErrStale},
			{op: "get", call: "far"},
			{op: "free", call: "far", wantErr: ErrStale},
			{op: "bind", call: "far", leg: A, callID: "c", tag: "t", wantErr: ErrStale},
			{op: "at", call: "far"},
			{op: "get", call: "x", wantOK: true},
		}},
	}
	for _, sc := range scripts {
		t.Run(sc.name, func(t *testing.T) {
			tab := mustNew[string](t, Options{Capacity: 4, MaxKeyLen: 16})
			ids := map[string]ID{"zero": {}, "far": {idx: 1 << 31, gen: 1}}
			names := map[ID]string{}
			for i, s := range sc.steps {
				id := ids[s.call]
				switch s.op {
				case "alloc":
					id, sl, err := tab.Alloc()
					if err != nil {
						t.Fatalf("step %d: Alloc: %v", i, err)
					}
					sl.Data = s.call
					ids[s.call], names[id] = id, s.call
				case "bind":
					if err := tab.Bind(id, s.leg, s.callID, s.tag); !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: Bind(%s, %v, %q, %q) = %v, want %v", i, s.call, s.leg, s.callID, s.tag, err, s.wantErr)
					}
				case "lookup":
					got, leg, ok := tab.Lookup(s.callID, s.tag)
					if ok != s.wantOK || (ok && (names[got] != s.want || leg != s.leg)) {
						t.Fatalf("step %d: Lookup(%q, %q) = %s,%v,%v; want %s,%v,%v", i, s.callID, s.tag, names[got], leg, ok, s.want, s.leg, s.wantOK)
					}
					if !ok && (!got.IsZero() || leg != session.LegNone) {
						t.Fatalf("step %d: failed Lookup returned %v,%v", i, got, leg)
					}
					if ok {
						if sl, _ := tab.Get(got); sl.Data != s.want {
							t.Fatalf("step %d: slot of %s holds %q", i, s.want, sl.Data)
						}
					}
				case "get":
					sl, ok := tab.Get(id)
					if ok != s.wantOK || (ok && sl.Data != s.call) || (!ok && sl != nil) {
						t.Fatalf("step %d: Get(%s) = %v,%v; want ok=%v", i, s.call, sl, ok, s.wantOK)
					}
				case "at":
					got, sl, ok := tab.At(id.Index())
					if ok != s.wantOK || (ok && (names[got] != s.want || sl.Data != s.want)) {
						t.Fatalf("step %d: At(%d) = %v,%v,%v; want %s,%v", i, id.Index(), got, sl, ok, s.want, s.wantOK)
					}
				case "free":
					if err := tab.Free(id); !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: Free(%s) = %v, want %v", i, s.call, err, s.wantErr)
					}
				case "same-index":
					if o := ids[s.other]; id.Index() != o.Index() || id == o {
						t.Fatalf("step %d: %s=%v, %s=%v: want the same index, another generation", i, s.call, id, s.other, o)
					}
				default:
					t.Fatalf("step %d: unknown op %q", i, s.op)
				}
			}
		})
	}
}

// TestKeyTooLong: a key longer than MaxKeyLen is refused and changes nothing.
func TestKeyTooLong(t *testing.T) {
	tests := []struct {
		callID, tag int // lengths
		wantErr     error
	}{
		{16, 0, nil},
		{10, 6, nil},
		{0, 16, nil},
		{10, 7, ErrKeyTooLong},
		{17, 0, ErrKeyTooLong},
		{0, 17, ErrKeyTooLong},
		{1 << 16, 1 << 16, ErrKeyTooLong},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d+%d", tt.callID, tt.tag), func(t *testing.T) {
			tab := mustNew[int](t, Options{Capacity: 2, MaxKeyLen: 16})
			id, _, _ := tab.Alloc()
			if err := tab.Bind(id, session.LegB, "old", "key"); err != nil {
				t.Fatal(err)
			}
			callID, tag := strings.Repeat("c", tt.callID), strings.Repeat("t", tt.tag)
			err := tab.Bind(id, session.LegB, callID, tag)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Bind = %v, want %v", err, tt.wantErr)
			}
			_, _, oldOK := tab.Lookup("old", "key")
			_, _, newOK := tab.Lookup(callID, tag)
			if wantNew := tt.wantErr == nil; newOK != wantNew || oldOK == wantNew {
				t.Fatalf("after Bind: old key found %v, new key found %v", oldOK, newOK)
			}
			if tt.wantErr != nil && tab.keys.Len() != 1 {
				t.Fatalf("index holds %d keys, want 1", tab.keys.Len())
			}
		})
	}
}

func TestSlotZeroedOnAlloc(t *testing.T) {
	w, err := timers.New(timers.Options{Capacity: 4})
	if err != nil {
		t.Fatal(err)
	}
	tab := mustNew[[4]uint64](t, Options{Capacity: 1})
	p := session.DefaultParams()
	for round := range 3 {
		id, s, err := tab.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		if s.Call != (session.Call{}) || !s.Timer.IsZero() || s.Data != ([4]uint64{}) {
			t.Fatalf("round %d: slot not zeroed: %+v", round, s)
		}
		s.Call.Invite(1, &p)
		s.Timer, _ = w.Alloc(id.Index())
		s.Data = [4]uint64{1, 2, 3, 4}
		_ = w.Free(s.Timer)
		if err := tab.Free(id); err != nil {
			t.Fatal(err)
		}
		if s.Call != (session.Call{}) || !s.Timer.IsZero() || s.Data != ([4]uint64{}) {
			t.Fatalf("round %d: slot not zeroed by Free: %+v", round, s)
		}
	}
}

func TestAll(t *testing.T) {
	tab := mustNew[int](t, Options{Capacity: 8})
	live := map[ID]int{}
	var ids []ID
	for i := range 8 {
		id, s, _ := tab.Alloc()
		s.Data = i
		ids = append(ids, id)
	}
	for i, id := range ids {
		if i%3 == 0 {
			_ = tab.Free(id)
		} else {
			live[id] = i
		}
	}
	seen := map[ID]int{}
	for id, s := range tab.All {
		seen[id] = s.Data
	}
	if fmt.Sprint(seen) != fmt.Sprint(live) {
		t.Fatalf("All yielded %v, want %v", seen, live)
	}
	n := 0
	for range tab.All {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("break after %d, want 1", n)
	}
	// Shutdown: free every call from inside the loop.
	for id := range tab.All {
		if err := tab.Free(id); err != nil {
			t.Fatal(err)
		}
	}
	if tab.Len() != 0 {
		t.Fatalf("Len after freeing all = %d", tab.Len())
	}
	for range tab.All {
		t.Fatal("All yielded a call of an empty table")
	}
}

// TestDifferential drives the table and a map-based reference model with
// the same random operations (including stale IDs, bad legs, key conflicts
// and over-long keys) and compares every answer.
func TestDifferential(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			const (
				capacity = 48
				maxKey   = 12
				ops      = 40_000
			)
			type key struct{ callID, tag string }
			type model struct {
				data uint64
				keys [2]*key
			}
			tab := mustNew[uint64](t, Options{Capacity: capacity, MaxKeyLen: maxKey})
			r := rand.New(rand.NewPCG(seed, 0xd1a1))
			live := map[ID]*model{}
			owner := map[key]struct {
				id  ID
				leg session.LegID
			}{}
			var issued []ID // every ID ever returned by Alloc
			everIssued := map[ID]bool{}
			var counter uint64

			randKey := func() key {
				k := key{fmt.Sprintf("c%d", r.IntN(40)), fmt.Sprintf("t%d", r.IntN(3))}
				if r.IntN(50) == 0 {
					k.tag = strings.Repeat("x", maxKey) // too long with any callID
				}
				return k
			}
			randID := func() ID {
				switch n := r.IntN(20); {
				case n == 0:
					return ID{}
				case n == 1:
					return ID{idx: uint32(capacity + r.IntN(5)), gen: 1}
				case len(issued) == 0:
					return ID{}
				case n < 8:
					return issued[r.IntN(len(issued))] // often stale
				default:
					return issued[len(issued)-1-r.IntN(min(len(issued), capacity))]
				}
			}
			for op := range ops {
				switch r.IntN(10) {
				case 0, 1: // alloc
					id, s, err := tab.Alloc()
					if len(live) == capacity {
						if !errors.Is(err, ErrFull) {
							t.Fatalf("op %d: Alloc on full = %v", op, err)
						}
						break
					}
					if err != nil {
						t.Fatalf("op %d: Alloc: %v", op, err)
					}
					if everIssued[id] || id.IsZero() {
						t.Fatalf("op %d: Alloc returned %v, issued before", op, id)
					}
					if s.Data != 0 {
						t.Fatalf("op %d: new slot holds %d", op, s.Data)
					}
					counter++
					s.Data = counter
					everIssued[id] = true
					issued = append(issued, id)
					live[id] = &model{data: counter}
				case 2: // free
					id := randID()
					err := tab.Free(id)
					m, ok := live[id]
					if !ok {
						if !errors.Is(err, ErrStale) {
							t.Fatalf("op %d: Free(stale %v) = %v", op, id, err)
						}
						break
					}
					if err != nil {
						t.Fatalf("op %d: Free(%v) = %v", op, id, err)
					}
					for _, k := range m.keys {
						if k != nil {
							delete(owner, *k)
						}
					}
					delete(live, id)
				case 3, 4, 5: // bind
					id, k := randID(), randKey()
					leg := session.LegID(r.IntN(2))
					if r.IntN(40) == 0 {
						leg = session.LegID(2 + r.IntN(254))
					}
					err := tab.Bind(id, leg, k.callID, k.tag)
					m, ok := live[id]
					o, held := owner[k]
					var want error
					switch {
					case !ok:
						want = ErrStale
					case leg > session.LegB:
						want = ErrLeg
					case len(k.callID)+len(k.tag) > maxKey:
						want = ErrKeyTooLong
					case held && (o.id != id || o.leg != leg):
						want = ErrExists
					}
					if !errors.Is(err, want) || (want == nil && err != nil) {
						t.Fatalf("op %d: Bind(%v, %v, %v) = %v, want %v", op, id, leg, k, err, want)
					}
					if want == nil && !held {
						if old := m.keys[leg]; old != nil {
							delete(owner, *old)
						}
						kk := k
						m.keys[leg] = &kk
						owner[k] = struct {
							id  ID
							leg session.LegID
						}{id, leg}
					}
				case 6, 7: // lookup
					k := randKey()
					id, leg, ok := tab.Lookup(k.callID, k.tag)
					o, held := owner[k]
					if ok != held || (ok && (id != o.id || leg != o.leg)) {
						t.Fatalf("op %d: Lookup(%v) = %v,%v,%v; want %v,%v,%v", op, k, id, leg, ok, o.id, o.leg, held)
					}
				case 8: // get
					id := randID()
					s, ok := tab.Get(id)
					m, want := live[id]
					if ok != want || (ok && s.Data != m.data) {
						t.Fatalf("op %d: Get(%v) = %v, want %v", op, id, ok, want)
					}
				case 9: // at
					idx := uint32(r.IntN(capacity + 3))
					id, s, ok := tab.At(idx)
					if ok {
						m, isLive := live[id]
						if !isLive || id.Index() != idx || s.Data != m.data {
							t.Fatalf("op %d: At(%d) = %v (live %v)", op, idx, id, isLive)
						}
						break
					}
					for lid := range live {
						if lid.Index() == idx {
							t.Fatalf("op %d: At(%d) = false, but %v is live", op, idx, lid)
						}
					}
				}
				if tab.Len() != len(live) || tab.keys.Len() != len(owner) {
					t.Fatalf("op %d: Len %d, keys %d; want %d, %d", op, tab.Len(), tab.keys.Len(), len(live), len(owner))
				}
			}
			n := 0
			for id, s := range tab.All {
				if m, ok := live[id]; !ok || m.data != s.Data {
					t.Fatalf("All yielded %v, not live", id)
				}
				n++
			}
			if n != len(live) {
				t.Fatalf("All yielded %d calls, want %d", n, len(live))
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	tab := mustNew[[8]uint64](t, Options{Capacity: 1024})
	// Some calls already in the table, so the index is not trivially empty.
	for i := range 500 {
		id, _, _ := tab.Alloc()
		_ = tab.Bind(id, session.LegA, fmt.Sprintf("%d@caller.example.com", i), "as1")
		_ = tab.Bind(id, session.LegB, fmt.Sprintf("%d@sbcd", i), "bs1")
	}
	callA, tagA := "a84b4c76e66710@pc33.atlanta.example.com", "1928301774"
	callB, tagB := "b2f9a1e07c3d4e55@sbcd.local", "77aa3c"
	if n := testing.AllocsPerRun(1000, func() {
		id, s, err := tab.Alloc()
		if err != nil {
			t.Fatal(err)
		}
		s.Data[0] = 1
		if err := tab.Bind(id, session.LegA, callA, tagA); err != nil {
			t.Fatal(err)
		}
		if err := tab.Bind(id, session.LegB, callB, tagB); err != nil {
			t.Fatal(err)
		}
		if got, leg, ok := tab.Lookup(callB, tagB); !ok || got != id || leg != session.LegB {
			t.Fatal("lookup failed")
		}
		if _, ok := tab.Get(id); !ok {
			t.Fatal("get failed")
		}
		if got, _, ok := tab.At(id.Index()); !ok || got != id {
			t.Fatal("at failed")
		}
		if err := tab.Free(id); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Alloc+Bind×2+Lookup+Get+At+Free allocated %v times, want 0", n)
	}
}

func TestGenerationWraps(t *testing.T) {
	tab := mustNew[int](t, Options{Capacity: 1})
	tab.slots[0].gen = ^uint32(0)
	id, _, _ := tab.Alloc()
	if err := tab.Free(id); err != nil {
		t.Fatal(err)
	}
	id2, _, _ := tab.Alloc()
	if id2.gen != 1 || id2 == id || id2.IsZero() {
		t.Fatalf("after wrap: %v (was %v), want generation 1", id2, id)
	}
	if _, ok := tab.Get(ID{}); ok {
		t.Fatal("zero ID valid after wrap")
	}
}
