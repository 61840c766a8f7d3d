package b2bua

import (
	"testing"
	"time"
)

func TestLateBuckets(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{-time.Millisecond, 0},
		{0, 0},
		{99 * time.Microsecond, 0},
		{100 * time.Microsecond, 1},
		{20 * time.Millisecond, 200},
		{100*time.Millisecond - 1, lateFineN - 1},
		{100 * time.Millisecond, lateFineN},
		{110 * time.Millisecond, lateFineN + 1},
		{10*time.Second - 1, lateBuckets - 2},
		{10 * time.Second, lateBuckets - 1},
		{time.Hour, lateBuckets - 1},
	} {
		i := lateBucket(tc.d)
		if i != tc.want {
			t.Errorf("lateBucket(%v) = %d, want %d", tc.d, i, tc.want)
			continue
		}
		if i < lateBuckets-1 && tc.d >= 0 && tc.d >= lateUpper(i) {
			t.Errorf("%v at or above its bucket's upper bound %v", tc.d, lateUpper(i))
		}
	}
}

func TestLatenessQuantiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		adds []time.Duration
		want Lateness
	}{
		{"none", nil, Lateness{}},
		{"one", []time.Duration{1234 * time.Microsecond}, Lateness{Count: 1,
			P50: 1234 * time.Microsecond, P99: 1234 * time.Microsecond, Max: 1234 * time.Microsecond}},
		{"spread", append(repeat(98, 150*time.Microsecond), 15*time.Millisecond, 3*time.Second),
			Lateness{Count: 100, P50: 200 * time.Microsecond, P99: 15100 * time.Microsecond, Max: 3 * time.Second}},
		{"negative counts as on time", []time.Duration{-5 * time.Millisecond}, Lateness{Count: 1}},
		{"beyond the last bucket", []time.Duration{time.Minute}, Lateness{Count: 1,
			P50: 10 * time.Second, P99: 10 * time.Second, Max: time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h lateHist
			for _, d := range tc.adds {
				h.add(d)
			}
			if got := h.snapshot(); got != tc.want {
				t.Errorf("snapshot %+v, want %+v", got, tc.want)
			}
		})
	}
}

func repeat(n int, d time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestLatenessAddAllocs(t *testing.T) {
	var h lateHist
	if a := testing.AllocsPerRun(1000, func() { h.add(3 * time.Millisecond) }); a != 0 {
		t.Errorf("add allocates %.1f times", a)
	}
}
