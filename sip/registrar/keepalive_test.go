package registrar

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"sbcd/timers/keepalive"
)

// fastParams: a 1 s period of 100 ticks of 10 ms.
func fastParams(mod func(*keepalive.Params)) keepalive.Params {
	p := keepalive.DefaultParams()
	p.Period = time.Second
	if mod != nil {
		mod(&p)
	}
	return p
}

// run ticks the registrar every SendInterval of virtual time for d.
func run(r *Registrar, clk *clock, s Sender, d time.Duration) {
	iv := r.tab.Params().SendInterval
	for end := clk.now().Add(d); clk.now().Before(end); clk.advance(iv) {
		r.tick(clk.now(), s)
	}
}

func TestKeepalivePayloads(t *testing.T) {
	tcp := Flow{Network: "TCP", Socket: 0}
	udp1 := Flow{Network: "UDP", Socket: 1}
	src1 := netip.MustParseAddrPort("203.0.113.9:40000")
	src2 := netip.MustParseAddrPort("198.51.100.7:51234")
	src3 := netip.MustParseAddrPort("192.0.2.50:5060") // not NATed
	tests := []struct {
		name string
		p    keepalive.Params
		want []sent
	}{
		{
			name: "message",
			p:    fastParams(nil),
			want: []sent{
				{At: 0, Flow: udp1, Dst: src1, Payload: "HELLO"},
				{At: 500 * time.Millisecond, Flow: tcp, Dst: src2, Payload: "\r\n\r\n"}, // stream framing
				{At: time.Second, Flow: udp1, Dst: src1, Payload: "HELLO"},
				{At: 1500 * time.Millisecond, Flow: tcp, Dst: src2, Payload: "\r\n\r\n"},
			},
		},
		{
			name: "empty message sends nothing",
			p:    fastParams(func(p *keepalive.Params) { p.Message = "" }),
		},
		{
			name: "crlf",
			p:    fastParams(func(p *keepalive.Params) { p.Mode = keepalive.ModeCRLF }),
			want: []sent{
				{At: 0, Flow: udp1, Dst: src1, Payload: "\r\n\r\n"},
				{At: 500 * time.Millisecond, Flow: tcp, Dst: src2, Payload: "\r\n\r\n"},
				{At: time.Second, Flow: udp1, Dst: src1, Payload: "\r\n\r\n"},
				{At: 1500 * time.Millisecond, Flow: tcp, Dst: src2, Payload: "\r\n\r\n"},
			},
		},
		{
			name: "not only nated",
			p:    fastParams(func(p *keepalive.Params) { p.NATedOnly = false }),
			want: []sent{
				{At: 0, Flow: udp1, Dst: src1, Payload: "HELLO"},
				{At: 250 * time.Millisecond, Flow: udp0, Dst: src3, Payload: "HELLO"},
				{At: 500 * time.Millisecond, Flow: tcp, Dst: src2, Payload: "\r\n\r\n"},
				{At: time.Second, Flow: udp1, Dst: src1, Payload: "HELLO"},
				{At: 1250 * time.Millisecond, Flow: udp0, Dst: src3, Payload: "HELLO"},
				{At: 1500 * time.Millisecond, Flow: tcp, Dst: src2, Payload: "\r\n\r\n"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTest(t, func(o *Options) { o.Keepalive = tt.p })
			s := &fakeSender{clk: clk, t0: t0}
			reg := func(user, contact string, src netip.AddrPort, f Flow) {
				t.Helper()
				res := r.Register(rq{user: user, contacts: []string{contact}, via: strings.TrimPrefix(src.String(), "")}.req(t), src, f)
				if res.StatusCode != 200 {
					t.Fatalf("REGISTER %s: %d %s", user, res.StatusCode, res.Reason)
				}
			}
			reg("1001", "<sip:1001@10.0.0.5:5060>", src1, udp1)
			reg("1002", "<sip:1002@10.0.0.6:5060;transport=tcp>", src2, tcp)
			reg("1003", "<sip:1003@192.0.2.50:5060>", src3, udp0)
			run(r, clk, s, 2*time.Second)
			if diff := cmp.Diff(tt.want, s.take(), cmpAddr); diff != "" {
				t.Errorf("keep-alives (-want +got):\n%s", diff)
			}
			if got, want := r.Stats().PingsSent, uint64(len(tt.want)); got != want {
				t.Errorf("PingsSent = %d, want %d", got, want)
			}
		})
	}
}

// TestKeepaliveSpacing: every binding's interval is exactly the period in
// virtual time, and no batch exceeds send_one_time.
func TestKeepaliveSpacing(t *testing.T) {
	p := fastParams(func(p *keepalive.Params) { p.SendOneTime = 2 })
	r, clk := newTest(t, func(o *Options) { o.Keepalive = p; o.MaxBindings = 200 })
	for i := range 150 {
		src := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(20000+i))
		user := "u" + itoa(i)
		if res := r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5>"}}.req(t), src, udp0); res.StatusCode != 200 {
			t.Fatalf("REGISTER %d: %d", i, res.StatusCode)
		}
	}
	s := &fakeSender{clk: clk, t0: t0}
	run(r, clk, s, 5*time.Second)
	last := map[netip.AddrPort]time.Duration{}
	perTick := map[time.Duration]int{}
	n := 0
	for _, x := range s.take() {
		perTick[x.At]++
		if prev, ok := last[x.Dst]; ok {
			if x.At-prev != p.Period {
				t.Errorf("%v: interval %v, want %v", x.Dst, x.At-prev, p.Period)
			}
			n++
		}
		last[x.Dst] = x.At
	}
	for at, c := range perTick {
		if c > p.SendOneTime {
			t.Errorf("%d keep-alives at %v, more than send_one_time %d", c, at, p.SendOneTime)
		}
	}
	if len(last) != 150 || n != 4*150 {
		t.Errorf("%d destinations, %d intervals; want 150, 600", len(last), n)
	}
	if st := r.Stats(); st.PingsPerSecond != 150 {
		t.Errorf("PingsPerSecond = %v, want 150", st.PingsPerSecond)
	}
}

