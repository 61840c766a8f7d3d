package registrar

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

func newAuth(t *testing.T) (*Registrar, *clock) {
	t.Helper()
	return newTest(t, func(o *Options) {
		o.Auth = true
		o.Users = map[string]string{"1001": "secret", "1002": "other"}
	})
}

// challenge sends an unauthenticated REGISTER and returns the parsed
// challenge of the 401.
func getChallenge(t *testing.T, r *Registrar, src netip.AddrPort, cseq int) *digest.Challenge {
	t.Helper()
	res := r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5>"}, cseq: cseq}.req(t), src, udp0)
	if res.StatusCode != 401 {
		t.Fatalf("unauthenticated REGISTER: %d %s", res.StatusCode, res.Reason)
	}
	checkVia(t, res, src, true)
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		t.Fatal("401 without WWW-Authenticate")
	}
	c, err := digest.ParseChallenge(h.Value())
	if err != nil {
		t.Fatalf("ParseChallenge(%q): %v", h.Value(), err)
	}
	return c
}

// authorization computes the client side with digest.Digest.
func authorization(t *testing.T, c *digest.Challenge, user, password string) string {
	t.Helper()
	cred, err := digest.Digest(c, digest.Options{Method: "REGISTER", URI: "sip:example.net", Username: user, Password: password, Cnonce: "0a4f113b", Count: 1})
	if err != nil {
		t.Fatalf("digest.Digest: %v", err)
	}
	return "Authorization: " + cred.String()
}

func authed(t *testing.T, r *Registrar, src netip.AddrPort, toUser, authLine string, cseq int) *sip.Response {
	t.Helper()
	res := r.Register(rq{user: toUser, contacts: []string{"<sip:" + toUser + "@10.0.0.5>"}, cseq: cseq, extra: []string{authLine}}.req(t), src, udp0)
	checkVia(t, res, src, true)
	return res
}

