package b2bua

import (
	"bytes"

	"github.com/emiago/sipgo/sip"
)

// This file reads datagrams without sipgo's parser: just the fields the
// read filter needs to route a message or to answer it from the
// retransmission cache, read exactly as sipgo's parser would read them.
// The readers are strict: whatever they do not read exactly as sipgo
// would (folded lines, quoted parameters, odd spacing, a repeated header
// field) is not theirs, and the datagram is parsed as before. They
// allocate nothing and never read outside the datagram: they see hostile
// input. Each is held to sipgo's reading by a fuzz test.

// rawRes is what rawResponse reads of a response.
type rawRes struct {
	code   int
	reason []byte // the Reason-Phrase, as sipgo keeps it
	branch []byte // of the top Via
	method []byte // of the CSeq
	seq    uint32 // of the CSeq
	noBody bool   // rawHead.noBody
}

// rawResponse reads the status line, the top Via's branch, the CSeq
// number and method of the raw response data, and whether it has a body,
// as sipgo would, strictly (scanHeaders, parseVia, cseqParts): for
// rawResponseKey and rawClientResponse. It allocates nothing and never
// reads outside data.
func rawResponse(data []byte) (r rawRes, ok bool) {
	line, rest, ok := cutLine(data)
	// SIP/2.0 SP 3DIGIT SP reason (RFC 3261 §7.2), 100 to 699.
	if !ok || len(line) < 12 || requestLine(line) || !asciiEqualFold(line[:8], "sip/2.0 ") || line[11] != ' ' ||
		line[8] < '1' || line[8] > '6' {
		return rawRes{}, false
	}
	for _, c := range line[8:11] {
		if c < '0' || c > '9' {
			return rawRes{}, false
		}
		r.code = r.code*10 + int(c-'0')
	}
	r.reason = line[12:]
	h, ok := scanHeaders(rest)
	if !ok {
		return rawRes{}, false
	}
	if r.seq, r.method, ok = cseqParts(h.cseq); !ok {
		return rawRes{}, false
	}
	if _, _, _, r.branch, ok = parseVia(h.via); !ok {
		return rawRes{}, false
	}
	r.noBody = h.noBody()
	return r, true
}

// rawAckRes is what rawAck reads of an ACK.
type rawAckRes struct {
	branch, host []byte // of the top Via: with port, its INVITE's transaction
	port         int
	callID       []byte
	toTag        []byte
	seq          uint32 // of the CSeq
}

// rawAck reads what the read filter needs of an ACK (ackDirect): the top
// Via's branch and sent-by, which name the INVITE transaction it may
// belong to (RFC 3261 §17.2.3), the Call-ID and To tag, which name its
// dialog (§12.2.2), and the CSeq number, which names the INVITE it
// acknowledges (§13.2.2.4). It reads them as sipgo would, strictly; an
// ACK without a To tag, or whose To it does not read exactly as sipgo
// would, is not its (toTag).
func rawAck(data []byte) (a rawAckRes, ok bool) {
	line, rest, ok := cutLine(data)
	if !ok || len(line) < 4 || !asciiEqualFold(line[:4], "ack ") || !requestLine(line) {
		return rawAckRes{}, false
	}
	h, ok := scanHeaders(rest)
	if !ok || h.callID == nil || h.to == nil || h.from == 0 {
		return rawAckRes{}, false
	}
	seq, method, ok := cseqParts(h.cseq)
	if !ok || string(method) != "ACK" {
		return rawAckRes{}, false
	}
	_, host, port, branch, ok := parseVia(h.via)
	if !ok || !rfc3261Branch(branch) || len(host) == 0 {
		return rawAckRes{}, false
	}
	tag, ok := toTag(h.to)
	if !ok {
		return rawAckRes{}, false
	}
	return rawAckRes{branch: branch, host: host, port: port, callID: h.callID, toTag: tag, seq: seq}, true
}

