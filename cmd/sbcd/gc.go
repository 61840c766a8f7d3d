package main

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"strconv"
)

// gcHeadroom is about how much garbage sbcd lets the heap gather over its
// live data before the next collection.
//
// Go's default (GOGC=100) lets the heap grow by as much as is live. Most of
// what was live in sbcd was its preallocated tables (DESIGN.md §1: at the
// default capacity about 90 MB of dialog slots, 50 MB of bindings and the
// 32 MiB retransmission cache), so the default let 140 MB or more of garbage
// pile up on a box of 512 MB: the memory growth under churn and per call that
// DESIGN.md §10 bounds (BENCHMARKS.md). A collection costs sbcd a few
// milliseconds of CPU (the tables hold few pointers), so a small headroom is
// cheap. Since change 35 the tables without pointers (the indexes' key
// arenas, the binding records and array, the retransmission cache) live
// outside the Go heap on huge pages (timers/huge) and no longer count:
// with bench/load.sh's 60,000 calls 74 MB is live at start, mostly dialog
// slots, and the percentage comes out at 42.
const gcHeadroom = 32 << 20

// GC percentage bounds: below 10 collections would run back to back under
// load; above 100 is the default's own headroom (a small configuration).
const (
	minGCPercent = 10
	maxGCPercent = 100
)

// tuneGC sets the GC percentage for a headroom of about gcHeadroom over the
// heap that is live now, once the tables are allocated. A valid GOGC in the
// environment (a number, or off) wins, as in any Go program: then it sets
// nothing and returns 0; otherwise it returns the percentage it set.
func tuneGC(log *slog.Logger, getenv func(string) string) int {
	if v := getenv("GOGC"); v != "" {
		if _, err := strconv.Atoi(v); err == nil || v == "off" {
			log.Info("garbage collector: GOGC from the environment", "gogc", v)
			return 0
		}
		// The runtime reads anything else as 100 (its default).
		log.Warn("garbage collector: GOGC in the environment is neither a number nor off; the Go runtime ignores it, and so does sbcd",
			"gogc", v)
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	p := gcPercent(m.HeapAlloc, gcHeadroom)
	debug.SetGCPercent(p)
	log.Info("garbage collector", "live_mb", m.HeapAlloc>>20, "gogc", p, "headroom_mb", uint64(p)*m.HeapAlloc/100>>20)
	return p
}

// gcPercent is the GC percentage that gives headroom bytes over live bytes,
// within [minGCPercent, maxGCPercent].
func gcPercent(live, headroom uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	return int(min(max(headroom*100/live, minGCPercent), maxGCPercent))
}
