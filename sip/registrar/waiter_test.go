package registrar

import (
	"context"
	"testing"
	"time"
)

// waiters are the kinds Run can wait on: the platform's (a timerfd on
// Linux) and the time.Timer one.
var waiters = []struct {
	name string
	make func(context.Context) (waiter, error)
}{
	{"platform", newWaiter},
	{"timer", func(ctx context.Context) (waiter, error) { return newTimerWaiter(ctx), nil }},
}

// returnsWithin runs f and fails the test when it takes longer than limit.
func returnsWithin(t *testing.T, what string, limit time.Duration, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s: still waiting after %v", what, limit)
		return 0
	}
}

func TestWaiter(t *testing.T) {
	for _, k := range waiters {
		t.Run(k.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			w, err := k.make(ctx)
			if err != nil {
				t.Fatalf("new waiter: %v", err)
			}
			defer w.stop()
			for _, d := range []time.Duration{5 * time.Millisecond, 0, -time.Second, time.Millisecond, 5 * time.Millisecond} {
				took := returnsWithin(t, "wait("+d.String()+")", 5*time.Second, func() { w.wait(d) })
				if took < d {
					t.Errorf("wait(%v) returned after %v", d, took)
				}
			}
			// The context's end ends a wait in progress, and every wait after it.
			go func() {
				time.Sleep(10 * time.Millisecond)
				cancel()
			}()
			returnsWithin(t, "wait(1h) with the context cancelled during it", 5*time.Second, func() { w.wait(time.Hour) })
			returnsWithin(t, "wait(1h) after the context's end", 5*time.Second, func() { w.wait(time.Hour) })
		})
	}
}

// TestWaiterDoneBefore: a waiter made with a context that is already done
// never waits.
func TestWaiterDoneBefore(t *testing.T) {
	for _, k := range waiters {
		t.Run(k.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			w, err := k.make(ctx)
			if err != nil {
				t.Fatalf("new waiter: %v", err)
			}
			defer w.stop()
			returnsWithin(t, "wait(1h)", 5*time.Second, func() { w.wait(time.Hour) })
		})
	}
}

// TestWaiterZeroAllocs: Run waits once per batch; a wait allocates nothing.
func TestWaiterZeroAllocs(t *testing.T) {
	for _, k := range waiters {
		t.Run(k.name, func(t *testing.T) {
			w, err := k.make(t.Context())
			if err != nil {
				t.Fatalf("new waiter: %v", err)
			}
			defer w.stop()
			if n := testing.AllocsPerRun(50, func() { w.wait(time.Microsecond) }); n != 0 {
				t.Errorf("wait: %v allocations, want 0", n)
			}
		})
	}
}