func TestDigest(t *testing.T) {
	tests := []struct {
		name       string
		alg        string // client algorithm, the challenge's when empty
		toUser     string
		user, pass string
		mangle     func(string) string
		advance    time.Duration
		wantCode   int
		wantReason string
		stale      bool
		failures   uint64
	}{
		{name: "correct", toUser: "1001", user: "1001", pass: "secret", wantCode: 200, wantReason: "OK"},
		{name: "correct SHA-256 (RFC 8760)", alg: "SHA-256", toUser: "1001", user: "1001", pass: "secret", wantCode: 200, wantReason: "OK"},
		{name: "wrong password", toUser: "1001", user: "1001", pass: "guess", wantCode: 403, wantReason: "Forbidden", failures: 1},
		{name: "unknown user", toUser: "1009", user: "1009", pass: "secret", wantCode: 403, wantReason: "Forbidden", failures: 1},
		{name: "username mismatch", toUser: "1002", user: "1001", pass: "secret", wantCode: 403, wantReason: "Forbidden"},
		{name: "forged nonce", toUser: "1001", user: "1001", pass: "secret", wantCode: 403, wantReason: "Forbidden", failures: 1,
			mangle: func(s string) string { // replace the MAC part of the nonce
				i := strings.Index(s, `nonce="`) + len(`nonce="`) + 16
				return s[:i] + strings.Repeat("0", 32) + s[i+32:]
			}},
		{name: "stale nonce", toUser: "1001", user: "1001", pass: "secret", advance: NonceLifetime + time.Second, wantCode: 401, wantReason: "Unauthorized", stale: true},
		{name: "stale nonce wrong password", toUser: "1001", user: "1001", pass: "guess", advance: NonceLifetime + time.Second, wantCode: 403, wantReason: "Forbidden", failures: 1},
		{name: "other realm", toUser: "1001", user: "1001", pass: "secret", wantCode: 401, wantReason: "Unauthorized",
			mangle: func(s string) string { return strings.Replace(s, `realm="sbcd"`, `realm="elsewhere"`, 1) }},
		{name: "no uri", toUser: "1001", user: "1001", pass: "secret", wantCode: 400, wantReason: "Incomplete Credentials",
			mangle: func(s string) string { return strings.Replace(s, `uri="sip:example.net"`, `uri=""`, 1) }},
		{name: "malformed", toUser: "1001", user: "1001", pass: "secret", wantCode: 400, wantReason: "Malformed Authorization",
			mangle: func(string) string { return "Authorization: Basic MTAwMTpzZWNyZXQ=" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, clk := newAuth(t)
			c := getChallenge(t, r, srcA, 1)
			if c.Realm != "sbcd" || c.Algorithm != "MD5" || !c.SupportsQOP("auth") || c.Stale {
				t.Errorf("challenge = %+v", c)
			}
			cc := *c
			if tt.alg != "" {
				cc.Algorithm = tt.alg
			}
			line := authorization(t, &cc, tt.user, tt.pass)
			if tt.mangle != nil {
				line = tt.mangle(line)
			}
			clk.advance(tt.advance)
			res := authed(t, r, srcA, tt.toUser, line, 2)
			if res.StatusCode != tt.wantCode || res.Reason != tt.wantReason {
				t.Fatalf("got %d %s, want %d %s\n%s", res.StatusCode, res.Reason, tt.wantCode, tt.wantReason, res)
			}
			if tt.wantCode == 401 {
				h := res.GetHeader("WWW-Authenticate")
				c2, err := digest.ParseChallenge(h.Value())
				if err != nil || c2.Stale != tt.stale {
					t.Errorf("challenge %q: stale=%v err=%v, want stale=%v", h.Value(), c2 != nil && c2.Stale, err, tt.stale)
				}
				if tt.stale && c2.Nonce == c.Nonce {
					t.Error("stale challenge repeats the old nonce")
				}
			}
			if got := r.Stats().AuthFailures; got != tt.failures {
				t.Errorf("AuthFailures = %d, want %d", got, tt.failures)
			}
			_, found := r.Locate(tt.toUser)
			if found != (tt.wantCode == 200) {
				t.Errorf("Locate found = %v", found)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	r, clk := newAuth(t)
	other := netip.MustParseAddrPort("198.51.100.7:5060")
	c := getChallenge(t, r, srcA, 1)
	wrong := authorization(t, c, "1001", "guess")
	right := authorization(t, c, "1001", "secret")
	for i := range MaxFailedAttempts {
		clk.advance(time.Second)
		if res := authed(t, r, srcA, "1001", wrong, 2+i); res.StatusCode != 403 || res.Reason != "Forbidden" {
			t.Fatalf("attempt %d: %d %s", i, res.StatusCode, res.Reason)
		}
	}
	// blocked: even correct credentials, even without credentials
	if res := authed(t, r, srcA, "1001", right, 10); res.StatusCode != 403 || res.Reason != "Too Many Failed Attempts" {
		t.Errorf("correct credentials while blocked: %d %s", res.StatusCode, res.Reason)
	}
	if res := r.Register(rq{contacts: []string{"<sip:1001@10.0.0.5>"}, cseq: 11}.req(t), srcA, udp0); res.StatusCode != 403 {
		t.Errorf("no credentials while blocked: %d %s", res.StatusCode, res.Reason)
	}
	// another IP is not blocked
	if res := authed(t, r, other, "1001", right, 12); res.StatusCode != 200 {
		t.Errorf("other source: %d %s", res.StatusCode, res.Reason)
	}
	if st := r.Stats(); st.AuthFailures != MaxFailedAttempts || st.Blocked != 2 {
		t.Errorf("Stats: %+v", st)
	}
	clk.advance(BlockDuration)
	if res := authed(t, r, srcA, "1001", right, 13); res.StatusCode != 200 {
		t.Errorf("after the block: %d %s", res.StatusCode, res.Reason)
	}
}

func TestRateLimitWindow(t *testing.T) {
	r, clk := newAuth(t)
	c := getChallenge(t, r, srcA, 1)
	wrong := authorization(t, c, "1001", "guess")
	right := authorization(t, c, "1001", "secret")
	// 4 failures, then the window passes: the count starts again
	for i := range MaxFailedAttempts - 1 {
		authed(t, r, srcA, "1001", wrong, 2+i)
	}
	clk.advance(FailureWindow)
	authed(t, r, srcA, "1001", wrong, 10)
	if res := authed(t, r, srcA, "1001", right, 11); res.StatusCode != 200 {
		t.Errorf("after the window: %d %s", res.StatusCode, res.Reason)
	}
}

func TestLimiterBounded(t *testing.T) {
	var l limiter
	l.init()
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range 3 * limiterEntries {
		a := base
		a[2], a[3] = byte(i>>8), byte(i)
		l.fail(netip.AddrFrom4(a), int64(i))
	}
	if len(l.idx) != limiterEntries || l.n != limiterEntries {
		t.Errorf("limiter holds %d entries (n=%d), want %d", len(l.idx), l.n, limiterEntries)
	}
}
