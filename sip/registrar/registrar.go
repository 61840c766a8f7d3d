// Package registrar is the site's SIP registrar and its NAT keep-alive
// engine.
//
// It exists because the phones of a site usually sit behind NAT: a phone
// registers from a private address, and an incoming call sent to the private
// Contact it announced goes nowhere. The registrar therefore records where
// each REGISTER really came from (RFC 3581: the packet's source address and
// port, echoed in the Via as received/rport) and routes calls for the user to
// that NAT binding, through the socket the REGISTER came in on. To keep the
// NAT mapping open while the phone is registered, and to notice a phone that
// has gone away, it sends keep-alives paced by timers/keepalive (DESIGN.md
// §3): a bare UDP message (VOS3000 style), a CRLF ping (RFC 5626 §4.4.1) or
// a SIP OPTIONS request whose unanswered pings evict the binding.
//
// REGISTER processing follows RFC 3261 §10.3 step by step, including
// optional digest authentication (RFC 3261 §22, RFC 2617 with MD5 and
// qop=auth) with stateless nonces and a per-source limit on failed attempts.
// A request is validated completely before anything changes: a REGISTER is
// all-or-nothing.
//
// The binding table is the fixed-capacity keepalive.Table, allocated once by
// New together with every per-binding record; a full table answers 503 while
// existing bindings keep working. The B2BUA owns the sockets and the sipgo
// transport and transaction layers and calls this package's API; the
// registrar itself does no network I/O except through Sender.
package registrar

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sbcd/timers/huge"
	"sbcd/timers/keepalive"
)

// Protocol constants.
const (
	// DefaultExpires is the expiry of a contact that carries neither an
	// expires parameter nor an Expires header (RFC 3261 §10.3 step 6: "a
	// locally-configured default value"; 3600 s is the value RFC 3261
	// §10.2.1.1 recommends).
	DefaultExpires = 3600 * time.Second
	// DefaultRealm is the digest realm when Options.Realm is empty.
	DefaultRealm = "sbcd"
	// RetryAfterFull is the Retry-After of a 503 sent because the binding
	// table is full (RFC 3261 §21.5.4, §20.33), in seconds.
	RetryAfterFull = 60
	// MaxKeyLen is the longest address-of-record plus contact URI the
	// binding table stores: at most MaxKeyLen/2 bytes each; a longer user
	// or contact is refused with 400. The table keeps MaxKeyLen bytes of
	// key per binding (25.6 MB for 100,000 bindings), the AOR index half.
	MaxKeyLen = 256
	// maxExpiresSeconds is the largest expiry value parsed (RFC 3261 §20.19:
	// 2^32-1; larger values are treated as this).
	maxExpiresSeconds = math.MaxUint32
)

// ErrOptions is wrapped by every error New returns for invalid Options.
var ErrOptions = errors.New("registrar: invalid options")

// Options configure a Registrar. cmd/sbcd maps [registrar] and
// [nat_keepalive] onto it.
type Options struct {
	// MaxBindings is the capacity of the binding table
	// (registrar.max_bindings), allocated by New.
	MaxBindings int
	// MinExpires is registrar.min_expires: a contact asking for a shorter
	// (non-zero) expiry gets 423 Interval Too Brief with Min-Expires.
	MinExpires time.Duration
	// MaxExpires is registrar.max_expires: longer expiries are shortened.
	MaxExpires time.Duration
	// Auth requires digest authentication (registrar.auth).
	Auth bool
	// Users are the [[registrar.user]] entries, name -> password. When not
	// empty only these users may register (404 otherwise), also without
	// Auth. Empty with Auth false: anyone may register.
	Users map[string]string
	// Realm is the digest realm; DefaultRealm when empty.
	Realm string
	// Keepalive are the [nat_keepalive] parameters.
	Keepalive keepalive.Params
	// Logger receives the registrar's logs; slog.Default() when nil.
	Logger *slog.Logger

	now  func() time.Time // the clock; time.Now when nil (tests: virtual time)
	rand func() uint64    // randomness for the nonce key, branches, tags, Call-IDs; safe for concurrent use; tests inject
}

// Flow names the socket a binding's traffic uses.
type Flow struct {
	Network string // "UDP" or "TCP"
	Socket  int    // index of the listening socket the REGISTER came in on (meaningful for UDP)
}

