package timers

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

func mustNew(t testing.TB, o Options) *Wheel {
	t.Helper()
	w, err := New(o)
	if err != nil {
		t.Fatalf("New(%+v): %v", o, err)
	}
	return w
}

func mustAlloc(t testing.TB, w *Wheel, data uint32) Handle {
	t.Helper()
	h, err := w.Alloc(data)
	if err != nil {
		t.Fatalf("Alloc: %v", err)
	}
	return h
}

func mustSchedule(t testing.TB, w *Wheel, h Handle, when int64) {
	t.Helper()
	if err := w.Schedule(h, when); err != nil {
		t.Fatalf("Schedule(%v, %d): %v", h, when, err)
	}
}

func TestNewOptions(t *testing.T) {
	tests := []struct {
		name    string
		o       Options
		wantErr bool
		buckets int
		tick    time.Duration
	}{
		{"zero capacity", Options{}, true, 0, 0},
		{"negative capacity", Options{Capacity: -1}, true, 0, 0},
		{"too large", Options{Capacity: MaxCapacity + 1}, true, 0, 0},
		{"tick below 1us", Options{Capacity: 1, Tick: time.Microsecond - 1}, true, 0, 0},
		{"negative tick", Options{Capacity: 1, Tick: -time.Millisecond}, true, 0, 0},
		{"one", Options{Capacity: 1}, false, 256, time.Millisecond},
		{"min tick", Options{Capacity: 1, Tick: time.Microsecond}, false, 256, time.Microsecond},
		{"1000", Options{Capacity: 1000, Tick: 10 * time.Millisecond}, false, 512, 10 * time.Millisecond},
		{"1024", Options{Capacity: 1024}, false, 1024, time.Millisecond},
		{"100k", Options{Capacity: 100_000}, false, 65536, time.Millisecond},
		{"1e6", Options{Capacity: 1_000_000}, false, 524288, time.Millisecond},
		{"3e6 clamped", Options{Capacity: 3_000_000}, false, 1 << 20, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := New(tt.o)
			if tt.wantErr {
				if !errors.Is(err, ErrOptions) {
					t.Fatalf("New(%+v) = %v, want ErrOptions", tt.o, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.Buckets() != tt.buckets || w.Tick() != tt.tick || w.Cap() != tt.o.Capacity {
				t.Fatalf("buckets %d tick %v cap %d, want %d %v %d", w.Buckets(), w.Tick(), w.Cap(), tt.buckets, tt.tick, tt.o.Capacity)
			}
			if w.Len() != 0 || w.ArmedLen() != 0 {
				t.Fatalf("new wheel Len %d ArmedLen %d", w.Len(), w.ArmedLen())
			}
			if got, want := w.MaxTicks(), int64(math.MaxInt32-tt.buckets); got != want {
				t.Fatalf("MaxTicks %d, want %d", got, want)
			}
		})
	}
}

// TestFireTick schedules many deadlines, advances tick by tick and checks
// the tick at which each one fires and the order within each Advance.
func TestFireTick(t *testing.T) {
	const start = int64(1_000_000_007) // not a multiple of the tick
	tests := []struct {
		name  string
		cap   int
		now   int64 // Advance to start+now before scheduling
		when  []int64
		want  []int64 // tick (relative to start) at which each fires
		until int64   // advance tick by tick up to this tick
	}{
		{
			name:  "exact and rounded",
			cap:   16,
			when:  []int64{ms, ms + 1, 2*ms - 1, 2 * ms, 5*ms + 3},
			want:  []int64{1, 2, 2, 2, 6},
			until: 10,
		},
		{
			name:  "past deadlines fire at the next tick",
			cap:   16,
			now:   3*ms + 5,
			when:  []int64{-1000 * ms, 0, ms, 3 * ms, 3*ms + 5, 3*ms + 6, 4 * ms},
			want:  []int64{4, 4, 4, 4, 4, 4, 4},
			until: 10,
		},
		{
			name:  "same tick",
			cap:   16,
			when:  []int64{7 * ms, 7 * ms, 7*ms - 1, 7 * ms},
			want:  []int64{7, 7, 7, 7},
			until: 10,
		},
		{
			name:  "several rotations",
			cap:   16, // 256 buckets
			when:  []int64{1 * ms, 257 * ms, 513 * ms, 256 * ms, 512 * ms, 1024 * ms, 3*256*ms + 1},
			want:  []int64{1, 257, 513, 256, 512, 1024, 3*256 + 1},
			until: 1100,
		},
		{
			name:  "deadline before start",
			cap:   4,
			when:  []int64{-start, math.MinInt64 / 2},
			want:  []int64{1, 1},
			until: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := mustNew(t, Options{Capacity: tt.cap, Start: start})
			w.Advance(start+tt.now, nil)
			hs := make([]Handle, len(tt.when))
			for i, d := range tt.when {
				hs[i] = mustAlloc(t, w, uint32(i))
				when := start + d
				if d < -start {
					when = d
				}
				mustSchedule(t, w, hs[i], when)
				wt, ok := w.When(hs[i])
				if !ok || wt != start+tt.want[i]*ms {
					t.Fatalf("When(#%d) = %d, %v, want %d", i, wt, ok, start+tt.want[i]*ms)
				}
			}
			fired := make([]int64, len(hs))
			var buf []Handle
			for tick := tt.now/ms + 1; tick <= tt.until; tick++ {
				// Advance to the last ns before the tick: nothing new fires.
				buf = w.Advance(start+tick*ms-1, buf[:0])
				if len(buf) != 0 {
					t.Fatalf("tick %d: fired %v before its tick", tick, buf)
				}
				buf = w.Advance(start+tick*ms, buf[:0])
				for j, h := range buf {
					d, _ := w.Data(h)
					if fired[d] != 0 {
						t.Fatalf("#%d fired twice", d)
					}
					fired[d] = tick
					if w.Armed(h) {
						t.Fatalf("#%d still armed after firing", d)
					}
					// Same tick: most recently scheduled first.
					if j > 0 {
						if p, _ := w.Data(buf[j-1]); p < d {
							t.Fatalf("tick %d: order %v", tick, buf)
						}
					}
				}
			}
			if !slices.Equal(fired, tt.want) {
				t.Fatalf("fired at %v, want %v", fired, tt.want)
			}
			if w.ArmedLen() != 0 || w.Len() != len(hs) {
				t.Fatalf("ArmedLen %d Len %d", w.ArmedLen(), w.Len())
			}
		})
	}
}

// TestHugeJump checks that a jump of now far past several rotations fires
// everything due, in deadline order, and leaves later timers armed.
func TestHugeJump(t *testing.T) {
	tests := []struct {
		name  string
		tick  time.Duration
		jump  int64 // ns
		whens []int64
	}{
		{"one rotation", time.Millisecond, 256 * ms, []int64{5 * ms, 255 * ms, 256 * ms, 257 * ms, 600 * ms}},
		{"ten rotations", time.Millisecond, 2560 * ms, []int64{2559 * ms, 5 * ms, 2560 * ms, 2561 * ms, 1000 * ms, 300 * ms, 10 * ms, 266 * ms}},
		{"past uint32 ticks", time.Microsecond, 1 << 43, []int64{1, 1 << 20, 1 << 30, (1 << 31) - 300, (1 << 31) - 3000, 5000}},
		{"to max int64", time.Millisecond, math.MaxInt64, []int64{ms, 20 * 24 * 3600 * 1000 * ms, 300 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := mustNew(t, Options{Capacity: 64, Tick: tt.tick})
			var want []Handle
			type hw struct {
				h    Handle
				when int64
			}
			var all []hw
			for i, d := range tt.whens {
				h := mustAlloc(t, w, uint32(i))
				if err := w.Schedule(h, d); err != nil {
					t.Fatalf("Schedule(%d): %v", d, err)
				}
				all = append(all, hw{h, d})
			}
			sorted := slices.Clone(all)
			slices.SortStableFunc(sorted, func(a, b hw) int {
				ta, tb := (a.when+int64(tt.tick)-1)/int64(tt.tick), (b.when+int64(tt.tick)-1)/int64(tt.tick)
				if ta != tb {
					return cmp.Compare(ta, tb)
				}
				return cmp.Compare(b.h.idx, a.h.idx) // later scheduled first
			})
			for _, x := range sorted {
				if x.when <= tt.jump {
					want = append(want, x.h)
				}
			}
			got := w.Advance(tt.jump, make([]Handle, 0, 64))
			if !slices.Equal(got, want) {
				t.Fatalf("Advance(%d) = %v, want %v", tt.jump, got, want)
			}
			if w.ArmedLen() != len(all)-len(want) {
				t.Fatalf("ArmedLen %d, want %d", w.ArmedLen(), len(all)-len(want))
			}
			for _, x := range all {
				if x.when > tt.jump {
					if wt, ok := w.When(x.h); !ok || wt != x.when {
						t.Fatalf("When = %d %v, want %d", wt, ok, x.when)
					}
				}
			}
		})
	}
}

func TestReschedule(t *testing.T) {
	tests := []struct {
		name   string
		first  int64
		second int64
		fires  int64 // tick
	}{
		{"later", 10 * ms, 20 * ms, 20},
		{"earlier", 20 * ms, 10 * ms, 10},
		{"same", 10 * ms, 10 * ms, 10},
		{"same tick other ns", 10 * ms, 10*ms - 3, 10},
		{"next rotation", 10 * ms, 266 * ms, 266},
		{"into the past", 10 * ms, -5 * ms, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := mustNew(t, Options{Capacity: 8})
			other := mustAlloc(t, w, 99)
			mustSchedule(t, w, other, tt.first) // a neighbour in the same bucket
			h := mustAlloc(t, w, 1)
			mustSchedule(t, w, h, tt.first)
			mustSchedule(t, w, h, tt.second)
			if w.ArmedLen() != 2 {
				t.Fatalf("ArmedLen %d", w.ArmedLen())
			}
			var buf []Handle
			for tick := int64(1); tick <= 300; tick++ {
				buf = w.Advance(tick*ms, buf[:0])
				for _, x := range buf {
					if x == h && tick != tt.fires {
						t.Fatalf("fired at tick %d, want %d", tick, tt.fires)
					}
					if x == other && tick != tt.first/ms {
						t.Fatalf("neighbour fired at tick %d, want %d", tick, tt.first/ms)
					}
				}
			}
			if w.ArmedLen() != 0 {
				t.Fatalf("ArmedLen %d after all fired", w.ArmedLen())
			}
		})
	}
}

