package registrar

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/timers/keepalive"
)

// The keep-alive engine. Run calls tick once per batch (at most every
// SendInterval, keepalive.Table.BatchDue), which advances
// the pacer of the binding table under the lock, turns its Ping events into
// a batch of (flow, destination, payload) keep-alives and hands the batch
// to the Sender after releasing the lock, so the Sender can write the UDP
// ones in one system call (DESIGN.md §10: CPU per keep-alive). In message
// and crlf mode the payloads are shared per parameter set, so the
// registrar's per-ping work allocates nothing. While the table is empty Run
// does not tick at all: it sleeps until Register adds a binding.
//
// In options mode every ping is one OPTIONS request (RFC 3261 §11) in one
// datagram, sent once: there are no retransmissions (Timer E) and no client
// transaction. The pacer counts a ping unanswered when the binding's next
// ping is due; MaxFailures such periods in a row evict the binding. The
// answer is recognised by its Via branch, which carries the binding's
// keepalive.ID and a random tag (KeepaliveAnswer).

// branchMarker follows the RFC 3261 magic cookie in the branch of OPTIONS
// pings: z9hG4bK + marker + 16 hex digits of the binding ID + 16 hex digits
// of a random tag.
const (
	branchMarker = "z9hG4bKsbcdka"
	branchLen    = len(branchMarker) + 32
)

// udpFlow marks, in the flow the pacer keeps for a binding
// (keepalive.Binding.Flow), a binding over UDP: the flow is then the
// socket index with this bit set, and a keep-alive in message or crlf mode
// is made from the pacer's event alone. tick need not read the binding's
// record, one cache miss per keep-alive fewer (100,000 records are 17 MB,
// each visited once a period). Other flows keep the socket index and are
// read from the record.
const udpFlow = 1 << 31

// pacerFlow is the flow the pacer keeps for a binding over f.
func pacerFlow(f Flow) uint32 {
	if f.Network == "UDP" && f.Socket >= 0 && f.Socket < udpFlow {
		return uint32(f.Socket) | udpFlow
	}
	return uint32(f.Socket) &^ udpFlow
}

// pingRing is the number of one-second buckets kept for PingsPerSecond.
const pingRing = 8

type secondCount struct {
	sec int64
	n   uint64
}

// crlfPing is the double-CRLF keep-alive (RFC 5626 §4.4.1). Senders must
// not modify payloads.
var crlfPing = []byte("\r\n\r\n")

// kaState is what the keep-alive payloads depend on, per parameter set.
type kaState struct {
	mode    keepalive.Mode
	message []byte // Params.Message, allocated once per SetKeepalive
}

func (r *Registrar) setKA(p keepalive.Params) {
	r.ka = kaState{mode: p.Mode, message: []byte(p.Message)}
	r.optionsMode.Store(p.Mode == keepalive.ModeOptions)
}

// SetKeepalive changes [nat_keepalive] live (keepalive.Table.SetParams),
// effective from the next tick; Run times the tick after that by the new
// send interval. Invalid parameters change nothing and return the error.
func (r *Registrar) SetKeepalive(p keepalive.Params) error {
	now := r.mono(r.now())
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.tab.SetParams(p, now); err != nil {
		return fmt.Errorf("registrar: set keep-alive: %w", err)
	}
	r.setKA(p)
	return nil
}

