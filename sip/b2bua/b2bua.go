// Package b2bua is sbcd's back-to-back user agent: it relays calls between
// the site's devices and the upstream softswitch as two dialogs per call (the
// A-leg, where sbcd is UAS towards the caller, and the B-leg, where sbcd is
// UAC towards the callee), and keeps each leg honest with RFC 4028 session
// timers (DESIGN.md §2).
//
// Why it is built this way (DESIGN.md §1): sipgo hands every received
// message to its own goroutine, so two messages of one call may be handled
// out of order. Calls therefore live in shards: each shard is one goroutine
// that owns a fixed-capacity dialog table and a timing wheel, and every
// message, timer expiry and transaction outcome of a call is an event
// processed in order by the call's shard. sipgo's handler goroutines only
// parse and route; nothing blocks inside a shard. Over UDP a shard runs the
// client transactions of the requests it sends itself, timed by its wheel
// tick, and gets their responses straight from the socket (clienttx.go);
// other requests are sent by short-lived goroutines through sipgo's
// transaction layer that post their outcome back as another event. Over
// UDP, too, the socket's read filter hands a new call's INVITE, its
// retransmissions, CANCEL and ACK, and every BYE and ACK of a call to the
// shard without sipgo's transaction layer, and the shard runs the INVITE
// server transaction (uas.go); what a check refuses, re-INVITEs, UPDATEs
// and the other in-dialog requests, and everything over TCP go through
// sipgo's transactions.
//
// sipgo's Server terminates a server transaction as soon as its handler
// returns, which does not fit a handler that only posts an event; this
// package therefore runs directly on sipgo's transport and transaction
// layers, answers from the shard with ServerTx.Respond, and builds every
// in-dialog request (ACK, BYE, UPDATE, re-INVITE, CANCEL) itself from the
// compact per-leg state kept in the dialog slot (RFC 3261 §12.2.1.1). What
// a shard sends over UDP on its own (its answers to the caller's INVITE
// and to BYEs; the B-leg INVITE, its CANCEL and the ACK of its refusal;
// the ACKs and BYEs of a leg without a route set) it writes as bytes, the
// same bytes sipgo would write, without building sipgo messages
// (response.go, request.go). What a shard needs only a few fields of (the
// caller's ACK and a plain BYE, the callee's 100, a 180 without a body and
// the answer to a BYE) the read filter reads without sipgo's parser,
// strictly, and parses whatever it does not read exactly as sipgo would
// (raw.go). The only sipgo objects a slot holds are those of transactions
// in progress (the caller's INVITE until its final answer, a B-leg INVITE
// that went through sipgo until its final answer, a relayed re-INVITE
// until the other side answers).
//
// Every request is checked as a UAS first (RFC 3261 §8.2, validate.go), in
// the order of that section:
//   - A version other than SIP/2.0 gets 505; a request without To, From,
//     Call-ID, CSeq or Via, or with one of the single-valued header fields
//     (Call-ID, From, To, CSeq, Max-Forwards, Content-Length, Content-Type)
//     twice, gets 400 (§8.1.1, §7.3.1). sipgo's parser drops what it
//     cannot parse without an answer over UDP and closes a TCP connection
//     it cannot frame; its transaction layer answers 400 itself to a
//     request it cannot key (no usable branch, From tag or CSeq).
//   - Authentication (§8.2: it comes first): a new INVITE from a source
//     that is neither a device nor the upstream gets 403 before anything
//     else, so an unknown peer learns nothing of sbcd's extensions. Requests
//     sbcd answers itself (OPTIONS, refusals) need no authentication.
//   - Method inspection (§8.2.1): outside a dialog, an unknown method gets
//     501 (an escaped method such as RE%47IST%45R is just unknown); a known
//     one sbcd does not handle there (REGISTER, MESSAGE, INFO, NOTIFY,
//     SUBSCRIBE, REFER, PRACK, PUBLISH) gets 405 with Allow. REGISTER goes
//     to Options.Registrar after the CSeq and header checks (the registrar
//     authenticates it itself, RFC 3261 §10.3); without a registrar it gets
//     405: sbcd understands it but takes no bindings (§21.4.6). Then the
//     CSeq method must match the request's (§8.1.1.5), else 400. Inside a
//     dialog, methods sbcd does not handle are relayed to the other leg.
//   - Header inspection (§8.2.2): a Request-URI scheme other than sip or
//     sips gets 416 (tel URIs are not translated); Require option tags
//     other than timer get 420 with Unsupported (not for ACK, CANCEL).
//   - Content processing (§8.2.3), new INVITEs only: a body that is not
//     application/sdp gets 415 with Accept: application/sdp (multipart
//     bodies too: sbcd resends a leg's body as SDP in session refreshes);
//     a Content-Encoding other than identity gets 415 with
//     Accept-Encoding; an Accept without application/sdp gets 406
//     (§21.4.7); a body without Content-Type gets 400 (§20.15).
//   - Max-Forwards 0 on an INVITE, which sbcd would forward as the B-leg,
//     gets 483 (§16.3 by analogy); an OPTIONS addressed to sbcd is
//     answered 200 with Allow, Accept, Accept-Encoding, Accept-Language and
//     Supported (§11.2) whatever its Max-Forwards, so operators and tests
//     can ping sbcd.
//   - Only then routing: 404 for an unknown device name, 503 while closing
//     or full. BYE, CANCEL and UPDATE outside a dialog get 481.
//
// Responses that match no client transaction are never answered: only a
// retransmitted 2xx to a B-leg INVITE is ACKed again, everything else
// (RFC 4475 bcast, unreason, ...) is dropped.
//
// Routing (DESIGN.md §5): an INVITE from a device's address or from the
// source of a registration goes to Upstream; an INVITE from Upstream goes
// to the [[device]] named by the Request-URI user, else to the user's
// registration: to its NAT binding (the source of the REGISTER, through
// the socket it came in on), with the registered Contact as Request-URI
// (DESIGN.md §3); 404 when there is neither. Any other source gets 403.
// Over TCP the source port is ephemeral, so the IP address alone decides.
// Upstream and devices can change live (SetRouting).
// sbcd names its shard in the first two hex digits of every tag and B-leg
// Call-ID it makes, so an in-dialog request finds its shard from its To tag
// without a shared map.
//
// Choices where DESIGN.md is silent:
//   - A caller refused because the table is full gets 503 with Retry-After
//     and a CDR line with reason table_full and code 503 (no slot ever held
//     the call); the refusal is also counted under table_full in Stats.
//   - A callee whose 422 cannot be satisfied (its Min-SE is above one day,
//     or still too high after session.MaxRetries422 retries) makes sbcd
//     answer the caller 500 "Session Interval Negotiation Failed", never
//     the 422 (DESIGN.md §2); the CDR says rejected with code 500.
//   - A B-leg INVITE that is never answered (Timer B) answers the caller
//     408; early calls that sbcd ends get 480 (shutdown) or 408
//     (early_timeout), and the B-leg a CANCEL.
//   - In-dialog requests go to the first hop of the route set, else to the
//     address the leg's traffic uses (the caller's source address, as
//     RFC 3581 does for responses, or the callee's configured address),
//     not to the host of the remote target: the devices sit behind NAT.
//     Route sets are used as loose routes (RFC 3261 §16.12.1.1); strict
//     routers are not supported.
//   - The 2xx to the caller is retransmitted over UDP at T1 doubling to T2
//     until the ACK (RFC 3261 §13.3.1.4), in the shard's clock; so is
//     sbcd's 2xx to a re-INVITE on either leg (relayed or a refresh
//     answered locally), given up after 64*T1 without an ACK (the dialog
//     is left to the session timer rather than BYEd at once).
//   - A call that ends before the B-leg INVITE drew any provisional
//     answer holds its CANCEL until one comes (RFC 3261 §9.1); a final
//     answer that comes first needs none (a 2xx is ACKed and BYEd), and
//     Timer B ends a B-leg INVITE that never gets an answer.
//   - In-dialog requests sbcd does not handle itself (INFO, MESSAGE,
//     NOTIFY, REFER, unknown methods) are relayed to the other leg with
//     their body and the header fields that give it meaning, and the
//     other side's final answer is relayed back (408 when none comes);
//     before both legs are established they get 481.
//   - sipgo keeps every finished transaction for up to 32 s to absorb
//     retransmissions, with its parsed messages and timers (DESIGN.md
//     §10). sbcd keeps what RFC 3261 needs instead: the final response of
//     a non-INVITE server transaction over UDP goes, as bytes, to a
//     fixed-size retransmission cache for 64*T1 and the transaction ends
//     at once (§17.2.2, rtx.go); a non-INVITE client transaction ends at
//     its final response (§17.1.2.2: Timer K only absorbs retransmitted
//     responses, which sbcd drops anyway); a non-2xx final answer to an
//     INVITE ends its transaction at the ACK rather than Timer I later
//     (§17.2.1); and a non-2xx final answer to an INVITE sbcd sent ends
//     that transaction at once, its ACK kept in the cache for Timer D
//     (§17.1.1.2).
//   - Options.TCPIdleTimeout closes a TCP connection that stays silent,
//     also one holding half a message; it is off by default (devices on
//     TCP need their connection for in-dialog requests).
package b2bua

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/sip/cdr"
	"sbcd/sip/registrar"
	"sbcd/timers/session"
)

