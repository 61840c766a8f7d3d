package main

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// procTuner runs sbcd's Go code on one OS thread (GOMAXPROCS 1) while its
// load fits easily in one core, and on every core the runtime would use
// otherwise when it does not.
//
// Why: a SIP message passes through a few goroutines in a row (the socket's
// reader, the call's shard, the CDR writer; DESIGN.md §1, concurrency model),
// each step a few microseconds. With two Ps, handing a message to a parked
// goroutine while the other P is idle wakes a second OS thread: a futex, a
// context switch, and a spinning thread that usually finds nothing to do and
// sleeps again. That is about a fifth of sbcd's CPU per call at 1,500 calls/s
// on the reference machine (BENCHMARKS.md, change 14). With one P the next
// goroutine runs on the same thread. One core of the box carries several
// thousand calls per second, so the second P is only worth its cost when the
// load nears one core: then it is added, and it is taken away again once the
// load has stayed low for a while.
//
// A valid GOMAXPROCS in the environment wins, as in any Go program: then
// the tuner does nothing.
type procTuner struct {
	log  *slog.Logger
	full int                           // Ps under load: the runtime's default
	cpu  func() (time.Duration, error) // CPU time the process has used so far
	set  func(int) int                 // runtime.GOMAXPROCS
	now  func() time.Time              // the clock, for the samples
	tick time.Duration                 // time between samples
	idle time.Duration                 // time between samples while idle (wait)

	procs  int           // Ps in force
	last   time.Duration // cpu at lastAt
	lastAt time.Time
	load   float64 // cores used over the last sound sample
	calm   int     // samples in a row at or below procsDown while at max
}

const (
	// procsEvery is the time between two load samples.
	procsEvery = 500 * time.Millisecond
	// procsUp is the load, in cores over one sample, at which one P gets
	// help: well before one thread is saturated, so that a burst does not
	// queue behind it.
	procsUp = 0.6
	// procsDown is the load, in cores, under which the extra Ps go away
	// once it has held for procsCalm samples in a row (10 s). The gap to
	// procsUp is the hysteresis: the same work measures about a fifth more
	// CPU with two Ps than with one.
	procsDown = 0.3
	procsCalm = 20
	// procsIdle is the load, in cores, under which one P samples only
	// every procsIdleEvery. A box that only keeps NAT bindings alive uses
	// about 0.01 of a core (100,000 bindings), and every sample, a Go
	// timer, costs it wake-ups of the runtime's netpoller (two: epoll's
	// millisecond timeout rounds down) and of its sysmon thread: at
	// procsEvery that was a fifth of the wake-ups of such a box on the
	// reference machine (BENCHMARKS.md, change 36). A load that jumps from idle past one
	// core waits at most procsIdleEvery for the second P; one P carries
	// thousands of calls a second meanwhile, and the sockets' buffers
	// hold the rest.
	procsIdle      = 0.05
	procsIdleEvery = 2 * time.Second
)

// newProcTuner returns a tuner for this process, or nil when there is
// nothing to tune: GOMAXPROCS is set in the environment, or the runtime uses
// one P anyway. A GOMAXPROCS that is not a positive number is ignored by
// the Go runtime; sbcd says so and tunes as if it were unset.
func newProcTuner(log *slog.Logger, getenv func(string) string) *procTuner {
	if v := getenv("GOMAXPROCS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			log.Info("go threads: GOMAXPROCS from the environment", "gomaxprocs", v)
			return nil
		}
		log.Warn("go threads: GOMAXPROCS in the environment is not a positive number; the Go runtime ignores it, and so does sbcd",
			"gomaxprocs", v)
	}
	full := runtime.GOMAXPROCS(0)
	if full <= 1 {
		return nil
	}
	return &procTuner{log: log, full: full, cpu: processCPU, set: runtime.GOMAXPROCS, now: time.Now,
		tick: procsEvery, idle: procsIdleEvery}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// run starts at one P and samples the load until ctx ends, then gives the
// runtime its default back. A nil tuner returns at once.
func (t *procTuner) run(ctx context.Context) {
	if t == nil {
		return
	}
	if err := t.start(); err != nil {
		t.log.Warn("go threads: not tuned, process CPU time unreadable", "err", err)
		return
	}
	defer t.set(t.full)
	tm := time.NewTimer(t.wait())
	defer tm.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tm.C:
			c, err := t.cpu()
			if err != nil {
				t.log.Warn("go threads: process CPU time unreadable, back to the default", "err", err, "gomaxprocs", t.full)
				return
			}
			t.sample(t.now(), c)
			tm.Reset(t.wait())
		}
	}
}

// wait is the time until the next sample: idle while one P carries less
// than procsIdle of a core, tick otherwise.
func (t *procTuner) wait() time.Duration {
	if t.procs == 1 && t.load < procsIdle {
		return t.idle
	}
	return t.tick
}

// start takes the first reading and drops to one P.
func (t *procTuner) start() error {
	c, err := t.cpu()
	if err != nil {
		return err
	}
	t.last, t.lastAt = c, t.now()
	t.procs = 1
	t.set(1)
	t.log.Info("go threads", "gomaxprocs", 1, "under_load", t.full)
	return nil
}

// sample takes one reading of the process's CPU time at now and changes the
// number of Ps when the load calls for it. It reports whether it changed.
func (t *procTuner) sample(now time.Time, cpu time.Duration) bool {
	wall := now.Sub(t.lastAt)
	used := cpu - t.last
	t.last, t.lastAt = cpu, now
	if wall <= 0 || used < 0 {
		return false // a clock step or a reading out of order: no load figure
	}
	load := used.Seconds() / wall.Seconds()
	t.load = load
	switch {
	case t.procs == 1 && load >= procsUp:
		t.procs, t.calm = t.full, 0
	case t.procs > 1 && load <= procsDown:
		if t.calm++; t.calm < procsCalm {
			return false
		}
		t.procs, t.calm = 1, 0
	default:
		t.calm = 0
		return false
	}
	t.set(t.procs)
	t.log.Info("go threads", "gomaxprocs", t.procs, "load_cores", float64(int(load*100))/100)
	return true
}
