//go:build !linux

package b2bua

import (
	"fmt"
	"net"

	"sbcd/sip/registrar"
)

// udpBatch writes keep-alives one datagram at a time where sendmmsg(2) is
// not available (kabatch_linux.go batches them), from the SIP listening
// socket (DESIGN.md §3).
type udpBatch struct {
	uc *net.UDPConn
	ks []*registrar.Keepalive
}

func newUDPBatch(uc *net.UDPConn) (*udpBatch, error) { return &udpBatch{uc: uc}, nil }

func (w *udpBatch) add(k *registrar.Keepalive) { w.ks = append(w.ks, k) }

func (w *udpBatch) flush() {
	for _, k := range w.ks {
		if _, err := w.uc.WriteToUDPAddrPort(k.Payload, k.Dst); err != nil {
			k.Err = fmt.Errorf("keep-alive to %s: %w", k.Dst, err)
		}
	}
	clear(w.ks)
	w.ks = w.ks[:0]
}