func TestOptionsMode(t *testing.T) {
	p := fastParams(func(p *keepalive.Params) { p.Mode = keepalive.ModeOptions; p.MaxFailures = 3 })
	r, clk := newTest(t, func(o *Options) { o.Keepalive = p })
	alive := netip.MustParseAddrPort("203.0.113.9:40000")
	silent := netip.MustParseAddrPort("203.0.113.10:40000")
	r.Register(rq{user: "1001", contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), alive, udp0)
	r.Register(rq{user: "1002", contacts: []string{"<sip:1002@10.0.0.6:5060>"}}.req(t), silent, udp0)
	s := &fakeSender{clk: clk, t0: t0}
	answered := 0
	checked := false
	for range 500 { // 5 periods
		r.tick(clk.now(), s)
		for _, x := range s.take() {
			req := parseReq(t, x.Payload)
			if !checked {
				checked = true
				checkOptions(t, req, x.Dst == alive)
			}
			if x.Dst != alive {
				continue
			}
			res := sip.NewResponseFromRequest(req, 404, "Not Found", nil) // any final response counts
			if !r.KeepaliveAnswer(res) {
				t.Fatalf("KeepaliveAnswer rejected the answer to\n%s", x.Payload)
			}
			answered++
		}
		clk.advance(p.SendInterval)
	}
	if answered != 5 {
		t.Errorf("answered %d pings, want 5", answered)
	}
	if _, ok := r.Locate("1001"); !ok {
		t.Error("the answering device was evicted")
	}
	if _, ok := r.Locate("1002"); ok {
		t.Error("the silent device is still located")
	}
	st := r.Stats()
	if st.Evictions != 1 || st.Bindings != 1 {
		t.Errorf("Stats: %+v", st)
	}
	if r.Registered(silent, "UDP") {
		t.Error("evicted source still registered")
	}
}

