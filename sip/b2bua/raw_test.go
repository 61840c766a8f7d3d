package b2bua

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// sippAck is the ACK of bench/sipp/uac.xml, as SIPp sends it.
const sippAck = "ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4711-1-5\r\n" +
	"From: <sip:caller@127.0.0.1:5070>;tag=4711SIPpTag001\r\n" +
	"To: <sip:service@127.0.0.1:5060>;tag=01a2b3c4d5\r\n" +
	"Call-ID: 1-4711@127.0.0.1\r\n" +
	"CSeq: 1 ACK\r\n" +
	"Contact: <sip:caller@127.0.0.1:5070;transport=UDP>\r\n" +
	"Max-Forwards: 70\r\n" +
	"Content-Length: 0\r\n\r\n"

// editor returns a function that replaces old with new once in msg,
// failing when msg has no old: each table row is msg with one edit.
func editor(t *testing.T, msg string) func(old, new string) string {
	return func(old, new string) string {
		t.Helper()
		if !strings.Contains(msg, old) {
			t.Fatalf("%q not in %q", old, msg)
		}
		return strings.Replace(msg, old, new, 1)
	}
}

// TestRawAck: rawAck reads the ACKs it can read exactly as sipgo does, and
// leaves every other to the parser.
func TestRawAck(t *testing.T) {
	edit := editor(t, sippAck)
	for _, c := range []struct {
		name, data          string
		callID, tag, branch string
		host                string
		port                int
		seq                 uint32
		ok                  bool
	}{
		{"SIPp", sippAck, "1-4711@127.0.0.1", "01a2b3c4d5", "z9hG4bK-4711-1-5", "127.0.0.1", 5070, 1, true},
		{"compact forms, lowercase method", edit("ACK sip:", "ack sip:"), "1-4711@127.0.0.1", "01a2b3c4d5", "z9hG4bK-4711-1-5", "127.0.0.1", 5070, 1, true},
		{"compact headers", strings.NewReplacer("Via:", "v:", "From:", "f:", "To:", "t:", "Call-ID:", "i:").Replace(sippAck),
			"1-4711@127.0.0.1", "01a2b3c4d5", "z9hG4bK-4711-1-5", "127.0.0.1", 5070, 1, true},
		{"display name, more parameters", edit("To: <sip:service@127.0.0.1:5060>;tag=01a2b3c4d5", "To: Service <sip:service@127.0.0.1:5060;user=phone>;x=1;tag=01a2b3c4d5;lr"),
			"1-4711@127.0.0.1", "01a2b3c4d5", "z9hG4bK-4711-1-5", "127.0.0.1", 5070, 1, true},
		{"Via without port", edit("127.0.0.1:5070;branch", "127.0.0.1;branch"), "1-4711@127.0.0.1", "01a2b3c4d5", "z9hG4bK-4711-1-5", "127.0.0.1", 5060, 1, true},
		{"CSeq 2**31-1", edit("CSeq: 1 ACK", "CSeq: 2147483647 ACK"), "1-4711@127.0.0.1", "01a2b3c4d5", "z9hG4bK-4711-1-5", "127.0.0.1", 5070, 1<<31 - 1, true},
		{"no To tag", edit(";tag=01a2b3c4d5", ""), "", "", "", "", 0, 0, false},
		{"empty To tag", edit("tag=01a2b3c4d5", "tag="), "", "", "", "", 0, 0, false},
		{"two To tags", edit(";tag=01a2b3c4d5", ";tag=01a2b3c4d5;tag=01ff"), "", "", "", "", 0, 0, false},
		{"TAG in capitals", edit(";tag=01a2b3c4d5", ";TAG=01a2b3c4d5"), "", "", "", "", 0, 0, false},
		{"quoted display name", edit("To: <sip", "To: \"Svc\" <sip"), "", "", "", "", 0, 0, false},
		{"To without brackets", edit("To: <sip:service@127.0.0.1:5060>;tag", "To: sip:service@127.0.0.1:5060;tag"), "", "", "", "", 0, 0, false},
		{"space before a parameter", edit("5060>;tag", "5060> ;tag"), "", "", "", "", 0, 0, false},
		{"quoted tag", edit("tag=01a2b3c4d5", "tag=\"01a2b3c4d5\""), "", "", "", "", 0, 0, false},
		{"folded To", edit("To: <sip", "To:\r\n <sip"), "", "", "", "", 0, 0, false},
		{"two To", edit("Call-ID:", "To: <sip:x@y>;tag=01ff\r\nCall-ID:"), "", "", "", "", 0, 0, false},
		{"two Call-ID", edit("CSeq:", "Call-ID: other\r\nCSeq:"), "", "", "", "", 0, 0, false},
		{"no Call-ID", edit("Call-ID: 1-4711@127.0.0.1\r\n", ""), "", "", "", "", 0, 0, false},
		{"no From", edit("From: <sip:caller@127.0.0.1:5070>;tag=4711SIPpTag001\r\n", ""), "", "", "", "", 0, 0, false},
		{"CSeq of an INVITE", edit("CSeq: 1 ACK", "CSeq: 1 INVITE"), "", "", "", "", 0, 0, false},
		{"RFC 2543 branch", edit("branch=z9hG4bK-4711-1-5", "branch=4711"), "", "", "", "", 0, 0, false},
		{"a BYE", edit("ACK sip:", "BYE sip:"), "", "", "", "", 0, 0, false},
		{"a response", "SIP/2.0 200 OK\r\n" + sippAck[strings.Index(sippAck, "Via:"):], "", "", "", "", 0, 0, false},
	} {
		a, ok := rawAck([]byte(c.data))
		if ok != c.ok || string(a.callID) != c.callID || string(a.toTag) != c.tag || string(a.branch) != c.branch ||
			string(a.host) != c.host || a.port != c.port || a.seq != c.seq {
			t.Errorf("%s: %q %q %q %q %d %d %v; want %q %q %q %q %d %d %v", c.name,
				a.callID, a.toTag, a.branch, a.host, a.port, a.seq, ok, c.callID, c.tag, c.branch, c.host, c.port, c.seq, c.ok)
		}
		checkSameAck(t, []byte(c.data))
	}
}

