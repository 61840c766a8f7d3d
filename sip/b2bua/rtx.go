package b2bua

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/huge"
)

// This file is sbcd's retransmission cache for finished non-INVITE server
// transactions over UDP (DESIGN.md §1, memory model; §10).
//
// RFC 3261 §17.2.2: once a non-INVITE server transaction has sent its final
// response it enters Completed, and for 64*T1 (Timer J) over an unreliable
// transport every retransmission of the request gets that response again;
// nothing else happens in that state. sipgo keeps the whole transaction for
// it: the parsed request and response, its timers and channels, about 32 s
// of every BYE, REGISTER, OPTIONS, UPDATE, ... sbcd answers, which under
// churn is most of the box's memory. What the state needs is the
// transaction key (RFC 3261 §17.2.3: branch, sent-by, method) and the bytes
// of the last response. sbcd keeps exactly that in a ring arena of fixed
// size, ends sipgo's transaction as soon as the final response is sent,
// and answers a retransmission from sipgo's read filter, before the
// datagram is parsed, by sending the kept bytes again to where the
// response went. A retransmission that slips past the filter (it was read
// before the response was kept, or its bytes do not key the same way)
// reaches onRequest as a new transaction, which looks the cache up again by
// the parsed request before anything else.
//
// It also keeps, for Timer L (64*T1, RFC 6026 §7.1), the key of an INVITE
// sbcd answered 2xx over UDP, without data: the Accepted state only
// absorbs the INVITE's retransmissions (sbcd retransmits the 2xx itself),
// and so does the cache, so the INVITE server transaction ends at the 2xx.
//
// The same arena keeps, for Timer D (64*T1, at least 32 s over UDP), the
// ACK of a non-2xx final response to an INVITE sbcd sent (RFC 3261
// §17.1.1.2), keyed as the client transaction (§17.1.3: branch and CSeq
// method); sipgo's client transaction, which would keep the INVITE and the
// response for Timer D only to ACK their retransmissions, ends at once, and
// a retransmitted response gets the ACK again from the read filter (or
// onStrayResponse).
//
// Records are kept in the order they were written and all live for the
// same 64*T1, so expiry is from the head of the ring; when the arena is
// full the oldest record is dropped early (counted in Stats.RtxEvicted):
// the memory bound holds under any load, at the cost of absorbing the
// retransmissions of a request answered long ago (a peer whose every copy
// of the response was lost for most of 32 s) as a new request.

// rtxHeader is the fixed part of a record in the arena: total length (4),
// key length (2; rtxPad marks padding to the end of the arena), data length
// (2), expiry (8, ns on the B2BUA's monotonic clock), key hash (8),
// destination address (16) and port (2), socket index (1), unused (5).
const (
	rtxHeader = 48
	rtxPad    = 0xffff
	// rtxKeyMax bounds a transaction key; a request whose key is longer is
	// not cached (sipgo keeps its transaction as before).
	rtxKeyMax = 256
	// rtxDataMax bounds a kept response: sipgo sends no UDP message
	// longer than sip.UDPMTUSize-200 (1300 bytes).
	rtxDataMax = 1500
	// RtxCacheDefault is the arena size when Options.RtxCache is 0: at
	// about 360 bytes per answered request it holds 64*T1 (32 s) of 2,900
	// non-INVITE transactions a second.
	RtxCacheDefault = 32 << 20
	rtxCacheMin     = 64 << 10
)

// rtxCache is the retransmission cache. All methods are safe for
// concurrent use.
type rtxCache struct {
	seed  maphash.Seed
	ttl   int64        // Timer J, 64*T1, ns
	now   func() int64 // monotonic ns
	socks []net.PacketConn
	udp   []addrPortWriter // socks[i] as an addrPortWriter, nil if it is not one

	mu         sync.Mutex
	buf        []byte // the ring arena, a multiple of 8 long
	huge       bool   // buf was advised huge pages
	head, tail uint64 // absolute positions: live records are in [head, tail)
	idx        map[uint64]uint64

	resent, evicted atomic.Uint64
}