// rawByeRes is what rawBye reads of a BYE.
type rawByeRes struct {
	callID, toTag []byte // the dialog (RFC 3261 §12.2.2)
	seq           uint32 // of the CSeq
}

// rawBye reads what a shard needs of a BYE in one of its dialogs (the
// Call-ID, To tag and CSeq number), in the one plain form in which it
// reads the whole message as sipgo would and finds nothing that sbcd's
// checks of a BYE refuse (byeDirect): the request line BYE sip: or sips:
// SIP/2.0 (RFC 3261 §8.2.2.1, §21.5.26); only Via, From, To, Call-ID,
// CSeq, Contact, Max-Forwards, Content-Length, User-Agent, Allow and
// Supported, each but Via at most once (§7.3.1), none folded; a To with
// a tag (toTag); CSeq method BYE (§8.1.1.5); a top Via with an RFC 3261
// branch and without rport (its answer goes back as is,
// writeRawResponse); no body. Anything else (Require, Record-Route,
// Reason, an unknown header field) is parsed as before.
func rawBye(data []byte) (rawByeRes, bool) {
	line, rest, ok := cutLine(data)
	if !ok || len(line) < 4 || !asciiEqualFold(line[:4], "bye ") || !requestLine(line) {
		return rawByeRes{}, false
	}
	uri := line[4:]
	sp := bytes.IndexByte(uri, ' ')
	if sp < 0 || string(uri[sp+1:]) != sipVersion {
		return rawByeRes{}, false
	}
	uri = uri[:sp]
	if !(len(uri) > 4 && asciiEqualFold(uri[:4], "sip:") || len(uri) > 5 && asciiEqualFold(uri[:5], "sips:")) {
		return rawByeRes{}, false
	}
	h, ok := scanHeaders(rest)
	if !ok || h.folded || h.other || h.from != 1 || h.maxForwards > 1 || h.callID == nil || h.to == nil || !h.noBody() {
		return rawByeRes{}, false
	}
	seq, method, ok := cseqParts(h.cseq)
	if !ok || string(method) != "BYE" {
		return rawByeRes{}, false
	}
	if _, host, _, branch, ok := parseVia(h.via); !ok || !rfc3261Branch(branch) || len(host) == 0 || containsFold(h.via, "rport") {
		return rawByeRes{}, false
	}
	tag, ok := toTag(h.to)
	if !ok {
		return rawByeRes{}, false
	}
	return rawByeRes{callID: h.callID, toTag: tag, seq: seq}, true
}

// containsFold reports whether b contains lower, ignoring ASCII case.
func containsFold(b []byte, lower string) bool {
	for i := 0; i+len(lower) <= len(b); i++ {
		if asciiEqualFold(b[i:i+len(lower)], lower) {
			return true
		}
	}
	return false
}

// writeRawResponse writes to w the response with code and reason to the
// request in data, which rawBye read: its Via, From, To, Call-ID and CSeq
// header lines copied as they came, in their order (RFC 3261 §8.2.6.2;
// rawBye took only a top Via without rport, so none needs received or
// rport, RFC 3581 §4, and only a To with a tag), then Content-Length 0 and
// hdrs.
func writeRawResponse(w *bytes.Buffer, data []byte, code int, reason string, hdrs ...sip.Header) {
	writeStatusLine(w, code, reason)
	_, rest, _ := cutLine(data)
	for {
		line, next, ok := cutLine(rest)
		if !ok || len(line) == 0 {
			break
		}
		rest = next
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		switch name := bytes.TrimSpace(line[:colon]); {
		case asciiEqualFold(name, "via"), asciiEqualFold(name, "v"),
			asciiEqualFold(name, "from"), asciiEqualFold(name, "f"),
			asciiEqualFold(name, "to"), asciiEqualFold(name, "t"),
			asciiEqualFold(name, "call-id"), asciiEqualFold(name, "i"),
			asciiEqualFold(name, "cseq"):
			w.Write(line)
			w.WriteString("\r\n")
		}
	}
	w.WriteString("Content-Length: 0\r\n")
	for _, h := range hdrs {
		writeHeader(w, h)
	}
	w.WriteString("\r\n")
}

