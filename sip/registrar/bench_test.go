package registrar

import (
	"bytes"
	"errors"
	"math"
	"net/netip"
	"testing"
	"time"

	"sbcd/timers/keepalive"
)

type nopSender struct{}

func (nopSender) SendKeepalives([]Keepalive)  {}
func (nopSender) SentBy(string) (string, int) { return "192.0.2.10", 5060 }

// answeringSender answers every OPTIONS ping at once, without parsing it.
type answeringSender struct{ r *Registrar }

func (a answeringSender) SendKeepalives(batch []Keepalive) {
	for i := range batch {
		batch[i].Err = a.answer(batch[i].Payload)
	}
}

func (a answeringSender) answer(p []byte) error {
	i := bytes.Index(p, []byte("branch="))
	if i < 0 || len(p) < i+7+branchLen {
		return errors.New("no branch")
	}
	id, _, ok := decodeBranch(string(p[i+7 : i+7+branchLen]))
	if !ok {
		return errors.New("bad branch")
	}
	a.r.mu.Lock()
	a.r.tab.Answered(id)
	a.r.mu.Unlock()
	return nil
}

func (answeringSender) SentBy(string) (string, int) { return "192.0.2.10", 5060 }

// fill registers n NATed bindings, each from its own source.
func fill(b *testing.B, r *Registrar, n int) {
	b.Helper()
	for i := range n {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), uint16(20000+i%40000))
		user := "u" + itoa(i)
		res := r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5:5060>"}, expires: "4294967295"}.req(b), src, udp0)
		if res.StatusCode != 200 {
			b.Fatalf("REGISTER %d: %d %s", i, res.StatusCode, res.Reason)
		}
	}
}

// BenchmarkTick: one pacer tick (send_interval 10 ms, period 30 s) over
// 100,000 NATed bindings with a no-op Sender: about 33 pings per tick. The
// ns/ping metric is per keep-alive (B/op and allocs/op are per tick). In
// options mode the Sender also marks each ping answered (under the lock).
func BenchmarkTick(b *testing.B) {
	for _, mode := range []keepalive.Mode{keepalive.ModeMessage, keepalive.ModeCRLF, keepalive.ModeOptions} {
		b.Run(mode.String(), func(b *testing.B) {
			const n = 100000
			r, clk := newTest(b, func(o *Options) {
				o.MaxBindings = n
				o.MaxExpires = math.MaxUint32 * time.Second // no expiry during the run
				o.Keepalive.Mode = mode
			})
			fill(b, r, n)
			iv := r.tab.Params().SendInterval
			var s Sender = nopSender{}
			if mode == keepalive.ModeOptions {
				s = answeringSender{r} // or every binding is evicted after max_failures periods
			}
			before := r.Stats().PingsSent
			b.ReportAllocs()
			for b.Loop() {
				r.tick(clk.now(), s)
				clk.advance(iv)
			}
			pings := r.Stats().PingsSent - before
			if pings == 0 {
				b.Fatal("no pings")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pings), "ns/ping")
			b.ReportMetric(float64(pings)/float64(b.N), "pings/op")
		})
	}
}

// TestTickAllocs: the registrar's per-ping work allocates nothing, in
// message and crlf mode and (once its text buffer has grown) options mode.
func TestTickAllocs(t *testing.T) {
	for _, mode := range []keepalive.Mode{keepalive.ModeMessage, keepalive.ModeCRLF, keepalive.ModeOptions} {
		r, clk := newTest(t, func(o *Options) {
			o.MaxBindings = 1000
			o.Keepalive.Mode = mode
			o.Keepalive.Period = time.Second
		})
		for i := range 1000 {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 5060)
			user := "u" + itoa(i)
			r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5:5060>"}}.req(t), src, udp0)
		}
		s := nopSender{}
		r.tick(clk.now(), s)
		allocs := testing.AllocsPerRun(200, func() {
			clk.advance(10 * time.Millisecond)
			r.tick(clk.now(), s)
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per tick", mode, allocs)
		}
	}
}

// BenchmarkRegister: a refresh REGISTER of an existing binding (parsing
// excluded).
func BenchmarkRegister(b *testing.B) {
	r, _ := newTest(b, func(o *Options) { o.MaxBindings = 1000 })
	req := rq{contacts: []string{"<sip:1001@10.0.0.5:5060>"}}.req(b)
	b.ReportAllocs()
	for b.Loop() {
		req.CSeq().SeqNo++
		if res := r.Register(req, srcA, udp0); res.StatusCode != 200 {
			b.Fatalf("%d %s", res.StatusCode, res.Reason)
		}
	}
}