// checkSameAck fails when rawAck reads from data what sipgo's parse of
// data does not give: an ACK with that Call-ID, To tag and CSeq number,
// whose server transaction key is appendInviteKey's.
func checkSameAck(t testing.TB, data []byte) {
	a, ok := rawAck(data)
	if !ok {
		return
	}
	req, ok := parsedRequest(t, data, sip.ACK)
	if !ok {
		return // sipgo would drop it; the peer sent it all the same
	}
	tag, _ := req.To().Params.Get("tag")
	key, err := sip.ServerTxKeyMake(req)
	if err != nil {
		t.Fatalf("rawAck read %q, sipgo makes no key: %v", data, err)
	}
	raw := string(appendInviteKey(nil, a.branch, a.host, a.port))
	if req.CallID().Value() != string(a.callID) || tag != string(a.toTag) || req.CSeq().SeqNo != a.seq || key != raw {
		t.Fatalf("rawAck read %q %q %d %q from %q, sipgo %q %q %d %q",
			a.callID, a.toTag, a.seq, raw, data, req.CallID().Value(), tag, req.CSeq().SeqNo, key)
	}
}

// parsedRequest is sipgo's parse of data, which a raw reader took as a
// request of method: false when sipgo does not parse it at all, a failure
// when it reads anything but such a request with Via, From, To, Call-ID
// and CSeq.
func parsedRequest(t testing.TB, data []byte, method sip.RequestMethod) (*sip.Request, bool) {
	m, err := sip.ParseMessage(bytes.Clone(data))
	if err != nil {
		return nil, false
	}
	req, isReq := m.(*sip.Request)
	if !isReq || req.Method != method || req.Via() == nil || req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		t.Fatalf("the raw reader took %q as a %s, sipgo reads no such request", data, method)
	}
	return req, true
}

// FuzzRawAck: what rawAck reads, sipgo reads too.
func FuzzRawAck(f *testing.F) {
	for _, data := range corpusFiles(f) {
		f.Add(data)
	}
	f.Add([]byte(sippAck))
	f.Add([]byte(strings.NewReplacer("Via:", "v:", "To: <sip:service@127.0.0.1:5060>", "t: S <sip:s@[::1]:5060;lr>;x").Replace(sippAck)))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameAck(t, data)
	})
}

// sippBye is the caller's BYE of bench/sipp/uac.xml, as SIPp sends it.
const sippBye = "BYE sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4711-1-7\r\n" +
	"From: <sip:caller@127.0.0.1:5070>;tag=4711SIPpTag001\r\n" +
	"To: <sip:service@127.0.0.1:5060>;tag=01a2b3c4d5\r\n" +
	"Call-ID: 1-4711@127.0.0.1\r\n" +
	"CSeq: 2 BYE\r\n" +
	"Contact: <sip:caller@127.0.0.1:5070;transport=UDP>\r\n" +
	"Max-Forwards: 70\r\n" +
	"Content-Length: 0\r\n\r\n"

