package registrar

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"sbcd/sip/header"
)

// Digest authentication and the failed-attempt limit.
const (
	// NonceLifetime is how long a nonce is accepted. Nonces are stateless:
	// a timestamp and an HMAC-SHA256 of it and the realm under a key drawn
	// at New, so any sbcd restart invalidates them and no per-client state
	// is kept. An older nonce with a correct response gets a new challenge
	// with stale=true (RFC 2617 §3.2.1), so the phone retries without
	// asking its user. Within the lifetime a nonce can be replayed (no nc
	// tracking); the lifetime bounds that window.
	NonceLifetime = 5 * time.Minute
	// MaxFailedAttempts failed digest attempts from one IP within
	// FailureWindow block that IP for BlockDuration: its REGISTERs get 403
	// without their credentials being checked, also correct ones.
	MaxFailedAttempts = 5
	FailureWindow     = 60 * time.Second
	BlockDuration     = 60 * time.Second
	// limiterEntries is the number of source IPs the limiter remembers;
	// when it is full the least recently failing IP is forgotten
	// (currently blocked IPs last).
	limiterEntries = 1024
)

// nonceHexLen is the length of a nonce: 16 hex digits of timestamp and 32
// of MAC.
const nonceHexLen = 16 + 32

func cryptoKey(b []byte) error {
	_, err := rand.Read(b)
	return err
}

// nonce returns a nonce for wall time t (RFC 2617 §3.2.1, stateless).
func (r *Registrar) nonce(t time.Time, realm string) string {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(t.Unix()))
	mac := r.nonceMAC(ts[:], realm)
	var out [nonceHexLen]byte
	hex.Encode(out[:16], ts[:])
	hex.Encode(out[16:], mac[:16])
	return string(out[:])
}

func (r *Registrar) nonceMAC(ts []byte, realm string) []byte {
	m := hmac.New(sha256.New, r.nonceKey[:])
	m.Write(ts)
	m.Write([]byte{'|'})
	m.Write([]byte(realm))
	return m.Sum(nil)
}

// checkNonce verifies the MAC of n and returns its timestamp (Unix s).
func (r *Registrar) checkNonce(n, realm string) (int64, bool) {
	if len(n) != nonceHexLen {
		return 0, false
	}
	var ts [8]byte
	var mac [16]byte
	if _, err := hex.Decode(ts[:], []byte(n[:16])); err != nil {
		return 0, false
	}
	if _, err := hex.Decode(mac[:], []byte(n[16:])); err != nil {
		return 0, false
	}
	want := r.nonceMAC(ts[:], realm)
	if !hmac.Equal(mac[:], want[:16]) {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(ts[:])), true
}

// challenge is a 401 with a fresh nonce in WWW-Authenticate (RFC 3261
// §22.1, §20.44, RFC 2617 §3.2.1).
func (r *Registrar) challenge(p *policy, now time.Time, stale bool) *errRegister {
	c := digest.Challenge{
		Realm:     p.realm,
		Nonce:     r.nonce(now, p.realm),
		Algorithm: "MD5",
		QOP:       []string{"auth"},
		Stale:     stale,
	}
	return refuse(401, "Unauthorized", sip.NewHeader("WWW-Authenticate", c.String()))
}