func TestCancel(t *testing.T) {
	w := mustNew(t, Options{Capacity: 8})
	a, b, c := mustAlloc(t, w, 1), mustAlloc(t, w, 2), mustAlloc(t, w, 3)
	for _, h := range []Handle{a, b, c} {
		mustSchedule(t, w, h, 5*ms) // one bucket: a, b, c as tail, middle, head
	}
	if err := w.Cancel(b); err != nil { // middle
		t.Fatal(err)
	}
	if w.Armed(b) || w.ArmedLen() != 2 || w.Len() != 3 {
		t.Fatalf("after Cancel: armed %v ArmedLen %d Len %d", w.Armed(b), w.ArmedLen(), w.Len())
	}
	if _, ok := w.When(b); ok {
		t.Fatal("When of idle timer reported ok")
	}
	if d, ok := w.Data(b); !ok || d != 2 {
		t.Fatalf("Data of cancelled = %d %v", d, ok)
	}
	if err := w.Cancel(b); err != nil { // idle: no-op
		t.Fatal(err)
	}
	if err := w.Cancel(c); err != nil { // head
		t.Fatal(err)
	}
	got := w.Advance(10*ms, nil)
	if !slices.Equal(got, []Handle{a}) {
		t.Fatalf("fired %v, want only a", got)
	}
	if err := w.Cancel(a); err != nil { // fired: idle
		t.Fatal(err)
	}
	if w.ArmedLen() != 0 || w.Len() != 3 {
		t.Fatalf("ArmedLen %d Len %d", w.ArmedLen(), w.Len())
	}
	// Cancelled timers can be armed again.
	mustSchedule(t, w, b, 12*ms)
	if got := w.Advance(12*ms, nil); !slices.Equal(got, []Handle{b}) {
		t.Fatalf("fired %v, want b", got)
	}
}