// Listen is one listening socket: Network is "udp" or "tcp", Addr is
// host:port (port 0 picks a free port; see B2BUA.Addrs).
type Listen struct {
	Network string
	Addr    string
}

// Options configure a B2BUA. cmd/sbcd maps the configuration onto it.
type Options struct {
	// Listen lists the SIP sockets (sip.listen).
	Listen []Listen
	// Upstream is the softswitch, host:port: a call from a device goes
	// there (sip.upstream). A host name is resolved once, by New.
	Upstream string
	// Advertised is the address (IP or host name) sbcd puts in its Via and
	// Contact instead of the listening IP (sip.advertised_address), for a
	// box behind NAT or listening on a wildcard address. Empty: the
	// listening IP.
	Advertised string
	// Devices maps a device name to its address ([[device]]): a call from
	// a device's address goes upstream; a call from the upstream goes to
	// the device named by the Request-URI user.
	Devices map[string]netip.AddrPort
	// Params are the session-timer parameters ([session_timer]).
	Params session.Params
	// MaxCalls is the dialog table size over all shards (sip.max_calls).
	MaxCalls int
	// Shards is the number of shards, 2 when 0; at most 256.
	Shards int
	// CDR receives one record per call that got a slot; nil drops them.
	CDR CDRSink
	// Logger receives the B2BUA's logs; slog.Default() when nil.
	Logger *slog.Logger
	// Trace logs every SIP message sent and received at debug level with
	// a "trace" attribute ([trace] enabled).
	Trace bool
	// Registrar is the site's registrar and NAT keep-alive engine
	// (sip/registrar, DESIGN.md §3): REGISTERs go to it, a call from the
	// upstream to a registered user goes to the user's binding, a call from
	// a binding's source goes upstream, and the answers to its OPTIONS
	// pings come back through it. nil: REGISTER gets 405 and only
	// [[device]] entries place calls.
	Registrar Registrar
	// TCPIdleTimeout closes a TCP connection that received nothing for
	// this long, also one left with half a message (RFC 3261 §18.3: the
	// rest never comes); 0 keeps connections until the peer closes them.
	// It should exceed the keep-alive and refresh intervals of devices on
	// TCP, whose calls need the connection.
	TCPIdleTimeout time.Duration
	// RtxCache is the size in bytes of the arena that keeps the final
	// responses of non-INVITE transactions sbcd answered over UDP for
	// 64*T1, to answer retransmitted requests (RFC 3261 §17.2.2) without
	// keeping sipgo's transactions (rtx.go). 0: RtxCacheDefault; below 0:
	// no cache, sipgo keeps each such transaction for Timer J.
	RtxCache int

	// now and rand are injectable for tests; handled, when set, is called
	// by a shard after each event it handled, so that a test can wait for
	// what leaves no other trace (a 100 that only stops a timer).
	now     func() time.Time
	rand    func() uint32
	handled func(evKind)
}