// TestRawBye: rawBye reads the plain BYEs it can read as sipgo does and
// that sbcd's checks pass, and leaves every other to the parser.
func TestRawBye(t *testing.T) {
	edit := editor(t, sippBye)
	for _, c := range []struct {
		name, data  string
		callID, tag string
		seq         uint32
		ok          bool
	}{
		{"SIPp", sippBye, "1-4711@127.0.0.1", "01a2b3c4d5", 2, true},
		{"compact headers, lowercase method", strings.NewReplacer("BYE sip", "bye sip", "Via:", "v:", "From:", "f:", "To:", "t:",
			"Call-ID:", "i:", "Contact:", "m:", "Content-Length:", "l:").Replace(sippBye), "1-4711@127.0.0.1", "01a2b3c4d5", 2, true},
		{"two Vias on two lines", edit("Via: SIP", "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKp1\r\nVia: SIP"), "1-4711@127.0.0.1", "01a2b3c4d5", 2, true},
		{"User-Agent, Allow, Supported", edit("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nUser-Agent: x/1\r\nAllow: INVITE, BYE\r\nSupported: timer\r\n"),
			"1-4711@127.0.0.1", "01a2b3c4d5", 2, true},
		{"sips", edit("BYE sip:", "BYE sips:"), "1-4711@127.0.0.1", "01a2b3c4d5", 2, true},
		{"tel URI", edit("BYE sip:service@127.0.0.1:5060", "BYE tel:+15551234"), "", "", 0, false},
		{"SIP/2.1", edit("5060 SIP/2.0", "5060 SIP/2.1"), "", "", 0, false},
		{"Require", edit("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRequire: timer\r\n"), "", "", 0, false},
		{"Reason", edit("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nReason: Q.850;cause=16\r\n"), "", "", 0, false},
		{"Record-Route", edit("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRecord-Route: <sip:p;lr>\r\n"), "", "", 0, false},
		{"rport", edit(";branch=z9hG4bK-4711-1-7", ";rport;branch=z9hG4bK-4711-1-7"), "", "", 0, false},
		{"no To tag", edit(";tag=01a2b3c4d5", ""), "", "", 0, false},
		{"two From", edit("To:", "From: <sip:x@y>;tag=2\r\nTo:"), "", "", 0, false},
		{"two Max-Forwards", edit("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nMax-Forwards: 69\r\n"), "", "", 0, false},
		{"folded Contact", edit("Contact: <sip", "Contact:\r\n <sip"), "", "", 0, false},
		{"CSeq of an INVITE", edit("CSeq: 2 BYE", "CSeq: 2 INVITE"), "", "", 0, false},
		{"a body", edit("Content-Length: 0\r\n\r\n", "Content-Length: 4\r\n\r\nabcd"), "", "", 0, false},
		{"no Call-ID", edit("Call-ID: 1-4711@127.0.0.1\r\n", ""), "", "", 0, false},
		{"no Via", edit("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4711-1-7\r\n", ""), "", "", 0, false},
	} {
		r, ok := rawBye([]byte(c.data))
		if ok != c.ok || string(r.callID) != c.callID || string(r.toTag) != c.tag || r.seq != c.seq {
			t.Errorf("%s: %q %q %d %v; want %q %q %d %v", c.name, r.callID, r.toTag, r.seq, ok, c.callID, c.tag, c.seq, c.ok)
		}
		checkSameBye(t, []byte(c.data))
	}
}

