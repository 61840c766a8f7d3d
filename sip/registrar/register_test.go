package registrar

import (
	"errors"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"sbcd/timers/huge"
	"sbcd/timers/huge/hugetest"
	"sbcd/timers/keepalive"
)

func TestRegister(t *testing.T) {
	const c1 = "<sip:1001@10.0.0.5:5060>"
	type step struct {
		advance time.Duration // virtual time before the request
		req     rq
		src     netip.AddrPort // srcA when zero
		want    summary
		keys    []string // headers to compare
	}
	tests := []struct {
		name  string
		users map[string]string
		steps []step
		after func(t *testing.T, r *Registrar)
	}{
		{
			name: "new binding",
			steps: []step{{
				req:  rq{contacts: []string{c1}},
				want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}},
			}},
		},
		{
			name: "new binding without rport",
			steps: []step{{
				req:  rq{contacts: []string{c1}, norport: true},
				want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}},
			}},
		},
		{
			name: "multiple contacts",
			steps: []step{{
				req: rq{contacts: []string{c1 + ";expires=120", "<sip:1001@10.0.0.6:5062;transport=udp>;q=0.5, <sip:1001@10.0.0.7>"}, expires: "600"},
				want: summary{Code: 200, Reason: "OK", Contacts: []string{
					c1 + ";expires=120", "<sip:1001@10.0.0.6:5062;transport=udp>;expires=600", "<sip:1001@10.0.0.7>;expires=600",
				}},
			}},
		},
		{
			name: "query",
			steps: []step{
				{req: rq{contacts: []string{c1}}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}},
				{advance: 100 * time.Second, req: rq{cseq: 2}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3500"}}},
			},
		},
		{
			name:  "query unknown user is empty",
			steps: []step{{req: rq{user: "1009"}, want: summary{Code: 200, Reason: "OK"}}},
		},
		{
			name: "expires 0 removes",
			steps: []step{
				{req: rq{contacts: []string{c1, "<sip:1001@10.0.0.7>"}}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600", "<sip:1001@10.0.0.7>;expires=3600"}}},
				{req: rq{contacts: []string{c1}, expires: "0", cseq: 2}, want: summary{Code: 200, Reason: "OK", Contacts: []string{"<sip:1001@10.0.0.7>;expires=3600"}}},
			},
		},
		{
			name: "star removes all",
			steps: []step{
				{req: rq{contacts: []string{c1, "<sip:1001@10.0.0.7>"}}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600", "<sip:1001@10.0.0.7>;expires=3600"}}},
				{req: rq{contacts: []string{"*"}, expires: "0", cseq: 2}, want: summary{Code: 200, Reason: "OK"}},
				{req: rq{cseq: 3}, want: summary{Code: 200, Reason: "OK"}},
			},
			after: func(t *testing.T, r *Registrar) {
				if _, ok := r.Locate("1001"); ok {
					t.Error("Locate found a binding after *")
				}
			},
		},
		{
			name: "star with nonzero expires",
			steps: []step{
				{req: rq{contacts: []string{"*"}, expires: "60"}, want: summary{Code: 400, Reason: "Invalid Wildcard Contact"}},
				{req: rq{contacts: []string{"*"}}, want: summary{Code: 400, Reason: "Invalid Wildcard Contact"}},
				{req: rq{contacts: []string{"*", c1}, expires: "0"}, want: summary{Code: 400, Reason: "Invalid Wildcard Contact"}},
			},
		},
		{
			name: "interval too brief",
			steps: []step{
				{req: rq{contacts: []string{c1}}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}},
				// the second contact is fine, the first too brief: nothing changes
				{req: rq{contacts: []string{c1 + ";expires=30", "<sip:1001@10.0.0.7>"}, cseq: 2}, keys: []string{"Min-Expires"},
					want: summary{Code: 423, Reason: "Interval Too Brief", Headers: map[string]string{"Min-Expires": "60"}}},
				{req: rq{cseq: 3}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}},
			},
		},
		{
			name:  "clamped to max expires",
			steps: []step{{req: rq{contacts: []string{c1}, expires: "7200"}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}}},
		},
		{
			name:  "huge expires clamped",
			steps: []step{{req: rq{contacts: []string{c1}, expires: "99999999999999999999"}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}}},
		},
		{
			name:  "expires param overrides header",
			steps: []step{{req: rq{contacts: []string{c1 + ";expires=300"}, expires: "30"}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=300"}}}},
		},
		{
			name: "out of order cseq",
			steps: []step{
				{req: rq{contacts: []string{c1}, cseq: 5}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}},
				{req: rq{contacts: []string{c1}, cseq: 5, expires: "0"}, want: summary{Code: 500, Reason: "Out of Order"}},
				{req: rq{contacts: []string{c1}, cseq: 4, expires: "0"}, want: summary{Code: 500, Reason: "Out of Order"}},
				{req: rq{contacts: []string{"*"}, cseq: 3, expires: "0"}, want: summary{Code: 500, Reason: "Out of Order"}},
				{req: rq{cseq: 6}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}},
				// another Call-ID may use any CSeq
				{req: rq{contacts: []string{c1}, callID: "call-2", cseq: 1, expires: "120"}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=120"}}},
			},
		},
		{
			name:  "unknown user with users list",
			users: map[string]string{"1001": "secret"},
			steps: []step{
				{req: rq{user: "1002", contacts: []string{c1}}, want: summary{Code: 404, Reason: "Not Found"}},
				{req: rq{user: "1001", contacts: []string{c1}}, want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}}},
			},
		},
		{
			name: "malformed requests",
			steps: []step{
				{req: rq{contacts: []string{c1}, expires: "soon"}, want: summary{Code: 400, Reason: "Malformed Expires"}},
				{req: rq{contacts: []string{c1 + ";expires=-1"}}, want: summary{Code: 400, Reason: "Malformed Contact Expires"}},
				{req: rq{contacts: []string{c1 + ";q=1.5"}}, want: summary{Code: 400, Reason: "Malformed q"}},
				{req: rq{contacts: []string{c1 + ";q=high"}}, want: summary{Code: 400, Reason: "Malformed q"}},
				{req: rq{contacts: []string{c1}, extra: []string{"Require: path"}}, keys: []string{"Unsupported"},
					want: summary{Code: 420, Reason: "Bad Extension", Headers: map[string]string{"Unsupported": "path"}}},
				{req: rq{cseq: 2}, want: summary{Code: 200, Reason: "OK"}},
			},
		},
		{
			name: "date header on 200",
			steps: []step{{req: rq{contacts: []string{c1}}, keys: []string{"Date"},
				want: summary{Code: 200, Reason: "OK", Contacts: []string{c1 + ";expires=3600"}, Headers: map[string]string{"Date": "Tue, 24 Nov 2026 12:00:00 GMT"}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTest(t, func(o *Options) { o.Users = tt.users })
			for i, s := range tt.steps {
				clk.advance(s.advance)
				src := s.src
				if !src.IsValid() {
					src = srcA
				}
				res := r.Register(s.req.req(t), src, udp0)
				if diff := cmp.Diff(s.want, summarize(res, s.keys...)); diff != "" {
					t.Errorf("step %d: response (-want +got):\n%s\n%s", i, diff, res)
				}
				checkVia(t, res, src, !s.req.norport)
			}
			if tt.after != nil {
				tt.after(t, r)
			}
		})
	}
}