func newRtxCache(size int, ttl int64, now func() int64, socks []net.PacketConn) *rtxCache {
	size = max(size, rtxCacheMin) &^ 7
	c := &rtxCache{seed: maphash.MakeSeed(), ttl: ttl, now: now, socks: socks,
		idx: make(map[uint64]uint64)}
	// The arena is written end to end under load: on huge pages outside
	// the Go heap (timers/huge), as the other preallocated tables.
	c.buf, c.huge = huge.Make[byte](c, size)
	c.udp = make([]addrPortWriter, len(socks))
	for i, s := range socks {
		c.udp[i], _ = s.(addrPortWriter)
	}
	return c
}

// keep remembers res, just sent over UDP as the final response of the
// non-INVITE server transaction of req from socket sock, for 64*T1
// (RFC 3261 §17.2.2). It reports whether it did: not for INVITE (and ACK)
// transactions, whose Completed state is not this one (§17.2.1), for an
// RFC 2543 request (no z9hG4bK branch: its key is not the Via's), or for a
// response it cannot resend; sipgo's transaction must then stay.
func (c *rtxCache) keep(req *sip.Request, res *sip.Response, sock int) bool {
	if c == nil || res.StatusCode < 200 || req.IsInvite() || req.IsAck() ||
		sip.NetworkToUpper(req.Transport()) != "UDP" || sock < 0 || sock >= len(c.socks) {
		return false
	}
	if cs := req.CSeq(); cs == nil || cs.MethodName != req.Method {
		return false // its key is another method's (sbcd answered 400)
	}
	var kb [rtxKeyMax]byte
	key, ok := reqKey(req, kb[:0])
	if !ok {
		return false
	}
	dest, err := netip.ParseAddrPort(res.Destination())
	if err != nil {
		return false
	}
	w := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(w)
	w.Reset()
	res.StringWrite(w)
	if w.Len() > rtxDataMax {
		return false
	}
	return c.put(key, w.Bytes(), dest, sock)
}

// keepSent is keep for a final response to the non-INVITE request req
// that sbcd already wrote, as data, to dest from socket sock without a
// sipgo transaction (byeDirect).
func (c *rtxCache) keepSent(req *sip.Request, data []byte, dest netip.AddrPort, sock int) bool {
	if c == nil || req.IsInvite() || req.IsAck() {
		return false
	}
	var kb [rtxKeyMax]byte
	key, ok := reqKey(req, kb[:0])
	return ok && c.keepKeyed(key, data, dest, sock)
}

// keepSentRaw is keepSent for a request read raw (rawBye), keyed by
// rawKey.
func (c *rtxCache) keepSentRaw(req, data []byte, dest netip.AddrPort, sock int) bool {
	if c == nil {
		return false
	}
	var kb [rtxKeyMax]byte
	key, ok := rawKey(req, kb[:0])
	return ok && c.keepKeyed(key, data, dest, sock)
}

// keepKeyed keeps data, an answer sent to dest from socket sock, under
// key, when it fits a record.
func (c *rtxCache) keepKeyed(key, data []byte, dest netip.AddrPort, sock int) bool {
	if sock < 0 || sock >= len(c.socks) || len(data) > rtxDataMax {
		return false
	}
	return c.put(key, data, dest, sock)
}

// absorb remembers, for 64*T1 (Timer L, RFC 6026 §7.1), that the INVITE
// req received over UDP on socket sock was answered 2xx: its
// retransmissions are dropped, as the Accepted state absorbs them. It
// reports whether it did (not for an RFC 2543 request).
func (c *rtxCache) absorb(req *sip.Request, sock int) bool {
	if c == nil || !req.IsInvite() || sip.NetworkToUpper(req.Transport()) != "UDP" || sock < 0 || sock >= len(c.socks) {
		return false
	}
	if cs := req.CSeq(); cs == nil || cs.MethodName != req.Method {
		return false
	}
	var kb [rtxKeyMax]byte
	key, ok := reqKey(req, kb[:0])
	if !ok {
		return false
	}
	return c.put(key, nil, netip.AddrPort{}, sock)
}

var rtxBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// put stores data for key; an older record of the same key is shadowed.
// It reports false for a record too large for the arena.
func (c *rtxCache) put(key, data []byte, dest netip.AddrPort, sock int) bool {
	h := maphash.Bytes(c.seed, key)
	n := uint64(rtxHeader+len(key)+len(data)+7) &^ 7
	size := uint64(len(c.buf))
	if n > size/4 || sock > 255 {
		return false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	if off := c.tail % size; off+n > size {
		// The record does not fit before the end: pad to it.
		pad := size - off
		c.room(pad)
		binary.LittleEndian.PutUint32(c.buf[off:], uint32(pad))
		binary.LittleEndian.PutUint16(c.buf[off+4:], rtxPad)
		c.tail += pad
	}
	c.room(n)
	r := c.buf[c.tail%size:][:n]
	binary.LittleEndian.PutUint32(r[0:], uint32(n))
	binary.LittleEndian.PutUint16(r[4:], uint16(len(key)))
	binary.LittleEndian.PutUint16(r[6:], uint16(len(data)))
	binary.LittleEndian.PutUint64(r[8:], uint64(now+c.ttl))
	binary.LittleEndian.PutUint64(r[16:], h)
	a := dest.Addr().As16()
	copy(r[24:40], a[:])
	binary.LittleEndian.PutUint16(r[40:], dest.Port())
	r[42] = byte(sock)
	r[43] = 0
	if dest.Addr().Is4() || dest.Addr().Is4In6() {
		r[43] = 4
	}
	copy(r[rtxHeader:], key)
	copy(r[rtxHeader+len(key):], data)
	c.idx[h] = c.tail
	c.tail += n
	return true
}

// room drops records from the head until n more bytes fit.
func (c *rtxCache) room(n uint64) {
	for c.tail+n-c.head > uint64(len(c.buf)) {
		if c.drop() {
			c.evicted.Add(1)
		}
	}
}

// expire drops the records whose 64*T1 is over (they are in expiry order).
func (c *rtxCache) expire(now int64) {
	size := uint64(len(c.buf))
	for c.head < c.tail {
		r := c.buf[c.head%size:]
		if binary.LittleEndian.Uint16(r[4:]) != rtxPad && int64(binary.LittleEndian.Uint64(r[8:])) > now {
			return
		}
		c.drop()
	}
}

// drop removes the head record; it reports whether it was a live record
// rather than padding.
func (c *rtxCache) drop() bool {
	r := c.buf[c.head%uint64(len(c.buf)):]
	n := uint64(binary.LittleEndian.Uint32(r[0:]))
	live := binary.LittleEndian.Uint16(r[4:]) != rtxPad
	if live {
		if h := binary.LittleEndian.Uint64(r[16:]); c.idx[h] == c.head {
			delete(c.idx, h)
		}
	}
	c.head += n
	return live
}

// resend sends the kept response of key again, from the socket and to the
// address of the first send; it reports whether there was one.
func (c *rtxCache) resend(key []byte) bool {
	h := maphash.Bytes(c.seed, key)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	pos, ok := c.idx[h]
	if !ok || pos < c.head {
		return false
	}
	r := c.buf[pos%uint64(len(c.buf)):]
	kl, dl := int(binary.LittleEndian.Uint16(r[4:])), int(binary.LittleEndian.Uint16(r[6:]))
	if kl == rtxPad || int64(binary.LittleEndian.Uint64(r[8:])) <= now || !bytes.Equal(r[rtxHeader:rtxHeader+kl], key) {
		return false
	}
	a := netip.AddrFrom16([16]byte(r[24:40]))
	if r[43] == 4 {
		a = a.Unmap()
	}
	dest := netip.AddrPortFrom(a, binary.LittleEndian.Uint16(r[40:]))
	data := r[rtxHeader+kl : rtxHeader+kl+dl]
	// The write happens under the lock: the bytes live in the arena.
	// Failures are what UDP does anyway: the peer retransmits again. A
	// record without data (absorb) answers nothing.
	if dl == 0 {
		// absorbed
	} else if s := int(r[42]); s < len(c.udp) && c.udp[s] != nil {
		_, _ = c.udp[s].WriteToUDPAddrPort(data, dest)
	} else if s < len(c.socks) {
		_, _ = c.socks[s].WriteTo(data, net.UDPAddrFromAddrPort(dest))
	}
	c.resent.Add(1)
	return true
}

// answer is the read filter's side: it reports whether the datagram data
// is the retransmission of a request answered from the cache, or of a
// response ACKed from it (and sends the answer or the ACK again). It reads
// data only; anything it does not understand is not a retransmission to
// it.
func (c *rtxCache) answer(data []byte) bool {
	if c == nil {
		return false
	}
	var kb [rtxKeyMax]byte
	key, ok := rawKey(data, kb[:0])
	if !ok {
		key, ok = rawResponseKey(data, kb[:0])
	}
	return ok && c.resend(key)
}

// answerParsed is onRequest's side: a retransmission that reached sipgo's
// transaction layer after its transaction was ended.
func (c *rtxCache) answerParsed(req *sip.Request) bool {
	if c == nil || req.IsAck() || sip.NetworkToUpper(req.Transport()) != "UDP" {
		return false
	}
	var kb [rtxKeyMax]byte
	key, ok := reqKey(req, kb[:0])
	return ok && c.resend(key)
}

// used reports the bytes of the arena that live records (and padding)
// take.
func (c *rtxCache) used() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tail - c.head
}

