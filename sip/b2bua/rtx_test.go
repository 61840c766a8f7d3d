package b2bua

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/huge"
	"sbcd/timers/huge/hugetest"
)

// key renders a transaction key as branch|host|port|method for messages.
func key(k []byte) string { return strings.ReplaceAll(string(k), "\x00", "|") }

func TestRawKey(t *testing.T) {
	const tail = "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	tests := []struct {
		name, msg string
		want      string // "" for no key
	}{
		{"options", "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKabc\r\nCSeq: 1 OPTIONS\r\n" + tail,
			"z9hG4bKabc|192.0.2.1|5062|OPTIONS"},
		{"default port", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP host.example;rport;branch=z9hG4bK1\r\nCSeq: 2 BYE\r\n" + tail,
			"z9hG4bK1|host.example|5060|BYE"},
		{"tls default port", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nCSeq: 2 BYE\r\n" + tail,
			"z9hG4bK1|h|5061|BYE"},
		{"two spaces in cseq", "REGISTER sip:h SIP/2.0\r\nv: SIP/2.0/UDP h:5060;branch=z9hG4bKr\r\ncseq: 7  REGISTER\r\n" + tail,
			""}, // sipgo's method is " REGISTER": no key either side
		{"compact via", "REGISTER sip:h SIP/2.0\r\nv: SIP/2.0/UDP h:5060;branch=z9hG4bKr\r\ncseq: 7 REGISTER\r\n" + tail,
			"z9hG4bKr|h|5060|REGISTER"},
		{"first via, first value", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP a:1;branch=z9hG4bKa, SIP/2.0/UDP b:2;branch=z9hG4bKb\r\nVia: SIP/2.0/UDP c;branch=z9hG4bKc\r\nCSeq: 2 BYE\r\n" + tail,
			"z9hG4bKa|a|1|BYE"},
		{"ipv6", "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bKv6\r\nCSeq: 1 OPTIONS\r\n" + tail,
			"z9hG4bKv6|2001:db8::1|5070|OPTIONS"},
		{"ipv6 no port", "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKv6\r\nCSeq: 1 OPTIONS\r\n" + tail,
			"z9hG4bKv6|2001:db8::1|5060|OPTIONS"},
		{"last branch wins", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa;branch=z9hG4bKb\r\nCSeq: 2 BYE\r\n" + tail,
			"z9hG4bKb|h|5060|BYE"},
		{"empty branch replaces", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa;branch\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"rfc 2543 branch", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1234\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"magic cookie alone", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"no branch", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"invite", "INVITE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKi\r\nCSeq: 1 INVITE\r\n" + tail, "z9hG4bKi|h|5060|INVITE"},
		{"ack", "ACK sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKi\r\nCSeq: 1 ACK\r\n" + tail, ""},
		{"response", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKi\r\nCSeq: 1 BYE\r\n" + tail, ""},
		{"folded via", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n ;branch=z9hG4bKf\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"spaced param", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h; rport ;branch=z9hG4bKs\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"quoted", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;x=\"a;b\";branch=z9hG4bKq\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"bad port", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h:+5060;branch=z9hG4bKp\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"port too large", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h:65536;branch=z9hG4bKp\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"cseq too large", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKp\r\nCSeq: 2147483648 BYE\r\n" + tail, ""},
		{"no cseq", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKp\r\n" + tail, ""},
		{"bare lf", "BYE sip:h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKp\nCSeq: 2 BYE\n\n", ""},
		{"truncated", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKp", ""},
		{"empty", "", ""},
		{"long branch", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK" + strings.Repeat("x", 300) + "\r\nCSeq: 2 BYE\r\n" + tail, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var kb [rtxKeyMax]byte
			k, ok := rawKey([]byte(tc.msg), kb[:0])
			got := ""
			if ok {
				got = key(k)
			}
			if got != tc.want {
				t.Fatalf("rawKey = %q, want %q", got, tc.want)
			}
			if !ok {
				return
			}
			// The bytes key as sipgo's parse does.
			m, err := sip.ParseMessage([]byte(tc.msg))
			if err != nil {
				t.Fatalf("sipgo does not parse it: %v", err)
			}
			pk, ok := reqKey(m.(*sip.Request), kb[:0])
			if !ok || key(pk) != tc.want {
				t.Errorf("reqKey = %q %v, want %q", key(pk), ok, tc.want)
			}
		})
	}
}

// corpusFiles reads the robustness corpus beside the repository.
func corpusFiles(tb testing.TB) [][]byte {
	root := filepath.Join("..", "..", "..", "shared", "corpus")
	var out [][]byte
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if ext := filepath.Ext(path); ext != ".dat" && ext != ".sip" && !strings.Contains(path, "gofuzz") {
			return nil
		}
		if data, err := os.ReadFile(path); err == nil {
			out = append(out, data)
		}
		return nil
	})
	return out
}