func TestRegisterBadRequests(t *testing.T) {
	r, _ := newTest(t, nil)
	tests := []struct {
		name, text string
		want       int
	}{
		{"no user in To", "REGISTER sip:example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:1001@example.net>;tag=1\r\nTo: <sip:example.net>\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n", 400},
		{"cseq method mismatch", "REGISTER sip:example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:1001@example.net>;tag=1\r\nTo: <sip:1001@example.net>\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", 400},
		{"not a register", "OPTIONS sip:example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\nFrom: <sip:1001@example.net>;tag=1\r\nTo: <sip:1001@example.net>\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := r.Register(parseReq(t, tt.text), srcA, udp0)
			if res.StatusCode != tt.want {
				t.Errorf("got %d %s, want %d", res.StatusCode, res.Reason, tt.want)
			}
			checkVia(t, res, srcA, true)
		})
	}
	if res := r.Register(nil, srcA, udp0); res == nil || res.StatusCode != 400 {
		t.Errorf("Register(nil) = %v", res)
	}
}

func TestNATDetection(t *testing.T) {
	tests := []struct {
		name    string
		contact string
		via     string
		src     string
		flow    Flow
		want    bool
	}{
		{"same", "<sip:1001@203.0.113.9:5070>", "203.0.113.9:5070", "203.0.113.9:5070", udp0, false},
		{"no port means 5060", "<sip:1001@203.0.113.9>", "203.0.113.9", "203.0.113.9:5060", udp0, false},
		{"port differs", "<sip:1001@203.0.113.9:5060>", "203.0.113.9:5060", "203.0.113.9:40000", udp0, true},
		{"address differs", "<sip:1001@10.0.0.5:5060>", "203.0.113.9:5060", "203.0.113.9:5060", udp0, true},
		{"via differs", "<sip:1001@203.0.113.9:5060>", "10.0.0.5:5060", "203.0.113.9:5060", udp0, true},
		{"via port differs", "<sip:1001@203.0.113.9:5060>", "203.0.113.9:5062", "203.0.113.9:5060", udp0, true},
		{"host name", "<sip:1001@phone.example.net:5060>", "203.0.113.9:5060", "203.0.113.9:5060", udp0, true},
		{"tcp ephemeral port", "<sip:1001@203.0.113.9:5060;transport=tcp>", "203.0.113.9:5060", "203.0.113.9:51234", Flow{Network: "TCP"}, false},
		{"tcp address differs", "<sip:1001@10.0.0.5:5060;transport=tcp>", "10.0.0.5:5060", "203.0.113.9:51234", Flow{Network: "TCP"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTest(t, nil)
			src := netip.MustParseAddrPort(tt.src)
			res := r.Register(rq{contacts: []string{tt.contact}, via: tt.via}.req(t), src, tt.flow)
			if res.StatusCode != 200 {
				t.Fatalf("got %d %s", res.StatusCode, res.Reason)
			}
			c, ok := r.Locate("1001")
			if !ok {
				t.Fatal("Locate: not found")
			}
			if c.NATed != tt.want {
				t.Errorf("NATed = %v, want %v", c.NATed, tt.want)
			}
			if got := r.Stats().NATed; got != map[bool]int{false: 0, true: 1}[tt.want] {
				t.Errorf("Stats.NATed = %d", got)
			}
		})
	}
}

