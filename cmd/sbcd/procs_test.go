package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeProcs records what a tuner sets instead of changing the runtime.
type fakeProcs struct {
	mu  sync.Mutex
	set []int
}

func (f *fakeProcs) setProcs(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set = append(f.set, n)
	return 0
}

func (f *fakeProcs) calls() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.set...)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// repeat is n copies of v.
func repeat[T any](n int, v T) []T {
	s := make([]T, n)
	for i := range s {
		s[i] = v
	}
	return s
}

func TestProcTunerSample(t *testing.T) {
	dropped := append(repeat(procsCalm, 4), 1) // procsCalm calm samples at 4 Ps, the last one drops to 1
	dropped = dropped[1:]
	for _, tc := range []struct {
		name  string
		loads []float64 // cores used in each sample of procsEvery
		want  []int     // Ps in force after each sample
	}{
		{"idle stays at one", []float64{0, 0.1, 0.59}, []int{1, 1, 1}},
		{"load at the threshold adds the Ps", []float64{0.2, 0.6}, []int{1, 4}},
		{"saturated one P", []float64{1.0}, []int{4}},
		{"stays up between the thresholds", []float64{0.7, 0.5, 0.31, 0.45}, []int{4, 4, 4, 4}},
		{"calm for procsCalm samples drops to one",
			append([]float64{0.9}, repeat(procsCalm, 0.3)...),
			append([]int{4}, dropped...)},
		{"a busy sample restarts the calm count",
			append(append(append([]float64{0.9}, repeat(procsCalm-1, 0.1)...), 0.4), repeat(procsCalm-1, 0.1)...),
			repeat(2*procsCalm, 4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f fakeProcs
			t0 := time.Unix(1000, 0)
			cpu := time.Duration(0)
			tu := &procTuner{log: quietLog(), full: 4, set: f.setProcs, procs: 1, lastAt: t0}
			var got []int
			now := t0
			for _, l := range tc.loads {
				now = now.Add(procsEvery)
				cpu += time.Duration(l * float64(procsEvery))
				tu.sample(now, cpu)
				got = append(got, tu.procs)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Ps after each sample (-want +got):\n%s", d)
			}
			// The runtime is told exactly the changes, nothing more.
			var changes []int
			prev := 1
			for _, p := range got {
				if p != prev {
					changes = append(changes, p)
				}
				prev = p
			}
			if d := cmp.Diff(changes, f.calls()); d != "" {
				t.Errorf("GOMAXPROCS calls (-want +got):\n%s", d)
			}
		})
	}
}

// TestProcTunerWait: one P samples every procsIdleEvery while it idles
// (a box that only keeps bindings alive), every procsEvery as soon as a
// sample finds work or while the extra Ps are in force.
func TestProcTunerWait(t *testing.T) {
	for _, tc := range []struct {
		name  string
		loads []float64 // cores used in each sample, as in TestProcTunerSample
		want  []time.Duration
	}{
		{"idle from the start", nil, []time.Duration{procsIdleEvery}},
		{"keep-alives only", []float64{0.012, 0.02, 0.049}, repeat(3, procsIdleEvery)},
		{"calls at one P", []float64{0.01, 0.05, 0.2, 0.01}, []time.Duration{procsIdleEvery, procsEvery, procsEvery, procsIdleEvery}},
		{"the extra Ps in force, even when calm", []float64{0.9, 0.01, 0.01}, repeat(3, procsEvery)},
		{"back at one P and idle", append(append([]float64{0.9}, repeat(procsCalm, 0.01)...), 0.01),
			append(repeat(procsCalm, procsEvery), procsIdleEvery, procsIdleEvery)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f fakeProcs
			t0 := time.Unix(1000, 0)
			tu := &procTuner{log: quietLog(), full: 2, set: f.setProcs, procs: 1, lastAt: t0,
				tick: procsEvery, idle: procsIdleEvery}
			got := []time.Duration{}
			if len(tc.loads) == 0 {
				got = append(got, tu.wait())
			}
			now, cpu := t0, time.Duration(0)
			for _, l := range tc.loads {
				d := tu.wait()
				now = now.Add(d)
				cpu += time.Duration(l * float64(d))
				tu.sample(now, cpu)
				got = append(got, tu.wait())
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("waits after each sample (-want +got):\n%s", d)
			}
		})
	}
}

func TestProcTunerSampleOutOfOrder(t *testing.T) {
	var f fakeProcs
	t0 := time.Unix(1000, 0)
	tu := &procTuner{log: quietLog(), full: 2, set: f.setProcs, procs: 1, lastAt: t0, last: time.Second}
	// The wall clock stepped back, then a CPU reading went backwards: no load
	// figure from either, however large the numbers look.
	if tu.sample(t0.Add(-time.Hour), 10*time.Second) {
		t.Error("a clock step back changed the Ps")
	}
	if tu.sample(t0, 5*time.Second) {
		t.Error("a CPU reading going backwards changed the Ps")
	}
	if len(f.calls()) != 0 || tu.procs != 1 {
		t.Errorf("Ps %d, calls %v; want 1 and none", tu.procs, f.calls())
	}
	// The next sound sample is measured from the last reading.
	if !tu.sample(t0.Add(procsEvery), 5*time.Second+procsEvery) {
		t.Error("a full core over a sample did not add the Ps")
	}
}