// checkSameKey fails when rawKey reads a key from data that sipgo's
// parse of data does not give: the filter and the cache must agree.
func checkSameKey(t testing.TB, data []byte) (keyed bool) {
	var kb, pb [rtxKeyMax]byte
	k, ok := rawKey(data, kb[:0])
	if !ok {
		return false
	}
	if len(k) > rtxKeyMax {
		t.Fatalf("key of %d bytes", len(k))
	}
	m, err := sip.ParseMessage(bytes.Clone(data))
	if err != nil {
		return true // sipgo drops it: no transaction could be cached for it
	}
	req, isReq := m.(*sip.Request)
	if !isReq {
		t.Fatalf("rawKey keyed a response %q: %q", data, key(k))
	}
	pk, ok := reqKey(req, pb[:0])
	if !ok || !bytes.Equal(pk, k) {
		t.Fatalf("rawKey %q, sipgo's parse %q (%v) for %q", key(k), key(pk), ok, data)
	}
	return true
}

// checkSameResponseKey is checkSameKey for rawResponseKey.
func checkSameResponseKey(t testing.TB, data []byte) (keyed bool) {
	var kb, pb [rtxKeyMax]byte
	k, ok := rawResponseKey(data, kb[:0])
	if !ok {
		return false
	}
	m, err := sip.ParseMessage(bytes.Clone(data))
	if err != nil {
		return true
	}
	res, isRes := m.(*sip.Response)
	if !isRes || res.StatusCode < 300 || res.Via() == nil || res.CSeq() == nil {
		t.Fatalf("rawResponseKey keyed %q: %q", data, key(k))
	}
	branch, _ := res.Via().Params.Get("branch")
	pk, ok := appendClientKey(pb[:0], branch, string(res.CSeq().MethodName))
	if !ok || !bytes.Equal(pk, k) {
		t.Fatalf("rawResponseKey %q, sipgo's parse %q (%v) for %q", key(k), key(pk), ok, data)
	}
	return true
}