func TestStaleHandles(t *testing.T) {
	w := mustNew(t, Options{Capacity: 2})
	h := mustAlloc(t, w, 7)
	mustSchedule(t, w, h, 3*ms)
	if err := w.Free(h); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 0 || w.ArmedLen() != 0 {
		t.Fatalf("after Free: Len %d ArmedLen %d", w.Len(), w.ArmedLen())
	}
	// The slot is reused (LIFO free list): same index, new generation.
	h2 := mustAlloc(t, w, 8)
	if h2.idx != h.idx || h2.gen == h.gen || h2 == h {
		t.Fatalf("reuse: %+v after %+v", h2, h)
	}
	mustSchedule(t, w, h2, 4*ms)

	bad := []struct {
		name string
		h    Handle
	}{
		{"zero", Handle{}},
		{"freed and reused (ABA)", h},
		{"out of range", Handle{idx: 2, gen: 1}},
		{"huge index", Handle{idx: math.MaxUint32, gen: 1}},
		{"wrong generation", Handle{idx: h2.idx, gen: h2.gen + 1}},
		{"free slot", Handle{idx: 1, gen: 1}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if tt.h.IsZero() != (tt.name == "zero") {
				t.Fatalf("IsZero(%+v) wrong", tt.h)
			}
			for name, err := range map[string]error{
				"Schedule": w.Schedule(tt.h, ms),
				"Cancel":   w.Cancel(tt.h),
				"SetData":  w.SetData(tt.h, 1),
				"Free":     w.Free(tt.h),
			} {
				if !errors.Is(err, ErrStale) {
					t.Errorf("%s = %v, want ErrStale", name, err)
				}
			}
			if w.Armed(tt.h) {
				t.Error("Armed true")
			}
			if _, ok := w.When(tt.h); ok {
				t.Error("When ok")
			}
			if _, ok := w.Data(tt.h); ok {
				t.Error("Data ok")
			}
		})
	}
	// Nothing above touched the live timer.
	if d, _ := w.Data(h2); d != 8 || !w.Armed(h2) || w.Len() != 1 || w.ArmedLen() != 1 {
		t.Fatalf("live timer disturbed: data %d armed %v Len %d ArmedLen %d", d, w.Armed(h2), w.Len(), w.ArmedLen())
	}
	if got := w.Advance(10*ms, nil); !slices.Equal(got, []Handle{h2}) {
		t.Fatalf("fired %v, want h2", got)
	}
}

