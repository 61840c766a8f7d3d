package b2bua

import (
	"sync/atomic"
	"time"
)

// Lateness is the distribution of how late sbcd's own session refreshes
// (and no-timer probes) went out: from the deadline the session-timer state
// machine set (refresh at SE/update_segment, RFC 4028 §10) to the moment the
// request was written to the socket. DESIGN.md §10 asks for 99 % within
// 20 ms at 50,000 calls.
type Lateness struct {
	Count         uint64
	P50, P99, Max time.Duration // bucket upper bounds; Max is exact
}

// The histogram's buckets: 100 µs wide up to 100 ms, 10 ms wide from there
// to 10 s, and one for anything later.
const (
	lateFine     = 100 * time.Microsecond
	lateFineN    = 1000 // up to 100 ms
	lateCoarse   = 10 * time.Millisecond
	lateCoarseN  = 990 // 100 ms to 10 s
	lateBuckets  = lateFineN + lateCoarseN + 1
	lateFineSpan = lateFine * lateFineN
)

// lateHist counts lateness in fixed buckets with atomic adds: the shards'
// request goroutines record, Stats reads, nothing allocates.
type lateHist struct {
	n      [lateBuckets]atomic.Uint64
	count  atomic.Uint64
	maxDur atomic.Int64
}

func lateBucket(d time.Duration) int {
	switch {
	case d < 0:
		return 0
	case d < lateFineSpan:
		return int(d / lateFine)
	case d < lateFineSpan+lateCoarse*lateCoarseN:
		return lateFineN + int((d-lateFineSpan)/lateCoarse)
	}
	return lateBuckets - 1
}

// lateUpper is the upper bound of bucket i (the last one reports its lower
// bound: "at least").
func lateUpper(i int) time.Duration {
	switch {
	case i < lateFineN:
		return time.Duration(i+1) * lateFine
	case i < lateBuckets-1:
		return lateFineSpan + time.Duration(i-lateFineN+1)*lateCoarse
	}
	return lateFineSpan + lateCoarse*lateCoarseN
}

func (h *lateHist) add(d time.Duration) {
	d = max(d, 0)
	h.n[lateBucket(d)].Add(1)
	h.count.Add(1)
	for {
		m := h.maxDur.Load()
		if int64(d) <= m || h.maxDur.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// snapshot reads the distribution; concurrent adds may be half seen.
func (h *lateHist) snapshot() Lateness {
	var counts [lateBuckets]uint64
	var total uint64
	for i := range h.n {
		counts[i] = h.n[i].Load()
		total += counts[i]
	}
	l := Lateness{Count: total, Max: time.Duration(h.maxDur.Load())}
	if total == 0 {
		return l
	}
	// The smallest bucket bound with at least q of the counts at or below it.
	at := func(q float64) time.Duration {
		want := uint64(q*float64(total) + 0.5)
		want = max(want, 1)
		var sum uint64
		for i, c := range counts {
			if sum += c; sum >= want {
				// Max is exact and within bucket i's bounds when i is
				// the highest bucket counted.
				return min(lateUpper(i), l.Max)
			}
		}
		return l.Max
	}
	l.P50, l.P99 = at(0.50), at(0.99)
	return l
}