func TestRawResponseKey(t *testing.T) {
	const tail = "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c1\r\nContent-Length: 0\r\n\r\n"
	for _, tc := range []struct{ name, msg, want string }{
		{"486", "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb1\r\nCSeq: 1 INVITE\r\n" + tail, "z9hG4bKb1||INVITE"},
		{"487 compact", "SIP/2.0 487 Request Terminated\r\nv: SIP/2.0/UDP h;branch=z9hG4bKb1;received=192.0.2.9\r\ncseq: 1 INVITE\r\n" + tail, "z9hG4bKb1||INVITE"},
		{"2xx", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKb1\r\nCSeq: 1 INVITE\r\n" + tail, ""},
		{"provisional", "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKb1\r\nCSeq: 1 INVITE\r\n" + tail, ""},
		{"not INVITE", "SIP/2.0 481 Gone\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKb1\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"request", "BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKb1\r\nCSeq: 2 BYE\r\n" + tail, ""},
		{"status 700", "SIP/2.0 700 Odd\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKb1\r\nCSeq: 1 INVITE\r\n" + tail, ""},
		{"rfc 2543", "SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP h;branch=x\r\nCSeq: 1 INVITE\r\n" + tail, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kb [rtxKeyMax]byte
			k, ok := rawResponseKey([]byte(tc.msg), kb[:0])
			got := ""
			if ok {
				got = key(k)
			}
			if got != tc.want {
				t.Fatalf("rawResponseKey = %q, want %q", got, tc.want)
			}
			checkSameResponseKey(t, []byte(tc.msg))
		})
	}
}

func TestRawKeyCorpus(t *testing.T) {
	files := corpusFiles(t)
	if len(files) == 0 {
		t.Skip("robustness corpus not found beside the repository")
	}
	keyed := 0
	for _, f := range files {
		if checkSameKey(t, f) || checkSameResponseKey(t, f) {
			keyed++
		}
	}
	t.Logf("%d of %d corpus messages keyed from their bytes", keyed, len(files))
}

func FuzzRawKey(f *testing.F) {
	for _, data := range corpusFiles(f) {
		f.Add(data)
	}
	f.Add([]byte("OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5062;rport;branch=z9hG4bKabc\r\nCSeq: 1 OPTIONS\r\n\r\n"))
	f.Add([]byte("SIP/2.0 487 Request Terminated\r\nVia: SIP/2.0/UDP h:5062;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameKey(t, data)
		checkSameResponseKey(t, data)
	})
}

// rtxPair is a cache on one socket of its own and a peer socket that
// receives what it resends.
func rtxPair(t *testing.T, size int, ttl int64, now func() int64) (*rtxCache, net.PacketConn, netip.AddrPort) {
	t.Helper()
	a, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = peer.Close() })
	return newRtxCache(size, ttl, now, []net.PacketConn{a}), peer, peer.LocalAddr().(*net.UDPAddr).AddrPort()
}

func readDatagram(t *testing.T, c net.PacketConn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

func TestRtxCache(t *testing.T) {
	var clock atomic.Int64
	now := func() int64 { return clock.Load() }
	c, peer, dst := rtxPair(t, rtxCacheMin, 1000, now)
	k := func(i int) []byte { return fmt.Appendf(nil, "z9hG4bK%d\x00h\x005060\x00BYE", i) }

	// Kept, resent to the original destination, until the TTL.
	if !c.put(k(1), []byte("SIP/2.0 200 OK one"), dst, 0) {
		t.Fatal("put refused")
	}
	if !c.resend(k(1)) {
		t.Fatal("kept response not resent")
	}
	if got := readDatagram(t, peer); got != "SIP/2.0 200 OK one" {
		t.Errorf("resent %q", got)
	}
	if c.resend(k(2)) {
		t.Error("unknown key resent")
	}
	clock.Store(999)
	if !c.resend(k(1)) {
		t.Error("not resent before its TTL")
	}
	readDatagram(t, peer)
	clock.Store(1000)
	if c.resend(k(1)) {
		t.Error("resent at its TTL")
	}
	if n := c.len(); n != 0 {
		t.Errorf("%d records after the TTL, want 0", n)
	}

	// A full arena drops the oldest records early, counted; the ring
	// wraps and the newest records stay readable.
	clock.Store(2000)
	body := bytes.Repeat([]byte("x"), 900)
	const n = 200 // ~ 200 KiB of records through a 64 KiB arena
	for i := range n {
		if !c.put(k(i), append(fmt.Appendf(nil, "%04d", i), body...), dst, 0) {
			t.Fatalf("put %d refused", i)
		}
	}
	if c.evicted.Load() == 0 {
		t.Error("nothing evicted from a full arena")
	}
	if c.resend(k(0)) {
		t.Error("the oldest record survived a full arena")
	}
	for i := n - 10; i < n; i++ {
		if !c.resend(k(i)) {
			t.Fatalf("record %d lost", i)
		}
		if got := readDatagram(t, peer); !strings.HasPrefix(got, fmt.Sprintf("%04d", i)) || len(got) != 904 {
			t.Fatalf("record %d resent as %.10q (%d bytes)", i, got, len(got))
		}
	}
	if got, max := c.len(), rtxCacheMin/(rtxHeader+904); got > max || got < max/2 {
		t.Errorf("%d live records, want about %d", got, max)
	}
	// A record too large for the arena is refused, not half kept.
	if c.put(k(-1), make([]byte, rtxCacheMin/2), dst, 0) {
		t.Error("oversized record kept")
	}
}

func TestRtxZeroAllocs(t *testing.T) {
	c, peer, dst := rtxPair(t, 1<<20, int64(time.Hour), func() int64 { return 1 })
	msg := []byte("BYE sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;rport;branch=z9hG4bKabcdef\r\n" +
		"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
	var kb [rtxKeyMax]byte
	k, ok := rawKey(msg, kb[:0])
	if !ok {
		t.Fatal("no key")
	}
	c.put(k, []byte("SIP/2.0 200 OK"), dst, 0)
	other := bytes.Replace(msg, []byte("abcdef"), []byte("zzzzzz"), 1)
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"rawKey", func() { _, _ = rawKey(msg, kb[:0]) }},
		{"answer miss", func() {
			if c.answer(other) {
				t.Fatal("hit")
			}
		}},
		{"answer hit", func() {
			if !c.answer(msg) {
				t.Fatal("miss")
			}
		}},
		{"put", func() { c.put(k, []byte("SIP/2.0 200 OK"), dst, 0) }},
	} {
		if a := testing.AllocsPerRun(200, tc.f); a != 0 {
			t.Errorf("%s: %.1f allocs, want 0", tc.name, a)
		}
	}
	_ = peer
}

