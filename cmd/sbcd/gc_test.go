package main

import (
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		live, headroom uint64
		want           int
	}{
		{0, 32 << 20, 100},
		{8 << 20, 32 << 20, 100},   // a small box: the default
		{64 << 20, 32 << 20, 50},   // headroom is half of what is live
		{172 << 20, 32 << 20, 18},  // the default capacity's tables
		{1024 << 20, 32 << 20, 10}, // floor: never back-to-back collections
		{320 << 20, 32 << 20, 10},  // exactly the floor
		{330 << 20, 33 << 20, 10},
	} {
		if got := gcPercent(tc.live, tc.headroom); got != tc.want {
			t.Errorf("gcPercent(%d MB, %d MB) = %d, want %d", tc.live>>20, tc.headroom>>20, got, tc.want)
		}
	}
}

func TestTuneGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if p := tuneGC(log, func(string) string { return "" }); p < minGCPercent || p > maxGCPercent {
		t.Fatalf("tuneGC = %d", p)
	} else if got := debug.SetGCPercent(p); got != p {
		t.Fatalf("GC percent in force %d, tuneGC returned %d", got, p)
	}
	debug.SetGCPercent(77)
	if p := tuneGC(log, func(k string) string { return map[string]string{"GOGC": "200"}[k] }); p != 0 {
		t.Fatalf("tuneGC with GOGC set = %d, want 0", p)
	}
	if got := debug.SetGCPercent(77); got != 77 {
		t.Fatalf("tuneGC changed the GC percent to %d although GOGC is set", got)
	}
	for _, v := range []string{"off", "-1", "0"} {
		if p := tuneGC(log, func(k string) string { return map[string]string{"GOGC": v}[k] }); p != 0 {
			t.Errorf("tuneGC with GOGC=%s = %d, want 0 (the runtime takes it)", v, p)
		}
	}
	// The runtime ignores a GOGC it cannot read: sbcd tunes, and says why.
	var out strings.Builder
	warn := slog.New(slog.NewTextHandler(&out, nil))
	if p := tuneGC(warn, func(k string) string { return map[string]string{"GOGC": "fast"}[k] }); p < minGCPercent || p > maxGCPercent {
		t.Errorf("tuneGC with GOGC=fast = %d, want a percentage it set", p)
	}
	if !strings.Contains(out.String(), "level=WARN") || !strings.Contains(out.String(), "gogc=fast") {
		t.Errorf("no warning naming GOGC=fast in:\n%s", out.String())
	}
}
