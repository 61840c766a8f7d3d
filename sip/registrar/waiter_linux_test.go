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