// rawClient is a UDP socket that sends requests as bytes to sbcd.
type rawClient struct {
	conn net.PacketConn
	addr netip.AddrPort
}

func newRawClient(t *testing.T) *rawClient {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawClient{conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
}

func (c *rawClient) send(t *testing.T, to netip.AddrPort, msg string) {
	t.Helper()
	if _, err := c.conn.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(to)); err != nil {
		t.Fatal(err)
	}
}

// final reads datagrams until a final response.
func (c *rawClient) final(t *testing.T) string {
	t.Helper()
	for {
		got := readDatagram(t, c.conn)
		if !strings.HasPrefix(got, "SIP/2.0 1") {
			return got
		}
	}
}

func (c *rawClient) request(method, branch, toTag string, seq int, to netip.AddrPort) string {
	tt := ""
	if toTag != "" {
		tt = ";tag=" + toTag
	}
	return fmt.Sprintf("%s sip:sbcd@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s\r\nFrom: <sip:raw@%s>;tag=r1\r\n"+
		"To: <sip:sbcd@%s>%s\r\nCall-ID: raw-%s\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\nContact: <sip:raw@%s>\r\nContent-Length: 0\r\n\r\n",
		method, to, c.addr, branch, c.addr.Addr(), to.Addr(), tt, branch, seq, method, c.addr)
}

