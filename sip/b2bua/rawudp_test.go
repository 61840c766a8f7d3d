package b2bua

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// mustUDPConn is the *net.UDPConn behind a listening socket.
func mustUDPConn(t testing.TB, c net.PacketConn) *net.UDPConn {
	t.Helper()
	uc, ok := udpConnOf(c)
	if !ok {
		t.Fatalf("%T is no UDP socket", c)
	}
	return uc
}

// listenSIP binds a SIP socket as New does.
func listenSIP(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	sc, err := newSIPSocket(c.(*net.UDPConn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	return sc
}

// TestSIPSocketRoundTrip: datagrams go both ways between a SIP socket and a
// plain one, in both address families and from a dual-stack socket to an
// IPv4 peer, with the peer address reported as net reports it.
func TestSIPSocketRoundTrip(t *testing.T) {
	for _, tc := range []struct{ name, sip, peer, to string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", ""},
		{"ipv6", "[::1]:0", "[::1]:0", ""},
		{"dual stack to ipv4", "[::]:0", "127.0.0.1:0", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := listenSIP(t, tc.sip)
			pc, err := net.ListenPacket("udp", tc.peer)
			if err != nil {
				t.Skipf("listen %s: %v", tc.peer, err)
			}
			defer pc.Close()
			deadline := time.Now().Add(5 * time.Second)
			_ = sc.SetDeadline(deadline)
			_ = pc.SetDeadline(deadline)
			sipAddr := sc.LocalAddr().(*net.UDPAddr).AddrPort()
			if tc.to != "" {
				sipAddr = netip.AddrPortFrom(netip.MustParseAddr(tc.to), sipAddr.Port())
			}
			peer := pc.LocalAddr().(*net.UDPAddr).AddrPort()

			if _, err := pc.WriteTo([]byte("OPTIONS"), net.UDPAddrFromAddrPort(sipAddr)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, from, err := sc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			got := from.(*net.UDPAddr).AddrPort()
			if string(buf[:n]) != "OPTIONS" || got.Addr().Unmap() != peer.Addr().Unmap() || got.Port() != peer.Port() {
				t.Fatalf("read %q from %v, want OPTIONS from %v", buf[:n], got, peer)
			}
			// Back to the address it came from, as sipgo answers.
			if n, err := sc.WriteTo([]byte("SIP/2.0 200 OK"), from); err != nil || n != 14 {
				t.Fatalf("write to %v: %d, %v", from, n, err)
			}
			// And as rtx.go resends, to a netip.AddrPort.
			if _, err := sc.(addrPortWriter).WriteToUDPAddrPort([]byte("again"), peer); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"SIP/2.0 200 OK", "again"} {
				n, _, err := pc.ReadFrom(buf)
				if err != nil || string(buf[:n]) != want {
					t.Fatalf("peer read %q, %v; want %q", buf[:n], err, want)
				}
			}
		})
	}
}

// TestSIPSocketErrors: what cannot be sent gets net's error, a read past
// the deadline times out, and a read on a closed socket reports
// net.ErrClosed, which ends sipgo's read loop.
func TestSIPSocketErrors(t *testing.T) {
	sc := listenSIP(t, "127.0.0.1:0")
	if _, err := sc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("::1"), Port: 5060}); err == nil {
		t.Error("IPv6 destination from an IPv4 socket: no error")
	}
	if _, err := sc.WriteTo([]byte("x"), &net.IPAddr{IP: net.ParseIP("127.0.0.1")}); err == nil {
		t.Error("not a UDP address: no error")
	}
	_ = sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var ne net.Error
	if _, _, err := sc.ReadFrom(make([]byte, 8)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read past the deadline: %v, want a timeout", err)
	}
	done := make(chan error, 1)
	_ = sc.SetReadDeadline(time.Time{})
	go func() {
		_, _, err := sc.ReadFrom(make([]byte, 8))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	_ = sc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read on a closed socket: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not end at Close")
	}
}

// TestSIPSocketWriteAllocs: a write allocates nothing.
func TestSIPSocketWriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	sc := listenSIP(t, "127.0.0.1:0")
	pc := listenSIP(t, "127.0.0.1:0")
	to := pc.LocalAddr().(*net.UDPAddr)
	ap := to.AddrPort()
	msg := []byte("SIP/2.0 200 OK\r\n\r\n")
	w := sc.(addrPortWriter)
	n := testing.AllocsPerRun(200, func() {
		if _, err := sc.WriteTo(msg, to); err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteToUDPAddrPort(msg, ap); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("%.1f allocations per two writes, want 0", n)
	}
}