// Keepalive is one keep-alive the pacer released, for Sender.
type Keepalive struct {
	Flow    Flow
	Dst     netip.AddrPort
	Payload []byte // shared between keep-alives: read only
	// Err is set by the Sender when this keep-alive could not be sent.
	Err error
}

// Sender is implemented by the B2BUA: it owns the SIP sockets.
type Sender interface {
	// SendKeepalives writes each keep-alive of batch: its Payload to its
	// Dst from the SIP listening socket of its Flow (UDP), or on the TCP
	// connection held with Dst (TCP), and sets the Err of those it could
	// not send. The batch is what one pacer tick released (at most
	// send_one_time keep-alives), so a Sender can hand the UDP ones to the
	// kernel in one system call. It must not block for long and must not
	// keep batch or the payloads after it returns (the registrar reuses
	// them).
	SendKeepalives(batch []Keepalive)
	// SentBy is the host and port sbcd names itself by on network ("UDP"
	// or "TCP"), for the Via and From of OPTIONS pings.
	SentBy(network string) (host string, port int)
}

// Contact is where a call for a registered user goes.
type Contact struct {
	// URI is the Request-URI of a call to the binding: the registered
	// Contact URI without its header components, which a Request-URI must
	// not carry and sbcd never applies (RFC 3261 §19.1.1, §19.1.5; RFC
	// 4475 §3.3.14).
	URI    string
	Source netip.AddrPort // the binding: where the REGISTER came from (RFC 3581)
	Flow   Flow
	NATed  bool
}

// Binding is one registration, for `show registrations`.
type Binding struct {
	AOR        string // user part of the To URI
	Contact    string // registered Contact URI
	Source     netip.AddrPort
	Network    string
	Socket     int
	NATed      bool
	Expires    time.Time // deadline of the registration
	Remaining  time.Duration
	Q          float64
	Registered time.Time // last REGISTER that refreshed it
}

// Stats is a snapshot for the console and the LEDs.
type Stats struct {
	Capacity       int     // binding table capacity
	Bindings       int     // bindings in the table
	NATed          int     // of which NATed
	PingsSent      uint64  // keep-alives sent, cumulative
	PingsPerSecond float64 // keep-alives sent in the last complete second
	SendErrors     uint64  // keep-alives the Sender failed to send
	Evictions      uint64  // bindings evicted for unanswered OPTIONS pings
	Expirations    uint64  // bindings removed because their registration expired
	AuthFailures   uint64  // failed digest attempts (403)
	Blocked        uint64  // REGISTERs refused by the failed-attempt rate limit
	Full           uint64  // REGISTERs answered 503 because the table was full
}

const none = ^uint32(0)

// The registrar's per-binding data holds no pointers but one string per
// binding (names), and its maps are keyed by values without pointers
// (srcKey, the hash of an AOR), so the garbage collector scans none of
// them. Go forces a collection every two minutes even when nothing is
// allocated; at 100,000 bindings it marked four strings per binding and
// scanned 29 MB of records and maps: 69 ms of CPU in sbcd, a tenth of its
// CPU per keep-alive in a bench window that holds one (BENCHMARKS.md,
// change 32).

// record is the registrar's side data of one binding, indexed by
// keepalive.ID.Index(); its strings are in names at the same index.
type record struct {
	id         keepalive.ID // 0: slot unused
	ahash      uint64       // aorHash of the AOR: its key in Registrar.aors
	cseq       uint32
	q          uint16 // thousandths
	net        uint8  // Flow.Network, as an index into Registrar.nets
	socket     int    // Flow.Socket
	registered int64  // monotonic ns of the last REGISTER
	source     srcKey
	pingTag    uint64 // random part of the last OPTIONS branch
	next, prev uint32 // the list of bindings whose AOR has the hash ahash
}

// names are a binding's AOR, contact, To URI (the To of OPTIONS pings)
// and Call-ID, as parts of one string: one object per binding for the
// garbage collector to mark. It is a copy, so no string of the parsed
// REGISTER (which share its header texts) is kept.
type names struct {
	s       string
	a, c, t uint32 // ends of the AOR, the contact and the To URI in s
}

