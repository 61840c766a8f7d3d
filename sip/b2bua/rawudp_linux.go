package b2bua

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawUDP is a SIP listening socket whose datagram reads and writes are raw
// system calls: recvfrom(2) and sendto(2) through the socket's
// syscall.RawConn, so Go's poller still waits for readiness and
// serialises them with every other use of the socket, but without the
// runtime's entersyscall/exitsyscall around each call.
//
// Why (DESIGN.md §10, CPU per call): entersyscall wakes the runtime's
// sysmon thread whenever it is in its deep sleep (all Ps idle) and resets
// it to polling every 20 µs; at 1,500 calls/s the process idles between
// most datagrams, so every datagram woke sysmon again and it never left
// its 20-µs cadence: about 50,000 wake-ups a second, a tenth of sbcd's
// CPU in perf (kabatch_linux.go found the same for the keep-alives). The
// socket is non-blocking, so the calls never sleep: a goroutine holds its
// P for one short system call. Everything else (deadlines, Close,
// LocalAddr, buffer sizes) is the embedded *net.UDPConn's.
type rawUDP struct {
	*net.UDPConn
	rc syscall.RawConn
	v6 bool // an AF_INET6 socket: IPv4 destinations go IPv4-mapped
}

// rawOp is the state of one system call; pooled, so that a read or write
// allocates nothing but the peer address a read returns.
type rawOp struct {
	p     []byte
	sa    unix.RawSockaddrAny
	salen uint32
	n     int
	errno syscall.Errno
	read  func(fd uintptr) bool // o.recvfrom, bound once
	write func(fd uintptr) bool // o.sendto, bound once
}

var rawOps = sync.Pool{New: func() any {
	o := &rawOp{}
	o.read, o.write = o.recvfrom, o.sendto
	return o
}}

// newSIPSocket wraps a bound UDP listening socket for sipgo and sbcd's own
// writers (rtx.go).
func newSIPSocket(uc *net.UDPConn) (net.PacketConn, error) {
	rc, dom, err := rawConn(uc)
	if err != nil {
		return nil, fmt.Errorf("raw udp socket: %w", err)
	}
	return &rawUDP{UDPConn: uc, rc: rc, v6: dom == unix.AF_INET6}, nil
}

// rawConn returns uc's syscall.RawConn and the socket's address family
// (SO_DOMAIN), for raw system calls on it.
func rawConn(uc *net.UDPConn) (syscall.RawConn, int, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	var dom int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		dom, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return nil, 0, err
	}
	if serr != nil {
		return nil, 0, fmt.Errorf("socket domain: %w", serr)
	}
	return rc, dom, nil
}

// udpConn is the socket underneath (udpConnOf).
func (c *rawUDP) udpConn() *net.UDPConn { return c.UDPConn }

func (o *rawOp) recvfrom(fd uintptr) bool {
	for {
		o.salen = uint32(unsafe.Sizeof(o.sa))
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(o.p))), uintptr(len(o.p)), 0,
			uintptr(unsafe.Pointer(&o.sa)), uintptr(unsafe.Pointer(&o.salen)))
		if e != unix.EINTR {
			return o.result(r, e)
		}
	}
}

func (o *rawOp) sendto(fd uintptr) bool {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(o.p))), uintptr(len(o.p)), 0,
			uintptr(unsafe.Pointer(&o.sa)), uintptr(o.salen))
		if e != unix.EINTR {
			return o.result(r, e)
		}
	}
}

// result keeps what a system call on the non-blocking socket returned, and
// tells syscall.RawConn whether it is done: false on EAGAIN, so that the
// poller waits until the socket is ready and calls again.
func (o *rawOp) result(r uintptr, e syscall.Errno) bool {
	if e == unix.EAGAIN {
		return false
	}
	o.n, o.errno = int(r), e
	return true
}

// ReadFrom reads one datagram, as net.UDPConn.ReadFrom does.
func (c *rawUDP) ReadFrom(p []byte) (int, net.Addr, error) {
	o := rawOps.Get().(*rawOp)
	defer rawOps.Put(o)
	o.p = p
	err := c.rc.Read(o.read)
	o.p = nil
	if err != nil {
		return 0, nil, err // closed, or a deadline: net's own errors
	}
	if o.errno != 0 {
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Source: c.LocalAddr(),
			Err: os.NewSyscallError("recvfrom", o.errno)}
	}
	return o.n, o.peer(), nil
}

// peer decodes the source address recvfrom filled in, as net does: the
// IP 4 bytes long from an AF_INET socket, 16 from an AF_INET6 one.
func (o *rawOp) peer() *net.UDPAddr {
	switch o.sa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&o.sa))
		pp := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return &net.UDPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: int(pp[0])<<8 | int(pp[1])}
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&o.sa))
		pp := (*[2]byte)(unsafe.Pointer(&sa.Port))
		a := &net.UDPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: int(pp[0])<<8 | int(pp[1])}
		if sa.Scope_id != 0 {
			a.Zone = strconv.Itoa(int(sa.Scope_id))
		}
		return a
	}
	return &net.UDPAddr{}
}

// WriteTo sends one datagram to addr, as net.UDPConn.WriteTo does; an
// address it cannot encode itself (not a *net.UDPAddr, a zone, the wrong
// family) goes through net, which also gives the error.
func (c *rawUDP) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua.Zone != "" {
		return c.UDPConn.WriteTo(p, addr)
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok || ua.Port < 0 || ua.Port > 0xffff {
		return c.UDPConn.WriteTo(p, addr)
	}
	return c.write(p, netip.AddrPortFrom(ip, uint16(ua.Port)), addr)
}

// WriteToUDPAddrPort sends one datagram to ap (rtx.go).
func (c *rawUDP) WriteToUDPAddrPort(p []byte, ap netip.AddrPort) (int, error) {
	return c.write(p, ap, nil)
}

func (c *rawUDP) write(p []byte, ap netip.AddrPort, addr net.Addr) (int, error) {
	ip := ap.Addr()
	if ip.Zone() != "" || (!c.v6 && !ip.Unmap().Is4()) {
		if addr != nil {
			return c.UDPConn.WriteTo(p, addr)
		}
		return c.UDPConn.WriteToUDPAddrPort(p, ap)
	}
	o := rawOps.Get().(*rawOp)
	defer rawOps.Put(o)
	port := ap.Port()
	if c.v6 {
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&o.sa))
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		pp := (*[2]byte)(unsafe.Pointer(&sa.Port))
		pp[0], pp[1] = byte(port>>8), byte(port)
		o.salen = unix.SizeofSockaddrInet6
	} else {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&o.sa))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.Unmap().As4()}
		pp := (*[2]byte)(unsafe.Pointer(&sa.Port))
		pp[0], pp[1] = byte(port>>8), byte(port)
		o.salen = unix.SizeofSockaddrInet4
	}
	o.p = p
	err := c.rc.Write(o.write)
	o.p = nil
	if err != nil {
		return 0, err
	}
	if o.errno != 0 {
		dst := addr
		if dst == nil {
			dst = net.UDPAddrFromAddrPort(ap)
		}
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: dst,
			Err: os.NewSyscallError("sendto", o.errno)}
	}
	return o.n, nil
}