func TestReRegisterMovesBinding(t *testing.T) {
	r, clk := newTest(t, func(o *Options) {
		o.Keepalive.Period = time.Second
	})
	s := &fakeSender{clk: clk, t0: t0}
	const c1 = "<sip:1001@10.0.0.5:5060>"
	if res := r.Register(rq{contacts: []string{c1}}.req(t), srcA, udp0); res.StatusCode != 200 {
		t.Fatalf("first REGISTER: %d", res.StatusCode)
	}
	for range 50 { // the pacer runs on time while the phone moves
		r.tick(clk.now(), s)
		clk.advance(10 * time.Millisecond)
	}
	moved := netip.MustParseAddrPort("203.0.113.9:40001")
	res := r.Register(rq{contacts: []string{c1}, cseq: 2}.req(t), moved, Flow{Network: "UDP", Socket: 1})
	if res.StatusCode != 200 {
		t.Fatalf("second REGISTER: %d", res.StatusCode)
	}
	checkVia(t, res, moved, true)
	c, ok := r.Locate("1001")
	want := Contact{URI: "sip:1001@10.0.0.5:5060", Source: moved, Flow: Flow{Network: "UDP", Socket: 1}, NATed: true}
	if diff := cmp.Diff(want, c, cmpAddr); !ok || diff != "" {
		t.Errorf("Locate (-want +got):\n%s", diff)
	}
	if r.Registered(srcA, "UDP") || !r.Registered(moved, "UDP") {
		t.Errorf("Registered old=%v new=%v, want false true", r.Registered(srcA, "UDP"), r.Registered(moved, "UDP"))
	}
	if n := r.Stats().Bindings; n != 1 {
		t.Errorf("Bindings = %d, want 1", n)
	}
	for range 60 {
		r.tick(clk.now(), s)
		clk.advance(10 * time.Millisecond)
	}
	got := s.take()
	wantSent := []sent{
		{At: 0, Flow: udp0, Dst: srcA, Payload: "HELLO"},
		{At: time.Second, Flow: Flow{Network: "UDP", Socket: 1}, Dst: moved, Payload: "HELLO"}, // same pacer place: one period later
	}
	if diff := cmp.Diff(wantSent, got, cmpAddr); diff != "" {
		t.Errorf("keep-alives (-want +got):\n%s", diff)
	}
}

