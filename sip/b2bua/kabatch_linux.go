package b2bua

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"sbcd/sip/registrar"
)

// udpBatch writes the UDP keep-alives of one pacer tick from one SIP
// listening socket with sendmmsg(2): one system call for the whole batch
// instead of one sendto per keep-alive, the better part of sbcd's CPU per
// keep-alive (DESIGN.md §10). It writes on the socket sipgo serves, through
// its syscall.RawConn, so the source address and port are the SIP
// listening ones (DESIGN.md §3) and Go's poller still serialises the
// writes with sipgo's. Its buffers grow to the largest batch once and are
// reused: a flush allocates nothing unless a keep-alive fails.
type udpBatch struct {
	rc syscall.RawConn
	v6 bool // an AF_INET6 socket: IPv4 destinations go IPv4-mapped

	ks    []*registrar.Keepalive
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	name4 []unix.RawSockaddrInet4
	name6 []unix.RawSockaddrInet6

	// The state of one sendmmsg call, for write.
	off   int
	sent  int
	errno syscall.Errno
	write func(fd uintptr) bool // w.sendmmsg, bound once
}

// newUDPBatch prepares batched writes on uc.
func newUDPBatch(uc *net.UDPConn) (*udpBatch, error) {
	rc, dom, err := rawConn(uc)
	if err != nil {
		return nil, fmt.Errorf("udp batch: %w", err)
	}
	w := &udpBatch{rc: rc, v6: dom == unix.AF_INET6}
	w.write = w.sendmmsg
	return w, nil
}

// add queues k for the next flush.
func (w *udpBatch) add(k *registrar.Keepalive) { w.ks = append(w.ks, k) }

// errFamily: an IPv6 destination for an IPv4 socket.
var errFamily = errors.New("address family not served by the socket")

// flush sends the queued keep-alives, sets the Err of those that failed
// and empties the queue.
func (w *udpBatch) flush() {
	n := w.pack()
	for w.off = 0; w.off < n; {
		w.sent, w.errno = 0, 0
		if err := w.rc.Write(w.write); err != nil {
			// The socket is closed: nothing more goes out.
			for _, k := range w.ks[:n][w.off:] {
				if k.Err == nil {
					k.Err = fmt.Errorf("keep-alive to %s: %w", k.Dst, err)
				}
			}
			break
		}
		if w.errno != 0 || w.sent <= 0 {
			// sendmmsg reports the error of the first datagram it could
			// not send; those before it went out.
			var err error = w.errno
			if w.errno == 0 {
				err = syscall.EIO
			}
			k := w.ks[w.off]
			k.Err = fmt.Errorf("keep-alive to %s: sendmmsg: %w", k.Dst, err)
			w.off++
			continue
		}
		w.off += w.sent
	}
	clear(w.ks)
	w.ks = w.ks[:0]
}

// pack fills the message headers of the queued keep-alives the socket can
// send, moving those it cannot (a family mismatch) behind them, and
// returns how many it packed.
func (w *udpBatch) pack() int {
	m := len(w.ks)
	if cap(w.hdrs) < m {
		// Grown before any header points into them: the arrays do not
		// move while a batch is packed.
		w.hdrs = make([]unix.Mmsghdr, m)
		w.iovs = make([]unix.Iovec, m)
		w.name4 = make([]unix.RawSockaddrInet4, m)
		w.name6 = make([]unix.RawSockaddrInet6, m)
	}
	w.hdrs, w.iovs = w.hdrs[:m], w.iovs[:m]
	n := 0
	for i := range m {
		k := w.ks[i]
		a := k.Dst.Addr()
		h := &w.hdrs[n]
		*h = unix.Mmsghdr{}
		switch {
		case w.v6:
			sa := &w.name6[n]
			*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()} // As16: IPv4 as ::ffff:a.b.c.d
			putPort(&sa.Port, k.Dst.Port())
			h.Hdr.Name = (*byte)(unsafe.Pointer(sa))
			h.Hdr.Namelen = unix.SizeofSockaddrInet6
		case a.Unmap().Is4():
			sa := &w.name4[n]
			*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
			putPort(&sa.Port, k.Dst.Port())
			h.Hdr.Name = (*byte)(unsafe.Pointer(sa))
			h.Hdr.Namelen = unix.SizeofSockaddrInet4
		default:
			k.Err = fmt.Errorf("keep-alive to %s: %w", k.Dst, errFamily)
			continue
		}
		iov := &w.iovs[n]
		*iov = unix.Iovec{}
		if len(k.Payload) > 0 {
			iov.Base = &k.Payload[0]
		}
		iov.SetLen(len(k.Payload))
		h.Hdr.Iov = iov
		h.Hdr.SetIovlen(1)
		w.ks[n], w.ks[i] = k, w.ks[n]
		n++
	}
	w.hdrs = w.hdrs[:n]
	return n
}

// rawBatch bounds one sendmmsg call. A batch of the default send_one_time
// (100) goes out in one call: with 64 it took two, one system call more per
// batch than the floor of bench/keepalive.sh pays (BENCHMARKS.md, change
// 31). 128 datagrams are at most about 500 µs in the kernel on loopback,
// where the receive path runs in the sender's call.
const rawBatch = 128

// putPort stores port in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// sendmmsg is the syscall.RawConn write callback: one sendmmsg(2) of at
// most rawBatch packed headers from w.off on. It returns false to wait
// until the socket is writable again (EAGAIN: the send buffer is full).
//
// It is a raw system call: the socket is non-blocking (Go's poller), so
// sendmmsg never sleeps, and skipping the runtime's entersyscall/
// exitsyscall matters here: in a process that is otherwise idle between
// pacer ticks, entersyscall wakes the runtime's sysmon thread from its
// deep sleep and resets it to polling every 20 µs: with syscall.Syscall6
// sbcd spent a third to a half more CPU per keep-alive in bench/
// keepalive.sh (three times the context switches of the sysmon thread). The price is that the goroutine keeps its P for the
// duration of one call, which rawBatch bounds.
func (w *udpBatch) sendmmsg(fd uintptr) bool {
	for {
		vlen := min(len(w.hdrs)-w.off, rawBatch)
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd,
			uintptr(unsafe.Pointer(&w.hdrs[w.off])), uintptr(vlen), 0, 0, 0)
		switch e {
		case 0:
			w.sent = int(r)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
	}
}