// Run drives the pacer once per batch until ctx is done and sends the
// keep-alives through s. Its ticks fall half an interval after the due
// time of the last pacer tick a batch can take (keepalive.Table.BatchDue),
// so timer jitter never adds the next tick's bindings to a batch and
// leaves none for the next (DESIGN.md §3: no burst larger than
// send_one_time). While the binding table is empty it
// does not tick at all and waits for the first binding (an idle box should
// cost no CPU, DESIGN.md §10); the pacer then moves its schedule to the
// clock (keepalive.Table.Advance). Between batches it waits on a waiter
// (waiter.go: a timerfd on Linux, one wake-up per batch). It returns nil
// when ctx is done, an error when s is nil or Run is already running.
func (r *Registrar) Run(ctx context.Context, s Sender) error {
	if s == nil {
		return errors.New("registrar: run: nil sender")
	}
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("registrar: run: already running")
	}
	defer r.running.Store(false)
	w, err := r.newWaiter(ctx)
	if err != nil {
		r.log.Warn("keep-alive pacer waits on a Go timer instead (more wake-ups per batch)", "err", err)
	}
	defer w.stop()
	for {
		if r.sleepIfEmpty() {
			select {
			case <-ctx.Done():
				return nil
			case <-r.wake: // the first tick at once
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		r.tick(r.now(), s)
		w.wait(r.untilTick(r.now()))
	}
}

// untilTick returns how long Run waits after a batch that it finished
// sending at now: until half an interval after the due time of the last
// tick the next batch can take (keepalive.Table.BatchDue), with a next tick
// due between now and an interval from now, and BatchDue that many
// intervals after it; a whole interval when the pacer is behind (a batch
// cut short by send_one_time), so batches stay an interval apart. The
// wait is anchored to the pacer's due times, not to the last batch: a
// timer that fired late makes the next wait shorter, so lateness never
// accumulates (a floor of one interval after each batch did: at a 1-s
// send_interval it lost a few ms a second until the pacer shifted its
// schedule, and intervals came out 2.6 % short).
func (r *Registrar) untilTick(now time.Time) time.Duration {
	mnow := r.mono(now)
	r.mu.Lock()
	next, batch := r.tab.NextDue(), r.tab.BatchDue()
	iv := int64(r.tab.Params().SendInterval)
	r.mu.Unlock()
	if next <= mnow {
		return time.Duration(iv)
	}
	return time.Duration(min(next-mnow, iv) + batch - next + iv/2)
}

// sleepIfEmpty reports whether the table is empty, and if so marks Run
// asleep, so the next binding added wakes it (bindingAdded).
func (r *Registrar) sleepIfEmpty() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tab.Len() > 0 {
		return false
	}
	r.asleep = true
	return true
}

