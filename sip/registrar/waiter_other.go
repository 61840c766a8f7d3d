//go:build !linux

package registrar

import "context"

// newWaiter returns a time.Timer waiter: the timerfd of waiter_linux.go is
// Linux's.
func newWaiter(ctx context.Context) (waiter, error) { return newTimerWaiter(ctx), nil }
