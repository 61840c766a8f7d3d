package b2bua

import (
	"bytes"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
	"sbcd/timers/session"
)

// inDialogUDP reports whether a request in the dialog of leg l can be
// written as bytes (writeRequest) and sent from the shard, and from which
// listening socket: over UDP, to the leg's address, without a route set
// (its first Route would name the destination, RFC 3261 §12.2.1.1). It is
// the socket newRequest sends from: the leg's own, else the first.
func (s *shard) inDialogUDP(l *legState) (sock int, ok bool) {
	if l.network != "" && l.network != "UDP" || len(l.route) > 0 || !l.dest.IsValid() || len(s.b.udp) == 0 {
		return 0, false
	}
	if _, ok := s.b.via["UDP"]; !ok {
		return 0, false
	}
	if l.socket > 0 && l.socket < len(s.b.udp) {
		sock = l.socket
	}
	if _, ok := s.b.udp[sock].(addrPortWriter); !ok {
		return 0, false
	}
	return sock, true
}

// writeRequest writes the request in the dialog of leg l (RFC 3261
// §12.2.1.1) that newRequest builds for a leg inDialogUDP accepts, with
// branch, as sipgo writes it, without building it: newRequest parses the
// leg's target and URIs again for every request, and sipgo writes them
// back. The leg keeps them as sipgo wrote them, so they are written as
// they are. The header fields and their order are newRequest's;
// TestWriteRequest holds the two to the same bytes.
func (s *shard) writeRequest(w *bytes.Buffer, l *legState, method sip.RequestMethod, seq uint32, branch string) {
	s.writeRequestHead(w, l, method, seq, branch, l.remoteTag)
	w.WriteString("Content-Length: 0\r\n\r\n")
}

// writeRequestHead writes writeRequest's request up to Content-Length,
// with toTag as the To tag (none when empty).
func (s *shard) writeRequestHead(w *bytes.Buffer, l *legState, method sip.RequestMethod, seq uint32, branch, toTag string) {
	w.WriteString(string(method))
	w.WriteByte(' ')
	w.WriteString(l.target)
	w.WriteString(" SIP/2.0\r\nVia: SIP/2.0/UDP ")
	w.WriteString(s.b.sentByUDP)
	w.WriteString(";branch=")
	w.WriteString(branch)
	w.WriteString("\r\nFrom: <")
	w.WriteString(l.localURI)
	w.WriteString(">;")
	writeParam(w, sip.HeaderKV{K: "tag", V: l.localTag})
	w.WriteString("\r\nTo: <")
	w.WriteString(l.remoteURI)
	w.WriteByte('>')
	if toTag != "" {
		w.WriteByte(';')
		writeParam(w, sip.HeaderKV{K: "tag", V: toTag})
	}
	w.WriteString("\r\nCall-ID: ")
	w.WriteString(l.callID)
	w.WriteString("\r\nCSeq: ")
	w.Write(strconv.AppendUint(w.AvailableBuffer(), uint64(seq), 10))
	w.WriteByte(' ')
	w.WriteString(string(method))
	w.WriteString("\r\nMax-Forwards: 70\r\n")
	if method != sip.BYE && method != sip.ACK && method != sip.CANCEL {
		writeHeader(w, s.b.contactLine("UDP"))
	}
	if method != sip.ACK {
		w.WriteString("Supported: timer\r\n")
	}
}

// writeInvite writes the B-leg's initial INVITE that buildInvite builds,
// for a leg inDialogUDP accepts, byte for byte as sipgo writes it
// (TestWriteInvite): writeRequest's header fields, then, after
// Content-Length where sipgo keeps it, the session-timer offer o (RFC 4028
// §7.1), Allow, and the caller's SDP with its Content-Type ctype.
func (s *shard) writeInvite(w *bytes.Buffer, l *legState, seq uint32, branch string, o session.Offer, ctype string, sdp []byte) {
	s.writeRequestHead(w, l, sip.INVITE, seq, branch, l.remoteTag)
	w.WriteString("Content-Length: ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(sdp)), 10))
	w.WriteString("\r\n")
	if o.SE != 0 {
		w.WriteString(header.SessionExpires)
		w.WriteString(": ")
		w.Write(header.AppendSessionExpires(w.AvailableBuffer(), o.SE, o.Refresher))
		w.WriteString("\r\n")
	}
	if o.MinSE != 0 {
		w.WriteString(header.MinSE)
		w.WriteString(": ")
		w.Write(strconv.AppendUint(w.AvailableBuffer(), uint64(o.MinSE), 10))
		w.WriteString("\r\n")
	}
	w.WriteString("Allow: " + allow + "\r\n")
	if len(sdp) > 0 {
		w.WriteString("Content-Type: ")
		w.WriteString(inviteContentType(ctype))
		w.WriteString("\r\n")
	}
	w.WriteString("\r\n")
	w.Write(sdp)
}
