package registrar

import (
	"testing"
	"time"
)

// TestFdWaiter: on Linux Run waits on the timerfd, and its waits do not
// fall back to the time.Timer.
func TestFdWaiter(t *testing.T) {
	w, err := newWaiter(t.Context())
	if err != nil {
		t.Fatalf("new waiter: %v", err)
	}
	defer w.stop()
	fw, ok := w.(*fdWaiter)
	if !ok {
		t.Fatalf("waiter is a %T, want *fdWaiter", w)
	}
	for range 3 {
		returnsWithin(t, "wait(2ms)", 5*time.Second, func() { w.wait(2 * time.Millisecond) })
	}
	if fw.err != nil {
		t.Errorf("the timerfd failed: %v", fw.err)
	}
}

// TestFdWaiterFallback: once the timerfd fails (here: closed under it),
// the waiter still waits out every d, on its time.Timer, and keeps the
// error.
func TestFdWaiterFallback(t *testing.T) {
	w, err := newWaiter(t.Context())
	if err != nil {
		t.Fatalf("new waiter: %v", err)
	}
	defer w.stop()
	fw := w.(*fdWaiter)
	if err := fw.f.Close(); err != nil {
		t.Fatalf("close timerfd: %v", err)
	}
	for range 2 {
		const d = 5 * time.Millisecond
		if took := returnsWithin(t, "wait(5ms)", 5*time.Second, func() { w.wait(d) }); took < d {
			t.Errorf("wait(%v) on a failed timerfd returned after %v", d, took)
		}
	}
	if fw.err == nil {
		t.Error("no error kept after the timerfd failed")
	}
}