// TestRtxRetransmissions: over UDP, a retransmitted non-INVITE request
// gets the same response bytes again (RFC 3261 §17.2.2) although sipgo's
// transaction ended at once; a non-2xx final answer to an INVITE ends its
// transaction at the ACK (RFC 3261 §17.2.1).
func TestRtxRetransmissions(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	c := newRawClient(t)
	idle := func() bool { st := e.b.Stats(); return st.ServerTx == 0 }
	for _, tc := range []struct {
		name, method, toTag string
		code                string
	}{
		{"options", "OPTIONS", "", "SIP/2.0 200 "},
		{"bye outside a dialog", "BYE", "", "SIP/2.0 481 "},
		{"in-dialog with an unknown tag", "INFO", "zz123", "SIP/2.0 481 "},
		{"register without registrar", "REGISTER", "", "SIP/2.0 405 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			st0 := e.b.Stats()
			msg := c.request(tc.method, "z9hG4bK-"+strings.ReplaceAll(tc.name, " ", "-"), tc.toTag, 1, e.addr)
			c.send(t, e.addr, msg)
			first := c.final(t)
			if !strings.HasPrefix(first, tc.code) {
				t.Fatalf("answered %.40q, want %s", first, tc.code)
			}
			// Well before Timer J (64*T1, 1.6 s here) sipgo holds nothing.
			waitFor(ctx, t, idle)
			c.send(t, e.addr, msg)
			if again := c.final(t); again != first {
				t.Errorf("retransmission answered\n%s\nwant\n%s", again, first)
			}
			st := e.b.Stats()
			if st.RtxResent != st0.RtxResent+1 || st.RtxKept < 1 {
				t.Errorf("stats %+v after %+v", st, st0)
			}
			// The same request with its CSeq folded: its bytes do not key
			// (the filter lets it through), sipgo's parse does: onRequest
			// answers it from the cache.
			folded := strings.Replace(msg, "CSeq: 1 ", "CSeq: 1\r\n ", 1)
			var kb [rtxKeyMax]byte
			if k, ok := rawKey([]byte(folded), kb[:0]); ok {
				t.Fatalf("the folded request keys from its bytes: %q", key(k))
			}
			c.send(t, e.addr, folded)
			if again := c.final(t); again != first {
				t.Errorf("folded retransmission answered\n%s\nwant\n%s", again, first)
			}
			waitFor(ctx, t, idle)
			if st := e.b.Stats(); st.RtxResent != st0.RtxResent+2 {
				t.Errorf("resent %d, want %d", st.RtxResent, st0.RtxResent+2)
			}
		})
	}
	t.Run("invite refused", func(t *testing.T) {
		ctx := testCtx(t)
		// c is not a device: 403 (RFC 3261 §8.2), retransmitted until
		// the ACK, which ends the transaction at once.
		msg := c.request("INVITE", "z9hG4bK-inv403", "", 1, e.addr)
		c.send(t, e.addr, msg)
		res := c.final(t)
		if !strings.HasPrefix(res, "SIP/2.0 403 ") {
			t.Fatalf("answered %.40q", res)
		}
		m, err := sip.ParseMessage([]byte(res))
		if err != nil {
			t.Fatal(err)
		}
		toTag, _ := m.(*sip.Response).To().Params.Get("tag")
		ack := c.request("ACK", "z9hG4bK-inv403", toTag, 1, e.addr)
		if e.b.Stats().ServerTx == 0 {
			t.Fatal("the INVITE transaction ended before its ACK")
		}
		c.send(t, e.addr, ack)
		start := time.Now()
		waitFor(ctx, t, idle)
		// Timer I would be T4 (250 ms in these tests).
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("the INVITE transaction ended %v after its ACK", d)
		}
		// A retransmitted ACK is absorbed (no answer, nothing kept).
		c.send(t, e.addr, ack)
		time.Sleep(50 * time.Millisecond)
		waitFor(ctx, t, idle)
	})
}

// readUntil reads datagrams until one that starts with prefix.
func readUntil(t *testing.T, c net.PacketConn, prefix string) string {
	t.Helper()
	for {
		if got := readDatagram(t, c); strings.HasPrefix(got, prefix) {
			return got
		}
	}
}

// TestRtxInviteRejected: a non-2xx final answer to the B-leg INVITE ends
// its client transaction at once (no Timer D), and a retransmission of
// the answer still gets its ACK (RFC 3261 §17.1.1.2), from the cache.
func TestRtxInviteRejected(t *testing.T) {
	up := newRawClient(t)
	e := newEnv(t, behavior{}, func(o *Options) { o.Upstream = up.addr.String() })
	ctx := testCtx(t)
	_, tx := e.caller.invite(ctx, e.addr, "bob")
	m, err := sip.ParseMessage([]byte(readUntil(t, up.conn, "INVITE ")))
	if err != nil {
		t.Fatal(err)
	}
	res := sip.NewResponseFromRequest(m.(*sip.Request), 486, "Busy Here", nil)
	busy := res.String()
	up.send(t, e.addr, busy)
	first := readUntil(t, up.conn, "ACK ")
	if r, _ := final(ctx, t, tx); r.StatusCode != 486 {
		t.Fatalf("caller got %d", r.StatusCode)
	}
	start := time.Now()
	waitFor(ctx, t, func() bool { st := e.b.Stats(); return st.ClientTx == 0 && st.ServerTx == 0 })
	// Timer D is 64*T1 = 1.6 s in these tests.
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("transactions ended %v after the answer", d)
	}
	up.send(t, e.addr, busy)
	again := readUntil(t, up.conn, "ACK ")
	st := e.b.Stats()
	if st.RtxResent != 1 {
		t.Errorf("resent %d, want 1", st.RtxResent)
	}
	// The same ACK: same Request-URI, top Via (branch), From, To, Call-ID
	// and CSeq (RFC 3261 §17.1.1.3).
	a1, err1 := sip.ParseMessage([]byte(first))
	a2, err2 := sip.ParseMessage([]byte(again))
	if err1 != nil || err2 != nil {
		t.Fatalf("ACKs do not parse: %v %v", err1, err2)
	}
	r1, r2 := a1.(*sip.Request), a2.(*sip.Request)
	for _, h := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		if v1, v2 := r1.GetHeader(h).Value(), r2.GetHeader(h).Value(); v1 != v2 {
			t.Errorf("%s: %q first, %q from the cache", h, v1, v2)
		}
	}
	if r1.Recipient.String() != r2.Recipient.String() {
		t.Errorf("Request-URI %s first, %s from the cache", r1.Recipient.String(), r2.Recipient.String())
	}
	if rec := e.cdr.next(ctx, t); rec.Code != 486 {
		t.Errorf("cdr %+v", rec)
	}
}