// Registrar is what the B2BUA needs of the registrar
// (*registrar.Registrar); cmd/sbcd runs the registrar's pacer with the
// B2BUA as its registrar.Sender, so keep-alives leave from the SIP sockets.
type Registrar interface {
	// Register answers a REGISTER received from src over f.
	Register(req *sip.Request, src netip.AddrPort, f registrar.Flow) *sip.Response
	// Locate returns the binding a call for user goes to.
	Locate(user string) (registrar.Contact, bool)
	// Registered reports whether src is the source of a live binding.
	Registered(src netip.AddrPort, network string) bool
	// KeepaliveAnswer takes a response that matched no transaction and
	// reports whether it answered a keep-alive OPTIONS.
	KeepaliveAnswer(res *sip.Response) bool
}

// CDRSink stores call detail records (DESIGN.md §4). Append must not block
// and must copy r if it keeps it; it calls done once the record is durable
// (or failed); the call's slot is freed only after done. An error from
// Append means done is never called (the slot is freed at once). done may
// be nil for a record that holds no slot (a refused call).
// *cdr.Writer is the production sink.
type CDRSink interface {
	Append(r *cdr.Record, done func(error)) error
}

// Stats is a snapshot of the B2BUA's calls.
type Stats struct {
	Early     int                       // calls not answered yet
	Up        int                       // answered calls
	Unacked   int                       // answered calls whose caller has not ACKed yet
	Ended     map[session.Reason]uint64 // calls ended (or refused) per reason
	FreeSlots int                       // free slots over all shards
	// ServerTx and ClientTx count the transactions sipgo holds for sbcd,
	// including finished ones kept to absorb retransmissions (Timers J,
	// H, I, K; sipgo itself exposes no count), and the shards' own over
	// UDP: their client transactions (clienttx.go) and callers' INVITE
	// transactions (uas.go).
	ServerTx, ClientTx int
	// RtxKept is the number of final responses in the retransmission
	// cache (Options.RtxCache); RtxResent counts the retransmitted
	// requests it answered, RtxEvicted the responses it dropped before
	// their 64*T1 for want of room.
	RtxKept               int
	RtxResent, RtxEvicted uint64
	// RefreshLate is how late sbcd's own refreshes and probes went out
	// against their deadlines, since New.
	RefreshLate Lateness
}

