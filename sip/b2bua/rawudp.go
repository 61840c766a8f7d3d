package b2bua

import (
	"net"
	"net/netip"
)

// addrPortWriter is what rtx.go writes through: *net.UDPConn, and the
// sockets of newSIPSocket.
type addrPortWriter interface {
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// udpConnOf is the *net.UDPConn behind a listening socket, which
// newSIPSocket may have wrapped.
func udpConnOf(c net.PacketConn) (*net.UDPConn, bool) {
	switch c := c.(type) {
	case *net.UDPConn:
		return c, true
	case interface{ udpConn() *net.UDPConn }:
		return c.udpConn(), true
	}
	return nil, false
}
