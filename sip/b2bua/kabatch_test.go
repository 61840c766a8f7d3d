package b2bua

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"sbcd/sip/registrar"
	"sbcd/timers/session"
)

// newSenderB2BUA binds a B2BUA's sockets without serving them: enough for
// SendKeepalives over UDP.
func newSenderB2BUA(t *testing.T, listen ...Listen) *B2BUA {
	t.Helper()
	b, err := New(Options{
		Listen:   listen,
		Upstream: "127.0.0.1:9",
		Params:   session.DefaultParams(),
		MaxCalls: 2,
		Logger:   testLogger(),
	})
	if err != nil {
		t.Skipf("cannot bind %v: %v", listen, err)
	}
	t.Cleanup(b.closeSockets)
	return b
}

// sink is a UDP socket keep-alives are sent to.
type sink struct {
	c    *net.UDPConn
	addr netip.AddrPort
}

func newSink(t *testing.T, network, addr string) sink {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return sink{c: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
}

// recv reads n datagrams (bounded by a deadline) and returns them with
// their unmapped sources.
func (s sink) recv(t *testing.T, n int) (payloads []string, from []netip.AddrPort) {
	t.Helper()
	if err := s.c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for range n {
		m, src, err := s.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("read %d of %d datagrams at %v: %v", len(payloads), n, s.addr, err)
		}
		payloads = append(payloads, string(buf[:m]))
		from = append(from, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
	}
	return payloads, from
}

// TestSendKeepalivesBatch: one batch of keep-alives goes out from the SIP
// listening socket (DESIGN.md §3), in order, over an IPv4 socket and an
// IPv6 dual-stack one (IPv4 destinations IPv4-mapped); the ones that
// cannot go (no such socket, network or address family) get an Err and do
// not stop the others.
func TestSendKeepalivesBatch(t *testing.T) {
	tests := []struct {
		name    string
		listen  string
		sink    [2]string // network, address
		n       int       // keep-alives to the sink
		badAddr string    // an extra destination the socket cannot reach, "" for none
	}{
		{name: "ipv4 socket", listen: "127.0.0.1:0", sink: [2]string{"udp4", "127.0.0.1:0"}, n: 33, badAddr: "[::1]:9"},
		{name: "dual-stack socket to ipv4", listen: "[::]:0", sink: [2]string{"udp4", "127.0.0.1:0"}, n: 33},
		{name: "ipv6 socket", listen: "[::1]:0", sink: [2]string{"udp6", "[::1]:0"}, n: 5, badAddr: "127.0.0.1:9"},
		{name: "more than UIO_MAXIOV", listen: "127.0.0.1:0", sink: [2]string{"udp4", "127.0.0.1:0"}, n: 1500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newSenderB2BUA(t, Listen{Network: "udp", Addr: tc.listen})
			s := newSink(t, tc.sink[0], tc.sink[1])
			if err := s.c.SetReadBuffer(4 << 20); err != nil {
				t.Fatal(err)
			}
			local := b.udp[0].LocalAddr().(*net.UDPAddr).AddrPort().Port()
			udp := registrar.Flow{Network: "UDP"}
			var batch []registrar.Keepalive
			for i := range tc.n {
				if i == tc.n/2 {
					batch = append(batch,
						registrar.Keepalive{Flow: registrar.Flow{Network: "UDP", Socket: 3}, Dst: s.addr, Payload: []byte("X")},
						registrar.Keepalive{Flow: registrar.Flow{Network: "SCTP"}, Dst: s.addr, Payload: []byte("X")})
					if tc.badAddr != "" {
						batch = append(batch, registrar.Keepalive{Flow: udp, Dst: netip.MustParseAddrPort(tc.badAddr), Payload: []byte("X")})
					}
				}
				batch = append(batch, registrar.Keepalive{Flow: udp, Dst: s.addr, Payload: []byte{'0' + byte(i%10)}})
			}
			b.SendKeepalives(batch)
			var bad int
			for _, k := range batch {
				if string(k.Payload) == "X" {
					bad++
					if k.Err == nil {
						t.Errorf("keep-alive over %+v to %v: no error", k.Flow, k.Dst)
					}
				} else if k.Err != nil {
					t.Errorf("keep-alive to %v: %v", k.Dst, k.Err)
				}
			}
			if want := 2 + min(len(tc.badAddr), 1); bad != want {
				t.Fatalf("%d bad keep-alives in the batch, want %d", bad, want)
			}
			payloads, from := s.recv(t, tc.n)
			for i := range tc.n {
				if want := string([]byte{'0' + byte(i%10)}); payloads[i] != want {
					t.Fatalf("datagram %d: %q, want %q (in order)", i, payloads[i], want)
				}
				if from[i].Port() != local {
					t.Fatalf("datagram %d from %v, want the SIP socket's port %d", i, from[i], local)
				}
			}
		})
	}
}