func checkOptions(t *testing.T, req *sip.Request, alive bool) {
	t.Helper()
	user := "1002"
	if alive {
		user = "1001"
	}
	if req.Method != sip.OPTIONS || req.Recipient.User != user {
		t.Errorf("request line: %s %s", req.Method, req.Recipient.String())
	}
	if to := req.To(); to == nil || to.Address.String() != "sip:"+user+"@example.net" {
		t.Errorf("To: %v", to)
	}
	if cs := req.CSeq(); cs == nil || cs.SeqNo != 1 || cs.MethodName != sip.OPTIONS {
		t.Errorf("CSeq: %v", cs)
	}
	if mf := req.MaxForwards(); mf == nil || mf.Val() != 70 {
		t.Errorf("Max-Forwards: %v", mf)
	}
	v := req.Via()
	if v == nil || v.Transport != "UDP" || v.Host != "192.0.2.10" || v.Port != 5060 || !v.Params.Has("rport") {
		t.Errorf("Via: %v", v)
	}
	if b, _ := v.Params.Get("branch"); !strings.HasPrefix(b, "z9hG4bK") {
		t.Errorf("branch %q", b)
	}
	if f := req.From(); f == nil || !f.Params.Has("tag") || f.Address.Host != "192.0.2.10" {
		t.Errorf("From: %v", f)
	}
	if req.CallID() == nil || *req.CallID() == "" {
		t.Error("no Call-ID")
	}
}

func TestKeepaliveAnswerIgnores(t *testing.T) {
	p := fastParams(func(p *keepalive.Params) { p.Mode = keepalive.ModeOptions })
	r, clk := newTest(t, func(o *Options) { o.Keepalive = p })
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), srcA, udp0)
	s := &fakeSender{}
	r.tick(clk.now(), s)
	got := s.take()
	if len(got) != 1 {
		t.Fatalf("%d pings", len(got))
	}
	req := parseReq(t, got[0].Payload)
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	other := sip.NewResponseFromRequest(rq{contacts: []string{"<sip:1001@10.0.0.5>"}}.req(t), 200, "OK", nil)
	if r.KeepaliveAnswer(other) {
		t.Error("a REGISTER response was taken for a ping answer")
	}
	if r.KeepaliveAnswer(nil) {
		t.Error("nil accepted")
	}
	// the binding goes away: the answer is consumed but changes nothing
	r.Register(rq{contacts: []string{"*"}, expires: "0", cseq: 2}.req(t), srcA, udp0)
	if !r.KeepaliveAnswer(res) {
		t.Error("answer for a removed binding not recognised as ours")
	}
}

func TestDecodeBranch(t *testing.T) {
	id := keepalive.ID(0x0000000500000003)
	b := string(appendHex(appendHex([]byte(branchMarker), uint64(id)), 0xdeadbeef))
	gotID, tag, ok := decodeBranch(b)
	if !ok || gotID != id || tag != 0xdeadbeef || gotID.Index() != 3 {
		t.Errorf("decodeBranch(%q) = %x %x %v", b, gotID, tag, ok)
	}
	for _, bad := range []string{"", "z9hG4bK", b[:len(b)-1], b + "0", strings.Replace(b, "sbcdka", "sbcdkb", 1), b[:len(b)-1] + "g"} {
		if _, _, ok := decodeBranch(bad); ok {
			t.Errorf("decodeBranch(%q) accepted", bad)
		}
	}
}

func TestSetKeepalive(t *testing.T) {
	r, clk := newTest(t, func(o *Options) { o.Keepalive = fastParams(nil) })
	bad := fastParams(func(p *keepalive.Params) { p.SendInterval = 7 * time.Millisecond })
	if err := r.SetKeepalive(bad); err == nil {
		t.Fatal("invalid params accepted")
	}
	if got := r.tab.Params(); got != fastParams(nil) {
		t.Errorf("params changed by an invalid SetKeepalive: %+v", got)
	}
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), srcA, udp0)
	s := &fakeSender{clk: clk, t0: t0}
	run(r, clk, s, 500*time.Millisecond)
	if err := r.SetKeepalive(fastParams(func(p *keepalive.Params) { p.Message = "PING"; p.SendInterval = 20 * time.Millisecond })); err != nil {
		t.Fatalf("SetKeepalive: %v", err)
	}
	if iv := r.tab.Params().SendInterval; iv != 20*time.Millisecond {
		t.Errorf("interval = %v", iv)
	}
	run(r, clk, s, 2*time.Second)
	got := s.take()
	if len(got) < 2 || got[0].Payload != "HELLO" || got[len(got)-1].Payload != "PING" {
		t.Errorf("keep-alives: %+v", got)
	}
}