// bindingAdded wakes Run when it sleeps on an empty table. Called under
// mu whenever a binding enters the table.
func (r *Registrar) bindingAdded() {
	if !r.asleep {
		return
	}
	r.asleep = false
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// tick advances the pacer to now, cleans up after expired and evicted
// bindings and sends the due keep-alives through s, outside the lock.
func (r *Registrar) tick(now time.Time, s Sender) {
	r.tickMu.Lock()
	defer r.tickMu.Unlock()
	var (
		sentBy  bool
		udpHost string
		udpPort int
		tcpHost string
		tcpPort int
	)
	if r.optionsMode.Load() {
		// Asked outside the lock: the Sender is the B2BUA, which may call
		// the registrar while holding its own locks.
		udpHost, udpPort = s.SentBy("UDP")
		tcpHost, tcpPort = s.SentBy("TCP")
		sentBy = true
	}
	mnow := r.mono(now)
	r.mu.Lock()
	r.events = r.tab.Advance(mnow, r.events[:0])
	r.pending = r.pending[:0]
	r.optBuf = r.optBuf[:0]
	var pings uint64
	for _, ev := range r.events {
		i := uint32(ev.ID.Index())
		switch ev.Kind {
		case keepalive.Ping:
			pings++
			if r.ka.mode != keepalive.ModeOptions && ev.Flow&udpFlow != 0 {
				payload := r.ka.message
				if r.ka.mode == keepalive.ModeCRLF {
					payload = crlfPing
				}
				f := Flow{Network: "UDP", Socket: int(ev.Flow &^ udpFlow)}
				r.pending = append(r.pending, Keepalive{Flow: f, Dst: ev.Source, Payload: payload})
				continue
			}
			rc := &r.rec[i]
			var payload []byte
			switch r.ka.mode {
			case keepalive.ModeMessage:
				payload = crlfPing // not over UDP: a bare message would break stream framing
			case keepalive.ModeCRLF:
				payload = crlfPing
			case keepalive.ModeOptions:
				if !sentBy { // the mode changed during this tick
					continue
				}
				host, port := udpHost, udpPort
				if r.nets[rc.net] != "UDP" {
					host, port = tcpHost, tcpPort
				}
				rc.pingTag = r.rand()
				start := len(r.optBuf)
				r.optBuf = r.appendOptions(r.optBuf, i, ev.ID, host, port)
				payload = r.optBuf[start:len(r.optBuf):len(r.optBuf)]
			}
			r.pending = append(r.pending, Keepalive{Flow: r.flowOf(rc), Dst: ev.Source, Payload: payload})
		case keepalive.Expired:
			n := &r.names[i]
			r.log.Debug("registrar: binding expired", "aor", n.aor(), "contact", n.contact(), "source", ev.Source)
			r.forget(i)
		case keepalive.Evicted:
			n := &r.names[i]
			r.log.Info("registrar: binding evicted: keep-alive OPTIONS unanswered",
				"aor", n.aor(), "contact", n.contact(), "source", ev.Source, "max_failures", r.tab.Params().MaxFailures)
			r.forget(i)
		}
	}
	if pings > 0 {
		sec := mnow / int64(time.Second)
		c := &r.ring[uint64(sec)%pingRing]
		if c.sec != sec {
			*c = secondCount{sec: sec}
		}
		c.n += pings
	}
	r.mu.Unlock()
	if len(r.pending) == 0 {
		return
	}
	s.SendKeepalives(r.pending)
	for i := range r.pending {
		p := &r.pending[i]
		if p.Err != nil {
			r.sendErrors.Add(1)
			r.log.Debug("registrar: keep-alive not sent", "dst", p.Dst, "network", p.Flow.Network, "err", p.Err)
		}
		*p = Keepalive{} // keep no payload or error past the tick
	}
}

// appendOptions appends an OPTIONS ping (RFC 3261 §11) for binding i to b.
func (r *Registrar) appendOptions(b []byte, i uint32, id keepalive.ID, host string, port int) []byte {
	rc, n := &r.rec[i], &r.names[i]
	hostport := func(b []byte) []byte {
		if strings.IndexByte(host, ':') >= 0 && !strings.HasPrefix(host, "[") {
			b = append(b, '[')
			b = append(b, host...)
			b = append(b, ']')
		} else {
			b = append(b, host...)
		}
		if port > 0 {
			b = append(b, ':')
			b = appendInt(b, uint64(port))
		}
		return b
	}
	b = append(b, "OPTIONS "...)
	b = append(b, n.contact()...)
	b = append(b, " SIP/2.0\r\nVia: SIP/2.0/"...)
	b = append(b, r.nets[rc.net]...)
	b = append(b, ' ')
	b = hostport(b)
	b = append(b, ";branch="...)
	b = append(b, branchMarker...)
	b = appendHex(b, uint64(id))
	b = appendHex(b, rc.pingTag)
	b = append(b, ";rport\r\nMax-Forwards: 70\r\nFrom: <sip:sbcd@"...)
	b = hostport(b)
	b = append(b, ">;tag="...)
	b = appendHex(b, r.rand())
	b = append(b, "\r\nTo: <"...)
	b = append(b, n.toURI()...)
	b = append(b, ">\r\nCall-ID: "...)
	b = appendHex(b, r.rand())
	b = appendHex(b, r.rand())
	b = append(b, "@sbcd\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"...)
	return b
}

const hexDigits = "0123456789abcdef"

// appendHex appends v as 16 lower-case hex digits.
func appendHex(b []byte, v uint64) []byte {
	for s := 60; s >= 0; s -= 4 {
		b = append(b, hexDigits[v>>uint(s)&0xf])
	}
	return b
}

func appendInt(b []byte, v uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

// parseHex16 parses 16 hex digits.
func parseHex16(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < 16; i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// decodeBranch extracts the binding ID and tag of an OPTIONS ping branch.
func decodeBranch(branch string) (keepalive.ID, uint64, bool) {
	if len(branch) != branchLen || !strings.HasPrefix(branch, branchMarker) {
		return 0, 0, false
	}
	id, ok := parseHex16(branch[len(branchMarker) : len(branchMarker)+16])
	if !ok {
		return 0, 0, false
	}
	tag, ok := parseHex16(branch[len(branchMarker)+16:])
	if !ok {
		return 0, 0, false
	}
	return keepalive.ID(id), tag, true
}

// KeepaliveAnswer takes a response that matched no client transaction and
// reports whether it answers one of sbcd's OPTIONS pings (its top Via
// branch carries the ping marker and its CSeq method is OPTIONS). Any final
// response, even 404, 405 or 481, proves the device alive: the binding's
// failure count is reset (keepalive.Table.Answered). A provisional
// response, the answer to an older ping or for a binding that is gone is
// consumed (true) and changes nothing.
func (r *Registrar) KeepaliveAnswer(res *sip.Response) bool {
	if res == nil {
		return false
	}
	via := res.Via()
	if via == nil {
		return false
	}
	branch, ok := via.Params.Get("branch")
	if !ok {
		return false
	}
	id, tag, ok := decodeBranch(branch)
	if !ok {
		return false
	}
	if cs := res.CSeq(); cs == nil || cs.MethodName != sip.OPTIONS {
		return false
	}
	if res.StatusCode < 200 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i := id.Index()
	if i < len(r.rec) && r.rec[i].id == id && r.rec[i].pingTag == tag {
		r.tab.Answered(id)
	}
	return true
}