// TestRtxMemory measures what a finished non-INVITE server transaction
// costs while it absorbs retransmissions, with the cache and with sipgo
// keeping the transaction (RtxCache -1).
// DESIGN.md §10: the difference is the box's memory under churn.
func TestRtxMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("sends thousands of requests")
	}
	// All n are answered well within 64*T1 (1.6 s in these tests), so
	// none has expired yet at the second reading.
	const n = 3000
	perTx := map[string]float64{}
	for _, mode := range []struct {
		name string
		size int
	}{{"sipgo keeps the transaction", -1}, {"retransmission cache", 0}} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, behavior{}, func(o *Options) { o.RtxCache = mode.size; o.Logger = testLogger() })
			c := newRawClient(t)
			msgs := make([]string, n)
			for i := range msgs {
				msgs[i] = c.request("OPTIONS", fmt.Sprintf("z9hG4bK-mem-%06d", i), "", 1, e.addr)
			}
			before := heapAlloc()
			for i, m := range msgs {
				c.send(t, e.addr, m)
				if got := c.final(t); !strings.HasPrefix(got, "SIP/2.0 200 ") {
					t.Fatalf("request %d answered %.40q", i, got)
				}
			}
			after := heapAlloc()
			st := e.b.Stats()
			arena := uint64(0)
			if e.b.rtx != nil {
				arena = e.b.rtx.used() // allocated at New, before the first reading
			}
			per := (float64(int64(after)-int64(before)) + float64(arena)) / n
			perTx[mode.name] = per
			t.Logf("%s: %d OPTIONS answered, heap +%.0f KiB, arena %.0f KiB: %.0f B per finished transaction; server tx held %d, cached %d",
				mode.name, n, float64(int64(after)-int64(before))/1024, float64(arena)/1024, per, st.ServerTx, st.RtxKept)
			if mode.size >= 0 && (st.ServerTx > 10 || st.RtxKept != n) {
				t.Errorf("with the cache: %d server transactions held, %d responses cached (want 0, %d)", st.ServerTx, st.RtxKept, n)
			}
		})
	}
	if c := perTx["retransmission cache"]; c > 1024 {
		t.Errorf("%.0f B of heap per finished transaction with the cache, want at most 1 KiB", c)
	}
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestRtxHugePages: the default arena is advised huge pages wherever the
// kernel has them (timers/huge); the smallest stays on the Go heap.
func TestRtxHugePages(t *testing.T) {
	now := func() int64 { return 0 }
	if c := newRtxCache(rtxCacheMin, int64(time.Second), now, nil); c.huge {
		t.Errorf("an arena of %d bytes was mapped apart: want the Go heap below %d bytes", rtxCacheMin, huge.Page)
	}
	c := newRtxCache(RtxCacheDefault, int64(time.Second), now, nil)
	if hugetest.Enabled() && !c.huge {
		t.Errorf("transparent huge pages are on but the arena of %d bytes was not advised", RtxCacheDefault)
	}
	if len(c.buf) != RtxCacheDefault {
		t.Errorf("arena of %d bytes, want %d", len(c.buf), RtxCacheDefault)
	}
}