func TestRegistered(t *testing.T) {
	r, _ := newTest(t, nil)
	tcpSrc := netip.MustParseAddrPort("198.51.100.7:51234")
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), srcA, udp0)
	r.Register(rq{user: "1002", contacts: []string{"<sip:1002@10.0.0.6:5060;transport=tcp>"}}.req(t), tcpSrc, Flow{Network: "TCP"})
	tests := []struct {
		src     string
		network string
		want    bool
	}{
		{"203.0.113.9:40000", "UDP", true},
		{"203.0.113.9:40001", "UDP", false},
		{"203.0.113.9:40001", "TCP", true}, // IP alone decides
		{"[::ffff:203.0.113.9]:40000", "UDP", true},
		{"198.51.100.7:40000", "TCP", true},
		{"198.51.100.7:40000", "UDP", false},
		{"198.51.100.8:51234", "TCP", false},
	}
	for _, tt := range tests {
		if got := r.Registered(netip.MustParseAddrPort(tt.src), tt.network); got != tt.want {
			t.Errorf("Registered(%s, %s) = %v, want %v", tt.src, tt.network, got, tt.want)
		}
	}
}

func TestLocateOrder(t *testing.T) {
	r, clk := newTest(t, nil)
	reg := func(contact string, cseq int) {
		t.Helper()
		if res := r.Register(rq{contacts: []string{contact}, cseq: cseq}.req(t), srcA, udp0); res.StatusCode != 200 {
			t.Fatalf("REGISTER %s: %d %s", contact, res.StatusCode, res.Reason)
		}
		clk.advance(time.Second)
	}
	locate := func() string {
		c, ok := r.Locate("1001")
		if !ok {
			return "<none>"
		}
		return c.URI
	}
	reg("<sip:1001@10.0.0.1>;q=0.5", 1)
	reg("<sip:1001@10.0.0.2>;q=0.9", 2)
	reg("<sip:1001@10.0.0.3>;q=0.1", 3)
	if got := locate(); got != "sip:1001@10.0.0.2" {
		t.Errorf("highest q: got %s", got)
	}
	reg("<sip:1001@10.0.0.4>;q=0.9", 4)
	if got := locate(); got != "sip:1001@10.0.0.4" {
		t.Errorf("same q, most recent: got %s", got)
	}
	reg("<sip:1001@10.0.0.2>;q=0.9", 5) // refresh makes it the most recent
	if got := locate(); got != "sip:1001@10.0.0.2" {
		t.Errorf("refreshed: got %s", got)
	}
	if _, ok := r.Locate("1002"); ok {
		t.Error("Locate(1002) found something")
	}
}