// toTag reads the tag parameter of a To value (RFC 3261 §20.39), as
// sipgo would, in the one form it reads strictly: an optional display
// name without quotes, the URI in angle brackets, then parameters with
// token values and no white space; the tag must be there, once.
func toTag(to []byte) ([]byte, bool) {
	if bytes.IndexByte(to, '"') >= 0 || bytes.IndexByte(to, ',') >= 0 {
		return nil, false
	}
	lt := bytes.IndexByte(to, '<')
	if lt < 0 {
		return nil, false
	}
	gt := bytes.IndexByte(to[lt:], '>')
	if gt < 0 {
		return nil, false
	}
	params := to[lt+gt+1:]
	if bytes.IndexByte(to[lt+1:], '<') >= 0 || bytes.IndexAny(params, " \t>") >= 0 {
		return nil, false
	}
	var tag []byte
	for len(params) > 0 {
		if params[0] != ';' {
			return nil, false
		}
		params = params[1:]
		p := params
		if i := bytes.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i:]
		} else {
			params = nil
		}
		name, value, _ := bytes.Cut(p, []byte("="))
		if !isToken(name) {
			return nil, false
		}
		if asciiEqualFold(name, "tag") {
			if string(name) != "tag" || tag != nil || !isToken(value) {
				return nil, false
			}
			tag = value
		}
	}
	return tag, tag != nil
}

// isToken reports whether b is a non-empty token (RFC 3261 §25.1).
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case bytes.IndexByte([]byte("-.!%*_+`'~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// requestLine reports whether sipgo reads line as a request line: three
// parts separated by spaces, the last without a space and starting with
// sip or SIP (RFC 3261 §7.1: Method SP Request-URI SP SIP-Version). It
// asks so before it tries a status line, so "SIP/2.0 486 SIPfoo" is a
// request to it.
func requestLine(line []byte) bool {
	i := bytes.IndexByte(line, ' ')
	if i < 0 {
		return false
	}
	j := bytes.IndexByte(line[i+1:], ' ')
	if j < 0 {
		return false
	}
	v := line[i+1+j+1:]
	return len(v) >= 3 && bytes.IndexByte(v, ' ') < 0 && (string(v[:3]) == "sip" || string(v[:3]) == "SIP")
}

// rawHead is what scanHeaders reads of a header section.
type rawHead struct {
	via, cseq  []byte // the values of the first Via and of the CSeq
	length     []byte // the value of Content-Length (l); nil: none
	callID, to []byte // the values of Call-ID (i) and To (t); nil: none
	body       []byte // what follows the empty line
	// from and maxForwards count the From (f) and Max-Forwards fields;
	// folded: some line is folded; other: some field is none of those
	// named here nor Contact (m), User-Agent, Allow or Supported (k),
	// the fields rawBye lets pass.
	from, maxForwards int
	folded, other     bool
}

// scanHeaders finds the values of the first Via and of the CSeq,
// Content-Length, Call-ID and To header fields in the header section
// rest, and whether there is a From, as sipgo reads them: it keeps the
// first Via but the last CSeq, so a second CSeq (or Content-Length,
// Call-ID, To) is no key; a folded line of one of them, or a first header
// line that starts with white space, is none either (sipgo joins
// continuation lines, RFC 3261 §7.3.1).
func scanHeaders(rest []byte) (h rawHead, ok bool) {
	first := true
	for {
		line, next, ok := cutLine(rest)
		if !ok {
			return rawHead{}, false
		}
		rest = next
		if len(line) == 0 {
			break // the end of the header section
		}
		folded := len(next) > 0 && (next[0] == ' ' || next[0] == '\t')
		h.folded = h.folded || folded
		if line[0] == ' ' || line[0] == '\t' {
			if first {
				return rawHead{}, false
			}
			continue // part of the line before
		}
		first = false
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return rawHead{}, false
		}
		name := bytes.TrimSpace(line[:colon])
		isVia := asciiEqualFold(name, "via") || asciiEqualFold(name, "v")
		isCSeq := asciiEqualFold(name, "cseq")
		isLength := asciiEqualFold(name, "content-length") || asciiEqualFold(name, "l")
		isCallID := asciiEqualFold(name, "call-id") || asciiEqualFold(name, "i")
		isTo := asciiEqualFold(name, "to") || asciiEqualFold(name, "t")
		isFrom := asciiEqualFold(name, "from") || asciiEqualFold(name, "f")
		if (isVia || isCSeq || isLength || isCallID || isTo || isFrom) && folded {
			return rawHead{}, false
		}
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case isVia:
			if h.via != nil {
				break // sipgo keeps the first
			}
			if h.via = value; len(value) == 0 {
				return rawHead{}, false
			}
		case isCSeq:
			if h.cseq != nil || len(value) == 0 {
				return rawHead{}, false
			}
			h.cseq = value
		case isLength:
			if h.length != nil || len(value) == 0 {
				return rawHead{}, false
			}
			h.length = value
		case isCallID:
			if h.callID != nil || len(value) == 0 {
				return rawHead{}, false
			}
			h.callID = value
		case isTo:
			if h.to != nil || len(value) == 0 {
				return rawHead{}, false
			}
			h.to = value
		case isFrom:
			h.from++
		case asciiEqualFold(name, "max-forwards"):
			h.maxForwards++
		case asciiEqualFold(name, "contact") || asciiEqualFold(name, "m"), asciiEqualFold(name, "user-agent"),
			asciiEqualFold(name, "allow"), asciiEqualFold(name, "supported") || asciiEqualFold(name, "k"):
		default:
			h.other = true
		}
	}
	if h.via == nil || h.cseq == nil {
		return rawHead{}, false
	}
	h.body = rest
	return h, true
}

