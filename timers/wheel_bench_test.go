package timers

import (
	"runtime"
	"testing"
	"time"
)

// The benchmarks compare the wheel with the obvious alternative, one
// time.AfterFunc per timer, at 100,000 and 1,000,000 armed timers. Both
// sides get the same deadlines: spread pseudo-randomly over [1 h, 2 h) so
// that none fires during a run and neither side enjoys sorted insertions.
//
//	go test ./timers -run '^$' -bench . -benchmem -count 3

var benchSizes = []struct {
	name string
	n    int
}{
	{"1e5", 100_000},
	{"1e6", 1_000_000},
}

// benchDeadlines returns n deadlines (ns after the start) spread over
// [1 h, 2 h) in a fixed pseudo-random order.
func benchDeadlines(n int, span time.Duration) []int64 {
	d := make([]int64, n)
	x := uint64(0x5bcd5bcd)
	for i := range d {
		x ^= x << 13 // xorshift64
		x ^= x >> 7
		x ^= x << 17
		d[i] = int64(time.Hour) + int64(x%uint64(span))
	}
	return d
}

func nop() {}

// benchWheel returns a wheel of capacity c with n timers armed at the
// deadlines in when (which must be at least n long).
func benchWheel(b *testing.B, c, n int, when []int64) (*Wheel, []Handle) {
	b.Helper()
	w, err := New(Options{Capacity: c})
	if err != nil {
		b.Fatal(err)
	}
	hs := make([]Handle, c)
	for i := range hs {
		if hs[i], err = w.Alloc(uint32(i)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		if err := w.Schedule(hs[i], when[i]); err != nil {
			b.Fatal(err)
		}
	}
	return w, hs
}

// benchAfterFunc arms n AfterFunc timers at the deadlines in when.
func benchAfterFunc(n int, when []int64) []*time.Timer {
	ts := make([]*time.Timer, n)
	for i := range ts {
		ts[i] = time.AfterFunc(time.Duration(when[i]), nop)
	}
	return ts
}

func stopAll(ts []*time.Timer) {
	for _, t := range ts {
		if t != nil {
			t.Stop()
		}
	}
}

// BenchmarkSchedule measures arming an idle timer while n others are armed:
// wheel Schedule against time.AfterFunc (which allocates the timer and its
// closure). Timers are armed in batches of n/10 that are disarmed, untimed,
// between batches.
func BenchmarkSchedule(b *testing.B) {
	for _, sz := range benchSizes {
		batch := sz.n / 10
		when := benchDeadlines(sz.n+batch, time.Hour)
		b.Run("wheel/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			w, hs := benchWheel(b, sz.n+batch, sz.n, when)
			extra := hs[sz.n:]
			b.ResetTimer()
			for done := 0; done < b.N; {
				m := min(batch, b.N-done)
				for i := range m {
					_ = w.Schedule(extra[i], when[sz.n+i])
				}
				done += m
				b.StopTimer()
				for i := range m {
					_ = w.Cancel(extra[i])
				}
				b.StartTimer()
			}
		})
		b.Run("afterfunc/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			bg := benchAfterFunc(sz.n, when)
			defer stopAll(bg)
			extra := make([]*time.Timer, batch)
			arm := when[sz.n:]
			b.ResetTimer()
			for done := 0; done < b.N; {
				m := min(batch, b.N-done)
				for i := range m {
					extra[i] = time.AfterFunc(time.Duration(arm[i]), func() { _ = i })
				}
				done += m
				b.StopTimer()
				stopAll(extra[:m])
				clear(extra)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkReschedule moves an armed timer to a new deadline while n are
// armed: wheel Schedule on an armed timer against (*time.Timer).Reset.
func BenchmarkReschedule(b *testing.B) {
	for _, sz := range benchSizes {
		when := benchDeadlines(sz.n, time.Hour)
		b.Run("wheel/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			w, hs := benchWheel(b, sz.n, sz.n, when)
			b.ResetTimer()
			for i := range b.N {
				j := i % sz.n
				_ = w.Schedule(hs[j], when[(j+sz.n/3)%sz.n]+int64(i/sz.n)*ms)
			}
		})
		b.Run("afterfunc/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			ts := benchAfterFunc(sz.n, when)
			defer stopAll(ts)
			b.ResetTimer()
			for i := range b.N {
				j := i % sz.n
				ts[j].Reset(time.Duration(when[(j+sz.n/3)%sz.n] + int64(i/sz.n)*ms))
			}
		})
	}
}

// BenchmarkCancel disarms armed timers while n are armed: wheel Cancel
// against (*time.Timer).Stop. Batches of n/10 are re-armed, untimed,
// between batches.
func BenchmarkCancel(b *testing.B) {
	for _, sz := range benchSizes {
		batch := sz.n / 10
		when := benchDeadlines(sz.n, time.Hour)
		b.Run("wheel/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			w, hs := benchWheel(b, sz.n, sz.n, when)
			b.ResetTimer()
			for done := 0; done < b.N; {
				m := min(batch, b.N-done)
				for i := range m {
					_ = w.Cancel(hs[i])
				}
				done += m
				b.StopTimer()
				for i := range m {
					_ = w.Schedule(hs[i], when[i])
				}
				b.StartTimer()
			}
		})
		b.Run("afterfunc/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			ts := benchAfterFunc(sz.n, when)
			defer stopAll(ts)
			b.ResetTimer()
			for done := 0; done < b.N; {
				m := min(batch, b.N-done)
				for i := range m {
					ts[i].Stop()
				}
				done += m
				b.StopTimer()
				for i := range m {
					ts[i].Reset(time.Duration(when[i]))
				}
				b.StartTimer()
			}
		})
	}
}