func TestExpiry(t *testing.T) {
	r, clk := newTest(t, func(o *Options) { o.Keepalive.Period = time.Second })
	s := &fakeSender{}
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5>"}, expires: "60"}.req(t), srcA, udp0)
	r.Register(rq{user: "1002", contacts: []string{"<sip:1002@10.0.0.6>"}, expires: "120"}.req(t), srcA, udp0)
	clk.advance(60 * time.Second)
	if _, ok := r.Locate("1001"); ok {
		t.Error("Locate found an expired binding")
	}
	if _, ok := r.Locate("1002"); !ok {
		t.Error("Locate lost an unexpired binding")
	}
	if got := len(r.Bindings()); got != 1 {
		t.Errorf("Bindings() has %d entries, want 1", got)
	}
	// The pacer removes it within one period and cleans the side data.
	for range 100 {
		r.tick(clk.now(), s)
		clk.advance(10 * time.Millisecond)
	}
	st := r.Stats()
	if st.Bindings != 1 || st.Expirations != 1 {
		t.Errorf("Stats: %d bindings, %d expirations; want 1, 1", st.Bindings, st.Expirations)
	}
	if !r.Registered(srcA, "UDP") {
		t.Error("source of the live binding is no longer registered")
	}
	if _, ok := r.aors[r.aorHash("1001")]; ok {
		t.Error("aor index still holds the expired AOR")
	}
	clk.advance(60 * time.Second)
	for range 100 {
		r.tick(clk.now(), s)
		clk.advance(10 * time.Millisecond)
	}
	if st := r.Stats(); st.Bindings != 0 || st.Expirations != 2 {
		t.Errorf("Stats: %+v", st)
	}
	if r.Registered(srcA, "UDP") || r.Registered(srcA, "TCP") {
		t.Error("source still registered after every binding expired")
	}
	for i, rc := range r.rec {
		if rc != (record{}) || r.names[i] != (names{}) {
			t.Errorf("record %d not cleared: %+v %+v", i, rc, r.names[i])
		}
	}
}

func TestTableFull(t *testing.T) {
	r, _ := newTest(t, func(o *Options) { o.MaxBindings = 2 })
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5>"}}.req(t), srcA, udp0)
	r.Register(rq{user: "1002", contacts: []string{"<sip:1002@10.0.0.6>"}}.req(t), srcA, udp0)
	res := r.Register(rq{user: "1003", contacts: []string{"<sip:1003@10.0.0.7>"}}.req(t), srcA, udp0)
	if diff := cmp.Diff(summary{Code: 503, Reason: "Service Unavailable", Headers: map[string]string{"Retry-After": "60"}}, summarize(res, "Retry-After")); diff != "" {
		t.Errorf("third REGISTER (-want +got):\n%s", diff)
	}
	checkVia(t, res, srcA, true)
	// all or nothing: one refresh plus one new contact does not fit either
	res = r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5>", "<sip:1001@10.0.0.9>"}, cseq: 2}.req(t), srcA, udp0)
	if res.StatusCode != 503 {
		t.Errorf("refresh plus new: %d", res.StatusCode)
	}
	if c, ok := r.Locate("1001"); !ok || c.URI != "sip:1001@10.0.0.5" {
		t.Errorf("existing binding: %v %v", c, ok)
	}
	// a refresh still works
	if res := r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5>"}, cseq: 3}.req(t), srcA, udp0); res.StatusCode != 200 {
		t.Errorf("refresh: %d", res.StatusCode)
	}
	if st := r.Stats(); st.Full != 2 || st.Bindings != 2 {
		t.Errorf("Stats: %+v", st)
	}
}

