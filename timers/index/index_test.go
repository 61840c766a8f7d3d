package index

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"sbcd/timers/huge"
	"sbcd/timers/huge/hugetest"
)

func mustNew(t testing.TB, capacity, maxKey int) *Index {
	t.Helper()
	x, err := New(Options{Capacity: capacity, MaxKeyLen: maxKey})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestNewRejects(t *testing.T) {
	for _, o := range []Options{
		{Capacity: 0, MaxKeyLen: 8},
		{Capacity: -1, MaxKeyLen: 8},
		{Capacity: 1 << 30, MaxKeyLen: 8},
		{Capacity: 8, MaxKeyLen: 0},
		{Capacity: 8, MaxKeyLen: 1<<15 + 1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded, want error", o)
		}
	}
}

func TestBasics(t *testing.T) {
	x := mustNew(t, 3, 16)
	steps := []struct {
		op      string
		a, b    string
		v       uint32
		wantErr error
		wantOK  bool
	}{
		{op: "insert", a: "call-1", b: "tagA", v: 10},
		{op: "insert", a: "call-1", b: "tagB", v: 11},
		{op: "insert", a: "call-1", b: "tagA", v: 12, wantErr: ErrExists},
		{op: "lookup", a: "call-1", b: "tagA", v: 10, wantOK: true},
		{op: "lookup", a: "call-1", b: "tagB", v: 11, wantOK: true},
		// The split between the parts is part of the key.
		{op: "lookup", a: "call-1t", b: "agA"},
		{op: "lookup", a: "call-1", b: "tagC"},
		{op: "insert", a: "call-2", b: "", v: 20},
		{op: "insert", a: "call-3", b: "", v: 30, wantErr: ErrFull},
		{op: "insert", a: strings.Repeat("x", 10), b: strings.Repeat("y", 7), wantErr: ErrKeyTooLong},
		{op: "lookup", a: strings.Repeat("x", 17)},
		{op: "delete", a: "call-1", b: "tagA", wantOK: true},
		{op: "delete", a: "call-1", b: "tagA"},
		{op: "lookup", a: "call-1", b: "tagA"},
		{op: "insert", a: "call-3", b: "", v: 30},
		{op: "lookup", a: "call-3", b: "", v: 30, wantOK: true},
		{op: "lookup", a: "call-1", b: "tagB", v: 11, wantOK: true},
	}
	for i, s := range steps {
		switch s.op {
		case "insert":
			_, err := x.Insert(s.a, s.b, s.v)
			if !errors.Is(err, s.wantErr) {
				t.Fatalf("step %d: Insert(%q,%q) = %v, want %v", i, s.a, s.b, err, s.wantErr)
			}
		case "lookup":
			v, ok := x.Lookup(s.a, s.b)
			if ok != s.wantOK || (ok && v != s.v) {
				t.Fatalf("step %d: Lookup(%q,%q) = %d,%v, want %d,%v", i, s.a, s.b, v, ok, s.v, s.wantOK)
			}
		case "delete":
			if ok := x.Delete(s.a, s.b); ok != s.wantOK {
				t.Fatalf("step %d: Delete(%q,%q) = %v, want %v", i, s.a, s.b, ok, s.wantOK)
			}
		}
	}
	if x.Len() != 3 || x.Cap() != 3 {
		t.Fatalf("Len, Cap = %d, %d; want 3, 3", x.Len(), x.Cap())
	}
}

func TestDeleteEntry(t *testing.T) {
	x := mustNew(t, 4, 16)
	e, err := x.Insert("a", "b", 7)
	if err != nil {
		t.Fatal(err)
	}
	if !x.DeleteEntry(e) {
		t.Fatal("DeleteEntry of a live entry returned false")
	}
	if x.DeleteEntry(e) || x.DeleteEntry(99) {
		t.Fatal("DeleteEntry of a free or out-of-range entry returned true")
	}
	if _, ok := x.Lookup("a", "b"); ok {
		t.Fatal("key still found after DeleteEntry")
	}
}

// TestDifferential drives the index and a Go map with the same random
// operations, with the hash narrowed to a few bits so that most keys collide
// and deletions have to repair long probe clusters.
func TestDifferential(t *testing.T) {
	for _, mask := range []uint64{^uint64(0), 0xff, 0x7, 0} {
		t.Run(fmt.Sprintf("mask=%#x", mask), func(t *testing.T) {
			const capacity = 300
			x := mustNew(t, capacity, 24)
			x.hashMask = mask
			ref := map[[2]string]uint32{}
			entries := map[[2]string]uint32{}
			r := rand.New(rand.NewPCG(1, mask))
			key := func() [2]string {
				return [2]string{fmt.Sprintf("c%d", r.IntN(400)), fmt.Sprintf("t%d", r.IntN(3))}
			}
			for i := 0; i < 50000; i++ {
				k := key()
				switch r.IntN(4) {
				case 0, 1:
					v := r.Uint32()
					e, err := x.Insert(k[0], k[1], v)
					_, exists := ref[k]
					switch {
					case exists:
						if !errors.Is(err, ErrExists) {
							t.Fatalf("op %d: Insert existing %v: %v", i, k, err)
						}
					case len(ref) == capacity:
						if !errors.Is(err, ErrFull) {
							t.Fatalf("op %d: Insert into full: %v", i, err)
						}
					case err != nil:
						t.Fatalf("op %d: Insert %v: %v", i, k, err)
					default:
						ref[k] = v
						entries[k] = e
					}
				case 2:
					_, exists := ref[k]
					var ok bool
					if r.IntN(2) == 0 {
						ok = x.Delete(k[0], k[1])
					} else if e, has := entries[k]; has {
						ok = x.DeleteEntry(e)
					}
					if ok != exists {
						t.Fatalf("op %d: delete %v = %v, want %v", i, k, ok, exists)
					}
					delete(ref, k)
					delete(entries, k)
				case 3:
					v, ok := x.Lookup(k[0], k[1])
					want, exists := ref[k]
					if ok != exists || v != want {
						t.Fatalf("op %d: Lookup %v = %d,%v want %d,%v", i, k, v, ok, want, exists)
					}
				}
				if x.Len() != len(ref) {
					t.Fatalf("op %d: Len %d, want %d", i, x.Len(), len(ref))
				}
			}
			for k, want := range ref {
				if v, ok := x.Lookup(k[0], k[1]); !ok || v != want {
					t.Fatalf("final Lookup %v = %d,%v want %d", k, v, ok, want)
				}
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	x := mustNew(t, 1024, 64)
	callID := "a84b4c76e66710@pc33.atlanta.example.com"
	tag := "1928301774"
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := x.Insert(callID, tag, 1); err != nil {
			t.Fatal(err)
		}
		if _, ok := x.Lookup(callID, tag); !ok {
			t.Fatal("lookup failed")
		}
		if !x.Delete(callID, tag) {
			t.Fatal("delete failed")
		}
	}); n != 0 {
		t.Fatalf("insert+lookup+delete allocated %v times, want 0", n)
	}
}

func FuzzIndex(f *testing.F) {
	f.Add([]byte("\x00a\x01b\x02a\x00c\x03a"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		x := mustNew(t, 8, 6)
		x.hashMask = 0x3
		ref := map[string]uint32{}
		for i := 0; i+1 < len(ops); i += 2 {
			k := string(ops[i+1 : i+1+int(ops[i+1]%3)%(len(ops)-i)])
			switch ops[i] % 3 {
			case 0:
				_, err := x.Insert(k, "", uint32(i))
				_, exists := ref[k]
				if err == nil {
					if exists {
						t.Fatalf("duplicate insert of %q succeeded", k)
					}
					ref[k] = uint32(i)
				}
			case 1:
				if x.Delete(k, "") != (func() bool { _, ok := ref[k]; return ok })() {
					t.Fatalf("delete %q disagrees", k)
				}
				delete(ref, k)
			case 2:
				v, ok := x.Lookup(k, "")
				want, exists := ref[k]
				if ok != exists || v != want {
					t.Fatalf("lookup %q = %d,%v want %d,%v", k, v, ok, want, exists)
				}
			}
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			x := mustNew(b, n, 64)
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("%08x-%d@host.example.net", i*2654435761, i)
				if _, err := x.Insert(keys[i], "tag", uint32(i)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, ok := x.Lookup(keys[i%n], "tag"); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// TestKeysHugePages: the key arena of the registrar's default-sized
// binding index (111,000 keys of 256 bytes) is advised huge pages
// wherever the kernel has them (timers/huge); a small one stays on the Go
// heap.
func TestKeysHugePages(t *testing.T) {
	small, err := New(Options{Capacity: 100, MaxKeyLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	if small.huge {
		t.Errorf("a key arena of 6,400 bytes was mapped apart: want the Go heap below %d bytes", huge.Page)
	}
	x, err := New(Options{Capacity: 111000, MaxKeyLen: 256})
	if err != nil {
		t.Fatal(err)
	}
	if hugetest.Enabled() && !x.huge {
		t.Errorf("transparent huge pages are on but the key arena of %d bytes was not advised", len(x.keys))
	}
	if _, err := x.Insert("aor", "contact", 7); err != nil {
		t.Fatalf("insert into the mapped arena: %v", err)
	}
	if v, ok := x.Lookup("aor", "contact"); !ok || v != 7 {
		t.Errorf("lookup: %d, %v; want 7, true", v, ok)
	}
}