// heapAfterGC returns the live heap after a full collection.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemory reports the live heap per armed timer (metric
// bytes/timer): for the wheel, New (nodes and buckets) plus arming n
// timers; for AfterFunc, n armed timers, each a *time.Timer and its
// closure, plus whatever the runtime's timer heap holds for them. The
// caller's own slice of handles or *time.Timer is allocated beforehand and
// not counted on either side. ns/op is the time to build and arm all n.
func BenchmarkMemory(b *testing.B) {
	for _, sz := range benchSizes {
		when := benchDeadlines(sz.n, time.Hour)
		b.Run("wheel/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			hs := make([]Handle, sz.n)
			var perTimer float64
			for range b.N {
				before := heapAfterGC()
				w, err := New(Options{Capacity: sz.n})
				if err != nil {
					b.Fatal(err)
				}
				for i := range hs {
					hs[i], _ = w.Alloc(uint32(i))
					_ = w.Schedule(hs[i], when[i])
				}
				b.StopTimer()
				after := heapAfterGC()
				if w.ArmedLen() != sz.n {
					b.Fatalf("armed %d", w.ArmedLen())
				}
				runtime.KeepAlive(w)
				perTimer = float64(int64(after-before)) / float64(sz.n)
				b.StartTimer()
			}
			b.ReportMetric(perTimer, "bytes/timer")
		})
		b.Run("afterfunc/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			ts := make([]*time.Timer, sz.n)
			var perTimer float64
			for range b.N {
				before := heapAfterGC()
				for i := range ts {
					ts[i] = time.AfterFunc(time.Duration(when[i]), func() { _ = i })
				}
				b.StopTimer()
				after := heapAfterGC()
				runtime.KeepAlive(ts)
				perTimer = float64(int64(after-before)) / float64(sz.n)
				stopAll(ts)
				clear(ts)
				b.StartTimer()
			}
			b.ReportMetric(perTimer, "bytes/timer")
		})
	}
}

// BenchmarkAdvance is the steady state of session refreshes: n timers with
// deadlines spread uniformly over 600 s, a 1 ms tick, and every op advances
// now by 10 ms and reschedules each expired timer 600 s ahead. ns/op is
// the whole step; ns/advance is the Advance call alone; expired/tick is
// how many timers each step fired.
func BenchmarkAdvance(b *testing.B) {
	const (
		step = 10 * time.Millisecond
		span = 600 * time.Second
	)
	for _, sz := range benchSizes {
		b.Run("wheel/"+sz.name, func(b *testing.B) {
			b.ReportAllocs()
			when := benchDeadlines(sz.n, span)
			for i := range when {
				when[i] -= int64(time.Hour) - 1 // (0, 600 s]
			}
			w, _ := benchWheel(b, sz.n, sz.n, when)
			buf := make([]Handle, 0, 4096)
			var now int64
			var inAdvance time.Duration
			expired := 0
			b.ResetTimer()
			for range b.N {
				now += int64(step)
				t0 := time.Now()
				buf = w.Advance(now, buf[:0])
				inAdvance += time.Since(t0)
				expired += len(buf)
				for _, h := range buf {
					_ = w.Schedule(h, now+int64(span))
				}
			}
			b.StopTimer()
			if w.ArmedLen() != sz.n {
				b.Fatalf("armed %d, want %d", w.ArmedLen(), sz.n)
			}
			b.ReportMetric(float64(inAdvance.Nanoseconds())/float64(b.N), "ns/advance")
			b.ReportMetric(float64(expired)/float64(b.N), "expired/tick")
		})
	}
}