// authorize is RFC 3261 §10.3 steps 3 and 4 with digest authentication
// (§22.2, RFC 2617 MD5, qop=auth or none). It returns nil when the request
// may change the bindings of aor.
func (r *Registrar) authorize(p *policy, req *sip.Request, aor string, src netip.AddrPort, now time.Time) error {
	ip := src.Addr()
	mnow := r.mono(now)
	if r.limiter.blocked(ip, mnow) {
		r.blocked.Add(1)
		return refuse(403, "Too Many Failed Attempts")
	}
	var cred *digest.Credentials
	malformed := false
	for _, h := range header.All(nil, req.Headers(), "Authorization") { // RFC 3261 §20.7
		c, err := digest.ParseCredentials(h.Value())
		if err != nil {
			malformed = true
			continue
		}
		if c.Realm == p.realm { // credentials for other realms are not ours (§22.2)
			cred = c
			break
		}
	}
	if cred == nil {
		if malformed {
			return refuse(400, "Malformed Authorization")
		}
		return r.challenge(p, now, false)
	}
	if cred.Username == "" || cred.URI == "" || cred.Nonce == "" || cred.Response == "" {
		return refuse(400, "Incomplete Credentials")
	}
	// The challenge offers MD5 (RFC 2617), which every deployed phone
	// speaks; credentials computed with the RFC 8760 §2 algorithms are
	// verified too.
	switch strings.ToUpper(cred.Algorithm) {
	case "", "MD5", "SHA-256", "SHA-512-256":
	default:
		return refuse(400, "Unsupported Algorithm")
	}
	var qop []string
	switch {
	case cred.QOP == "": // RFC 2069 compatibility (RFC 2617 §3.2.2.1)
	case strings.EqualFold(cred.QOP, "auth"):
		if cred.Cnonce == "" || cred.Nc <= 0 {
			return refuse(400, "Incomplete Credentials")
		}
		qop = []string{"auth"}
	default:
		return refuse(400, "Unsupported qop")
	}
	fail := func(why string) error {
		r.authFailures.Add(1)
		if r.limiter.fail(ip, mnow) {
			r.log.Warn("registrar: source blocked after failed authentication attempts",
				"ip", ip, "failures", MaxFailedAttempts, "within", FailureWindow, "blocked_for", BlockDuration)
		}
		r.log.Debug("registrar: authentication failed", "aor", aor, "username", cred.Username, "source", src, "reason", why)
		return refuse(403, "Forbidden")
	}
	ts, ok := r.checkNonce(cred.Nonce, p.realm)
	if !ok {
		return fail("nonce not issued by us")
	}
	pw, ok := p.users[cred.Username]
	if !ok {
		return fail("unknown user")
	}
	exp, err := digest.Digest(&digest.Challenge{
		Realm:     p.realm,
		Nonce:     cred.Nonce,
		Algorithm: cred.Algorithm,
		QOP:       qop,
	}, digest.Options{
		Method:   string(req.Method),
		URI:      cred.URI,
		Username: cred.Username,
		Password: pw,
		Cnonce:   cred.Cnonce,
		Count:    cred.Nc,
	})
	if err != nil {
		return refuse(400, "Unsupported Credentials")
	}
	if subtle.ConstantTimeCompare([]byte(strings.ToLower(cred.Response)), []byte(exp.Response)) != 1 {
		return fail("wrong response")
	}
	// §10.3 step 4: the authenticated user may change only its own AOR.
	if cred.Username != aor {
		return refuse(403, "Forbidden")
	}
	if age := now.Unix() - ts; age > int64(NonceLifetime/time.Second) || age < -int64(NonceLifetime/time.Second) {
		return r.challenge(p, now, true)
	}
	return nil
}

// limiter counts failed attempts per source IP in a fixed-size table.
type limiter struct {
	mu  sync.Mutex
	e   [limiterEntries]limEntry
	idx map[netip.Addr]uint16
	n   int
}

type limEntry struct {
	ip           netip.Addr
	window       int64 // monotonic ns: start of the current failure window
	last         int64 // last failure
	blockedUntil int64
	fails        int
}

func (l *limiter) init() { l.idx = make(map[netip.Addr]uint16, limiterEntries) }

// blocked reports whether ip is blocked at now.
func (l *limiter) blocked(ip netip.Addr, now int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.idx[ip]
	return ok && now < l.e[i].blockedUntil
}

// fail records a failed attempt and reports whether it blocked ip.
func (l *limiter) fail(ip netip.Addr, now int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.idx[ip]
	if !ok {
		if l.n < limiterEntries {
			i = uint16(l.n)
			l.n++
		} else {
			i = l.victim(now)
			delete(l.idx, l.e[i].ip)
		}
		l.e[i] = limEntry{ip: ip, window: now}
		l.idx[ip] = i
	}
	e := &l.e[i]
	if now-e.window >= int64(FailureWindow) {
		e.window, e.fails = now, 0
	}
	e.last = now
	e.fails++
	if e.fails >= MaxFailedAttempts && now >= e.blockedUntil {
		e.blockedUntil = now + int64(BlockDuration)
		e.window, e.fails = now+int64(BlockDuration), 0 // a fresh window after the block
		return true
	}
	return false
}

// victim is the entry to forget: the least recently failing one that is not
// blocked, else the least recently failing one.
func (l *limiter) victim(now int64) uint16 {
	best, bestBlocked := -1, -1
	for i := range l.e {
		e := &l.e[i]
		if now >= e.blockedUntil {
			if best < 0 || e.last < l.e[best].last {
				best = i
			}
		} else if bestBlocked < 0 || e.last < l.e[bestBlocked].last {
			bestBlocked = i
		}
	}
	if best < 0 {
		best = bestBlocked
	}
	return uint16(best)
}