func makeNames(aor, contact, toURI, callID string) names {
	a := len(aor)
	c := a + len(contact)
	t := c + len(toURI)
	return names{s: strings.Join([]string{aor, contact, toURI, callID}, ""), a: uint32(a), c: uint32(c), t: uint32(t)}
}

func (n *names) aor() string     { return n.s[:n.a] }
func (n *names) contact() string { return n.s[n.a:n.c] }
func (n *names) toURI() string   { return n.s[n.c:n.t] }
func (n *names) callID() string  { return n.s[n.t:] }

// srcKey is a normalised source (normAddrPort) without the pointer a
// netip.Addr holds: IPv4 as IPv4-mapped IPv6.
type srcKey struct {
	ip   [16]byte
	port uint16
}

func keyOf(a netip.AddrPort) srcKey { return srcKey{ip: a.Addr().As16(), port: a.Port()} }

func (k srcKey) addrPort() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(k.ip).Unmap(), k.port)
}

// maxNets bounds the distinct Flow.Network names the registrar keeps
// (record.net): the B2BUA passes "UDP" and "TCP".
const maxNets = 16

// netIndex returns the index of network in r.nets, adding it; false when
// maxNets names are kept already. Called under mu.
func (r *Registrar) netIndex(network string) (uint8, bool) {
	if i := slices.Index(r.nets, network); i >= 0 {
		return uint8(i), true
	}
	if len(r.nets) >= maxNets {
		return 0, false
	}
	r.nets = append(r.nets, network)
	return uint8(len(r.nets) - 1), true
}

func (r *Registrar) flowOf(rc *record) Flow { return Flow{Network: r.nets[rc.net], Socket: rc.socket} }

// seededHash returns the hash of AORs for Registrar.aorHash: maphash with
// a random seed.
func seededHash() func(string) uint64 {
	seed := maphash.MakeSeed()
	return func(aor string) uint64 { return maphash.String(seed, aor) }
}

// Registrar is the registrar and keep-alive engine. Its methods are safe
// for concurrent use.
type Registrar struct {
	log  *slog.Logger
	now  func() time.Time
	rand func() uint64
	// newWaiter makes what Run waits on between batches (waiter.go);
	// tests swap in the time.Timer one.
	newWaiter func(context.Context) (waiter, error)
	// aorHash is the key of an AOR in aors (seededHash). Two AORs may
	// share a hash: whoever walks a list compares the AOR. Tests make
	// every AOR collide.
	aorHash  func(aor string) uint64
	epoch    time.Time // monotonic 0 of the table
	pol      atomic.Pointer[policy]
	nonceKey [32]byte

	limiter limiter

	mu      sync.Mutex
	tab     *keepalive.Table
	rec     []record
	recHuge bool // rec was advised huge pages
	names   []names
	nets    []string          // Flow.Network names, record.net
	aors    map[uint64]uint32 // aorHash -> first record of its list; bounded by the table (every key has a binding)
	bySrc   map[srcKey]uint32
	byIP    map[[16]byte]uint32
	ka      kaState // keep-alive payload cache, per params
	ring    [pingRing]secondCount
	// counters under mu
	expired uint64 // expirations found by Register before the pacer

	// tick scratch, owned by the tick caller (Run); tickMu serialises
	// direct callers.
	tickMu  sync.Mutex
	events  []keepalive.Event
	pending []Keepalive
	optBuf  []byte

	// Run sleeps while the table is empty (asleep, under mu) until a
	// binding is added (wake).
	asleep bool
	wake   chan struct{}

	running      atomic.Bool
	optionsMode  atomic.Bool
	sendErrors   atomic.Uint64
	authFailures atomic.Uint64
	blocked      atomic.Uint64
	full         atomic.Uint64
	panics       atomic.Uint64 // recovered in Register; the fuzz test wants 0
}