// TestRun runs the pacer on each kind of waiter: the first tick at once,
// one Run at a time, return on the context's end.
func TestRun(t *testing.T) {
	for _, k := range waiters {
		t.Run(k.name, func(t *testing.T) {
			testRun(t, k.make)
		})
	}
	// A kernel that refuses the timerfd: newWaiter's error, and its
	// time.Timer waiter, which Run uses (with a warning).
	t.Run("refused", func(t *testing.T) {
		testRun(t, func(ctx context.Context) (waiter, error) {
			return newTimerWaiter(ctx), errors.New("timerfd refused")
		})
	})
}

func testRun(t *testing.T, newWaiter func(context.Context) (waiter, error)) {
	r, _ := newTest(t, func(o *Options) {
		o.Keepalive = fastParams(func(p *keepalive.Params) { p.SendInterval = time.Millisecond })
	})
	r.newWaiter = newWaiter
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), srcA, udp0)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s := &notifySender{ch: make(chan sent, 1)}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, s) }()
	select {
	case x := <-s.ch: // the first tick is due at once on the virtual clock
		if x.Dst != srcA || x.Payload != "HELLO" {
			t.Errorf("sent %+v", x)
		}
	case <-ctx.Done():
		t.Fatal("no keep-alive sent")
	}
	if err := r.Run(ctx, s); err == nil {
		t.Error("second Run accepted")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if err := r.Run(t.Context(), nil); err == nil {
		t.Error("nil sender accepted")
	}
}