func TestNewOptions(t *testing.T) {
	ok := Options{MaxBindings: 10, MinExpires: time.Minute, MaxExpires: time.Hour, Keepalive: keepalive.DefaultParams()}
	bad := []func(*Options){
		func(o *Options) { o.MaxBindings = 0 },
		func(o *Options) { o.MinExpires = 2 * time.Hour },
		func(o *Options) { o.MaxExpires = 0 },
		func(o *Options) { o.Auth = true },
		func(o *Options) { o.Auth = true; o.Users = map[string]string{"1001": ""} },
		func(o *Options) { o.Realm = `a"b` },
		func(o *Options) { o.Keepalive.Period = 0 },
	}
	if _, err := New(ok); err != nil {
		t.Fatalf("New(valid): %v", err)
	}
	for i, mod := range bad {
		o := ok
		mod(&o)
		if _, err := New(o); !errors.Is(err, ErrOptions) {
			t.Errorf("case %d: err = %v, want ErrOptions", i, err)
		}
	}
}

func TestParseQ(t *testing.T) {
	tests := []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"0", 0, true}, {"1", 1000, true}, {"0.5", 500, true}, {"0.123", 123, true}, {"1.000", 1000, true},
		{"1.", 1000, true}, {"0.1234", 0, false}, {"1.1", 0, false}, {"2", 0, false}, {"", 0, false}, {"0.a", 0, false}, {"-0", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseQ(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseQ(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWithoutHeaders(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"sip:user@example.com", "sip:user@example.com"},
		{"sip:user@example.com?Route=%3Csip:sip.example.com%3E", "sip:user@example.com"},
		{"sip:user@10.0.0.1:5060;transport=tcp?subject=x&priority=urgent", "sip:user@10.0.0.1:5060;transport=tcp"},
		{"sip:a?b@host;lr", "sip:a?b@host;lr"}, // '?' in the user part stays
		{"sip:host?h=v", "sip:host"},
	} {
		if got := withoutHeaders(tc.in); got != tc.want {
			t.Errorf("withoutHeaders(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRecordStrings: a binding's four strings live in one allocation
// (names), also after a re-REGISTER changes its Call-ID, and values stay
// right throughout.
func TestRecordStrings(t *testing.T) {
	r, _ := newTest(t, nil)
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	check := func(step, callID string) {
		t.Helper()
		id, ok := r.tab.Lookup("1001", "sip:1001@10.0.0.5:5060")
		if !ok {
			t.Fatalf("%s: binding not found", step)
		}
		n := &r.names[id.Index()]
		got := []string{n.aor(), n.contact(), n.toURI(), n.callID()}
		want := []string{"1001", "sip:1001@10.0.0.5:5060", "sip:1001@example.net", callID}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: record strings (-want +got):\n%s", step, diff)
		}
		if unsafe.StringData(n.aor()) != unsafe.StringData(n.s) || len(n.s) != len(strings.Join(want, "")) {
			t.Errorf("%s: the strings are not parts of one: %q", step, n.s)
		}
		head, ok := r.aors[r.aorHash("1001")]
		if !ok || head != uint32(id.Index()) {
			t.Fatalf("%s: AOR index %d, %v: want %d", step, head, ok, id.Index())
		}
	}
	contact := []string{"<sip:1001@10.0.0.5:5060>"}
	if res := r.Register(rq{contacts: contact, expires: "600"}.req(t), src, udp0); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	check("new", "call-1")
	if res := r.Register(rq{contacts: contact, expires: "600", callID: "call-2"}.req(t), src, udp0); res.StatusCode != 200 {
		t.Fatalf("REGISTER call-2: %d", res.StatusCode)
	}
	check("new Call-ID", "call-2")
	if res := r.Register(rq{contacts: contact, expires: "600", callID: "call-2", cseq: 2}.req(t), src, udp0); res.StatusCode != 200 {
		t.Fatalf("REGISTER call-2 again: %d", res.StatusCode)
	}
	check("refresh", "call-2")
}

// TestAORCollisions: with every AOR on one hash (one list in aors),
// each AOR still sees only its own bindings: the 200's Contact list,
// Locate, the Call-ID/CSeq check, a wildcard removal and expiry.
func TestAORCollisions(t *testing.T) {
	r, clk := newTest(t, nil)
	r.aorHash = func(string) uint64 { return 7 }
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	reg := func(q rq) *sip.Response {
		t.Helper()
		return r.Register(q.req(t), src, udp0)
	}
	contacts := func(res *sip.Response) []string {
		var out []string
		for _, h := range res.GetHeaders("Contact") {
			out = append(out, h.Value())
		}
		slices.Sort(out)
		return out
	}
	if res := reg(rq{user: "a", contacts: []string{"<sip:a@10.0.0.1>", "<sip:a@10.0.0.2>"}, expires: "600", callID: "ca"}); res.StatusCode != 200 {
		t.Fatalf("REGISTER a: %d", res.StatusCode)
	}
	res := reg(rq{user: "b", contacts: []string{"<sip:b@10.0.0.3>;q=0.5"}, expires: "120", callID: "cb"})
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER b: %d", res.StatusCode)
	}
	if diff := cmp.Diff([]string{"<sip:b@10.0.0.3>;expires=120"}, contacts(res)); diff != "" {
		t.Errorf("200 for b lists (-want +got):\n%s", diff)
	}
	// Call-ID ca with CSeq 1 is out of order for a, not for b.
	if res := reg(rq{user: "b", contacts: []string{"<sip:b@10.0.0.4>"}, expires: "600", callID: "ca"}); res.StatusCode != 200 {
		t.Errorf("REGISTER b with a's Call-ID: %d, want 200", res.StatusCode)
	}
	if res := reg(rq{user: "a", contacts: []string{"<sip:a@10.0.0.1>"}, expires: "600", callID: "ca"}); res.StatusCode != 500 {
		t.Errorf("REGISTER a with an old CSeq: %d, want 500", res.StatusCode)
	}
	if c, ok := r.Locate("b"); !ok || c.URI != "sip:b@10.0.0.4" {
		t.Errorf("Locate b: %+v, %v; want sip:b@10.0.0.4 (q 1 over 0.5)", c, ok)
	}
	if res := reg(rq{user: "a", contacts: []string{"*"}, expires: "0", callID: "ca", cseq: 2}); res.StatusCode != 200 {
		t.Fatalf("REGISTER a *: %d", res.StatusCode)
	}
	if _, ok := r.Locate("a"); ok {
		t.Error("Locate a after its wildcard removal: found")
	}
	var got []string
	for _, b := range r.Bindings() {
		got = append(got, b.AOR+" "+b.Contact)
	}
	if diff := cmp.Diff([]string{"b sip:b@10.0.0.3", "b sip:b@10.0.0.4"}, got); diff != "" {
		t.Errorf("bindings after a's removal (-want +got):\n%s", diff)
	}
	// b's first binding expires; a third AOR registers on the same list.
	clk.advance(121 * time.Second)
	res = reg(rq{user: "c", contacts: []string{"<sip:c@10.0.0.5>"}, expires: "600", callID: "cc"})
	if diff := cmp.Diff([]string{"<sip:c@10.0.0.5>;expires=600"}, contacts(res)); diff != "" {
		t.Errorf("200 for c lists (-want +got):\n%s", diff)
	}
	res = reg(rq{user: "b", contacts: []string{"<sip:b@10.0.0.4>"}, expires: "600", callID: "cb2"})
	if diff := cmp.Diff([]string{"<sip:b@10.0.0.4>;expires=600"}, contacts(res)); diff != "" {
		t.Errorf("200 for b after its first binding expired lists (-want +got):\n%s", diff)
	}
	if n := r.tab.Len(); n != 2 {
		t.Errorf("%d bindings in the table, want 2 (b and c)", n)
	}
}

// TestGCPerBinding: a binding costs the garbage collector one heap object
// (its names) and 32 bytes to scan (a names entry; records and maps hold no
// pointers). The collection Go forces every two minutes marks and scans
// all of them (BENCHMARKS.md, change 32).
func TestGCPerBinding(t *testing.T) {
	const n = 2000
	reqs := make([]*sip.Request, n)
	srcs := make([]netip.AddrPort, n)
	for i := range n {
		user := "u" + itoa(i)
		reqs[i] = rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5:5060>"}, expires: "600"}.req(t)
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 5060)
	}
	scan := func() int64 {
		runtime.GC()
		s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
		metrics.Read(s)
		return int64(s[0].Value.Uint64())
	}
	var before, after runtime.MemStats
	s0 := scan()
	r, _ := newTest(t, func(o *Options) { o.MaxBindings = n })
	s1 := scan()
	r2, _ := newTest(t, func(o *Options) { o.MaxBindings = 2 * n })
	s2 := scan()
	runtime.KeepAlive(r2)
	// Per slot: what New(2n) has to scan beyond New(n) (fixed parts such
	// as the REGISTER rate limiter cancel out).
	perSlot := float64((s2-s1)-(s1-s0)) / n

	runtime.ReadMemStats(&before)
	for i := range n {
		if res := r.Register(reqs[i], srcs[i], udp0); res.StatusCode != 200 {
			t.Fatalf("REGISTER %d: %d", i, res.StatusCode)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(reqs) // alive in both counts
	objs := float64(int64(after.HeapObjects)-int64(before.HeapObjects)) / n
	t.Logf("%.2f heap objects per binding, %.0f bytes to scan per slot", objs, perSlot)
	if objs > 1.1 {
		t.Errorf("%.2f heap objects per binding: want 1 (its strings in one allocation)", objs)
	}
	if want := float64(unsafe.Sizeof(names{})); perSlot > want+8 {
		t.Errorf("%.0f bytes per binding slot for the collector to scan: want %.0f (one names entry)", perSlot, want)
	}
	runtime.KeepAlive(r)
}

// TestTooManyNetworks: the registrar keeps up to maxNets network names
// (record.net); a REGISTER over one more is answered 500 and changes
// nothing, and the networks it knows keep working.
func TestTooManyNetworks(t *testing.T) {
	r, _ := newTest(t, func(o *Options) { o.MaxBindings = 64 })
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	reg := func(user, network string) int {
		t.Helper()
		q := rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5:5060>"}, expires: "600"}
		return r.Register(q.req(t), src, Flow{Network: network}).StatusCode
	}
	for k := range maxNets - 2 { // UDP and TCP are known from the start
		if code := reg("u"+itoa(k), "NET"+itoa(k)); code != 200 {
			t.Fatalf("REGISTER over network %d: %d", k, code)
		}
	}
	if code := reg("over", "ONEMORE"); code != 500 {
		t.Errorf("REGISTER over network %d: %d, want 500", maxNets+1, code)
	}
	if _, ok := r.Locate("over"); ok {
		t.Error("the refused REGISTER left a binding")
	}
	if code := reg("udp", "udp"); code != 200 {
		t.Errorf("REGISTER over UDP after the refusal: %d", code)
	}
	c, ok := r.Locate("u3")
	if !ok || c.Flow.Network != "NET3" {
		t.Errorf("Locate u3: %+v, %v; want its network NET3", c, ok)
	}
}

// TestRecordsHugePages: the records of 100,000 bindings are advised huge
// pages wherever the kernel has them (timers/huge), which there also
// proves record holds no pointers (TestGCPerBinding checks that
// everywhere); those of 1,000 stay on the Go heap.
func TestRecordsHugePages(t *testing.T) {
	small, _ := newTest(t, func(o *Options) { o.MaxBindings = 1000 })
	if small.recHuge {
		t.Errorf("the records of 1,000 bindings were mapped apart: want the Go heap below %d bytes", huge.Page)
	}
	r, _ := newTest(t, func(o *Options) { o.MaxBindings = 100000 })
	if hugetest.Enabled() && !r.recHuge {
		t.Errorf("transparent huge pages are on but the records of 100,000 bindings (%d bytes each) were not advised", unsafe.Sizeof(record{}))
	}
}
