package b2bua

import (
	"bytes"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"
)

// sipgoResponse is what writeResponse must equal: newResponse, with the To
// tag and hdrs added as answerA adds them, written by sipgo.
func sipgoResponse(req *sip.Request, code int, reason, toTag string, body []byte, hdrs ...sip.Header) string {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	res.SipVersion = sipVersion
	if code > 100 && toTag != "" {
		if to := res.To(); to != nil {
			to.Params.Add("tag", toTag)
		}
	}
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	return res.String()
}

// responseCase is one way a shard answers.
type responseCase struct {
	code   int
	reason string
	tag    string
	body   []byte
	hdrs   []sip.Header
}

var responseCases = []responseCase{
	{code: 100, reason: "Trying"},
	{code: 180, reason: "Ringing", tag: "00abc", hdrs: []sip.Header{&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.9", Port: 5060}}}},
	{code: 183, reason: "Session Progress", tag: "00abc", body: []byte("v=0\r\n"), hdrs: []sip.Header{sip.NewHeader("Content-Type", "application/sdp")}},
	{code: 200, reason: "OK", tag: "01tag with space", body: []byte(testSDP), hdrs: []sip.Header{
		&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "::1", Port: 5060}},
		sip.NewHeader("Allow", allow), sip.NewHeader("Supported", "timer"),
		sip.NewHeader("Session-Expires", "90;refresher=uac"), sip.NewHeader("Content-Type", "application/sdp")}},
	{code: 200, reason: "OK"}, // a BYE's answer: the To has its tag
	{code: 481, reason: "Call/Transaction Does Not Exist", tag: "02x"},
	{code: 487, reason: "Request Terminated", tag: "02x"},
	{code: 503, reason: "Service Unavailable", tag: "03y", hdrs: []sip.Header{sip.NewHeader("Retry-After", "30")}},
	{code: 699, reason: ""},
}

// checkSameResponse fails when writeResponse and sipgo write different
// bytes for req; it skips the cases the caller must give a tag for.
func checkSameResponse(t testing.TB, req *sip.Request) {
	var w bytes.Buffer
	for _, c := range responseCases {
		if to := req.To(); c.code > 100 && c.tag == "" && to != nil && !to.Params.Has("tag") {
			continue // sipgo makes a uuid; every caller gives the tag
		}
		w.Reset()
		writeResponse(&w, req, c.code, c.reason, c.tag, c.body, c.hdrs...)
		want := sipgoResponse(req, c.code, c.reason, c.tag, c.body, c.hdrs...)
		if diff := cmp.Diff(want, w.String()); diff != "" {
			t.Fatalf("%d to %q: writeResponse differs from sipgo (-sipgo +ours):\n%s", c.code, req.String(), diff)
		}
	}
}

// TestWriteResponse: for requests that exercise every rule of
// NewResponseFromRequest (Record-Route, several Vias, rport, IPv6, quoted
// display names and parameters, a Timestamp, compact forms) and for the
// whole robustness corpus, writeResponse writes what sipgo writes.
func TestWriteResponse(t *testing.T) {
	reqs := []string{
		"INVITE sip:bob@192.0.2.2 SIP/2.0\r\n" +
			"Record-Route: <sip:p1.example.net;lr>\r\nRecord-Route: <sip:p2.example.net;lr>;x=1\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport\r\nVia: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK-0;rport\r\n" +
			"From: \"Alice A\" <sip:alice@192.0.2.1>;tag=1\r\nTo: <sip:bob@192.0.2.2>\r\n" +
			"Call-ID: c1@x\r\nCSeq: 1 INVITE\r\nTimestamp: 54.2 1\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		"BYE sip:bob@192.0.2.2 SIP/2.0\r\nv: SIP/2.0/UDP h.example.com;rport;branch=z9hG4bK-2;received=192.0.2.7;rport\r\n" +
			"f: <sip:alice@192.0.2.1>;tag=1\r\nt: \"B\" <sip:bob@192.0.2.2>;tag=2;x=\"a b\"\r\n" +
			"i: c2@x\r\nCSeq: 2147483647 BYE\r\nl: 0\r\n\r\n",
		"CANCEL sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-3\r\n" +
			"From: <sip:alice@192.0.2.1>;tag=1\r\nTo: <sip:bob@192.0.2.2>\r\nCall-ID: c3@x\r\nCSeq: 1 CANCEL\r\n" +
			"Record-Route: <sip:p1.example.net;lr>\r\nContent-Length: 0\r\n\r\n",
		"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-4\r\n" +
			"Record-Route: <sip:p1.example.net;lr>\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n" +
			"Call-ID: c4@x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n",
	}
	for _, src := range []string{"192.0.2.1:5070", "[2001:db8::1]:5060", "no-port"} {
		for _, r := range reqs {
			m, err := sip.ParseMessage([]byte(r))
			if err != nil {
				t.Fatalf("parse %q: %v", r, err)
			}
			req := m.(*sip.Request)
			req.SetSource(src)
			checkSameResponse(t, req)
		}
	}
	n := 0
	for _, data := range corpusFiles(t) {
		m, err := sip.ParseMessage(bytes.Clone(data))
		if req, ok := m.(*sip.Request); err == nil && ok {
			req.SetSource("192.0.2.1:5070")
			checkSameResponse(t, req)
			n++
		}
	}
	t.Logf("%d corpus requests", n)
}

