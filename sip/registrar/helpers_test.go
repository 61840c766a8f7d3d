package registrar

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp/cmpopts"

	"sbcd/timers/keepalive"
)

// clock is a virtual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sent is one keep-alive recorded by fakeSender.
type sent struct {
	At      time.Duration // virtual time since the registrar's epoch
	Flow    Flow
	Dst     netip.AddrPort
	Payload string
}

type fakeSender struct {
	mu   sync.Mutex
	clk  *clock
	t0   time.Time
	sent []sent
	err  error
}

func (s *fakeSender) SendKeepalives(batch []Keepalive) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var at time.Duration
	if s.clk != nil {
		at = s.clk.now().Sub(s.t0)
	}
	for i := range batch {
		k := &batch[i]
		s.sent = append(s.sent, sent{At: at, Flow: k.Flow, Dst: k.Dst, Payload: string(k.Payload)})
		k.Err = s.err
	}
}

func (s *fakeSender) SentBy(network string) (string, int) { return "192.0.2.10", 5060 }

func (s *fakeSender) take() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sent
	s.sent = nil
	return out
}

// cmpAddr compares netip values with ==.
var cmpAddr = cmpopts.EquateComparable(netip.AddrPort{}, netip.Addr{})

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// newTest returns a registrar on a virtual clock with deterministic
// randomness: 16 bindings, min 60 s, max 3600 s, default keep-alive.
func newTest(tb testing.TB, mod func(*Options)) (*Registrar, *clock) {
	tb.Helper()
	clk := &clock{t: t0}
	var seq atomic.Uint64
	o := Options{
		MaxBindings: 16,
		MinExpires:  60 * time.Second,
		MaxExpires:  3600 * time.Second,
		Keepalive:   keepalive.DefaultParams(),
		Logger:      slog.New(slog.DiscardHandler),
		now:         clk.now,
		rand:        func() uint64 { return seq.Add(1) * 0x9e3779b97f4a7c15 },
	}
	if mod != nil {
		mod(&o)
	}
	r, err := New(o)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return r, clk
}

// rq describes a REGISTER.
type rq struct {
	user     string   // To user, "1001" when empty
	contacts []string // Contact header values
	expires  string   // Expires header, none when empty
	callID   string   // "call-1" when empty
	cseq     int      // 1 when 0
	via      string   // Via sent-by, "10.0.0.5:5060" when empty
	norport  bool     // no rport in the Via
	extra    []string // more header lines
}

func (q rq) text() string {
	user := q.user
	if user == "" {
		user = "1001"
	}
	callID := q.callID
	if callID == "" {
		callID = "call-1"
	}
	cseq := q.cseq
	if cseq == 0 {
		cseq = 1
	}
	via := q.via
	if via == "" {
		via = "10.0.0.5:5060"
	}
	rport := ";rport"
	if q.norport {
		rport = ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:example.net SIP/2.0\r\n")
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d%s\r\n", via, callID, cseq, rport)
	fmt.Fprintf(&b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:%s@example.net>;tag=f%d\r\n", user, cseq)
	fmt.Fprintf(&b, "To: <sip:%s@example.net>\r\n", user)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", cseq)
	for _, c := range q.contacts {
		fmt.Fprintf(&b, "Contact: %s\r\n", c)
	}
	if q.expires != "" {
		fmt.Fprintf(&b, "Expires: %s\r\n", q.expires)
	}
	for _, e := range q.extra {
		fmt.Fprintf(&b, "%s\r\n", e)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func parseReq(tb testing.TB, text string) *sip.Request {
	tb.Helper()
	m, err := sip.NewParser().ParseSIP([]byte(text))
	if err != nil {
		tb.Fatalf("parse: %v\n%s", err, text)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		tb.Fatalf("not a request: %T", m)
	}
	return req
}

func (q rq) req(tb testing.TB) *sip.Request { tb.Helper(); return parseReq(tb, q.text()) }

var (
	srcA = netip.MustParseAddrPort("203.0.113.9:40000")
	udp0 = Flow{Network: "UDP", Socket: 0}
)

// summary is what the table tests compare of a response.
type summary struct {
	Code     int
	Reason   string
	Contacts []string
	Headers  map[string]string
}

func summarize(res *sip.Response, keys ...string) summary {
	s := summary{Code: res.StatusCode, Reason: res.Reason}
	for _, h := range res.GetHeaders("Contact") {
		s.Contacts = append(s.Contacts, h.Value())
	}
	slices.Sort(s.Contacts)
	for _, k := range keys {
		if s.Headers == nil {
			s.Headers = map[string]string{}
		}
		if h := res.GetHeader(k); h != nil {
			s.Headers[k] = h.Value()
		} else {
			s.Headers[k] = "<none>"
		}
	}
	return s
}

// checkVia verifies RFC 3581 §4 on a response to a request from src.
func checkVia(tb testing.TB, res *sip.Response, src netip.AddrPort, rport bool) {
	tb.Helper()
	v := res.Via()
	if v == nil {
		tb.Fatalf("response without Via")
	}
	if got, _ := v.Params.Get("received"); got != src.Addr().String() {
		tb.Errorf("Via received = %q, want %q (%s)", got, src.Addr(), v.Value())
	}
	got, ok := v.Params.Get("rport")
	switch {
	case rport && got != fmt.Sprint(src.Port()):
		tb.Errorf("Via rport = %q, want %d (%s)", got, src.Port(), v.Value())
	case !rport && ok:
		tb.Errorf("Via has rport %q, the request had none", got)
	}
}