// TestSendKeepalivesSockets: each keep-alive leaves from the socket its
// flow names; a closed socket fails its keep-alives.
func TestSendKeepalivesSockets(t *testing.T) {
	b := newSenderB2BUA(t, Listen{Network: "udp", Addr: "127.0.0.1:0"}, Listen{Network: "udp", Addr: "127.0.0.1:0"})
	s := newSink(t, "udp4", "127.0.0.1:0")
	batch := []registrar.Keepalive{
		{Flow: registrar.Flow{Network: "UDP", Socket: 1}, Dst: s.addr, Payload: []byte("one")},
		{Flow: registrar.Flow{Network: "UDP", Socket: 0}, Dst: s.addr, Payload: []byte("zero")},
	}
	b.SendKeepalives(batch)
	got := map[string]uint16{}
	payloads, from := s.recv(t, 2)
	for i := range payloads {
		got[payloads[i]] = from[i].Port()
	}
	for i, c := range b.udp {
		want := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		if p := got[string(batch[1-i].Payload)]; p != want {
			t.Errorf("keep-alive over socket %d from port %d, want %d", i, p, want)
		}
	}
	_ = b.udp[0].Close()
	b.SendKeepalives(batch)
	if batch[0].Err != nil || !errors.Is(batch[1].Err, net.ErrClosed) {
		t.Errorf("after closing socket 0: errors %v, %v", batch[0].Err, batch[1].Err)
	}
}

// TestSendKeepalivesAllocs: a steady batch allocates nothing (DESIGN.md
// §10: CPU per keep-alive).
func TestSendKeepalivesAllocs(t *testing.T) {
	b := newSenderB2BUA(t, Listen{Network: "udp", Addr: "127.0.0.1:0"})
	s := newSink(t, "udp4", "127.0.0.1:0")
	batch := make([]registrar.Keepalive, 33)
	msg := []byte("HELLO")
	fill := func() {
		for i := range batch {
			batch[i] = registrar.Keepalive{Flow: registrar.Flow{Network: "UDP"}, Dst: s.addr, Payload: msg}
		}
	}
	fill()
	b.SendKeepalives(batch)
	allocs := testing.AllocsPerRun(100, func() {
		fill()
		b.SendKeepalives(batch)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch", allocs)
	}
	for _, k := range batch {
		if k.Err != nil {
			t.Fatal(k.Err)
		}
	}
}

// BenchmarkSendKeepalives: one pacer tick's batch (33 keep-alives, as at
// 100,000 bindings, a 30 s period and a 10 ms send interval) to a loopback
// sink, through SendKeepalives and, for comparison, one WriteToUDPAddrPort
// per keep-alive. On loopback the kernel's receive path runs in the
// sender's system call, so ns/ping includes it.
func BenchmarkSendKeepalives(b *testing.B) {
	const n = 33
	for _, mode := range []string{"batch", "sendto"} {
		b.Run(mode, func(b *testing.B) {
			bb, err := New(Options{
				Listen:   []Listen{{Network: "udp", Addr: "127.0.0.1:0"}},
				Upstream: "127.0.0.1:9",
				Params:   session.DefaultParams(),
				MaxCalls: 2,
				Logger:   testLogger(),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer bb.closeSockets()
			sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer sc.Close()
			_ = sc.SetReadBuffer(4 << 20)
			go func() { // drain
				buf := make([]byte, 64)
				for {
					if _, _, err := sc.ReadFromUDPAddrPort(buf); err != nil {
						return
					}
				}
			}()
			dst := sc.LocalAddr().(*net.UDPAddr).AddrPort()
			uc, _ := udpConnOf(bb.udp[0])
			msg := []byte("HELLO")
			batch := make([]registrar.Keepalive, n)
			b.ReportAllocs()
			for b.Loop() {
				for i := range batch {
					batch[i] = registrar.Keepalive{Flow: registrar.Flow{Network: "UDP"}, Dst: dst, Payload: msg}
				}
				if mode == "batch" {
					bb.SendKeepalives(batch)
				} else {
					for i := range batch {
						_, batch[i].Err = uc.WriteToUDPAddrPort(msg, dst)
					}
				}
				for i := range batch {
					if batch[i].Err != nil {
						b.Fatal(batch[i].Err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/ping")
		})
	}
}