// B2BUA is the call engine. Create it with New, run it with Serve.
type B2BUA struct {
	o      Options
	log    *slog.Logger
	tp     *sip.TransportLayer
	tl     *sip.TransactionLayer
	shards []*shard
	routes atomic.Pointer[routing] // SetRouting
	start  time.Time

	udp []net.PacketConn
	tcp []net.Listener
	rtx *rtxCache // nil: Options.RtxCache < 0, or no UDP socket
	ka  kaSender  // keep-alive writers on udp (register.go)
	// via is the sent-by of each network ("UDP", "TCP").
	via map[string]netip.AddrPort
	// contactUDP is contact("UDP") written once, for the answers the
	// shards write themselves (contactLine); sentByUDP is the sent-by of
	// their Vias over UDP, written as sipgo writes it (writeRequest).
	contactUDP sip.Header
	sentByUDP  string

	// params are the session-timer parameters for new calls and the next
	// refresh (SetParams); trace is Options.Trace, changeable live.
	params atomic.Pointer[session.Params]
	trace  atomic.Bool

	parser   *sip.Parser // the read filter's (parseDirect, responseDirect)
	invites  txKeys      // INVITE server transactions over UDP, sipgo's and the shards'
	late     lateHist    // Stats.RefreshLate
	closing  atomic.Bool // no new calls
	stopped  atomic.Bool // no more messages: Serve is returning
	served   atomic.Bool
	serverTx atomic.Int64 // see Stats.ServerTx
	clientTx atomic.Int64
	rndMu    sync.Mutex
	rndState *rand.PCG
}

// udpBuffer is the socket buffer size sbcd asks for on each UDP listener.
const udpBuffer = 4 << 20

var tuneOnce sync.Once

// TuneSipgo sets what sbcd needs of sipgo's process-wide settings; call it
// at start, before sipgo runs anything. sip.Timer_M (RFC 6026 §7.2, 64*T1)
// keeps an INVITE client transaction Accepted after a 2xx to pass
// retransmissions of it up; sbcd ends the transaction at the 2xx and ACKs
// retransmitted 2xx responses itself (onStrayResponse), but sipgo does not
// stop Timer M when a transaction ends, so the armed timer alone would
// keep the ended transaction, with its INVITE and 2xx, for 32 s (DESIGN.md
// §10). At 0 it fires at once. Safe to call more than once.
func TuneSipgo() {
	tuneOnce.Do(func() { sip.Timer_M = 0 })
}

// ErrOptions is wrapped by New for invalid Options.
var ErrOptions = errors.New("b2bua: invalid options")

