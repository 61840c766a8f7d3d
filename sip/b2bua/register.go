package b2bua

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

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

// errNoFlow is returned by SendKeepalive for a flow sbcd does not have.
var errNoFlow = errors.New("b2bua: no such flow")

// SendKeepalive sends one keep-alive for the registrar (registrar.Sender):
// over UDP from the listening socket of f, so the NAT binding that carries
// SIP is the one refreshed (DESIGN.md §3); over TCP on the connection the
// device holds with sbcd (RFC 5626 §3.5.1), if it is still open.
func (b *B2BUA) SendKeepalive(f registrar.Flow, dst netip.AddrPort, payload []byte) error {
	switch f.Network {
	case "UDP":
		if f.Socket < 0 || f.Socket >= len(b.udp) {
			return fmt.Errorf("keep-alive to %s: udp socket %d: %w", dst, f.Socket, errNoFlow)
		}
		uc, ok := b.udp[f.Socket].(*net.UDPConn)
		if !ok {
			return fmt.Errorf("keep-alive to %s: %w", dst, errNoFlow)
		}
		if _, err := uc.WriteToUDPAddrPort(payload, dst); err != nil {
			return fmt.Errorf("keep-alive to %s: %w", dst, err)
		}
		return nil
	case "TCP":
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
	return fmt.Errorf("keep-alive to %s over %q: %w", dst, f.Network, errNoFlow)
}

// SentBy is the host and port sbcd names itself by on network (Via,
// Contact), for the registrar's OPTIONS pings (registrar.Sender).
func (b *B2BUA) SentBy(network string) (string, int) { return b.sentBy(network) }

var _ registrar.Sender = (*B2BUA)(nil)