// New validates o (errors wrap ErrOptions) and allocates the binding table,
// the per-binding records and the indexes.
func New(o Options) (*Registrar, error) {
	var errs []error
	if o.MaxBindings < 1 || o.MaxBindings >= 1<<30 {
		errs = append(errs, fmt.Errorf("%w: registrar.max_bindings %d out of range (1..%d)", ErrOptions, o.MaxBindings, 1<<30-1))
	}
	pol, err := newPolicy(o)
	if err != nil {
		errs = append(errs, err)
	}
	if err := o.Keepalive.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrOptions, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	r := &Registrar{
		log:  o.Logger,
		now:  o.now,
		rand: o.rand,
	}
	r.pol.Store(pol)
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.rand == nil {
		r.rand = rand.Uint64
		if err := cryptoKey(r.nonceKey[:]); err != nil {
			return nil, fmt.Errorf("registrar: nonce key: %w", err)
		}
	} else {
		for i := 0; i < len(r.nonceKey); i += 8 {
			v := r.rand()
			for j := range 8 {
				r.nonceKey[i+j] = byte(v >> (8 * j))
			}
		}
	}
	r.epoch = r.now()
	tab, err := keepalive.New(o.MaxBindings, MaxKeyLen, o.Keepalive, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	r.tab = tab
	r.aors = make(map[uint64]uint32, min(o.MaxBindings, 4096))
	r.aorHash = seededHash()
	// Records hold no pointers (the garbage collector has nothing to scan
	// in them): from 2 MiB on they live on huge pages outside the Go heap
	// (timers/huge).
	r.rec, r.recHuge = huge.Make[record](r, o.MaxBindings)
	r.names = make([]names, o.MaxBindings)
	r.nets = []string{"UDP", "TCP"}
	r.bySrc = make(map[srcKey]uint32, min(o.MaxBindings, 4096))
	r.byIP = make(map[[16]byte]uint32, min(o.MaxBindings, 4096))
	r.limiter.init()
	r.setKA(o.Keepalive)
	r.events = make([]keepalive.Event, 0, o.Keepalive.SendOneTime)
	r.pending = make([]Keepalive, 0, o.Keepalive.SendOneTime)
	r.wake = make(chan struct{}, 1)
	r.newWaiter = newWaiter
	return r, nil
}

// mono is t on the table's monotonic nanosecond clock.
func (r *Registrar) mono(t time.Time) int64 { return int64(t.Sub(r.epoch)) }

// Locate returns the contact a call for user goes to: the unexpired binding
// with the highest q, then the most recently registered.
func (r *Registrar) Locate(user string) (Contact, bool) {
	now := r.mono(r.now())
	r.mu.Lock()
	defer r.mu.Unlock()
	head, ok := r.aors[r.aorHash(user)]
	if !ok {
		return Contact{}, false
	}
	best := none
	for i := head; i != none; i = r.rec[i].next {
		rc := &r.rec[i]
		if r.names[i].aor() != user {
			continue
		}
		b, ok := r.tab.Get(rc.id)
		if !ok || now >= b.Expires {
			continue
		}
		if best == none || rc.q > r.rec[best].q || (rc.q == r.rec[best].q && rc.registered > r.rec[best].registered) {
			best = i
		}
	}
	if best == none {
		return Contact{}, false
	}
	rc := &r.rec[best]
	b, _ := r.tab.Get(rc.id)
	return Contact{URI: withoutHeaders(r.names[best].contact()), Source: b.Source, Flow: r.flowOf(rc), NATed: b.NATed}, true
}

// withoutHeaders cuts the header component ("?Route=...") off a SIP URI.
// A '?' can occur unescaped in the user part (RFC 3261 §25.1,
// user-unreserved) but not after the '@': host, port and parameters
// never contain one.
func withoutHeaders(uri string) string {
	at := strings.LastIndexByte(uri, '@')
	if i := strings.IndexByte(uri[at+1:], '?'); i >= 0 {
		return uri[:at+1+i]
	}
	return uri
}

// Registered reports whether src is the source of a live binding. For UDP
// the address and port must match; for "TCP" (and any other stream
// network) the IP alone decides, since a TCP client's source port changes
// with every connection. A binding that expired less than one keep-alive
// period ago may still count (the pacer removes it when its slot comes
// round).
func (r *Registrar) Registered(src netip.AddrPort, network string) bool {
	src = normAddrPort(src)
	r.mu.Lock()
	defer r.mu.Unlock()
	k := keyOf(src)
	if strings.EqualFold(network, "UDP") {
		return r.bySrc[k] > 0
	}
	return r.byIP[k.ip] > 0
}

// Stats returns the counters.
func (r *Registrar) Stats() Stats {
	sec := r.mono(r.now())/int64(time.Second) - 1
	r.mu.Lock()
	ts := r.tab.Stats()
	var pps float64
	if c := r.ring[uint64(sec)%pingRing]; sec >= 0 && c.sec == sec {
		pps = float64(c.n)
	}
	s := Stats{
		Capacity:       r.tab.Cap(),
		Bindings:       ts.Bindings,
		NATed:          ts.NATed,
		PingsSent:      ts.PingsSent,
		PingsPerSecond: pps,
		Evictions:      ts.Evictions,
		Expirations:    ts.Expirations + r.expired,
	}
	r.mu.Unlock()
	s.SendErrors = r.sendErrors.Load()
	s.AuthFailures = r.authFailures.Load()
	s.Blocked = r.blocked.Load()
	s.Full = r.full.Load()
	return s
}

// Bindings returns a snapshot of every unexpired binding, sorted by AOR
// then contact.
func (r *Registrar) Bindings() []Binding {
	nowT := r.now()
	now := r.mono(nowT)
	r.mu.Lock()
	out := make([]Binding, 0, r.tab.Len())
	for i := range r.rec {
		rc := &r.rec[i]
		if rc.id == 0 {
			continue
		}
		b, ok := r.tab.Get(rc.id)
		if !ok || now >= b.Expires {
			continue
		}
		out = append(out, Binding{
			AOR:        r.names[i].aor(),
			Contact:    r.names[i].contact(),
			Source:     b.Source,
			Network:    r.nets[rc.net],
			Socket:     rc.socket,
			NATed:      b.NATed,
			Expires:    r.epoch.Add(time.Duration(b.Expires)),
			Remaining:  time.Duration(b.Expires - now),
			Q:          float64(rc.q) / 1000,
			Registered: r.epoch.Add(time.Duration(rc.registered)),
		})
	}
	r.mu.Unlock()
	sortBindings(out)
	return out
}

func sortBindings(b []Binding) {
	slices.SortFunc(b, func(x, y Binding) int {
		if c := strings.Compare(x.AOR, y.AOR); c != 0 {
			return c
		}
		return strings.Compare(x.Contact, y.Contact)
	})
}

// link adds record i at the head of the list of its AOR's hash
// (rc.ahash).
func (r *Registrar) link(i uint32) {
	rc := &r.rec[i]
	rc.prev = none
	if head, ok := r.aors[rc.ahash]; ok {
		rc.next = head
		r.rec[head].prev = i
	} else {
		rc.next = none
	}
	r.aors[rc.ahash] = i
}

// unlink takes record i out of its AOR's list.
func (r *Registrar) unlink(i uint32) {
	rc := &r.rec[i]
	if rc.next != none {
		r.rec[rc.next].prev = rc.prev
	}
	switch {
	case rc.prev != none:
		r.rec[rc.prev].next = rc.next
	case rc.next != none:
		r.aors[rc.ahash] = rc.next
	default:
		delete(r.aors, rc.ahash)
	}
}

// forget clears the side data of slot i after its binding left the table
// (removed by Register, expired or evicted by the pacer).
func (r *Registrar) forget(i uint32) {
	rc := &r.rec[i]
	if rc.id == 0 {
		return
	}
	r.unlink(i)
	r.dropSource(rc.source)
	*rc = record{}
	r.names[i] = names{}
}

func (r *Registrar) addSource(s srcKey) {
	r.bySrc[s]++
	r.byIP[s.ip]++
}

func (r *Registrar) dropSource(s srcKey) {
	if n := r.bySrc[s]; n <= 1 {
		delete(r.bySrc, s)
	} else {
		r.bySrc[s] = n - 1
	}
	if n := r.byIP[s.ip]; n <= 1 {
		delete(r.byIP, s.ip)
	} else {
		r.byIP[s.ip] = n - 1
	}
}

// normAddrPort strips the IPv4-mapped prefix and the zone: the key under
// which a source is recorded.
func normAddrPort(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap().WithZone(""), a.Port())
}

// normFlow spells the network in upper case ("UDP", "TCP").
func normFlow(f Flow) Flow {
	switch {
	case strings.EqualFold(f.Network, "UDP"):
		f.Network = "UDP"
	case strings.EqualFold(f.Network, "TCP"):
		f.Network = "TCP"
	default:
		f.Network = strings.ToUpper(f.Network)
	}
	return f
}

func itoa(n int) string { return strconv.Itoa(n) }