// New checks o, binds the listening sockets and allocates every shard's
// dialog table and timing wheel.
func New(o Options) (*B2BUA, error) {
	if o.Shards == 0 {
		o.Shards = 2
	}
	if o.Shards < 1 || o.Shards > 256 {
		return nil, fmt.Errorf("%w: shards %d outside 1..256", ErrOptions, o.Shards)
	}
	if o.MaxCalls < o.Shards {
		return nil, fmt.Errorf("%w: max calls %d below the shard count %d", ErrOptions, o.MaxCalls, o.Shards)
	}
	if err := o.Params.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if len(o.Listen) == 0 {
		return nil, fmt.Errorf("%w: no listen address", ErrOptions)
	}
	b := &B2BUA{o: o, log: o.Logger, via: make(map[string]netip.AddrPort), parser: sip.NewParser()}
	if b.log == nil {
		b.log = slog.Default()
	}
	if b.o.now == nil {
		b.o.now = time.Now
	}
	if b.o.rand == nil {
		b.rndState = rand.NewPCG(uint64(time.Now().UnixNano()), 0x5bcd)
		b.o.rand = b.random
	}
	b.start = b.o.now()
	p := o.Params
	b.params.Store(&p)
	b.trace.Store(o.Trace)
	rt, err := newRouting(o.Upstream, o.Devices)
	if err != nil {
		return nil, err
	}
	b.routes.Store(rt)
	tpOpts := []sip.TransportLayerOption{sip.WithTransportLayerLogger(b.log),
		sip.WithTransportLayerReadFilter(b.readFilter)}
	if o.TCPIdleTimeout > 0 {
		// After the read filter: sipgo copies it into the transport.
		tpOpts = append(tpOpts, sip.WithTransportLayerTransports(sip.TransportsConfig{
			TCP: &sip.TransportTCP{ReadTimeout: o.TCPIdleTimeout}}))
	}
	if o.TCPIdleTimeout < 0 {
		return nil, fmt.Errorf("%w: negative tcp idle timeout", ErrOptions)
	}
	b.tp = sip.NewTransportLayer(net.DefaultResolver, sip.NewParser(), nil, tpOpts...)
	b.tl = sip.NewTransactionLayer(b.tp,
		sip.WithTransactionLayerLogger(b.log),
		sip.WithTransactionLayerUnhandledResponseHandler(b.onStrayResponse))
	b.tl.OnRequest(b.onRequest)
	for i := range o.Shards {
		// Every shard gets MaxCalls/Shards slots, the first ones one
		// more for the remainder: the table holds exactly MaxCalls.
		per := o.MaxCalls / o.Shards
		if i < o.MaxCalls%o.Shards {
			per++
		}
		s, err := newShard(b, i, per)
		if err != nil {
			return nil, fmt.Errorf("b2bua: new shard: %w", err)
		}
		b.shards = append(b.shards, s)
	}
	if err := b.bind(); err != nil {
		b.closeSockets()
		return nil, err
	}
	if _, ok := b.via["UDP"]; ok {
		b.contactUDP = sip.NewHeader("Contact", b.contact("UDP").Value())
		var w bytes.Buffer
		host, port := b.sentBy("UDP")
		writeHost(&w, host, port)
		b.sentByUDP = w.String()
	}
	if o.RtxCache >= 0 && len(b.udp) > 0 {
		size := o.RtxCache
		if size == 0 {
			size = RtxCacheDefault
		}
		// RFC 3261 §17.2.2: Timer J is 64*T1 (sipgo's T1, which tests
		// shorten).
		b.rtx = newRtxCache(size, int64(64*sip.T1), b.mono, b.udp)
	}
	return b, nil
}

func (b *B2BUA) random() uint32 {
	b.rndMu.Lock()
	defer b.rndMu.Unlock()
	return uint32(b.rndState.Uint64())
}

