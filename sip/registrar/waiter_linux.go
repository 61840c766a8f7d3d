package registrar

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fdWaiter waits on a timerfd(2) registered with Go's netpoller, so that a
// wait between two batches of keep-alives costs one wake-up of one thread.
//
// A time.Timer costs about four (BENCHMARKS.md, change 29): the
// netpoller's epoll_pwait takes whole milliseconds and rounds down, so it
// wakes up to a millisecond early and waits once more; the runtime's
// sysmon thread sleeps until the process's next timer, so it wakes with
// every batch, sleeps 10 ms more and then often interrupts the pacer with
// a preemption signal. With no Go timer pending, the netpoller blocks in
// epoll_pwait until the timerfd fires, and sysmon stays in its long sleep.
//
// The system calls are raw (no entersyscall), as in b2bua's keep-alive
// sender: on a non-blocking timerfd they never sleep, and entersyscall
// would wake sysmon again.
type fdWaiter struct {
	fd      int
	f       *os.File
	rc      syscall.RawConn
	read    func(fd uintptr) bool // w.readOnce, bound once: wait allocates nothing
	stopCtx func() bool           // the context.AfterFunc of newWaiter

	mu   sync.Mutex // orders wait's arming after the context's end
	done bool       // the context is done: wait returns at once
	err  error      // the first failed read or arming; then wait uses a timer
	buf  [8]byte
	tw   *timerWaiter
}

// newWaiter makes the timerfd waiter, or returns an error (and a time.Timer
// waiter that works all the same) when the kernel refuses the timerfd.
func newWaiter(ctx context.Context) (waiter, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return newTimerWaiter(ctx), fmt.Errorf("registrar: keep-alive timerfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "keepalive-timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return newTimerWaiter(ctx), fmt.Errorf("registrar: keep-alive timerfd: %w", err)
	}
	w := &fdWaiter{fd: fd, f: f, rc: rc, tw: newTimerWaiter(ctx)}
	w.read = w.readOnce
	w.stopCtx = context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
		// Wake a wait in progress. Should arming fail, the wait ends at
		// its own time, at most a batch interval later.
		_ = w.arm(1)
	})
	return w, nil
}

func (w *fdWaiter) wait(d time.Duration) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	if w.err == nil {
		w.err = w.arm(d)
	}
	err := w.err
	w.mu.Unlock()
	if err == nil {
		err = w.rc.Read(w.read)
		if err == nil {
			return
		}
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
	w.tw.wait(d) // the timerfd failed: wait as a time.Timer does
}

// arm sets the timerfd to expire once, d from now (at least 1 ns: 0
// would disarm it). Called under mu.
func (w *fdWaiter) arm(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(max(d, 1)))}
	_, _, e := unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(w.fd), 0,
		uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
	if e != 0 {
		return fmt.Errorf("registrar: keep-alive timerfd: settime: %w", e)
	}
	return nil
}

// readOnce is the syscall.RawConn read callback: it consumes the
// expiration count, and returns false to wait for the poller while the
// timer has not expired (EAGAIN).
func (w *fdWaiter) readOnce(fd uintptr) bool {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		switch {
		case e == 0:
			return true
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false
		default:
			w.err = fmt.Errorf("registrar: keep-alive timerfd: read: %w", e)
			return true
		}
	}
}

func (w *fdWaiter) stop() {
	w.stopCtx()
	w.tw.stop()
	_ = w.f.Close() // nothing was written: a failed close loses nothing
}