func TestGenerationWrap(t *testing.T) {
	w := mustNew(t, Options{Capacity: 1})
	w.nodes[0].gen = math.MaxUint32
	h := mustAlloc(t, w, 0)
	if err := w.Free(h); err != nil {
		t.Fatal(err)
	}
	h2 := mustAlloc(t, w, 0)
	if h2.gen != 1 || h2.IsZero() {
		t.Fatalf("generation after wrap = %d, want 1 (0 skipped)", h2.gen)
	}
	if w.Schedule(h, ms) != ErrStale {
		t.Fatal("handle from before the wrap accepted")
	}
}

func TestFull(t *testing.T) {
	w := mustNew(t, Options{Capacity: 3})
	var hs []Handle
	for i := range 3 {
		hs = append(hs, mustAlloc(t, w, uint32(i)))
	}
	if h, err := w.Alloc(9); !errors.Is(err, ErrFull) || !h.IsZero() {
		t.Fatalf("Alloc on full wheel = %v, %v", h, err)
	}
	if w.Len() != 3 {
		t.Fatalf("Len %d", w.Len())
	}
	if err := w.Free(hs[1]); err != nil {
		t.Fatal(err)
	}
	h := mustAlloc(t, w, 10)
	if h.idx != hs[1].idx {
		t.Fatalf("reused slot %d, want %d", h.idx, hs[1].idx)
	}
	if _, err := w.Alloc(11); !errors.Is(err, ErrFull) {
		t.Fatalf("Alloc = %v, want ErrFull", err)
	}
}

func TestTooFar(t *testing.T) {
	w := mustNew(t, Options{Capacity: 300, Start: 5}) // 256 buckets
	maxT := int64(math.MaxInt32 - 256)
	if w.MaxTicks() != maxT {
		t.Fatalf("MaxTicks %d", w.MaxTicks())
	}
	h := mustAlloc(t, w, 0)
	mustSchedule(t, w, h, 5+7*ms)
	tests := []struct {
		when int64
		err  error
	}{
		{5 + maxT*ms, nil},
		{5 + maxT*ms + 1, ErrTooFar},
		{math.MaxInt64, ErrTooFar},
	}
	for _, tt := range tests {
		if err := w.Schedule(h, tt.when); err != tt.err {
			t.Fatalf("Schedule(%d) = %v, want %v", tt.when, err, tt.err)
		}
		if tt.err != nil {
			// The timer is left as it was.
			if wt, ok := w.When(h); !ok || wt != 5+maxT*ms {
				t.Fatalf("When after ErrTooFar = %d %v", wt, ok)
			}
		}
	}
	// The limit moves with Advance.
	w.Advance(5+1000*ms, nil)
	mustSchedule(t, w, h, 5+(1000+maxT)*ms)
	if err := w.Schedule(h, 5+(1000+maxT)*ms+1); err != ErrTooFar {
		t.Fatalf("err %v", err)
	}
	// A timer at the limit fires exactly there.
	w2 := mustNew(t, Options{Capacity: 1, Tick: time.Microsecond})
	h2 := mustAlloc(t, w2, 0)
	us := int64(time.Microsecond)
	mustSchedule(t, w2, h2, maxT*us)
	if got := w2.Advance(maxT*us-1, nil); len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	if got := w2.Advance(maxT*us, nil); !slices.Equal(got, []Handle{h2}) {
		t.Fatalf("fired %v", got)
	}
}

