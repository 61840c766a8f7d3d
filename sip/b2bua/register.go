package b2bua

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/registrar"
)

// This file connects the registrar (sip/registrar) to the SIP sockets the
// B2BUA owns: REGISTERs in, keep-alives out (DESIGN.md §3).

// register hands a REGISTER to the registrar and sends its answer.
func (b *B2BUA) register(req *sip.Request, tx *sip.ServerTx) {
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		// Not reached for messages read from a socket.
		b.refused(tx, req, refusal{code: 400, reason: "Unreadable Source"})
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	network := sip.NetworkToUpper(req.Transport())
	f := registrar.Flow{Network: network}
	if network == "UDP" {
		host := netip.Addr{}
		if a, err := netip.ParseAddr(req.Recipient.Host); err == nil {
			host = a
		}
		f.Socket = b.socketFor(src.Addr(), host.String())
	}
	res := b.o.Registrar.Register(req, src, f)
	res.SipVersion = sipVersion
	b.send(tx, res)
	tx.TerminateGracefully()
}

// socketFor picks the UDP listening socket for traffic with a peer at
// peer: the one bound to local (an IP literal, when given and served),
// else the first of the peer's address family, else the first. sipgo does
// not say which socket a datagram came in on; a box normally has one UDP
// socket per address family.
func (b *B2BUA) socketFor(peer netip.Addr, local string) int {
	if l, err := netip.ParseAddr(local); err == nil {
		l = l.Unmap()
		for i, c := range b.udp {
			if c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap() == l {
				return i
			}
		}
	}
	for i, c := range b.udp {
		la := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
		if la.Unmap().Is4() == peer.Unmap().Is4() || (la.IsUnspecified() && la.Is6() && !la.Is4In6()) {
			return i
		}
	}
	return 0
}

// errNoFlow is returned by SendKeepalives for a flow sbcd does not have.
var errNoFlow = errors.New("b2bua: no such flow")

// kaSender is what SendKeepalives keeps between calls: a batch writer per
// UDP listening socket, built on first use.
type kaSender struct {
	mu  sync.Mutex
	udp []*udpBatch // indexed like B2BUA.udp; nil: not a *net.UDPConn
	err []error     // why udp[i] is nil
}

// SendKeepalives sends one pacer tick's keep-alives for the registrar
// (registrar.Sender): over UDP from the listening socket of each one's
// flow, so the NAT binding that carries SIP is the one refreshed
// (DESIGN.md §3), all of a socket's in one sendmmsg(2) on Linux; over TCP
// one by one, on the connection the device holds with sbcd (RFC 5626
// §3.5.1), if it is still open. It sets the Err of those not sent.
func (b *B2BUA) SendKeepalives(batch []registrar.Keepalive) {
	b.ka.mu.Lock()
	defer b.ka.mu.Unlock()
	if b.ka.udp == nil && len(b.udp) > 0 {
		b.ka.udp = make([]*udpBatch, len(b.udp))
		b.ka.err = make([]error, len(b.udp))
		for i, c := range b.udp {
			uc, ok := udpConnOf(c)
			if !ok {
				b.ka.err[i] = errNoFlow
				continue
			}
			b.ka.udp[i], b.ka.err[i] = newUDPBatch(uc)
		}
	}
	queued := false
	for i := range batch {
		k := &batch[i]
		k.Err = nil
		switch k.Flow.Network {
		case "UDP":
			if k.Flow.Socket < 0 || k.Flow.Socket >= len(b.udp) {
				k.Err = fmt.Errorf("keep-alive to %s: udp socket %d: %w", k.Dst, k.Flow.Socket, errNoFlow)
				continue
			}
			w := b.ka.udp[k.Flow.Socket]
			if w == nil {
				k.Err = fmt.Errorf("keep-alive to %s: udp socket %d: %w", k.Dst, k.Flow.Socket, b.ka.err[k.Flow.Socket])
				continue
			}
			w.add(k)
			queued = true
		case "TCP":
			k.Err = b.sendTCP(k.Dst, k.Payload)
		default:
			k.Err = fmt.Errorf("keep-alive to %s over %q: %w", k.Dst, k.Flow.Network, errNoFlow)
		}
	}
	if queued {
		for _, w := range b.ka.udp {
			if w != nil {
				w.flush()
			}
		}
	}
}

// sendTCP writes one keep-alive on the TCP connection held with dst.
func (b *B2BUA) sendTCP(dst netip.AddrPort, payload []byte) error {
	c, err := b.tp.GetConnection("tcp", dst.String())
	if err != nil {
		return fmt.Errorf("keep-alive to %s over tcp: %w", dst, err)
	}
	defer func() { _, _ = c.TryClose() }()
	w, ok := c.(io.Writer)
	if !ok {
		return fmt.Errorf("keep-alive to %s over tcp: %w", dst, errNoFlow)
	}
	if _, err := w.Write(payload); err != nil {
		return fmt.Errorf("keep-alive to %s over tcp: %w", dst, err)
	}
	return nil
}

// SentBy is the host and port sbcd names itself by on network (Via,
// Contact), for the registrar's OPTIONS pings (registrar.Sender).
func (b *B2BUA) SentBy(network string) (string, int) { return b.sentBy(network) }

var _ registrar.Sender = (*B2BUA)(nil)
