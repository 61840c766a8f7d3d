// Command kafloor is the floor of bench/keepalive.sh: the least a program
// can spend to send keep-alives at a given rate and pacing on this
// machine, with nothing else to do (no binding table, no SIP, no runtime
// work besides the sleep). It sends -message from -src to -dst at -rate
// datagrams a second, paced one of two ways:
//
//   - batch: -batch datagrams in one sendmmsg(2) every batch/rate
//     seconds (sbcd's pacing: at 100,000 bindings and a 30-s period,
//     3,333/s in batches of at most send_one_time = 100, every 30 ms);
//   - burst: one sendto(2) per datagram, the whole second's share in a row
//     once a second (Kamailio nathelper's pacing).
//
// The benchmark runs it as a system under test of its own, through the
// same sink and windows as the registrars, so that "CPU per keep-alive" of
// each registrar can be set beside the floor of its own pacing: what the
// kernel, the system calls and the wake-ups cost on this machine whatever
// the program.
//
// Both pacings send with raw system calls on a non-blocking socket, as
// sbcd's keep-alive path does (sip/b2bua/kabatch_linux.go): syscall.Syscall
// would wake the Go runtime's sysmon thread out of its deep sleep on every
// batch and set it polling every 20 µs for a millisecond, a cost of the Go
// runtime that sbcd does not pay, so a floor that paid it would not be a
// floor (it came out above sbcd's whole cost with it). A datagram that
// meets a full send buffer (EAGAIN) counts as failed, not waited for. For
// the same reason it waits on a timerfd in Go's netpoller, as sbcd's pacer
// does (sip/registrar/waiter_linux.go), not on time.Sleep: a Go timer costs
// about four wake-ups per wait here, a timerfd one.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	src := flag.String("src", "", "local IPv4 host:port to send from")
	dst := flag.String("dst", "", "IPv4 host:port to send to")
	rate := flag.Int("rate", 3333, "datagrams per second")
	pacing := flag.String("pacing", "batch", "batch (sendmmsg of -batch every batch/rate s) or burst (a second's share of sendto once a second)")
	batch := flag.Int("batch", 100, "datagrams per sendmmsg, with -pacing batch")
	message := flag.String("message", "HELLO", "payload")
	duration := flag.Duration("duration", time.Hour, "stop after this long")
	flag.Parse()

	sa, err := netip.ParseAddrPort(*src)
	if err != nil || !sa.Addr().Is4() {
		fatal("-src %q: an IPv4 host:port is needed", *src)
	}
	da, err := netip.ParseAddrPort(*dst)
	if err != nil || !da.Addr().Is4() {
		fatal("-dst %q: an IPv4 host:port is needed", *dst)
	}
	if *rate < 1 || *batch < 1 || *batch > 100000 {
		fatal("-rate must be at least 1, -batch 1 to 100000")
	}
	if *pacing != "batch" && *pacing != "burst" {
		fatal("-pacing must be batch or burst")
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		fatal("socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(sa.Port()), Addr: sa.Addr().As4()}); err != nil {
		fatal("bind %s: %v", sa, err)
	}
	payload := []byte(*message)
	if len(payload) == 0 {
		fatal("-message must not be empty")
	}

	// The sendmmsg vectors, all to dst, built once.
	name := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: da.Addr().As4()}
	port := (*[2]byte)(unsafe.Pointer(&name.Port)) // network byte order
	port[0], port[1] = byte(da.Port()>>8), byte(da.Port())
	iov := unix.Iovec{Base: &payload[0]}
	iov.SetLen(len(payload))
	// The kernel takes at most UIO_MAXIOV (1024) datagrams per call, so a
	// larger batch is several calls in a row, as sbcd sends it.
	hdrs := make([]unix.Mmsghdr, min(*batch, 1024))
	for i := range hdrs {
		hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&name))
		hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		hdrs[i].Hdr.Iov = &iov
		hdrs[i].Hdr.SetIovlen(1)
	}

	sl, err := newSleeper()
	if err != nil {
		fatal("%v", err)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	end := time.Now().Add(*duration)
	var sent, failed int64
	start := time.Now()
	next := start
	for time.Now().Before(end) {
		select {
		case <-stop:
			end = time.Now()
			continue
		default:
		}
		if *pacing == "batch" {
			for left := *batch; left > 0; {
				m := min(left, len(hdrs))
				n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(m), 0, 0, 0)
				if e != 0 || n == 0 {
					failed += int64(left)
					break
				}
				sent += int64(n)
				left -= int(n)
			}
			next = next.Add(time.Duration(int64(time.Second) * int64(*batch) / int64(*rate)))
		} else {
			for range *rate {
				_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&payload[0])), uintptr(len(payload)), 0,
					uintptr(unsafe.Pointer(&name)), unix.SizeofSockaddrInet4)
				if e != 0 {
					failed++
				} else {
					sent++
				}
			}
			next = next.Add(time.Second)
		}
		if err := sl.sleep(time.Until(next)); err != nil {
			fatal("%v", err)
		}
	}
	fmt.Printf("sent=%d failed=%d seconds=%.1f\n", sent, failed, time.Since(start).Seconds())
}

// sleeper waits on a timerfd registered with Go's netpoller, with raw
// system calls (no entersyscall to wake sysmon).
type sleeper struct {
	fd    int
	rc    syscall.RawConn
	buf   [8]byte
	errno syscall.Errno
	readf func(fd uintptr) bool // s.read, bound once
}

func newSleeper() (*sleeper, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	rc, err := os.NewFile(uintptr(fd), "timerfd").SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	s := &sleeper{fd: fd, rc: rc}
	s.readf = s.read
	return s, nil
}

// sleep returns after d (at once for d <= 0).
func (s *sleeper) sleep(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if _, _, e := unix.RawSyscall6(unix.SYS_TIMERFD_SETTIME, uintptr(s.fd), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); e != 0 {
		return fmt.Errorf("timerfd_settime: %w", e)
	}
	s.errno = 0
	if err := s.rc.Read(s.readf); err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	if s.errno != 0 {
		return fmt.Errorf("timerfd read: %w", s.errno)
	}
	return nil
}

// read is the RawConn read callback: false to wait for the poller while
// the timer has not expired (EAGAIN); any other error is kept in errno.
func (s *sleeper) read(fd uintptr) bool {
	e := unix.EINTR
	for e == unix.EINTR {
		_, _, e = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)))
	}
	if e == unix.EAGAIN {
		return false
	}
	s.errno = e
	return true
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "kafloor: "+f+"\n", a...)
	os.Exit(2)
}