// TestWraparound drives the uint32 tick counter across 2^32 with timers
// armed before, at and after the wrap point.
func TestWraparound(t *testing.T) {
	us := int64(time.Microsecond)
	const wrap = int64(1) << 32
	for _, start := range []int64{0, -123, math.MaxInt64 - (wrap+1<<20)*1000} {
		t.Run(fmt.Sprint(start), func(t *testing.T) {
			w := mustNew(t, Options{Capacity: 300, Tick: time.Microsecond, Start: start})
			at := func(tick int64) int64 { return start + tick*us }
			// Fired by a long pause that crosses many rotations.
			long := mustAlloc(t, w, 1000)
			mustSchedule(t, w, long, at(wrap/2-1000))
			if got := w.Advance(at(wrap/2+1000), nil); !slices.Equal(got, []Handle{long}) {
				t.Fatalf("long pause fired %v", got)
			}
			// Armed across a long pause to just before the wrap.
			mustSchedule(t, w, long, at(wrap-50))
			if got := w.Advance(at(wrap-300), nil); len(got) != 0 {
				t.Fatalf("fired early: %v", got)
			}
			offsets := []int64{-200, -1, 0, 1, 2, 255, 256, 257, 700}
			hs := make([]Handle, len(offsets))
			for i, off := range offsets {
				hs[i] = mustAlloc(t, w, uint32(i))
				mustSchedule(t, w, hs[i], at(wrap+off))
			}
			var buf []Handle
			fired := map[Handle]int64{}
			for tick := wrap - 299; tick <= wrap+800; tick++ {
				buf = w.Advance(at(tick), buf[:0])
				for _, h := range buf {
					fired[h] = tick
				}
			}
			if fired[long] != wrap-50 {
				t.Fatalf("long fired at %d, want %d", fired[long], wrap-50)
			}
			for i, h := range hs {
				if fired[h] != wrap+offsets[i] {
					t.Fatalf("#%d fired at %d, want %d", i, fired[h], wrap+offsets[i])
				}
			}
			// Past the wrap, a timer scheduled far ahead keeps its place.
			mustSchedule(t, w, hs[0], at(wrap+800+5000))
			if wt, _ := w.When(hs[0]); wt != at(wrap+800+5000) {
				t.Fatalf("When %d", wt)
			}
			if got := w.Advance(at(wrap+800+4999), nil); len(got) != 0 {
				t.Fatalf("fired early %v", got)
			}
			if got := w.Advance(at(wrap+800+5000), nil); !slices.Equal(got, []Handle{hs[0]}) {
				t.Fatalf("got %v", got)
			}
		})
	}
}

func TestBookkeeping(t *testing.T) {
	w := mustNew(t, Options{Capacity: 10})
	type step struct {
		op          string
		i           int
		len, armedN int
	}
	var hs [4]Handle
	steps := []step{
		{"alloc", 0, 1, 0}, {"alloc", 1, 2, 0}, {"alloc", 2, 3, 0}, {"alloc", 3, 4, 0},
		{"sched", 0, 4, 1}, {"sched", 0, 4, 1}, {"sched", 1, 4, 2}, {"sched", 2, 4, 3},
		{"cancel", 1, 4, 2}, {"cancel", 1, 4, 2}, {"free", 2, 3, 1}, {"free", 3, 2, 1},
		{"advance", 0, 2, 0}, {"sched", 1, 2, 1}, {"free", 1, 1, 0}, {"free", 0, 0, 0},
	}
	for n, s := range steps {
		var err error
		switch s.op {
		case "alloc":
			hs[s.i], err = w.Alloc(uint32(s.i))
		case "sched":
			err = w.Schedule(hs[s.i], int64(s.i+1)*ms)
		case "cancel":
			err = w.Cancel(hs[s.i])
		case "free":
			err = w.Free(hs[s.i])
		case "advance":
			w.Advance(100*ms, nil)
		}
		if err != nil {
			t.Fatalf("step %d %s: %v", n, s.op, err)
		}
		if w.Len() != s.len || w.ArmedLen() != s.armedN {
			t.Fatalf("step %d %s: Len %d ArmedLen %d, want %d %d", n, s.op, w.Len(), w.ArmedLen(), s.len, s.armedN)
		}
	}
	if w.Cap() != 10 {
		t.Fatal("Cap")
	}
}

func TestData(t *testing.T) {
	w := mustNew(t, Options{Capacity: 2})
	h := mustAlloc(t, w, 42)
	if d, ok := w.Data(h); !ok || d != 42 {
		t.Fatalf("Data = %d %v", d, ok)
	}
	if err := w.SetData(h, math.MaxUint32); err != nil {
		t.Fatal(err)
	}
	mustSchedule(t, w, h, ms)
	w.Advance(ms, nil)
	if d, ok := w.Data(h); !ok || d != math.MaxUint32 {
		t.Fatalf("Data after fire = %d %v", d, ok)
	}
}

