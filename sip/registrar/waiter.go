package registrar

import (
	"context"
	"time"
)

// waiter is what Run waits on between two batches of keep-alives. On
// Linux it is a timerfd in Go's netpoller (waiter_linux.go), elsewhere,
// and where a timerfd cannot be had, a time.Timer (timerWaiter).
type waiter interface {
	// wait returns after d, or at once when the context the waiter was
	// made with is done (also when it is done while waiting).
	wait(d time.Duration)
	// stop releases the waiter. Call it once, after the last wait.
	stop()
}

// timerWaiter waits on a time.Timer.
type timerWaiter struct {
	ctx context.Context
	t   *time.Timer
}

func newTimerWaiter(ctx context.Context) *timerWaiter {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerWaiter{ctx: ctx, t: t}
}

func (w *timerWaiter) wait(d time.Duration) {
	w.t.Reset(d)
	select {
	case <-w.ctx.Done():
		w.t.Stop()
	case <-w.t.C:
	}
}

func (w *timerWaiter) stop() { w.t.Stop() }