// TestRunSleepsWhenEmpty: with no binding Run does not tick (an idle box
// costs no CPU, DESIGN.md §10); the first binding wakes it, and it goes
// back to sleep once the table is empty again.
func TestRunSleepsWhenEmpty(t *testing.T) {
	r, _ := newTest(t, func(o *Options) {
		o.Keepalive = fastParams(func(p *keepalive.Params) { p.SendInterval = time.Millisecond })
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	asleep := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.asleep
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: %v", what, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	s := &notifySender{ch: make(chan sent, 1)}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, s) }()
	waitUntil("Run asleep on the empty table", asleep)

	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), srcA, udp0)
	select {
	case x := <-s.ch:
		if x.Dst != srcA || x.Payload != "HELLO" {
			t.Errorf("sent %+v", x)
		}
	case <-ctx.Done():
		t.Fatal("no keep-alive sent after the first binding")
	}
	if asleep() {
		t.Error("asleep with a binding")
	}

	r.Register(rq{contacts: []string{"*"}, expires: "0", cseq: 2}.req(t), srcA, udp0)
	waitUntil("Run asleep once the table is empty again", asleep)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestUntilTick: Run ticks half an interval after the due time of the
// last pacer tick the next batch can take, whatever the phase of its
// timer (a late tick makes the next wait shorter), and an interval apart
// while the pacer is behind. With fastParams
// (period 1 s, 10 ms ticks) a batch may take the two ticks of a group
// (ticks 2k and 2k+1: batchSpan is 1 % of the period) when their bindings
// fit send_one_time.
func TestUntilTick(t *testing.T) {
	const iv = 10 * time.Millisecond
	tests := []struct {
		name      string
		bindings  int
		oneTime   int
		ticks     []time.Duration // tick at these offsets from the epoch
		wantAfter time.Duration   // untilTick after the last one
	}{
		// 100 bindings in 100 ticks, 1 per batch: every tick is a batch.
		{name: "on a due time", bindings: 100, oneTime: 1, ticks: []time.Duration{0}, wantAfter: iv + iv/2},
		{name: "half way", bindings: 100, oneTime: 1, ticks: []time.Duration{0, 15 * time.Millisecond}, wantAfter: iv},
		// The tick 28 ms after the epoch is 3 ms late: the next one is
		// 7 ms later, on the schedule.
		{name: "late", bindings: 100, oneTime: 1, ticks: []time.Duration{0, 15 * time.Millisecond, 28 * time.Millisecond}, wantAfter: 7 * time.Millisecond},
		{name: "early", bindings: 100, oneTime: 1, ticks: []time.Duration{0, 11 * time.Millisecond}, wantAfter: 14 * time.Millisecond},
		// 100 bindings, 2 per batch: a batch takes two ticks (batchSpan
		// is one tick here), the wait an interval longer.
		{name: "two ticks a batch", bindings: 100, oneTime: 2, ticks: []time.Duration{0, 15 * time.Millisecond}, wantAfter: 2 * iv},
		{name: "two ticks a batch, late", bindings: 100, oneTime: 2, ticks: []time.Duration{0, 15 * time.Millisecond, 38 * time.Millisecond}, wantAfter: 17 * time.Millisecond},
		// After the first tick alone, the next batch takes ticks 1 and 2
		// (fixed groups of two ticks cut it at tick 1 until change 34 in
		// BENCHMARKS.md).
		{name: "after the first tick", bindings: 100, oneTime: 2, ticks: []time.Duration{0}, wantAfter: 2*iv + iv/2},
		// Batches of ticks [1 2], [3 4] ... [97 98], each half an
		// interval after its last tick: tick 99, the last of the
		// period, is a batch alone (ticks 99 and 100 would be 20 ms).
		{name: "end of the period", bindings: 100, oneTime: 2, ticks: func() []time.Duration {
			at := []time.Duration{0}
			for k := 1; k <= 49; k++ {
				at = append(at, time.Duration(20*k+5)*time.Millisecond)
			}
			return at
		}(), wantAfter: iv},
		// No bindings in the ticks ahead: the whole span.
		{name: "empty ticks", ticks: []time.Duration{0, 15 * time.Millisecond}, wantAfter: 2 * iv},
		// 300 bindings in 100 ticks, 1 per batch: always behind.
		{name: "behind", bindings: 300, oneTime: 1, ticks: []time.Duration{0, iv}, wantAfter: iv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newTest(t, func(o *Options) {
				o.MaxBindings = max(tt.bindings, 1)
				o.Keepalive = fastParams(func(p *keepalive.Params) {
					if tt.oneTime > 0 {
						p.SendOneTime = tt.oneTime
					}
				})
			})
			for i := range tt.bindings {
				src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 5060)
				user := "u" + itoa(i)
				r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5:5060>"}}.req(t), src, udp0)
			}
			start := clk.now()
			s := &fakeSender{}
			for _, at := range tt.ticks {
				clk.advance(start.Add(at).Sub(clk.now()))
				r.tick(clk.now(), s)
			}
			if got := r.untilTick(clk.now()); got != tt.wantAfter {
				t.Errorf("untilTick = %v, want %v", got, tt.wantAfter)
			}
		})
	}
}

type notifySender struct{ ch chan sent }

func (s *notifySender) SendKeepalives(batch []Keepalive) {
	for _, k := range batch {
		select {
		case s.ch <- sent{Flow: k.Flow, Dst: k.Dst, Payload: string(k.Payload)}:
		default:
		}
	}
}

func (s *notifySender) SentBy(string) (string, int) { return "192.0.2.10", 5060 }

func TestSendErrors(t *testing.T) {
	r, clk := newTest(t, nil)
	r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(t), srcA, udp0)
	r.tick(clk.now(), &fakeSender{err: errors.New("sendto: network unreachable")})
	if st := r.Stats(); st.SendErrors != 1 || st.PingsSent != 1 {
		t.Errorf("Stats: %+v", st)
	}
}