func TestBackwardsNow(t *testing.T) {
	w := mustNew(t, Options{Capacity: 2, Start: 1000 * ms})
	h := mustAlloc(t, w, 0)
	mustSchedule(t, w, h, 1005*ms)
	for _, now := range []int64{0, -5, 999 * ms, 1004 * ms, 1000 * ms} {
		if got := w.Advance(now, nil); len(got) != 0 {
			t.Fatalf("Advance(%d) fired %v", now, got)
		}
	}
	if got := w.Advance(1005*ms, nil); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

func TestZeroAllocs(t *testing.T) {
	const n = 1000
	w := mustNew(t, Options{Capacity: n})
	hs := make([]Handle, 0, n)
	buf := make([]Handle, 0, n)
	now := int64(0)
	i := 0
	tests := []struct {
		name string
		f    func()
	}{
		{"Alloc", func() {
			h, err := w.Alloc(1)
			if err != nil {
				panic(err)
			}
			hs = append(hs, h)
		}},
		{"Schedule", func() { _ = w.Schedule(hs[i%len(hs)], now+int64(i%3000)*ms); i++ }},
		{"Reschedule", func() { _ = w.Schedule(hs[i%len(hs)], now+int64(i*7%5000)*ms); i++ }},
		{"Cancel", func() { _ = w.Cancel(hs[i%len(hs)]); i++ }},
		{"Advance", func() {
			for _, h := range hs[:100] {
				_ = w.Schedule(h, now+int64(i%700)*ms)
				i++
			}
			now += 400 * ms
			buf = w.Advance(now, buf[:0])
		}},
		{"AdvanceLongPause", func() {
			for _, h := range hs[:200] {
				_ = w.Schedule(h, now+int64(i*131%100000)*ms)
				i++
			}
			now += 5000 * ms
			buf = w.Advance(now, buf[:0])
		}},
		{"Free", func() {
			_ = w.Free(hs[len(hs)-1])
			hs = hs[:len(hs)-1]
		}},
	}
	for _, tt := range tests {
		runs := 500
		if avg := testing.AllocsPerRun(runs, tt.f); avg != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tt.name, avg)
		}
	}
}

// ---- reference model -------------------------------------------------

// model is the obvious implementation of the Wheel contract: a slice of
// timers, each with its absolute tick; Advance sorts the due ones.
type model struct {
	start    int64
	tick     uint64
	maxAhead uint64
	cur      uint64
	nodes    []mnode
	free     []uint32 // stack, top at the end
	seq      uint64
	used     int
	armed    int
}

type mnode struct {
	allocated, armed bool
	gen, data        uint32
	tick, seq        uint64
}

func newModel(o Options, buckets int) *model {
	tick := o.Tick
	if tick == 0 {
		tick = time.Millisecond
	}
	m := &model{start: o.Start, tick: uint64(tick), maxAhead: uint64(math.MaxInt32 - buckets)}
	m.nodes = make([]mnode, o.Capacity)
	for i := range m.nodes {
		m.nodes[i].gen = 1
		m.free = append(m.free, uint32(o.Capacity-1-i))
	}
	return m
}

func (m *model) get(h Handle) *mnode {
	if int(h.idx) >= len(m.nodes) || !m.nodes[h.idx].allocated || m.nodes[h.idx].gen != h.gen {
		return nil
	}
	return &m.nodes[h.idx]
}

func (m *model) alloc(data uint32) (Handle, error) {
	if len(m.free) == 0 {
		return Handle{}, ErrFull
	}
	i := m.free[len(m.free)-1]
	m.free = m.free[:len(m.free)-1]
	n := &m.nodes[i]
	n.allocated, n.armed, n.data = true, false, data
	m.used++
	return Handle{i, n.gen}, nil
}

func (m *model) freeH(h Handle) error {
	n := m.get(h)
	if n == nil {
		return ErrStale
	}
	if n.armed {
		m.armed--
	}
	n.allocated, n.armed, n.data = false, false, 0
	n.gen++
	if n.gen == 0 {
		n.gen = 1
	}
	m.free = append(m.free, h.idx)
	m.used--
	return nil
}

func (m *model) schedule(h Handle, when int64) error {
	n := m.get(h)
	if n == nil {
		return ErrStale
	}
	var t uint64
	if when > m.start {
		d := uint64(when) - uint64(m.start)
		t = d / m.tick
		if d%m.tick != 0 {
			t++
		}
	}
	if t <= m.cur {
		t = m.cur + 1
	} else if t-m.cur > m.maxAhead {
		return ErrTooFar
	}
	if n.armed && n.tick == t {
		return nil
	}
	if !n.armed {
		m.armed++
	}
	m.seq++
	n.armed, n.tick, n.seq = true, t, m.seq
	return nil
}

func (m *model) cancel(h Handle) error {
	n := m.get(h)
	if n == nil {
		return ErrStale
	}
	if n.armed {
		n.armed = false
		m.armed--
	}
	return nil
}