// checkSameBye fails when rawBye reads from data what sipgo's parse of
// data does not give (a BYE with that Call-ID, To tag and CSeq number,
// which sbcd's checks of a BYE pass), or when writeRawResponse's answer
// to it does not read, to sipgo, as a response with its status line and
// the request's Vias, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2).
func checkSameBye(t testing.TB, data []byte) {
	r, ok := rawBye(data)
	if !ok {
		return
	}
	req, ok := parsedRequest(t, data, sip.BYE)
	if !ok {
		return // sipgo would drop it; the peer sent it all the same
	}
	if c := checkMessage(req).code + checkCSeq(req).code + checkHeaders(req).code; c != 0 {
		t.Fatalf("rawBye read %q, which sbcd's checks refuse (%d)", data, c)
	}
	tag, _ := req.To().Params.Get("tag")
	if req.CallID().Value() != string(r.callID) || tag != string(r.toTag) || req.CSeq().SeqNo != r.seq || len(req.Body()) != 0 {
		t.Fatalf("rawBye read %q %q %d from %q, sipgo %q %q %d (body %q)",
			r.callID, r.toTag, r.seq, data, req.CallID().Value(), tag, req.CSeq().SeqNo, req.Body())
	}
	for _, code := range []int{200, 481, 500} {
		var w bytes.Buffer
		writeRawResponse(&w, data, code, "Reason", sip.NewHeader("Retry-After", "1"))
		a, err := sip.ParseMessage(w.Bytes())
		if err != nil {
			t.Fatalf("answer to %q does not parse: %v\n%s", data, err, w.Bytes())
		}
		res, isRes := a.(*sip.Response)
		if !isRes {
			t.Fatalf("answer to %q reads as a request:\n%s", data, w.Bytes())
		}
		want := sip.NewResponse(code, "Reason")
		for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
			for _, h := range req.GetHeaders(name) {
				want.AppendHeader(h)
			}
		}
		want.AppendHeader(sip.NewHeader("Content-Length", "0"))
		want.AppendHeader(sip.NewHeader("Retry-After", "1"))
		if got, want := responseFields(res), responseFields(want); got != want {
			t.Fatalf("answer to %q:\n%s\nreads\n%s\nwant\n%s", data, w.Bytes(), got, want)
		}
	}
}

// responseFields is what a response's receiver reads of it: the status
// line, every Via, From, To, Call-ID, CSeq, Content-Length and
// Retry-After, as sipgo writes them back.
func responseFields(res *sip.Response) string {
	var b strings.Builder
	b.WriteString(res.StartLine())
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq", "Content-Length", "Retry-After"} {
		for _, h := range res.GetHeaders(name) {
			b.WriteString("\n" + h.Name() + ": " + h.Value())
		}
	}
	return b.String()
}

// FuzzRawBye: what rawBye reads, sipgo reads too, and the answer written
// from the datagram reads as the one written from sipgo's parse.
func FuzzRawBye(f *testing.F) {
	for _, data := range corpusFiles(f) {
		f.Add(data)
	}
	f.Add([]byte(sippBye))
	f.Add([]byte(strings.NewReplacer("Via:", "v:", "To: <sip:service@127.0.0.1:5060>", "t: S <sip:s@[::1]:5060;lr>;x").Replace(sippBye)))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameBye(t, data)
	})
}

// BenchmarkRaw compares, for the messages of a call that the read filter
// reads without parsing (SIPp's in bench/load.sh), sipgo's parse with the
// raw reader; for the BYE both sides include writing the 200.
func BenchmarkRaw(b *testing.B) {
	ringing := "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branchMark + "01abcdef12\r\n" +
		"From: <sip:caller@127.0.0.1:5060>;tag=01abcdef\r\nTo: <sip:service@127.0.0.1:5080>;tag=99SIPpTag01\r\n" +
		"Call-ID: 01abcdef@sbcd\r\nCSeq: 1 INVITE\r\nContact: <sip:127.0.0.1:5080;transport=UDP>\r\nContent-Length: 0\r\n\r\n"
	var w bytes.Buffer
	for _, c := range []struct {
		name string
		data string
		raw  func([]byte) bool
		then func(*sip.Request) // after sipgo's parse of a request
	}{
		{"180", ringing, func(d []byte) bool { _, ok := rawClientResponse(d); return ok }, nil},
		{"ack", sippAck, func(d []byte) bool { _, ok := rawAck(d); return ok }, nil},
		{"bye", sippBye, func(d []byte) bool {
			_, ok := rawBye(d)
			w.Reset()
			writeRawResponse(&w, d, 200, "OK")
			return ok
		}, func(req *sip.Request) {
			req.SetSource("127.0.0.1:5070")
			w.Reset()
			writeResponse(&w, req, 200, "OK", "", nil)
		}},
	} {
		data := []byte(c.data)
		p := sip.NewParser()
		b.Run(c.name+"-sipgo", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, err := p.ParseSIP(data)
				if err != nil {
					b.Fatal(err)
				}
				if c.then != nil {
					c.then(m.(*sip.Request))
				}
			}
		})
		b.Run(c.name+"-raw", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !c.raw(data) {
					b.Fatal("not read")
				}
			}
		})
	}
}