// noBody reports whether the message of h has no body: nothing after the
// empty line, and a Content-Length of 0 or none (RFC 3261 §20.14).
func (h *rawHead) noBody() bool {
	if len(h.body) != 0 || len(h.length) > 10 {
		return false
	}
	for _, c := range h.length {
		if c != '0' {
			return false
		}
	}
	return true
}

// cseqMethod reads the method of a CSeq value: a number below 2**31, one
// SP or HT, the method (sipgo keeps the rest as is; RFC 3261 §8.1.1.5).
func cseqMethod(cseq []byte) ([]byte, bool) {
	_, method, ok := cseqParts(cseq)
	return method, ok
}

// cseqParts reads the number and the method of a CSeq value, as
// cseqMethod.
func cseqParts(cseq []byte) (uint32, []byte, bool) {
	ws := bytes.IndexAny(cseq, " \t")
	if ws < 1 || ws > 10 {
		return 0, nil, false
	}
	seq := uint64(0)
	for _, c := range cseq[:ws] {
		if c < '0' || c > '9' {
			return 0, nil, false
		}
		seq = seq*10 + uint64(c-'0')
	}
	if seq > 1<<31-1 {
		return 0, nil, false
	}
	return uint32(seq), cseq[ws+1:], true
}

// parseVia reads the first value of a Via header field (RFC 3261 §20.42):
// protocol-name/version/transport LWS sent-by *(;param), up to the first
// comma; port is the transport's default when sent-by has none.
func parseVia(via []byte) (transport, host []byte, port int, branch []byte, ok bool) {
	if bytes.IndexByte(via, '"') >= 0 {
		return nil, nil, 0, nil, false
	}
	if c := bytes.IndexByte(via, ','); c >= 0 {
		via = via[:c]
	}
	s1 := bytes.IndexByte(via, '/')
	if s1 < 0 {
		return nil, nil, 0, nil, false
	}
	s2 := bytes.IndexByte(via[s1+1:], '/')
	if s2 < 0 {
		return nil, nil, 0, nil, false
	}
	rest := via[s1+1+s2+1:]
	ws := bytes.IndexAny(rest, " \t")
	if ws < 0 {
		return nil, nil, 0, nil, false
	}
	transport = bytes.TrimSpace(rest[:ws])
	rest = rest[ws+1:]
	semi := bytes.IndexByte(rest, ';')
	if semi < 0 {
		return nil, nil, 0, nil, false // no parameters: no branch
	}
	sentBy, params := rest[:semi], rest[semi+1:]
	var portText []byte
	hasPort := false
	if len(sentBy) > 0 && sentBy[0] == '[' {
		// An IPv6 reference (RFC 3261 §25.1): the host is what the
		// brackets hold.
		end := bytes.IndexByte(sentBy, ']')
		if end < 0 {
			return nil, nil, 0, nil, false
		}
		host = bytes.TrimSpace(sentBy[1:end])
		switch after := sentBy[end+1:]; {
		case len(after) == 0:
		case after[0] == ':':
			hasPort, portText = true, bytes.TrimSpace(after[1:])
		default:
			return nil, nil, 0, nil, false
		}
	} else if c := bytes.LastIndexByte(sentBy, ':'); c > 0 {
		host, hasPort, portText = bytes.TrimSpace(sentBy[:c]), true, sentBy[c+1:]
	} else {
		host = bytes.TrimSpace(sentBy)
	}
	if hasPort {
		if len(portText) == 0 || len(portText) > 5 {
			return nil, nil, 0, nil, false
		}
		for _, c := range portText {
			if c < '0' || c > '9' {
				return nil, nil, 0, nil, false
			}
			port = port*10 + int(c-'0')
		}
	}
	if port == 0 {
		port = defaultPort(transport)
	}
	// The parameter named exactly "branch", the last one when there are
	// several (sipgo keeps names and values as written, a later value
	// replacing an earlier one). Anything but plain name[=value] pairs is
	// read differently by sipgo's parameter scanner: no key.
	for len(params) > 0 {
		p := params
		if i := bytes.IndexByte(params, ';'); i >= 0 {
			p, params = params[:i], params[i+1:]
			if len(params) == 0 {
				return nil, nil, 0, nil, false
			}
		} else {
			params = nil
		}
		if len(p) == 0 || bytes.IndexAny(p, " \t\r\n") >= 0 {
			return nil, nil, 0, nil, false
		}
		if v, ok := bytes.CutPrefix(p, []byte("branch=")); ok {
			branch = v
		} else if string(p) == "branch" {
			branch = nil // sipgo: an empty value replaces the earlier one
		}
	}
	return transport, host, port, branch, true
}

// cutLine splits data at the first CRLF; a CR not followed by LF, or no
// CRLF at all, is not a line.
func cutLine(data []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(data, '\r')
	if i < 0 || i+1 >= len(data) || data[i+1] != '\n' {
		return nil, nil, false
	}
	if bytes.IndexByte(data[:i], '\n') >= 0 {
		return nil, nil, false
	}
	return data[:i], data[i+2:], true
}

// rfc3261Branch reports whether b is an RFC 3261 branch: the magic cookie
// and more (§8.1.1.7).
func rfc3261Branch[S string | []byte](b S) bool {
	return len(b) > len(sip.RFC3261BranchMagicCookie) && string(b[:len(sip.RFC3261BranchMagicCookie)]) == sip.RFC3261BranchMagicCookie
}

// defaultPort is the port of a Via without one, by transport (RFC 3261
// §18.1.1; sip.DefaultPort without its allocation).
func defaultPort(transport []byte) int {
	switch {
	case asciiEqualFold(transport, "tls"):
		return sip.DefaultTlsPort
	case asciiEqualFold(transport, "ws"):
		return sip.DefaultWsPort
	case asciiEqualFold(transport, "wss"):
		return sip.DefaultWssPort
	}
	return sip.DefaultUdpPort
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