func (m *model) when(h Handle) (int64, bool) {
	n := m.get(h)
	if n == nil || !n.armed {
		return 0, false
	}
	// Saturating start + tick*n.tick.
	if n.tick != 0 && m.tick > math.MaxInt64/n.tick {
		return math.MaxInt64, true
	}
	d := int64(m.tick * n.tick)
	if m.start > math.MaxInt64-d {
		return math.MaxInt64, true
	}
	return m.start + d, true
}

func (m *model) advance(now int64, expired []Handle) []Handle {
	if now <= m.start {
		return expired
	}
	target := (uint64(now) - uint64(m.start)) / m.tick
	if target <= m.cur {
		return expired
	}
	type due struct {
		h         Handle
		tick, seq uint64
	}
	var ds []due
	for i := range m.nodes {
		n := &m.nodes[i]
		if n.armed && n.tick <= target {
			ds = append(ds, due{Handle{uint32(i), n.gen}, n.tick, n.seq})
			n.armed = false
			m.armed--
		}
	}
	slices.SortFunc(ds, func(a, b due) int {
		if a.tick != b.tick {
			if a.tick < b.tick {
				return -1
			}
			return 1
		}
		if a.seq > b.seq {
			return -1
		}
		return 1
	})
	for _, d := range ds {
		expired = append(expired, d.h)
	}
	m.cur = target
	return expired
}

// harness runs the same operations on a Wheel and on the model and fails on
// the first disagreement.
type harness struct {
	t       testing.TB
	w       *Wheel
	m       *model
	handles []Handle // every handle ever returned, plus invalid ones
	now     int64
	buf     []Handle
	mbuf    []Handle
}

func newHarness(t testing.TB, o Options) *harness {
	w := mustNew(t, o)
	return &harness{
		t: t, w: w, m: newModel(o, w.Buckets()), now: o.Start,
		handles: []Handle{{}, {idx: uint32(o.Capacity), gen: 1}, {idx: 0, gen: 2}},
	}
}

func (x *harness) pick(k int) Handle { return x.handles[k%len(x.handles)] }

func (x *harness) checkErr(op string, got, want error) {
	x.t.Helper()
	if got != want {
		x.t.Fatalf("%s: wheel %v, model %v", op, got, want)
	}
}

func (x *harness) alloc(data uint32) {
	x.t.Helper()
	h, err := x.w.Alloc(data)
	mh, merr := x.m.alloc(data)
	x.checkErr("Alloc", err, merr)
	if h != mh {
		x.t.Fatalf("Alloc: wheel %+v model %+v", h, mh)
	}
	if err == nil {
		x.handles = append(x.handles, h)
	}
}

func (x *harness) schedule(h Handle, when int64) {
	x.t.Helper()
	x.checkErr(fmt.Sprintf("Schedule(%+v, %d) at cur %d", h, when, x.m.cur), x.w.Schedule(h, when), x.m.schedule(h, when))
}

func (x *harness) cancel(h Handle) {
	x.t.Helper()
	x.checkErr("Cancel", x.w.Cancel(h), x.m.cancel(h))
}

func (x *harness) free(h Handle) {
	x.t.Helper()
	x.checkErr("Free", x.w.Free(h), x.m.freeH(h))
}

func (x *harness) setData(h Handle, d uint32) {
	x.t.Helper()
	err := x.w.SetData(h, d)
	var merr error
	if n := x.m.get(h); n == nil {
		merr = ErrStale
	} else {
		n.data = d
	}
	x.checkErr("SetData", err, merr)
}

func (x *harness) advance(now int64) {
	x.t.Helper()
	x.now = now
	x.buf = x.w.Advance(now, x.buf[:0])
	x.mbuf = x.m.advance(now, x.mbuf[:0])
	if !slices.Equal(x.buf, x.mbuf) {
		x.t.Fatalf("Advance(%d): wheel %v\nmodel %v", now, x.buf, x.mbuf)
	}
}

func (x *harness) check(h Handle) {
	x.t.Helper()
	n := x.m.get(h)
	if got, want := x.w.Armed(h), n != nil && n.armed; got != want {
		x.t.Fatalf("Armed(%+v) = %v, model %v", h, got, want)
	}
	gw, gok := x.w.When(h)
	mw, mok := x.m.when(h)
	if gw != mw || gok != mok {
		x.t.Fatalf("When(%+v) = %d %v, model %d %v", h, gw, gok, mw, mok)
	}
	gd, gok := x.w.Data(h)
	var md uint32
	if n != nil {
		md = n.data
	}
	if gd != md || gok != (n != nil) {
		x.t.Fatalf("Data(%+v) = %d %v, model %d %v", h, gd, gok, md, n != nil)
	}
}