// bind opens the listening sockets.
func (b *B2BUA) bind() error {
	for _, l := range b.o.Listen {
		switch strings.ToLower(l.Network) {
		case "udp":
			c, err := net.ListenPacket("udp", l.Addr)
			if err != nil {
				return fmt.Errorf("b2bua: listen udp %s: %w", l.Addr, err)
			}
			// One socket carries every call's datagrams: the kernel's
			// default buffer (about 208 KB) overflows in bursts from a few
			// thousand calls/s and the drops come back as retransmissions.
			// The kernel caps the request at net.core.rmem_max/wmem_max.
			if uc, ok := c.(*net.UDPConn); ok {
				if err := uc.SetReadBuffer(udpBuffer); err != nil {
					b.log.Warn("cannot enlarge the UDP receive buffer", "addr", l.Addr, "err", err)
				}
				if err := uc.SetWriteBuffer(udpBuffer); err != nil {
					b.log.Warn("cannot enlarge the UDP send buffer", "addr", l.Addr, "err", err)
				}
				// Reads and writes without entersyscall (rawudp_linux.go).
				sc, err := newSIPSocket(uc)
				if err != nil {
					_ = c.Close()
					return fmt.Errorf("b2bua: listen udp %s: %w", l.Addr, err)
				}
				c = sc
			}
			b.udp = append(b.udp, c)
			if _, ok := b.via["UDP"]; !ok {
				b.via["UDP"] = c.LocalAddr().(*net.UDPAddr).AddrPort()
			}
		case "tcp":
			c, err := net.Listen("tcp", l.Addr)
			if err != nil {
				return fmt.Errorf("b2bua: listen tcp %s: %w", l.Addr, err)
			}
			b.tcp = append(b.tcp, c)
			if _, ok := b.via["TCP"]; !ok {
				b.via["TCP"] = c.Addr().(*net.TCPAddr).AddrPort()
			}
		default:
			return fmt.Errorf("%w: network %q is neither udp nor tcp", ErrOptions, l.Network)
		}
	}
	return nil
}

func (b *B2BUA) closeSockets() {
	for _, c := range b.udp {
		_ = c.Close()
	}
	for _, c := range b.tcp {
		_ = c.Close()
	}
}

// Addrs returns the bound listening addresses, in the order of
// Options.Listen, as network and ip:port.
func (b *B2BUA) Addrs() []Listen {
	var out []Listen
	for _, c := range b.udp {
		out = append(out, Listen{Network: "udp", Addr: c.LocalAddr().String()})
	}
	for _, c := range b.tcp {
		out = append(out, Listen{Network: "tcp", Addr: c.Addr().String()})
	}
	return out
}

// Serve serves the listeners and runs the shards until ctx is done, then
// closes the sockets and transactions and stops the shards. Call Shutdown
// first for a graceful stop.
func (b *B2BUA) Serve(ctx context.Context) error {
	if !b.served.CompareAndSwap(false, true) {
		return errors.New("b2bua: serve called twice")
	}
	var wg sync.WaitGroup
	for _, s := range b.shards {
		wg.Go(s.run)
	}
	for _, c := range b.udp {
		wg.Go(func() {
			if err := b.tp.ServeUDP(c); err != nil && ctx.Err() == nil {
				b.log.Error("serve udp", "addr", c.LocalAddr().String(), "error", err)
			}
		})
	}
	for _, c := range b.tcp {
		wg.Go(func() {
			if err := b.tp.ServeTCP(c); err != nil && ctx.Err() == nil {
				b.log.Error("serve tcp", "addr", c.Addr().String(), "error", err)
			}
		})
	}
	for _, c := range b.udp {
		waitListening(ctx, b.tp, c.LocalAddr().String())
	}
	<-ctx.Done()
	b.closing.Store(true)
	// sipgo handles each message in a goroutine of its own, which looks
	// its socket up in a pool that closing the socket empties: a message
	// read just before the close would make sipgo open (and leak) a new
	// socket. Stop dispatching first, let what was read finish, then close.
	b.stopped.Store(true)
	time.Sleep(stopGrace)
	b.closeSockets()
	b.tl.Close()
	for _, s := range b.shards {
		close(s.quit)
	}
	wg.Wait()
	_ = b.tp.Close()
	return nil
}

// stopGrace is how long Serve lets messages already read be handled before
// it closes the sockets.
const stopGrace = 50 * time.Millisecond

// readFilter sees every datagram and stream chunk before sipgo parses
// it: it drops everything once Serve is stopping, and over UDP it answers
// the retransmission of a non-INVITE request sbcd already answered from
// the retransmission cache and drops it (RFC 3261 §17.2.2, rtx.go), so
// that sipgo need not keep the transaction, and it routes ACKs itself
// and BYEs (ackDirect, byeDirect), new INVITEs and what belongs to their
// transactions (inviteDirect, uas.go) and the responses to the shards' own
// client transactions (responseDirect, clienttx.go). It runs in the socket's read
// loop and must not block.
func (b *B2BUA) readFilter(p sip.TransportReadProps, data []byte) ([]byte, error) {
	if b.stopped.Load() {
		return nil, nil
	}
	if p.Transport == "UDP" && (b.rtx.answer(data) || b.ackDirect(p, data) || b.byeDirect(p, data) ||
		b.inviteDirect(p, data) || b.responseDirect(p, data)) {
		return nil, nil
	}
	return data, nil
}