// FuzzWriteResponse: for any request sipgo parses, writeResponse writes
// what sipgo writes.
func FuzzWriteResponse(f *testing.F) {
	for _, data := range corpusFiles(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := sip.ParseMessage(bytes.Clone(data))
		if req, ok := m.(*sip.Request); err == nil && ok {
			req.SetSource("192.0.2.1:5070")
			checkSameResponse(t, req)
		}
	})
}

// TestWriteResponseAllocs: the 200 answerA writes to SIPp's INVITE costs
// at most the two allocations of sipgo's Uri writer (it formats the port
// of From's and To's URI with strconv.Itoa) once the buffer has grown.
func TestWriteResponseAllocs(t *testing.T) {
	req, hdrs, body := benchAnswer(t)
	var w bytes.Buffer
	if n := testing.AllocsPerRun(100, func() {
		w.Reset()
		writeResponse(&w, req, 200, "OK", "00abcdef", body, hdrs...)
	}); n > 2 {
		t.Errorf("writeResponse: %v allocations, want at most 2", n)
	}
}

// benchAnswer is SIPp's INVITE as a shard has it, and the headers and body
// answerA adds to its 2xx: contactLine's Contact, Allow, Supported,
// Session-Expires and Content-Type, and the SDP.
func benchAnswer(tb testing.TB) (*sip.Request, []sip.Header, []byte) {
	req := mustRequest(tb, benchInvite)
	req.SetSource("127.0.0.1:5061")
	hdrs := []sip.Header{sip.NewHeader("Contact", "<sip:sbcd@127.0.0.1:5060>"),
		sip.NewHeader("Allow", allow), sip.NewHeader("Supported", "timer"),
		sip.NewHeader("Session-Expires", "600;refresher=uac"), sip.NewHeader("Content-Type", "application/sdp")}
	return req, hdrs, []byte(testSDP)
}

// BenchmarkResponse compares writeResponse with building the same 200 as
// sipgo and writing it.
func BenchmarkResponse(b *testing.B) {
	req, hdrs, body := benchAnswer(b)
	var w bytes.Buffer
	b.Run("sipgo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res := sip.NewResponseFromRequest(req, 200, "OK", body)
			res.To().Params.Add("tag", "00abcdef")
			for _, h := range hdrs {
				res.AppendHeader(h)
			}
			w.Reset()
			res.StringWrite(&w)
		}
	})
	b.Run("write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.Reset()
			writeResponse(&w, req, 200, "OK", "00abcdef", body, hdrs...)
		}
	})
}

// benchInvite is the INVITE of bench/sipp/uac.xml as SIPp sends it.
const benchInvite = "INVITE sip:callee@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1234-1-0\r\n" +
	"From: <sip:caller@127.0.0.1:5061>;tag=1234SIPpTag001\r\nTo: <sip:callee@127.0.0.1:5060>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5061;transport=UDP>\r\n" +
	"Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 600\r\nMin-SE: 90\r\n" +
	"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n"