// TestConcurrent exercises every entry point at once (run with -race).
func TestConcurrent(t *testing.T) {
	p := fastParams(func(p *keepalive.Params) { p.Mode = keepalive.ModeOptions; p.NATedOnly = false })
	r, clk := newTest(t, func(o *Options) { o.Keepalive = p; o.MaxBindings = 64 })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	answers := make(chan string, 1024)
	s := &chanSender{ch: answers}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; i < 200 && ctx.Err() == nil; i++ {
				user := "u" + itoa(g*10+i%10)
				src := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(40000+g))
				r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5>"}, callID: "c" + itoa(g), cseq: i + 1, expires: "60"}.req(t), src, udp0)
				r.Locate(user)
				r.Registered(src, "UDP")
				r.Stats()
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 300 && ctx.Err() == nil; i++ {
			clk.advance(10 * time.Millisecond)
			r.tick(clk.now(), s)
		}
	})
	wg.Go(func() {
		for i := 0; i < 50 && ctx.Err() == nil; i++ {
			r.Bindings()
			_ = r.SetKeepalive(p)
		}
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case x := <-answers:
			if m, err := sip.NewParser().ParseSIP([]byte(x)); err == nil {
				r.KeepaliveAnswer(sip.NewResponseFromRequest(m.(*sip.Request), 200, "OK", nil))
			}
		case <-done:
			return
		case <-ctx.Done():
			t.Fatal("timed out")
		}
	}
}

type chanSender struct{ ch chan string }

func (s *chanSender) SendKeepalives(batch []Keepalive) {
	for _, k := range batch {
		select {
		case s.ch <- string(k.Payload):
		default:
		}
	}
}

func (s *chanSender) SentBy(string) (string, int) { return "192.0.2.10", 5060 }

// TestPacerFlow: a UDP flow is marked so that tick makes its keep-alive
// from the pacer's event alone; any other flow is read from the record.
func TestPacerFlow(t *testing.T) {
	for _, c := range []struct {
		f    Flow
		want uint32
	}{
		{Flow{Network: "UDP", Socket: 0}, udpFlow},
		{Flow{Network: "UDP", Socket: 3}, udpFlow | 3},
		{Flow{Network: "TCP", Socket: 3}, 3},
		{Flow{Network: "TLS", Socket: 1}, 1},
		{Flow{Network: "UDP", Socket: -1}, ^uint32(0) &^ udpFlow}, // not a socket index: from the record
		{Flow{Network: "TCP", Socket: -1}, ^uint32(0) &^ udpFlow},
	} {
		if got := pacerFlow(c.f); got != c.want {
			t.Errorf("pacerFlow(%+v) = %#x, want %#x", c.f, got, c.want)
		}
	}
}

// TestLateTimerNoDrift drives tick and untilTick as Run does, on a virtual
// clock whose timer always fires late and whose sends take time: the
// lateness must not add up. A period of 1 s in ten 100-ms ticks, each full
// (send_one_time bindings, so every tick is a batch of its own): every
// binding's interval stays within 1 % of the period and no tick is lost.
func TestLateTimerNoDrift(t *testing.T) {
	const (
		iv      = 100 * time.Millisecond
		oneTime = 5
		late    = 3 * time.Millisecond // the timer fires this late
		send    = time.Millisecond     // a batch takes this long to leave
	)
	p := fastParams(func(p *keepalive.Params) { p.SendInterval = iv; p.SendOneTime = oneTime })
	r, clk := newTest(t, func(o *Options) { o.Keepalive = p; o.MaxBindings = 10 * oneTime })
	for i := range 10 * oneTime {
		src := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(20000+i))
		user := "u" + itoa(i)
		if res := r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5>"}}.req(t), src, udp0); res.StatusCode != 200 {
			t.Fatalf("REGISTER %d: %d", i, res.StatusCode)
		}
	}
	s := &fakeSender{clk: clk, t0: t0}
	for end := clk.now().Add(20 * p.Period); clk.now().Before(end); {
		r.tick(clk.now(), s)
		clk.advance(send)
		clk.advance(r.untilTick(clk.now()) + late)
	}
	last := map[netip.AddrPort]time.Duration{}
	n := 0
	for _, x := range s.take() {
		// The first period's pings went out at once (Run's first tick),
		// the rest half an interval after their ticks.
		if prev, ok := last[x.Dst]; ok && prev >= p.Period {
			if d := x.At - prev - p.Period; d < -p.Period/100 || d > p.Period/100 {
				t.Fatalf("%v: interval %v at %v, want %v ± 1 %%", x.Dst, x.At-prev, x.At, p.Period)
			}
			n++
		}
		last[x.Dst] = x.At
	}
	if want := 18 * 10 * oneTime; n < want {
		t.Errorf("%d intervals in 20 periods, want at least %d", n, want)
	}
}
