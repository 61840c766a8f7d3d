package registrar

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/header"
	"sbcd/timers/keepalive"
)

// MaxContactsPerRequest bounds the work one REGISTER can cause; a request
// with more Contact values is refused with 400.
const MaxContactsPerRequest = 32

// dateFormat is the RFC 1123 date of the Date header (RFC 3261 §20.17).
const dateFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// contactReq is one Contact of a REGISTER, validated.
type contactReq struct {
	uri     string
	expires time.Duration // 0: remove the binding
	q       uint16        // thousandths
	nated   bool
}

// errRegister is a REGISTER refused with a status code.
type errRegister struct {
	code   int
	reason string
	hdrs   []sip.Header
}

func (e *errRegister) Error() string { return fmt.Sprintf("%d %s", e.code, e.reason) }

func refuse(code int, reason string, hdrs ...sip.Header) *errRegister {
	return &errRegister{code: code, reason: reason, hdrs: hdrs}
}

// current is a binding of the AOR as listed in a 200 OK.
type current struct {
	uri     string
	seconds int64
}

// Register answers a REGISTER received from src over f, following RFC 3261
// §10.3. It never returns nil, and it is safe for concurrent use. Every
// response carries received (and rport, when the request's Via asked for it)
// in its top Via (RFC 3581 §4).
func (r *Registrar) Register(req *sip.Request, src netip.AddrPort, f Flow) (res *sip.Response) {
	if req == nil {
		return sip.NewResponse(400, "Bad Request")
	}
	defer func() {
		// Belt and braces: input from the network must never bring the
		// process down. Locks are released by their own defers.
		if v := recover(); v != nil {
			r.panics.Add(1)
			r.log.Error("registrar: internal error handling REGISTER", "panic", v, "source", src)
			res = safeReply(r, req, src, 500, "Server Internal Error")
		}
	}()
	src = normAddrPort(src)
	f = normFlow(f)
	now := r.now()
	list, err := r.register(req, src, f, now)
	if err != nil {
		var e *errRegister
		if !errors.As(err, &e) {
			r.log.Error("registrar: REGISTER failed", "source", src, "err", err)
			return r.reply(req, src, 500, "Server Internal Error")
		}
		res := r.reply(req, src, e.code, e.reason)
		for _, h := range e.hdrs {
			res.AppendHeader(h)
		}
		return res
	}
	// RFC 3261 §10.3 step 8: list every current binding with its
	// remaining expiry, plus a Date header.
	res = r.reply(req, src, 200, "OK")
	for _, c := range list {
		res.AppendHeader(sip.NewHeader("Contact", "<"+c.uri+">;expires="+itoa(int(c.seconds))))
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(dateFormat)))
	return res
}

func safeReply(r *Registrar, req *sip.Request, src netip.AddrPort, code int, reason string) (res *sip.Response) {
	defer func() {
		if recover() != nil {
			res = sip.NewResponse(code, reason)
		}
	}()
	return r.reply(req, src, code, reason)
}

