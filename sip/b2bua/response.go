package b2bua

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// writeResponse writes to w the response to req with code and reason that
// newResponse builds and sipgo writes (Response.StringWrite), byte for
// byte, without building it: no sip.Response, no cloned header, no uuid
// tag. The shards answer most requests over UDP this way (respondUAS,
// respondUDP), where sipgo's NewResponseFromRequest and the write cost
// about 2 µs and 36 allocations per response (BenchmarkResponse,
// BENCHMARKS.md change 16).
//
// As NewResponseFromRequest (RFC 3261 §8.2.6.2): Record-Route copied for
// 18x and 2xx to a request other than REGISTER and ACK (§12.1.1, and for
// every provisional answer to an INVITE, as sipgo does); every Via, From,
// To, Call-ID and CSeq; received and rport in the top Via when it asks
// for rport (RFC 3581 §4); Timestamp in a 100 (§8.2.6.1); then
// Content-Length, hdrs in order, and body.
//
// toTag, when not empty and code is above 100, is the To tag: it replaces
// the request's, or is added. A response above 100 to a request whose To
// has no tag needs one (sipgo would make a uuid); the caller gives it.
func writeResponse(w *bytes.Buffer, req *sip.Request, code int, reason, toTag string, body []byte, hdrs ...sip.Header) {
	writeStatusLine(w, code, reason)

	if req.Method != sip.REGISTER && !req.IsAck() &&
		(code >= 180 && code < 190 || code >= 200 && code < 300 || req.IsInvite() && code > 100 && code < 200) {
		for _, h := range req.Headers() {
			if strings.EqualFold(h.Name(), "record-route") {
				writeHeader(w, h)
			}
		}
	}
	top := true
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), "via") {
			continue
		}
		if v, ok := h.(*sip.ViaHeader); ok {
			writeVia(w, v, top, req.Source())
			top = false
			continue
		}
		writeHeader(w, h)
	}
	if f := req.From(); f != nil {
		w.WriteString("From: ")
		writeNameAddr(w, f.DisplayName, &f.Address, f.Params, "")
	}
	if t := req.To(); t != nil {
		tag := ""
		if code > 100 {
			tag = toTag
		}
		w.WriteString("To: ")
		writeNameAddr(w, t.DisplayName, &t.Address, t.Params, tag)
	}
	if c := req.CallID(); c != nil {
		w.WriteString("Call-ID: ")
		w.WriteString(string(*c))
		w.WriteString("\r\n")
	}
	if c := req.CSeq(); c != nil {
		w.WriteString("CSeq: ")
		w.Write(strconv.AppendUint(w.AvailableBuffer(), uint64(c.SeqNo), 10))
		w.WriteByte(' ')
		w.WriteString(string(c.MethodName))
		w.WriteString("\r\n")
	}
	if code == 100 {
		for _, h := range req.Headers() {
			if strings.EqualFold(h.Name(), "timestamp") {
				writeHeader(w, h)
			}
		}
	}
	w.WriteString("Content-Length: ")
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(len(body)), 10))
	w.WriteString("\r\n")
	for _, h := range hdrs {
		writeHeader(w, h)
	}
	w.WriteString("\r\n")
	w.Write(body)
}

// writeStatusLine writes a response's first line (RFC 3261 §7.2).
func writeStatusLine(w *bytes.Buffer, code int, reason string) {
	w.WriteString(sipVersion)
	w.WriteByte(' ')
	w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(code), 10))
	w.WriteByte(' ')
	w.WriteString(reason)
	w.WriteString("\r\n")
}

// writeHeader writes h and its line end.
func writeHeader(w *bytes.Buffer, h sip.Header) {
	h.StringWrite(w)
	w.WriteString("\r\n")
}

// writeVia writes a Via header field as sipgo does; the top one (RFC
// 3581 §4) with rport and received from the request's source when it has
// an empty rport, as NewResponseFromRequest adds them.
func writeVia(w *bytes.Buffer, v *sip.ViaHeader, top bool, source string) {
	w.WriteString("Via: ")
	w.WriteString(v.ProtocolName)
	w.WriteByte('/')
	w.WriteString(v.ProtocolVersion)
	w.WriteByte('/')
	w.WriteString(v.Transport)
	w.WriteByte(' ')
	writeHost(w, v.Host, v.Port)
	if rport, ok := v.Params.Get("rport"); top && ok && rport == "" {
		host, port, _ := net.SplitHostPort(source)
		writeParams(w, v.Params, sip.HeaderKV{K: "rport", V: port}, sip.HeaderKV{K: "received", V: host})
	} else {
		writeParams(w, v.Params)
	}
	w.WriteString("\r\n")
}

// writeHost writes host, in brackets when sipgo writes it so
// (ipv6Literal), and :port when port is set.
func writeHost(w *bytes.Buffer, host string, port int) {
	if ipv6Literal(host) {
		w.WriteByte('[')
		w.WriteString(host)
		w.WriteByte(']')
	} else {
		w.WriteString(host)
	}
	if port > 0 {
		w.WriteByte(':')
		w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(port), 10))
	}
}

// writeNameAddr writes the value of a From or To header field and its
// line end as sipgo's FromHeader and ToHeader do, with tag instead of the
// params' tag (or added) when tag is not empty.
func writeNameAddr(w *bytes.Buffer, display string, addr *sip.Uri, params sip.HeaderParams, tag string) {
	if display != "" {
		w.WriteByte('"')
		w.WriteString(display)
		w.WriteString("\" ")
	}
	w.WriteByte('<')
	addr.StringWrite(w)
	w.WriteByte('>')
	if tag == "" {
		writeParams(w, params)
	} else {
		writeParams(w, params, sip.HeaderKV{K: "tag", V: tag})
	}
	w.WriteString("\r\n")
}

// writeParams writes params, each after a ';', as sipgo writes
// ";"+HeaderParams.ToStringWrite(';') after HeaderParams.Add of each of
// set (at most 64): the first parameter of its key takes its value, and
// it is added at the end when there is none.
func writeParams(w *bytes.Buffer, params sip.HeaderParams, set ...sip.HeaderKV) {
	var done uint64 // bit i: set[i] took a parameter's place
	for _, kv := range params {
		for i, p := range set {
			if done&(1<<i) == 0 && kv.K == p.K {
				kv.V, done = p.V, done|1<<i
			}
		}
		w.WriteByte(';')
		writeParam(w, kv)
	}
	for i, p := range set {
		if done&(1<<i) == 0 {
			w.WriteByte(';')
			writeParam(w, p)
		}
	}
}

// writeParam writes one parameter as HeaderParams.ToStringWrite does: its
// value quoted when it holds a space or a tab.
func writeParam(w *bytes.Buffer, kv sip.HeaderKV) {
	w.WriteString(kv.K)
	if kv.V == "" {
		return
	}
	if strings.ContainsAny(kv.V, " \t") {
		w.WriteString("=\"")
		w.WriteString(kv.V)
		w.WriteByte('"')
		return
	}
	w.WriteByte('=')
	w.WriteString(kv.V)
}

// ipv6Literal reports whether sipgo writes host in brackets: an IPv6
// address without them, not an IPv4-mapped one, with no zone (sipgo's
// isIPV6, with net.ParseIP).
func ipv6Literal(host string) bool {
	if strings.IndexByte(host, ':') < 0 {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Is6() && !a.Is4In6() && a.Zone() == ""
}