// udpIndexOf is the index in b.udp of the listening socket bound to laddr,
// 0 when it is none of them.
func (b *B2BUA) udpIndexOf(laddr sip.Addr) int {
	ip, ok := netip.AddrFromSlice(laddr.IP)
	if !ok {
		return 0
	}
	ap := netip.AddrPortFrom(ip.Unmap(), uint16(laddr.Port))
	for i, c := range b.udp {
		la := c.LocalAddr().(*net.UDPAddr).AddrPort()
		if netip.AddrPortFrom(la.Addr().Unmap(), la.Port()) == ap {
			return i
		}
	}
	return 0
}

// udpIndexOfAddr is the index in b.udp of the listening socket bound to
// a, as a read filter sees it.
func (b *B2BUA) udpIndexOfAddr(a net.Addr) (int, bool) {
	for i, c := range b.udp {
		if c.LocalAddr() == a {
			return i, true
		}
	}
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return 0, false
	}
	for i, c := range b.udp {
		if c.LocalAddr().(*net.UDPAddr).AddrPort() == ua.AddrPort() {
			return i, true
		}
	}
	return 0, false
}

// udpIndex is the index in b.udp of the listening socket conn sends from,
// 0 when it is none of them.
func (b *B2BUA) udpIndex(conn sip.Connection) int {
	if conn == nil {
		return 0
	}
	i, _ := b.udpIndexOfAddr(conn.LocalAddr())
	return i
}

// waitListening waits until sipgo serves the UDP socket at addr: requests
// are sent from the listening socket, which sipgo only finds once its
// reader registered it.
func waitListening(ctx context.Context, tp *sip.TransportLayer, addr string) {
	for range 400 {
		if c, err := tp.GetConnection("udp", addr); err == nil {
			_, _ = c.TryClose()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// Shutdown stops taking calls (new INVITEs get 503), ends every call with
// reason shutdown (BYE on both legs of answered calls, CANCEL and 480 for
// early ones), and waits until their CDRs are written and every slot is
// free, or ctx is done. Serve must be running.
func (b *B2BUA) Shutdown(ctx context.Context) error {
	b.closing.Store(true)
	for _, s := range b.shards {
		if !s.post(ctx, event{kind: evShutdown}) {
			return fmt.Errorf("b2bua: shutdown: %w", ctx.Err())
		}
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		busy := 0
		for _, s := range b.shards {
			busy += int(s.used.Load())
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("b2bua: shutdown with %d calls left: %w", busy, ctx.Err())
		case <-t.C:
		}
	}
}

// SetParams changes the session-timer parameters live (DESIGN.md §5):
// new calls and the next refresh of every call use them; what a call has
// negotiated (its Session-Expires, its refresher) stays. Invalid p changes
// nothing.
func (b *B2BUA) SetParams(p session.Params) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("b2bua: set params: %w", err)
	}
	b.params.Store(&p)
	return nil
}

// routing is who may place calls and where they go (DESIGN.md §5).
type routing struct {
	upstream netip.AddrPort
	byAddr   map[netip.AddrPort]string // device address → name
	byName   map[string]netip.AddrPort
}

// newRouting resolves upstream (host:port; a host name is resolved now)
// and indexes the devices.
func newRouting(upstream string, devices map[string]netip.AddrPort) (*routing, error) {
	rt := &routing{byAddr: make(map[netip.AddrPort]string, len(devices)), byName: make(map[string]netip.AddrPort, len(devices))}
	if upstream != "" {
		up, err := netip.ParseAddrPort(upstream)
		if err != nil {
			ua, rerr := net.ResolveUDPAddr("udp", upstream)
			if rerr != nil {
				return nil, fmt.Errorf("%w: upstream: %w", ErrOptions, rerr)
			}
			up = ua.AddrPort()
		}
		rt.upstream = netip.AddrPortFrom(up.Addr().Unmap(), up.Port())
	}
	for name, a := range devices {
		if name == "" || !a.IsValid() {
			return nil, fmt.Errorf("%w: device %q has no valid address", ErrOptions, name)
		}
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		rt.byAddr[a] = name
		rt.byName[name] = a
	}
	return rt, nil
}

// SetRouting changes the upstream and the [[device]] list live: new calls
// use them, calls that are up keep their legs. On error nothing changes.
func (b *B2BUA) SetRouting(upstream string, devices map[string]netip.AddrPort) error {
	rt, err := newRouting(upstream, devices)
	if err != nil {
		return fmt.Errorf("b2bua: set routing: %w", err)
	}
	b.routes.Store(rt)
	return nil
}

// SetTrace turns the logging of every SIP message on or off ([trace]).
func (b *B2BUA) SetTrace(on bool) { b.trace.Store(on) }

// Stats returns a snapshot of the calls of every shard.
func (b *B2BUA) Stats() Stats {
	st := Stats{Ended: make(map[session.Reason]uint64),
		ServerTx: int(b.serverTx.Load()), ClientTx: int(b.clientTx.Load()),
		RefreshLate: b.late.snapshot()}
	if b.rtx != nil {
		st.RtxKept = b.rtx.len()
		st.RtxResent, st.RtxEvicted = b.rtx.resent.Load(), b.rtx.evicted.Load()
	}
	for _, s := range b.shards {
		st.Early += int(s.early.Load())
		st.Up += int(s.up.Load())
		st.Unacked += int(s.unacked.Load())
		st.FreeSlots += s.capacity - int(s.used.Load())
		for _, r := range session.Reasons() {
			if n := s.ended[r].Load(); n != 0 {
				st.Ended[r] += n
			}
		}
	}
	return st
}

// sentBy is the host and port sbcd names itself by on network, in Via and
// Contact (RFC 3261 §18.1.1, §8.1.1.8).
func (b *B2BUA) sentBy(network string) (string, int) {
	ap := b.via[network]
	if b.o.Advertised != "" {
		return b.o.Advertised, int(ap.Port())
	}
	return ap.Addr().String(), int(ap.Port())
}

// mono is the monotonic time of the shards' wheels, ns since New.
func (b *B2BUA) mono() int64 { return int64(b.o.now().Sub(b.start)) }

// shardOf picks the shard of a new call from its A-leg Call-ID
// (DESIGN.md §1).
func (b *B2BUA) shardOf(callID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(callID))
	return int(h.Sum32() % uint32(len(b.shards)))
}

