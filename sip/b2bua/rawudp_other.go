//go:build !linux

package b2bua

import "net"

// newSIPSocket returns uc as it is where rawudp_linux.go's raw system
// calls are not available.
func newSIPSocket(uc *net.UDPConn) (net.PacketConn, error) { return uc, nil }