// keepAck remembers the ACK sipgo sent for res, a non-2xx final response
// to inv, an INVITE sbcd sent over UDP from socket sock, for 64*T1 (Timer
// D, at least 32 s: RFC 3261 §17.1.1.2), keyed as the client transaction
// (§17.1.3), so that a retransmission of res gets the same ACK again
// without sipgo's transaction, which would otherwise keep the INVITE and
// the response for Timer D. The ACK is built as §17.1.1.3 says: the
// INVITE's Request-URI, top Via, Route, From, Call-ID and CSeq number,
// the response's To. It reports whether it kept it.
func (c *rtxCache) keepAck(inv *sip.Request, res *sip.Response, sock int) bool {
	if c == nil || res.StatusCode < 300 || !inv.IsInvite() || sip.NetworkToUpper(inv.Transport()) != "UDP" ||
		sock < 0 || sock >= len(c.socks) {
		return false
	}
	dest, err := netip.ParseAddrPort(inv.Destination())
	if err != nil {
		return false // a host name: sipgo's transaction stays
	}
	ack := non2xxAck(inv, res)
	if ack == nil {
		return false
	}
	w := rtxBufPool.Get().(*bytes.Buffer)
	defer rtxBufPool.Put(w)
	w.Reset()
	ack.StringWrite(w)
	branch, _ := inv.Via().Params.Get("branch")
	return c.keepAckData(branch, w.Bytes(), dest, sock)
}

// keepAckData keeps ack, the bytes of the ACK sent to dest from socket
// sock for a non-2xx final answer to the INVITE of branch, for Timer D.
func (c *rtxCache) keepAckData(branch string, ack []byte, dest netip.AddrPort, sock int) bool {
	if c == nil || sock < 0 || sock >= len(c.socks) || len(ack) > rtxDataMax {
		return false
	}
	var kb [rtxKeyMax]byte
	key, ok := appendClientKey(kb[:0], branch, string(sip.INVITE))
	if !ok {
		return false
	}
	return c.put(key, ack, dest, sock)
}

// answerResponse is onStrayResponse's side of keepAck: a retransmitted
// non-2xx final response to an INVITE that reached sipgo's transaction
// layer after the transaction ended gets its ACK again.
func (c *rtxCache) answerResponse(res *sip.Response) bool {
	if c == nil || res.StatusCode < 300 || sip.NetworkToUpper(res.Transport()) != "UDP" {
		return false
	}
	via, cseq := res.Via(), res.CSeq()
	if via == nil || cseq == nil {
		return false
	}
	branch, _ := via.Params.Get("branch")
	var kb [rtxKeyMax]byte
	key, ok := appendClientKey(kb[:0], branch, string(cseq.MethodName))
	return ok && cseq.MethodName == sip.INVITE && c.resend(key)
}

// len reports the live records in the cache.
func (c *rtxCache) len() int {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	return len(c.idx)
}