// tagShard reads the shard number sbcd encodes in the first two hex digits
// of its tags and B-leg Call-IDs.
func (b *B2BUA) tagShard(tag string) (*shard, bool) {
	if len(tag) < 2 {
		return nil, false
	}
	n := 0
	for _, c := range []byte(tag[:2]) {
		switch {
		case c >= '0' && c <= '9':
			n = n*16 + int(c-'0')
		case c >= 'a' && c <= 'f':
			n = n*16 + int(c-'a') + 10
		default:
			return nil, false
		}
	}
	if n >= len(b.shards) {
		return nil, false
	}
	return b.shards[n], true
}

// newTag returns a tag (or Call-ID prefix) that routes to shard i.
func (b *B2BUA) newTag(i int) string {
	var buf [18]byte
	t := appendHex(buf[:0], uint64(i), 2)
	t = appendHex(t, uint64(b.o.rand()), 8)
	return string(appendHex(t, uint64(b.o.rand()), 8))
}

// appendHex appends v to dst in lowercase hexadecimal, padded with zeros to
// at least width digits (at most 16): fmt's %0*x without its cost on every
// request.
func appendHex(dst []byte, v uint64, width int) []byte {
	const digits = "0123456789abcdef"
	var buf [16]byte
	n := len(buf)
	width = min(max(width, 1), len(buf))
	for v > 0 || len(buf)-n < width {
		n--
		buf[n] = digits[v&15]
		v >>= 4
	}
	return append(dst, buf[n:]...)
}

// traceMsg logs a SIP message when tracing is on.
func (b *B2BUA) traceMsg(dir string, m sip.Message) {
	if b.trace.Load() {
		b.log.Debug("sip "+dir, "trace", m.String())
	}
}

// traceData is traceMsg for a message sbcd wrote itself (writeResponse).
func (b *B2BUA) traceData(dir string, data []byte) {
	if b.trace.Load() {
		b.log.Debug("sip "+dir, "trace", string(data))
	}
}