// reply builds a response to req whose top Via carries received=<src IP>
// always and rport=<src port> when the request's Via had rport (RFC 3581
// §4; sipgo fills them only for an empty rport and from its own idea of the
// source).
func (r *Registrar) reply(req *sip.Request, src netip.AddrPort, code int, reason string) *sip.Response {
	rport := false
	if v := req.Via(); v != nil {
		rport = v.Params.Has("rport")
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if v := res.Via(); v != nil && src.IsValid() {
		v.Params.Add("received", src.Addr().String())
		if rport {
			v.Params.Add("rport", itoa(int(src.Port())))
		}
	}
	return res
}

// register runs RFC 3261 §10.3 and returns the AOR's bindings for the 200,
// or an *errRegister.
func (r *Registrar) register(req *sip.Request, src netip.AddrPort, f Flow, now time.Time) ([]current, error) {
	if req.Method != sip.REGISTER {
		return nil, refuse(405, "Method Not Allowed", sip.NewHeader("Allow", "REGISTER")) // RFC 3261 §21.4.6
	}
	// Mandatory headers (RFC 3261 §8.1.1, §10.2).
	via := req.Via()
	if via == nil {
		return nil, refuse(400, "Missing Via")
	}
	to := req.To()
	if to == nil {
		return nil, refuse(400, "Missing To")
	}
	// §10.3 step 5: the address-of-record is the To URI; this registrar
	// keys it by the user part (one site, one domain).
	aor := to.Address.User
	if aor == "" {
		return nil, refuse(400, "Missing User In To")
	}
	if len(aor) > MaxKeyLen/2 {
		return nil, refuse(400, "User Too Long")
	}
	callID := req.CallID()
	if callID == nil || *callID == "" {
		return nil, refuse(400, "Missing Call-ID")
	}
	cseq := req.CSeq()
	if cseq == nil {
		return nil, refuse(400, "Missing CSeq")
	}
	if cseq.MethodName != sip.REGISTER {
		return nil, refuse(400, "CSeq Method Mismatch")
	}
	// §10.3 step 2 (§8.2.2.3): no extensions are supported.
	if tags := requireTags(req); len(tags) > 0 {
		return nil, refuse(420, "Bad Extension", sip.NewHeader("Unsupported", strings.Join(tags, ", ")))
	}
	// §10.3 step 3 and 4: authentication, and the user may change this AOR.
	p := r.pol.Load()
	if p.auth {
		if err := r.authorize(p, req, aor, src, now); err != nil {
			return nil, err
		}
	} else if len(p.users) > 0 {
		// §10.3 step 3: the AOR must be valid for the domain.
		if _, ok := p.users[aor]; !ok {
			return nil, refuse(404, "Not Found")
		}
	}
	// §10.3 step 6: every Contact, validated before anything changes.
	wildcard, cs, err := r.contacts(p, req, via, src, f)
	if err != nil {
		return nil, err
	}
	// §10.3 step 7 and 8, under the lock.
	return r.apply(aor, to.Address.String(), string(*callID), cseq.SeqNo, wildcard, cs, src, f, now)
}

// requireTags returns the option tags of the Require headers.
func requireTags(req *sip.Request) []string {
	var tags []string
	for _, h := range header.All(nil, req.Headers(), "Require") {
		for t := range strings.SplitSeq(h.Value(), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	return tags
}

// contacts validates the Contact headers (RFC 3261 §10.3 step 6).
func (r *Registrar) contacts(p *policy, req *sip.Request, via *sip.ViaHeader, src netip.AddrPort, f Flow) (bool, []contactReq, error) {
	hdrs := header.All(nil, req.Headers(), "Contact") // RFC 3261 §20.10
	var (
		headerExp  uint64
		haveHeader bool
	)
	if h := header.First(req.Headers(), "Expires"); h != nil { // RFC 3261 §20.19
		v, ok := parseDelta(h.Value())
		if !ok {
			return false, nil, refuse(400, "Malformed Expires")
		}
		headerExp, haveHeader = v, true
	}
	parsed := make([]*sip.ContactHeader, 0, len(hdrs))
	for _, h := range hdrs {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c == nil {
			c = &sip.ContactHeader{}
			v := strings.TrimSpace(h.Value())
			if v == "*" {
				c.Address.Wildcard = true
			} else {
				dn, err := sip.ParseAddressValue(v, &c.Address, &c.Params)
				if err != nil {
					return false, nil, refuse(400, "Malformed Contact")
				}
				c.DisplayName = dn
			}
		}
		parsed = append(parsed, c)
		if len(parsed) > MaxContactsPerRequest {
			return false, nil, refuse(400, "Too Many Contacts")
		}
	}
	wildcard := false
	for _, c := range parsed {
		if c.Address.Wildcard {
			wildcard = true
		}
	}
	if wildcard {
		// §10.3 step 6: "*" only alone and with Expires: 0.
		if len(parsed) != 1 || !haveHeader || headerExp != 0 {
			return false, nil, refuse(400, "Invalid Wildcard Contact")
		}
		return true, nil, nil
	}
	cs := make([]contactReq, 0, len(parsed))
	for _, c := range parsed {
		uri := c.Address.String()
		if uri == "" || c.Address.Host == "" && c.Address.Raw() == "" {
			return false, nil, refuse(400, "Malformed Contact")
		}
		if len(uri) > MaxKeyLen/2 {
			return false, nil, refuse(400, "Contact Too Long")
		}
		// Expiry: the expires parameter, else the Expires header, else
		// the default (§10.3 step 6).
		exp := uint64(DefaultExpires / time.Second)
		if haveHeader {
			exp = headerExp
		}
		if v, ok := c.Params.Get("expires"); ok {
			e, ok := parseDelta(v)
			if !ok {
				return false, nil, refuse(400, "Malformed Contact Expires")
			}
			exp = e
		}
		d := time.Duration(exp) * time.Second
		if d > 0 && d < p.minExpires {
			// §10.3 step 6, §20.23: 423 with Min-Expires.
			mins := int64((p.minExpires + time.Second - 1) / time.Second)
			return false, nil, refuse(423, "Interval Too Brief", sip.NewHeader("Min-Expires", itoa(int(mins))))
		}
		if d > p.maxExpires {
			d = p.maxExpires
		}
		q := uint16(1000)
		if v, ok := c.Params.Get("q"); ok {
			qv, ok := parseQ(v)
			if !ok {
				return false, nil, refuse(400, "Malformed q")
			}
			q = qv
		}
		cr := contactReq{uri: uri, expires: d, q: q, nated: natted(&c.Address, via, src, f)}
		dup := false
		for i := range cs {
			if cs[i].uri == uri { // the later one wins
				cs[i], dup = cr, true
			}
		}
		if !dup {
			cs = append(cs, cr)
		}
	}
	return false, cs, nil
}

// natted tells whether the device is behind NAT: the packet source differs
// from the Contact's host:port (a non-IP host counts as NATed; no port means
// 5060, 5061 for sips) or from the top Via's sent-by (RFC 3581 §4). Over a
// stream transport only the IP addresses are compared, since a TCP client's
// source port is an ephemeral port, never its listening port.
func natted(u *sip.Uri, via *sip.ViaHeader, src netip.AddrPort, f Flow) bool {
	def := 5060
	if strings.EqualFold(u.Scheme, "sips") {
		def = 5061
	}
	ports := f.Network == "UDP"
	differs := func(host string, port int) bool {
		ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if err != nil {
			return true
		}
		if ip.Unmap() != src.Addr() {
			return true
		}
		if port == 0 {
			port = def
		}
		return ports && port != int(src.Port())
	}
	return differs(u.Host, u.Port) || differs(via.Host, via.Port)
}

// parseDelta parses delta-seconds (RFC 3261 §25.1: 1*DIGIT); values above
// 2^32-1 are that (§20.19).
func parseDelta(s string) (uint64, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 64 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if v <= maxExpiresSeconds {
			v = v*10 + uint64(c-'0')
		}
	}
	return min(v, maxExpiresSeconds), true
}

// parseQ parses a qvalue (RFC 3261 §20.10, §25.1: "0" [ "." 0*3DIGIT ] /
// "1" [ "." 0*3("0") ]) into thousandths.
func parseQ(s string) (uint16, bool) {
	s = strings.TrimSpace(s)
	if s == "" || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	whole := uint16(s[0]-'0') * 1000
	rest := s[1:]
	if rest == "" {
		return whole, true
	}
	if rest[0] != '.' || len(rest) > 4 {
		return 0, false
	}
	frac := uint16(0)
	scale := uint16(100)
	for i := 1; i < len(rest); i++ {
		c := rest[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		frac += uint16(c-'0') * scale
		scale /= 10
	}
	if whole == 1000 && frac != 0 {
		return 0, false
	}
	return whole + frac, true
}

// apply performs RFC 3261 §10.3 steps 7 and 8 under the lock: checks
// Call-ID/CSeq and room for every contact, then changes the bindings.
func (r *Registrar) apply(aor, toURI, callID string, cseq uint32, wildcard bool, cs []contactReq, src netip.AddrPort, f Flow, nowT time.Time) ([]current, error) {
	now := r.mono(nowT)
	r.mu.Lock()
	defer r.mu.Unlock()

	ah := r.aorHash(aor)
	// Drop bindings of this AOR that expired but were not visited by the
	// pacer yet, so they neither block nor show.
	if head, ok := r.aors[ah]; ok {
		for i := head; i != none; {
			next := r.rec[i].next
			if r.names[i].aor() != aor {
				i = next
				continue
			}
			if b, ok := r.tab.Get(r.rec[i].id); !ok || now >= b.Expires {
				r.tab.Remove(r.rec[i].id)
				r.forget(i)
				r.expired++
			}
			i = next
		}
	}

	// §10.3 step 7: a binding with the same Call-ID is changed only by a
	// higher CSeq; otherwise 500 and nothing changes.
	outOfOrder := func(i int) bool {
		return r.names[i].callID() == callID && cseq <= r.rec[i].cseq
	}
	if wildcard {
		if head, ok := r.aors[ah]; ok {
			for i := head; i != none; i = r.rec[i].next {
				if r.names[i].aor() == aor && outOfOrder(int(i)) {
					return nil, refuse(500, "Out of Order")
				}
			}
			for i := head; i != none; {
				next := r.rec[i].next
				if r.names[i].aor() == aor {
					r.tab.Remove(r.rec[i].id)
					r.forget(i)
				}
				i = next
			}
		}
		r.log.Debug("registrar: all bindings removed", "aor", aor, "source", src)
		return nil, nil
	}
	added := 0
	for _, c := range cs {
		id, ok := r.tab.Lookup(aor, c.uri)
		if ok {
			if outOfOrder(id.Index()) {
				return nil, refuse(500, "Out of Order")
			}
		} else if c.expires > 0 {
			added++
		}
	}
	ni, ok := r.netIndex(f.Network)
	if !ok {
		return nil, fmt.Errorf("registrar: network %q: more than %d networks", f.Network, maxNets)
	}
	if r.tab.Len()+added > r.tab.Cap() {
		r.full.Add(1)
		r.log.Warn("registrar: binding table full", "capacity", r.tab.Cap(), "aor", aor, "source", src)
		return nil, refuse(503, "Service Unavailable", sip.NewHeader("Retry-After", itoa(RetryAfterFull))) // RFC 3261 §20.33
	}
	for _, c := range cs {
		if c.expires == 0 {
			if id, ok := r.tab.Lookup(aor, c.uri); ok {
				r.tab.Remove(id)
				r.forget(uint32(id.Index()))
				r.log.Debug("registrar: binding removed", "aor", aor, "contact", c.uri, "source", src)
			}
			continue
		}
		id, err := r.tab.Upsert(aor, c.uri, keepalive.Binding{
			Source:  src,
			Flow:    pacerFlow(f),
			Expires: now + int64(c.expires),
			NATed:   c.nated,
		})
		if err != nil { // not reached: room and key length checked above
			return nil, fmt.Errorf("registrar: upsert %s %s: %w", aor, c.uri, err)
		}
		i := uint32(id.Index())
		rc := &r.rec[i]
		sk := keyOf(src)
		if rc.id != id {
			*rc = record{id: id, ahash: ah, source: sk}
			r.names[i] = makeNames(aor, c.uri, toURI, callID)
			r.link(i)
			r.addSource(sk)
			r.bindingAdded()
			r.log.Debug("registrar: binding added", "aor", aor, "contact", c.uri, "source", src, "nated", c.nated)
		} else if rc.source != sk {
			r.dropSource(rc.source)
			r.addSource(sk)
			r.log.Debug("registrar: binding moved", "aor", aor, "contact", c.uri, "from", rc.source.addrPort(), "to", src)
			rc.source = sk
		}
		if n := &r.names[i]; n.toURI() != toURI || n.callID() != callID {
			*n = makeNames(aor, c.uri, toURI, callID)
		}
		rc.cseq = cseq
		rc.q = c.q
		rc.registered = now
		rc.net, rc.socket = ni, f.Socket
	}
	return r.listLocked(aor, now), nil
}

// listLocked returns the AOR's unexpired bindings with their remaining
// seconds (rounded up).
func (r *Registrar) listLocked(aor string, now int64) []current {
	head, ok := r.aors[r.aorHash(aor)]
	if !ok {
		return nil
	}
	var out []current
	for i := head; i != none; i = r.rec[i].next {
		if r.names[i].aor() != aor {
			continue
		}
		b, ok := r.tab.Get(r.rec[i].id)
		if !ok || now >= b.Expires {
			continue
		}
		sec := (b.Expires - now + int64(time.Second) - 1) / int64(time.Second)
		out = append(out, current{uri: r.names[i].contact(), seconds: sec})
	}
	return out
}