// The transaction key (RFC 3261 §17.2.3) of a request with a z9hG4bK
// branch is the branch, the sent-by (host and port) of the top Via and the
// method (of CSeq, ACK counting as INVITE), as sipgo's transaction layer
// builds it. sbcd's form is branch NUL host NUL port NUL method, the port
// in decimal with the transport's default when the Via has none.

// reqKey appends the transaction key of a parsed request to out.
func reqKey(req *sip.Request, out []byte) ([]byte, bool) {
	via, cseq := req.Via(), req.CSeq()
	if via == nil || cseq == nil {
		return nil, false
	}
	branch, _ := via.Params.Get("branch")
	port := via.Port
	if port <= 0 {
		port = defaultPort([]byte(via.Transport))
	}
	return appendKey(out, branch, via.Host, port, string(cseq.MethodName))
}

func appendKey[S string | []byte](out []byte, branch, host S, port int, method S) ([]byte, bool) {
	if !rfc3261Branch(branch) || len(host) == 0 || len(method) == 0 || port <= 0 || port > 65535 ||
		len(branch)+len(host)+len(method)+9 > cap(out)-len(out) {
		return nil, false
	}
	for _, s := range [...]S{branch, host, method} {
		for i := range len(s) {
			if s[i] <= ' ' || s[i] == 0x7f {
				return nil, false
			}
		}
	}
	if string(method) == "ACK" {
		method = S("INVITE")
	}
	out = append(out, branch...)
	out = append(out, 0)
	out = append(out, host...)
	out = append(out, 0)
	var p [5]byte
	i := len(p)
	for {
		i--
		p[i] = byte('0' + port%10)
		port /= 10
		if port == 0 {
			break
		}
	}
	out = append(out, p[i:]...)
	out = append(out, 0)
	out = append(out, method...)
	return out, true
}

// appendClientKey appends the key of a client transaction (RFC 3261
// §17.1.3): branch NUL NUL method. No server key has an empty host, so
// the two kinds never meet in the cache.
func appendClientKey[S string | []byte](out []byte, branch, method S) ([]byte, bool) {
	if !rfc3261Branch(branch) || len(method) == 0 || len(branch)+len(method)+2 > cap(out)-len(out) {
		return nil, false
	}
	for _, s := range [...]S{branch, method} {
		for i := range len(s) {
			if s[i] <= ' ' || s[i] == 0x7f {
				return nil, false
			}
		}
	}
	out = append(out, branch...)
	out = append(out, 0, 0)
	out = append(out, method...)
	return out, true
}

// rawKey appends the transaction key of the request in the raw datagram
// data to out, reading the request line, the first Via header field's
// first value and CSeq the way sipgo's parser does (RFC 3261 §7.3, §20.42,
// §20.16). It is strict: whatever it does not read exactly as sipgo would
// (folded lines, quoted parameters, odd spacing) is no key, and the
// datagram goes on to sipgo. It allocates nothing and never reads outside
// data: it sees hostile input.
func rawKey(data []byte, out []byte) ([]byte, bool) {
	line, rest, ok := cutLine(data)
	if !ok || len(line) < 4 {
		return nil, false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !requestLine(line) {
		return nil, false // a response, or no start line sipgo reads
	}
	if asciiEqualFold(line[:sp], "ack") {
		return nil, false // never kept: skip the headers
	}
	h, ok := scanHeaders(rest)
	if !ok {
		return nil, false
	}
	method, ok := cseqMethod(h.cseq)
	if !ok {
		return nil, false
	}
	_, host, port, branch, ok := parseVia(h.via)
	if !ok {
		return nil, false
	}
	return appendKey(out, branch, host, port, method)
}

// rawResponseKey appends the client transaction key (RFC 3261 §17.1.3:
// the top Via's branch and the CSeq method) of the non-2xx final response
// to an INVITE in the raw datagram data to out; anything else has none.
// Like rawKey it is strict, allocates nothing and never reads outside
// data.
func rawResponseKey(data []byte, out []byte) ([]byte, bool) {
	if len(data) > 8 && data[8] < '3' {
		return nil, false // not a 300–699: every 1xx and 2xx skips the scan
	}
	r, ok := rawResponse(data)
	if !ok || r.code < 300 || string(r.method) != "INVITE" {
		return nil, false
	}
	return appendClientKey(out, r.branch, r.method)
}