func TestNewProcTuner(t *testing.T) {
	if tu := newProcTuner(quietLog(), func(k string) string { return map[string]string{"GOMAXPROCS": "2"}[k] }); tu != nil {
		t.Error("a tuner although GOMAXPROCS is set in the environment")
	}
	// The runtime ignores a GOMAXPROCS that is not a positive number: the
	// tuner does too, and says so.
	for _, v := range []string{"0", "-2", "two"} {
		var out strings.Builder
		tu := newProcTuner(slog.New(slog.NewTextHandler(&out, nil)), func(k string) string { return map[string]string{"GOMAXPROCS": v}[k] })
		if !strings.Contains(out.String(), "level=WARN") || !strings.Contains(out.String(), "gomaxprocs="+v) {
			t.Errorf("GOMAXPROCS=%s: no warning naming it in:\n%s", v, out.String())
		}
		if runtime.GOMAXPROCS(0) > 1 && tu == nil {
			t.Errorf("GOMAXPROCS=%s: no tuner, as if the runtime had taken it", v)
		}
	}
	tu := newProcTuner(quietLog(), func(string) string { return "" })
	if runtime.GOMAXPROCS(0) == 1 {
		if tu != nil {
			t.Error("a tuner for a process with one P")
		}
		return
	}
	if tu == nil || tu.full != runtime.GOMAXPROCS(0) {
		t.Fatalf("tuner %+v, want one with full = %d", tu, runtime.GOMAXPROCS(0))
	}
	if _, err := tu.cpu(); err != nil {
		t.Fatalf("process CPU time: %v", err)
	}
}

func TestProcTunerRun(t *testing.T) {
	var f fakeProcs
	var mu sync.Mutex
	cpu := time.Duration(0)
	t0 := time.Unix(1000, 0)
	now := t0
	samples := 0
	// The first sample comes after idle (the tuner starts idle): a run
	// that waited tick, an hour, would not sample before the deadline.
	tu := &procTuner{log: quietLog(), full: 3, set: f.setProcs, tick: time.Hour, idle: time.Millisecond,
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		cpu: func() (time.Duration, error) {
			// Each reading is one sample later and a whole core busier.
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(procsEvery)
			cpu += procsEvery
			samples++
			return cpu, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tu.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.calls()) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	// One P at the start, all of them under load, the default back at the end.
	if d := cmp.Diff([]int{1, 3, 3}, f.calls()); d != "" {
		t.Errorf("GOMAXPROCS calls (-want +got):\n%s", d)
	}

	// A CPU time that cannot be read leaves the runtime's default alone.
	var g fakeProcs
	bad := &procTuner{log: quietLog(), full: 2, set: g.setProcs, tick: time.Millisecond, idle: time.Millisecond, now: time.Now,
		cpu: func() (time.Duration, error) { return 0, errors.New("no rusage") }}
	bad.run(context.Background()) // returns at once
	if len(g.calls()) != 0 {
		t.Errorf("GOMAXPROCS calls %v without a CPU reading", g.calls())
	}
	var nilTuner *procTuner
	nilTuner.run(context.Background()) // nothing to tune: returns at once
}

func TestProcessCPU(t *testing.T) {
	a, err := processCPU()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for x := 0; time.Now().Before(deadline); x++ {
		if b, err := processCPU(); err != nil {
			t.Fatal(err)
		} else if b > a {
			return
		}
		_ = x * x
	}
	t.Fatal("process CPU time did not grow while the test spun")
}

// TestServeTunesThreads runs the daemon in-process: it drops to one P while
// it idles, and gives the runtime its default back when it stops.
func TestServeTunesThreads(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment: the daemon leaves it alone")
	}
	full := runtime.GOMAXPROCS(0)
	if full == 1 {
		t.Skip("the test process has one P: nothing to tune")
	}
	ctx, stop := context.WithCancel(context.Background())
	sig := newFakeSignals(ctx)
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	args := []string{"-config", testConfig(t, t.TempDir())}
	go func() { done <- runWith(args, &stdout, &stderr, sig.subscribe) }()
	stopped := false
	shutdown := func() int {
		stopped = true
		stop()
		select {
		case code := <-done:
			return code
		case <-time.After(20 * time.Second):
			t.Fatalf("daemon did not stop; stderr:\n%s", stderr.String())
			return -1
		}
	}
	defer func() {
		if !stopped {
			shutdown()
		}
	}()

	deadline := time.Now().Add(10 * time.Second)
	for runtime.GOMAXPROCS(0) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS still %d 10 s after the start; stderr:\n%s", runtime.GOMAXPROCS(0), stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if code := shutdown(); code != exitOK {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr.String())
	}
	if got := runtime.GOMAXPROCS(0); got != full {
		t.Errorf("GOMAXPROCS %d after the daemon stopped, want the default %d", got, full)
	}
}