func (x *harness) checkAll() {
	x.t.Helper()
	if x.w.Len() != x.m.used || x.w.ArmedLen() != x.m.armed {
		x.t.Fatalf("Len %d ArmedLen %d, model %d %d", x.w.Len(), x.w.ArmedLen(), x.m.used, x.m.armed)
	}
	for _, h := range x.handles {
		x.check(h)
	}
}

// TestDifferential drives a wheel and the reference model with the same
// random operations (fixed seeds) and checks they agree on everything.
func TestDifferential(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		seed uint64
	}{
		{"256 buckets 1ms", Options{Capacity: 300, Start: 12345}, 1},
		{"256 buckets 1us", Options{Capacity: 64, Tick: time.Microsecond, Start: -1 << 40}, 2},
		{"1024 buckets 10ms", Options{Capacity: 1500, Tick: 10 * time.Millisecond}, 3},
		{"tiny", Options{Capacity: 3, Tick: 7 * time.Microsecond, Start: 999}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(tt.seed, 0x5bcd))
			x := newHarness(t, tt.o)
			tick := int64(x.w.Tick())
			rot := int64(x.w.Buckets()) * tick
			for op := range 20000 {
				switch k := r.IntN(100); {
				case k < 15:
					x.alloc(r.Uint32())
				case k < 55:
					var when int64
					switch r.IntN(10) {
					case 0:
						when = x.now - r.Int64N(3*rot+1) // past
					case 1:
						when = x.now + r.Int64N(20*rot) // several rotations
					case 2:
						when = x.now + (x.w.MaxTicks()+r.Int64N(3)-1)*tick + r.Int64N(2) // around the limit
					case 3:
						when = r.Int64() // anything
					default:
						when = x.now + r.Int64N(2*rot)
					}
					x.schedule(x.pick(r.IntN(1<<20)), when)
				case k < 65:
					x.cancel(x.pick(r.IntN(1 << 20)))
				case k < 73:
					x.free(x.pick(r.IntN(1 << 20)))
				case k < 75:
					x.setData(x.pick(r.IntN(1<<20)), r.Uint32())
				default:
					step := r.Int64N(3 * tick)
					switch r.IntN(20) {
					case 0:
						step = r.Int64N(5 * rot) // long pause
					case 1:
						step = -r.Int64N(tick) // backwards
					}
					x.advance(x.now + step)
				}
				if op%97 == 0 {
					x.checkAll()
				}
			}
			x.checkAll()
		})
	}
}

// FuzzWheel interprets the input as a sequence of operations on a small
// wheel and checks it against the reference model.
func FuzzWheel(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 5, 5, 0, 4, 10})
	f.Add([]byte("\x00\x01\x00\x00\x01\x01\x40\x00\x00\x00\x04\xff\xff\x00\x00\x03\x02\x05\x04\x80\x00\x00\x00"))
	f.Add(binary.LittleEndian.AppendUint64([]byte{0, 0, 1, 0, 9}, math.MaxUint64))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		ticks := []time.Duration{time.Microsecond, time.Millisecond, 3 * time.Microsecond}
		o := Options{
			Capacity: int(data[0]%20) + 1,
			Tick:     ticks[int(data[1])%len(ticks)],
			Start:    int64(data[1]) << 30,
		}
		x := newHarness(t, o)
		tick := int64(x.w.Tick())
		p := data[2:]
		next := func() byte {
			if len(p) == 0 {
				return 0
			}
			b := p[0]
			p = p[1:]
			return b
		}
		// num reads a signed offset in ticks: small, rotation-sized or
		// huge, by the first byte.
		num := func() int64 {
			b := next()
			v := int64(next()) | int64(next())<<8
			switch b % 4 {
			case 0:
				return int64(int8(v))
			case 1:
				return v - 1<<15
			case 2:
				return v << 16
			default:
				return v<<31 - 1<<40
			}
		}
		for len(p) > 0 {
			switch next() % 7 {
			case 0:
				x.alloc(uint32(next()))
			case 1:
				h := x.pick(int(next()))
				var when int64
				if next()%8 == 0 {
					var b [8]byte
					for i := range b {
						b[i] = next()
					}
					when = int64(binary.LittleEndian.Uint64(b[:]))
				} else {
					when = x.now + num()*tick + int64(next()%5) - 2
				}
				x.schedule(h, when)
			case 2:
				x.cancel(x.pick(int(next())))
			case 3:
				x.free(x.pick(int(next())))
			case 4:
				step := num()
				if step < 0 {
					step = -step
				}
				x.advance(x.now + step*tick + int64(next()))
			case 5:
				x.setData(x.pick(int(next())), uint32(next()))
			case 6:
				x.check(x.pick(int(next())))
			}
		}
		x.checkAll()
	})
}
