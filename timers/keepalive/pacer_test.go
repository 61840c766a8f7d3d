package keepalive

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// driver runs a table on virtual time and records what the pacer asks for.
type driver struct {
	t   *testing.T
	tab *Table
	now int64
	out []Event

	last     map[ID]int64 // time of the last ping per live binding
	pings    map[ID]int   // pings per binding
	minGap   int64
	maxGap   int64
	gaps     int
	maxBatch int
	batches  []int // Ping events per Advance call, when recording
	record   bool
	events   []Event // every event, when keepEvents
	keep     bool
}

func newDriver(t *testing.T, tab *Table, start int64) *driver {
	return &driver{
		t: t, tab: tab, now: start,
		out:    make([]Event, 0, tab.Params().SendOneTime),
		last:   map[ID]int64{},
		pings:  map[ID]int{},
		minGap: math.MaxInt64,
	}
}

// advance calls Advance once at now.
func (d *driver) advance(now int64) {
	d.t.Helper()
	d.now = now
	c := cap(d.out)
	d.out = d.tab.Advance(now, d.out[:0])
	if cap(d.out) != c {
		d.t.Fatalf("Advance grew the out buffer (%d events)", len(d.out))
	}
	if len(d.out) > d.tab.Params().SendOneTime {
		d.t.Fatalf("batch of %d events > send_one_time %d", len(d.out), d.tab.Params().SendOneTime)
	}
	pings := 0
	for _, ev := range d.out {
		if d.keep {
			d.events = append(d.events, ev)
		}
		if ev.Kind != Ping {
			delete(d.last, ev.ID)
			continue
		}
		pings++
		d.pings[ev.ID]++
		if prev, ok := d.last[ev.ID]; ok {
			gap := now - prev
			d.minGap = min(d.minGap, gap)
			d.maxGap = max(d.maxGap, gap)
			d.gaps++
		}
		d.last[ev.ID] = now
	}
	d.maxBatch = max(d.maxBatch, pings)
	if d.record {
		d.batches = append(d.batches, pings)
	}
}

// run calls Advance every step for the given duration.
func (d *driver) run(dur, step time.Duration) {
	d.t.Helper()
	end := d.now + int64(dur)
	for d.now+int64(step) <= end {
		d.advance(d.now + int64(step))
	}
}

func (d *driver) resetGaps() {
	d.minGap, d.maxGap, d.gaps, d.maxBatch = math.MaxInt64, 0, 0, 0
	d.batches = d.batches[:0]
	clear(d.pings)
}

func (d *driver) forget(id ID) { delete(d.last, id) }

func minMax(xs []int) (lo, hi int) {
	lo, hi = math.MaxInt, math.MinInt
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// TestSpread is the spread test of issue 2: 10,000 bindings, period 30 s,
// send_interval 10 ms, send_one_time 100, driven every 10 ms for several
// periods, added all at once, gradually, and with removals in between.
func TestSpread(t *testing.T) {
	p := DefaultParams()
	period := int64(p.Period)
	tests := []struct {
		name string
		// fill adds the bindings while driving the table.
		fill func(t *testing.T, d *driver, rng *rand.Rand)
	}{
		{"all at once", func(t *testing.T, d *driver, rng *rand.Rand) {
			for i := range 10000 {
				if _, err := d.tab.Upsert(aor(i), "c", forever(i)); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"gradually", func(t *testing.T, d *driver, rng *rand.Rand) {
			// 4 per tick for 2,500 ticks (25 s), between the ticks.
			for i := range 10000 {
				if _, err := d.tab.Upsert(aor(i), "c", forever(i)); err != nil {
					t.Fatal(err)
				}
				if i%4 == 3 {
					d.advance(d.now + int64(p.SendInterval))
				}
			}
		}},
		{"with removals", func(t *testing.T, d *driver, rng *rand.Rand) {
			// 13,000 added over 40 s while 3,000 random ones are removed.
			var live []ID
			removed := 0
			for i := range 13000 {
				id, err := d.tab.Upsert(aor(i), "c", forever(i))
				if err != nil {
					t.Fatal(err)
				}
				live = append(live, id)
				if (i%13 == 2 || i%13 == 5 || i%13 == 8) && removed < 3000 {
					k := rng.IntN(len(live))
					if !d.tab.Remove(live[k]) {
						t.Fatal("Remove failed")
					}
					d.forget(live[k])
					live[k] = live[len(live)-1]
					live = live[:len(live)-1]
					removed++
				}
				if i%13 == 12 {
					for range 4 {
						d.advance(d.now + int64(p.SendInterval))
					}
				}
			}
			if d.tab.Len() != 10000 {
				t.Fatalf("Len = %d, want 10000", d.tab.Len())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := int64(1000 * sec)
			tab := mustNew(t, 20000, p, start)
			d := newDriver(t, tab, start)
			d.advance(start)
			tt.fill(t, d, rand.New(rand.NewPCG(1, 2)))
			checkInvariants(t, tab)
			// Settle one period, then measure three.
			d.run(p.Period, p.SendInterval)
			d.resetGaps()
			d.record = true
			d.run(3*p.Period, p.SendInterval)

			if d.maxBatch > p.SendOneTime {
				t.Errorf("largest batch %d > %d", d.maxBatch, p.SendOneTime)
			}
			if d.minGap != period || d.maxGap != period {
				t.Errorf("gaps between pings of one binding: %v..%v, want exactly %v",
					time.Duration(d.minGap), time.Duration(d.maxGap), p.Period)
			}
			if d.gaps < 2*10000 {
				t.Errorf("only %d gaps measured", d.gaps)
			}
			for id, n := range d.pings {
				if n != 3 {
					t.Fatalf("binding %#x pinged %d times in 3 periods", uint64(id), n)
				}
			}
			if len(d.pings) != 10000 {
				t.Errorf("%d bindings pinged, want 10000", len(d.pings))
			}
			lo, hi := minMax(d.batches)
			// 10,000 over 3,000 ticks: every tick sends 3 or 4.
			if lo != 3 || hi != 4 {
				t.Errorf("per-tick batches %d..%d, want 3..4", lo, hi)
			}
			t.Logf("gap %v..%v, batches %d..%d per tick", time.Duration(d.minGap), time.Duration(d.maxGap), lo, hi)
			checkInvariants(t, tab)
		})
	}
}

// TestSpreadFewBindings: a handful of bindings is spread over the whole
// period, not bunched at its start.
func TestSpreadFewBindings(t *testing.T) {
	p := DefaultParams()
	tab := mustNew(t, 100, p, 0)
	for i := range 8 {
		tab.Upsert(aor(i), "c", forever(i))
	}
	var ticks []int64
	out := make([]Event, 0, 100)
	for k := int64(0); k < 3000; k++ {
		out = tab.Advance(k*int64(p.SendInterval), out[:0])
		for range out {
			ticks = append(ticks, k)
		}
	}
	if len(ticks) != 8 {
		t.Fatalf("%d pings, want 8", len(ticks))
	}
	for i := 1; i < len(ticks); i++ {
		if gap := ticks[i] - ticks[i-1]; gap != 375 {
			t.Errorf("ticks %v: gap %d, want 375 (3000/8)", ticks, gap)
			break
		}
	}
}

func TestLateDriver(t *testing.T) {
	p := DefaultParams()
	tests := []struct {
		name   string
		step   time.Duration
		n      int
		maxDev time.Duration // allowed deviation of a gap from the period
	}{
		{"every 50 ms", 50 * time.Millisecond, 10000, 50 * time.Millisecond},
		{"every 200 ms", 200 * time.Millisecond, 10000, 200 * time.Millisecond},
		// 100 per call every 50 ms = 2,000/s < 100,000/30 s: the pacer falls
		// behind and runs at its budget: a round takes 50 s.
		{"every 50 ms, too many", 50 * time.Millisecond, 100000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustNew(t, tt.n, p, 0)
			for i := range tt.n {
				tab.Upsert(aor(i), "c", forever(i))
			}
			d := newDriver(t, tab, 0)
			d.advance(0)
			d.run(2*p.Period, tt.step)
			d.resetGaps()
			d.run(4*p.Period, tt.step)
			if d.maxBatch > p.SendOneTime {
				t.Errorf("largest batch %d", d.maxBatch)
			}
			if tt.maxDev == 0 {
				// Budget-bound: each call sends exactly SendOneTime; a
				// round is n/SendOneTime calls.
				want := int64(tt.n/p.SendOneTime) * int64(tt.step)
				if d.minGap != want || d.maxGap != want {
					t.Errorf("gaps %v..%v, want exactly %v", time.Duration(d.minGap), time.Duration(d.maxGap), time.Duration(want))
				}
				return
			}
			dev := int64(tt.maxDev)
			if d.minGap < int64(p.Period)-dev || d.maxGap > int64(p.Period)+dev {
				t.Errorf("gaps %v..%v, want %v ± %v", time.Duration(d.minGap), time.Duration(d.maxGap), p.Period, tt.maxDev)
			}
			if float64(d.minGap) < 0.99*float64(p.Period) || float64(d.maxGap) > 1.01*float64(p.Period) {
				t.Errorf("gaps %v..%v not within 1%% of the period", time.Duration(d.minGap), time.Duration(d.maxGap))
			}
			for id, n := range d.pings {
				if n < 3 || n > 5 {
					t.Fatalf("binding %#x pinged %d times in 4 periods", uint64(id), n)
				}
			}
			if len(d.pings) != tt.n {
				t.Errorf("%d bindings pinged, want %d", len(d.pings), tt.n)
			}
			t.Logf("gaps %v..%v, largest batch %d", time.Duration(d.minGap), time.Duration(d.maxGap), d.maxBatch)
		})
	}
}

// TestCapacityExceeded: more bindings than Capacity still get bounded
// batches; the round stretches to Period × n/Capacity.
func TestCapacityExceeded(t *testing.T) {
	p := DefaultParams()
	p.Period, p.SendInterval, p.SendOneTime = time.Second, 10*time.Millisecond, 10 // capacity 1,000
	tests := []struct {
		n       int
		stretch time.Duration
	}{
		{1000, time.Second},
		{1500, 1500 * time.Millisecond},
		{2500, 2500 * time.Millisecond},
		{10000, 10 * time.Second}, // more than a period behind: whole rounds dropped
	}
	for _, tt := range tests {
		tab := mustNew(t, tt.n, p, 0)
		for i := range tt.n {
			tab.Upsert(aor(i), "c", forever(i))
		}
		checkInvariants(t, tab)
		for s := range tab.nticks {
			if l := int(tab.load[s]); l < tt.n/100 || l > (tt.n+99)/100 {
				t.Fatalf("n=%d: slot %d load %d", tt.n, s, l)
			}
		}
		d := newDriver(t, tab, 0)
		d.record = true
		d.run(3*tt.stretch, p.SendInterval)
		d.resetGaps()
		d.record = true
		d.run(3*tt.stretch, p.SendInterval)
		lo, hi := minMax(d.batches)
		if hi > p.SendOneTime || lo != p.SendOneTime {
			t.Errorf("n=%d: batches %d..%d, want all %d", tt.n, lo, hi, p.SendOneTime)
		}
		if d.minGap != int64(tt.stretch) || d.maxGap != int64(tt.stretch) {
			t.Errorf("n=%d: gaps %v..%v, want %v", tt.n, time.Duration(d.minGap), time.Duration(d.maxGap), tt.stretch)
		}
	}
}

// TestStall: a driver that stalls catches up at most MaxLag of schedule
// with bounded batches, then resumes the schedule where it stopped: no
// interval shorter than Period − MaxLag, none longer than Period + stall,
// and exact periods again afterwards.
func TestStall(t *testing.T) {
	p := DefaultParams()
	for _, stall := range []time.Duration{200 * time.Millisecond, 5 * time.Second, 2*p.Period + 7777*time.Millisecond} {
		tab := mustNew(t, 10000, p, 0)
		for i := range 10000 {
			tab.Upsert(aor(i), "c", forever(i))
		}
		if tab.MaxLag() != 300*time.Millisecond {
			t.Fatalf("MaxLag = %v", tab.MaxLag())
		}
		d := newDriver(t, tab, 0)
		d.advance(0)
		d.run(p.Period+12345*time.Millisecond, p.SendInterval)
		d.resetGaps()
		d.now += int64(stall)
		d.run(2*p.Period, p.SendInterval)
		if d.maxBatch > p.SendOneTime {
			t.Errorf("stall %v: largest batch %d", stall, d.maxBatch)
		}
		if d.minGap < int64(p.Period-tab.MaxLag()) || d.maxGap > int64(p.Period+stall+p.SendInterval) {
			t.Errorf("stall %v: gaps %v..%v", stall, time.Duration(d.minGap), time.Duration(d.maxGap))
		}
		t.Logf("stall %v: gaps %v..%v, largest batch %d", stall, time.Duration(d.minGap), time.Duration(d.maxGap), d.maxBatch)
		d.resetGaps()
		d.run(2*p.Period, p.SendInterval)
		if d.minGap != int64(p.Period) || d.maxGap != int64(p.Period) || len(d.pings) != 10000 {
			t.Errorf("stall %v, after: gaps %v..%v, %d pinged", stall, time.Duration(d.minGap), time.Duration(d.maxGap), len(d.pings))
		}
		checkInvariants(t, tab)
	}
}

func TestWhoIsPinged(t *testing.T) {
	type bind struct {
		nated bool
	}
	tests := []struct {
		name      string
		mode      Mode
		message   string
		natedOnly bool
		wantNATed bool // NATed binding pinged
		wantLocal bool // non-NATed binding pinged
	}{
		{"message nated only", ModeMessage, "HELLO", true, true, false},
		{"message all", ModeMessage, "HELLO", false, true, true},
		{"message empty disables", ModeMessage, "", false, false, false},
		{"crlf ignores message", ModeCRLF, "", true, true, false},
		{"crlf all", ModeCRLF, "", false, true, true},
		{"options", ModeOptions, "", true, true, false},
		{"options all", ModeOptions, "HELLO", false, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultParams()
			p.Mode, p.Message, p.NATedOnly = tt.mode, tt.message, tt.natedOnly
			tab := mustNew(t, 4, p, 0)
			nated, _ := tab.Upsert("a", "nated", Binding{Source: src(1), Expires: math.MaxInt64, NATed: true})
			local, _ := tab.Upsert("a", "local", Binding{Source: src(2), Expires: math.MaxInt64})
			got := map[ID]int{}
			out := make([]Event, 0, 100)
			for k := range int64(3000) {
				out = tab.Advance(k*int64(p.SendInterval), out[:0])
				for _, ev := range out {
					if ev.Kind != Ping {
						t.Fatalf("unexpected %v", ev.Kind)
					}
					got[ev.ID]++
					want, _ := tab.Get(ev.ID)
					if ev.Source != want.Source {
						t.Errorf("ping to %v, binding source %v", ev.Source, want.Source)
					}
				}
			}
			if (got[nated] == 1) != tt.wantNATed || (got[local] == 1) != tt.wantLocal || got[nated] > 1 || got[local] > 1 {
				t.Errorf("pings: nated %d local %d; want nated %v local %v", got[nated], got[local], tt.wantNATed, tt.wantLocal)
			}
			if s := tab.Stats(); s.PingsSent != uint64(got[nated]+got[local]) || s.Bindings != 2 || s.NATed != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// optionsRun drives one binding in options mode for rounds periods; answer
// says, per round, whether the device answers that round's ping.
func TestOptionsEviction(t *testing.T) {
	p := DefaultParams()
	p.Mode = ModeOptions
	p.Period, p.SendInterval = time.Second, 10*time.Millisecond
	tests := []struct {
		name        string
		maxFailures int
		// per period: a = ping answered, - = unanswered, r = re-REGISTER
		script    string
		wantPings int
		evictedAt int // period (0-based) at which Evicted comes, -1 never
	}{
		{"never answers", 3, "------", 3, 3},
		{"max failures 1", 1, "----", 1, 1},
		{"always answers", 3, "aaaaaaaa", 9, -1},
		{"answer resets the count", 3, "--a--a--", 9, -1},
		{"two then silence", 3, "aa----", 5, 5},
		{"re-register resets", 3, "--r--r--", 9, -1},
		{"max failures 2", 2, "a--", 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := p
			p.MaxFailures = tt.maxFailures
			tab := mustNew(t, 1, p, 0)
			b := Binding{Source: src(1), Flow: 3, Expires: math.MaxInt64, NATed: true}
			id, _ := tab.Upsert("a", "c", b)
			out := make([]Event, 0, 10)
			pings, evictedAt := 0, -1
			ticks := int64(p.Period / p.SendInterval)
			for round := range len(tt.script) + 1 {
				for k := range ticks {
					now := (int64(round)*ticks + k) * int64(p.SendInterval)
					out = tab.Advance(now, out[:0])
					for _, ev := range out {
						switch ev.Kind {
						case Ping:
							pings++
							if round < len(tt.script) && tt.script[round] == 'a' {
								if !tab.Answered(ev.ID) {
									t.Fatal("Answered rejected a live ID")
								}
							}
						case Evicted:
							if ev.ID != id || ev.Source != b.Source || ev.Flow != 3 {
								t.Errorf("evicted event %+v", ev)
							}
							evictedAt = round
						default:
							t.Fatalf("unexpected %v", ev.Kind)
						}
					}
					if k == ticks/2 && round < len(tt.script) && tt.script[round] == 'r' {
						if _, err := tab.Upsert("a", "c", b); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			if pings != tt.wantPings || evictedAt != tt.evictedAt {
				t.Errorf("pings %d evicted at %d; want %d, %d", pings, evictedAt, tt.wantPings, tt.evictedAt)
			}
			if evictedAt >= 0 {
				if _, ok := tab.Get(id); ok || tab.Len() != 0 || tab.Stats().Evictions != 1 {
					t.Errorf("evicted binding still there (len %d, stats %+v)", tab.Len(), tab.Stats())
				}
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	p := DefaultParams()
	tab := mustNew(t, 10, p, 0)
	period := int64(p.Period)
	short, _ := tab.Upsert("a", "short", Binding{Source: src(1), Flow: 1, Expires: 5 * sec, NATed: true})
	local, _ := tab.Upsert("a", "local", Binding{Source: src(2), Flow: 2, Expires: 40 * sec})
	long, _ := tab.Upsert("a", "long", Binding{Source: src(3), Flow: 3, Expires: 3600 * sec, NATed: true})
	expired := map[ID]int64{}
	out := make([]Event, 0, 100)
	for now := int64(0); now <= 3*period; now += int64(p.SendInterval) {
		out = tab.Advance(now, out[:0])
		for _, ev := range out {
			if ev.Kind == Expired {
				expired[ev.ID] = now
				if b, _ := map[ID]netip.AddrPort{short: src(1), local: src(2)}[ev.ID]; ev.Source != b {
					t.Errorf("expired event source %v, want %v", ev.Source, b)
				}
			}
		}
	}
	for _, c := range []struct {
		id       ID
		deadline int64
	}{{short, 5 * sec}, {local, 40 * sec}} {
		at, ok := expired[c.id]
		if !ok {
			t.Fatalf("binding %#x never expired", uint64(c.id))
		}
		if at < c.deadline || at >= c.deadline+period {
			t.Errorf("expired at %v, deadline %v: want within one period", time.Duration(at), time.Duration(c.deadline))
		}
		if _, ok := tab.Get(c.id); ok {
			t.Error("expired binding still there")
		}
	}
	if _, ok := expired[long]; ok {
		t.Error("long binding expired")
	}
	if s := tab.Stats(); s.Expirations != 2 || s.Bindings != 1 || s.NATed != 1 {
		t.Errorf("stats %+v", s)
	}
	checkInvariants(t, tab)
}

// TestReRegisterMovesSource: a re-REGISTER from a new port moves the
// binding's source and keeps its pacing: still exactly one period.
func TestReRegisterMovesSource(t *testing.T) {
	p := DefaultParams()
	tab := mustNew(t, 1000, p, 0)
	for i := range 1000 {
		tab.Upsert(aor(i), "c", forever(i))
	}
	d := newDriver(t, tab, 0)
	d.keep = true
	d.advance(0)
	d.run(p.Period, p.SendInterval)
	// Every binding re-registers from a new port at a random moment of the
	// next period.
	rng := rand.New(rand.NewPCG(3, 4))
	at := make([]int, 1000)
	for i := range at {
		at[i] = rng.IntN(3000)
	}
	for k := range 3000 {
		for i := range 1000 {
			if at[i] == k {
				b := forever(i)
				b.Source = netip.AddrPortFrom(b.Source.Addr(), 40000)
				if _, err := tab.Upsert(aor(i), "c", b); err != nil {
					t.Fatal(err)
				}
			}
		}
		d.advance(d.now + int64(p.SendInterval))
	}
	d.events = d.events[:0]
	d.run(p.Period, p.SendInterval)
	if d.minGap != int64(p.Period) || d.maxGap != int64(p.Period) {
		t.Errorf("gaps %v..%v", time.Duration(d.minGap), time.Duration(d.maxGap))
	}
	if len(d.events) != 1000 {
		t.Fatalf("%d events in the last period", len(d.events))
	}
	for _, ev := range d.events {
		if ev.Source.Port() != 40000 {
			t.Fatalf("ping to old source %v", ev.Source)
		}
	}
}

// TestErrFullKeepsWorking: a full table refuses new bindings and keeps
// pacing the existing ones.
func TestErrFullKeepsWorking(t *testing.T) {
	p := DefaultParams()
	tab := mustNew(t, 100, p, 0)
	for i := range 100 {
		if _, err := tab.Upsert(aor(i), "c", forever(i)); err != nil {
			t.Fatal(err)
		}
	}
	d := newDriver(t, tab, 0)
	for k := range 3000 {
		if k%10 == 0 {
			if _, err := tab.Upsert(aor(1000+k), "c", forever(k)); err != ErrFull {
				t.Fatalf("Upsert = %v, want ErrFull", err)
			}
		}
		d.advance(d.now + int64(p.SendInterval))
	}
	if len(d.pings) != 100 {
		t.Errorf("%d bindings pinged, want 100", len(d.pings))
	}
	checkInvariants(t, tab)
}

// TestSetParams re-spreads the bindings over a new period.
func TestSetParams(t *testing.T) {
	base := DefaultParams()
	tests := []struct {
		name     string
		period   time.Duration
		interval time.Duration
		oneTime  int
	}{
		{"30s to 60s", 60 * time.Second, 10 * time.Millisecond, 100},
		{"30s to 15s", 15 * time.Second, 10 * time.Millisecond, 100},
		{"interval 10ms to 1ms (more slots)", 30 * time.Second, time.Millisecond, 10},
		{"interval 10ms to 100ms", 30 * time.Second, 100 * time.Millisecond, 1000},
		{"send_one_time only", 30 * time.Second, 10 * time.Millisecond, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustNew(t, 12000, base, 0)
			for i := range 10000 {
				tab.Upsert(aor(i), "c", forever(i))
			}
			d := newDriver(t, tab, 0)
			d.advance(0)
			// Remove some and stop in the middle of a tick.
			for i := 0; i < 10000; i += 7 {
				id, _ := tab.Lookup(aor(i), "c")
				tab.Remove(id)
			}
			d.run(base.Period+1234*base.SendInterval, base.SendInterval)
			np := base
			np.Period, np.SendInterval, np.SendOneTime = tt.period, tt.interval, tt.oneTime
			d.out = make([]Event, 0, max(tt.oneTime, base.SendOneTime))
			d.resetGaps()
			if err := tab.SetParams(np, d.now+int64(3*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, tab)
			if tab.Params() != np {
				t.Fatal("params not in force")
			}
			// Loads are even at once (a re-spread happens when the tick
			// changes; a send_one_time change keeps every slot).
			respread := tt.period != base.Period || tt.interval != base.SendInterval
			lo, hi := ^uint32(0), uint32(0)
			for s := range tab.nticks {
				lo, hi = min(lo, tab.load[s]), max(hi, tab.load[s])
			}
			if respread && hi-lo > 1 || int(hi) > np.SendOneTime {
				t.Errorf("loads after re-spread %d..%d", lo, hi)
			}
			// The transition period: gaps between the old and new period.
			shortest, longest := min(tt.period, base.Period), max(tt.period, base.Period)
			d.run(longest+longest/50, tt.interval)
			slack := int64(longest) / 100
			if d.minGap < int64(shortest)-slack || d.maxGap > int64(longest)+slack {
				t.Errorf("transition gaps %v..%v, want within %v..%v", time.Duration(d.minGap), time.Duration(d.maxGap), shortest, longest)
			}
			// Then exactly the new period, even batches.
			d.resetGaps()
			d.record = true
			d.run(2*tt.period, tt.interval)
			if d.minGap != int64(tt.period) || d.maxGap != int64(tt.period) {
				t.Errorf("gaps %v..%v, want %v", time.Duration(d.minGap), time.Duration(d.maxGap), tt.period)
			}
			blo, bhi := minMax(d.batches)
			if respread && bhi-blo > 1 || bhi > tt.oneTime {
				t.Errorf("batches %d..%d", blo, bhi)
			}
			if len(d.pings) != tab.Len() {
				t.Errorf("%d of %d bindings pinged", len(d.pings), tab.Len())
			}
			// New bindings still fill evenly.
			for i := 20000; i < 21500; i++ {
				tab.Upsert(aor(i), "c", forever(i))
			}
			checkInvariants(t, tab)
			lo, hi = ^uint32(0), uint32(0)
			for s := range tab.nticks {
				lo, hi = min(lo, tab.load[s]), max(hi, tab.load[s])
			}
			if hi-lo > 1 {
				t.Errorf("loads after adding %d..%d", lo, hi)
			}
		})
	}
}

func TestSetParamsInvalidAndMode(t *testing.T) {
	p := DefaultParams()
	p.Mode = ModeOptions
	tab := mustNew(t, 10, p, 0)
	id, _ := tab.Upsert("a", "c", forever(1))
	out := make([]Event, 0, 100)
	// Two unanswered pings.
	for now := int64(0); now < 2*int64(p.Period); now += int64(p.SendInterval) {
		out = tab.Advance(now, out)
	}
	if len(out) != 2 || tab.e[id.Index()].fails != 1 {
		t.Fatalf("%d events, fails %d", len(out), tab.e[id.Index()].fails)
	}
	bad := p
	bad.SendInterval = 7 * time.Millisecond
	if err := tab.SetParams(bad, 0); err == nil {
		t.Fatal("SetParams accepted an invalid period")
	}
	if tab.Params() != p {
		t.Fatal("invalid SetParams changed the params")
	}
	crlf := p
	crlf.Mode = ModeCRLF
	if err := tab.SetParams(crlf, 0); err != nil {
		t.Fatal(err)
	}
	if e := tab.e[id.Index()]; e.fails != 0 || e.flags&flagOutstanding != 0 {
		t.Errorf("mode change kept failure state: %+v", e)
	}
}

func TestTimeBackwards(t *testing.T) {
	p := DefaultParams()
	start := int64(-5 * sec)
	tab := mustNew(t, 10, p, start)
	tab.Upsert("a", "c", forever(1))
	out := make([]Event, 0, 100)
	for _, now := range []int64{math.MinInt64, start - 1, start, start, start - 1, math.MaxInt64, math.MaxInt64, 0, math.MinInt64} {
		out = tab.Advance(now, out[:0])
		if len(out) > 1 {
			t.Fatalf("Advance(%d) gave %d events", now, len(out))
		}
	}
	checkInvariants(t, tab)
}

// TestRandomOps runs random operations against the invariants.
func TestRandomOps(t *testing.T) {
	p := DefaultParams()
	p.Period, p.SendInterval, p.SendOneTime = time.Second, 10*time.Millisecond, 5
	p.Mode = ModeOptions
	rng := rand.New(rand.NewPCG(5, 6))
	tab := mustNew(t, 700, p, 0)
	live := map[ID]string{}
	out := make([]Event, 0, 5)
	now := int64(0)
	for step := range 100000 {
		switch r := rng.IntN(100); {
		case r < 40:
			k := aor(rng.IntN(1000))
			b := Binding{Source: src(rng.IntN(1 << 20)), Expires: now + rng.Int64N(3*sec), NATed: rng.IntN(2) == 0}
			id, err := tab.Upsert(k, "c", b)
			if err == ErrFull {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			live[id] = k
		case r < 55:
			for id := range live {
				if !tab.Remove(id) {
					t.Fatalf("step %d: Remove of live %#x failed", step, uint64(id))
				}
				delete(live, id)
				break
			}
		case r < 60:
			for id := range live {
				tab.Answered(id)
				break
			}
		case r < 61:
			np := p
			np.Period = time.Duration(1+rng.IntN(3)) * time.Second
			np.SendInterval = []time.Duration{time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond}[rng.IntN(3)]
			np.NATedOnly = rng.IntN(2) == 0
			if err := tab.SetParams(np, now); err != nil {
				t.Fatal(err)
			}
		default:
			now += rng.Int64N(int64(30 * time.Millisecond))
			out = tab.Advance(now, out[:0])
			if len(out) > tab.Params().SendOneTime {
				t.Fatalf("batch %d", len(out))
			}
			for _, ev := range out {
				if ev.Kind != Ping {
					if _, ok := live[ev.ID]; !ok {
						t.Fatalf("step %d: %v for unknown %#x", step, ev.Kind, uint64(ev.ID))
					}
					delete(live, ev.ID)
				}
			}
		}
		if len(live) != tab.Len() {
			t.Fatalf("step %d: %d live, table %d", step, len(live), tab.Len())
		}
		if step%997 == 0 {
			checkInvariants(t, tab)
			for id, k := range live {
				if got, ok := tab.Lookup(k, "c"); !ok || got != id {
					t.Fatalf("Lookup(%s) = %#x, %v; want %#x", k, uint64(got), ok, uint64(id))
				}
			}
		}
	}
	checkInvariants(t, tab)
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{Ping: "ping", Expired: "expired", Evicted: "evicted", 0: "EventKind(0)", 9: "EventKind(9)"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q, want %q", k, k.String(), want)
		}
	}
}

// TestNextDue: the due time of the next tick follows Advance; a tick cut
// short by the budget is due already; a late driver sees its schedule
// moved (MaxLag).
func TestNextDue(t *testing.T) {
	p := DefaultParams() // 10 ms interval, 100 per call
	iv := int64(p.SendInterval)
	tests := []struct {
		name     string
		bindings int
		calls    []int64 // Advance at these times
		want     int64
	}{
		{name: "new table", want: 1000},
		{name: "after a call on a due time", calls: []int64{1000}, want: 1000 + iv},
		{name: "after a call between due times", calls: []int64{1000, 1000 + 3*iv/2}, want: 1000 + 2*iv},
		// 300,000 bindings over 3,000 ticks: 100 each, the whole budget;
		// one more makes the first tick overflow it.
		{name: "budget spent mid-tick", bindings: 300001, calls: []int64{1000}, want: 1000},
		// The schedule moves to MaxLag behind, then the empty ticks up to
		// now are caught up: the next one is due an interval from now.
		{name: "late beyond MaxLag", calls: []int64{1000 + int64(time.Hour)}, want: 1000 + int64(time.Hour) + iv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := advanced(t, p, tt.bindings, tt.calls)
			if got := tab.NextDue(); got != tt.want {
				t.Errorf("NextDue = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestBatchDue: the due time of the last tick a batch can take, for
// schedules of different loads (defaults: 10 ms ticks, 100 per batch,
// batchSpan 150 ms).
func TestBatchDue(t *testing.T) {
	p := DefaultParams()
	iv := int64(p.SendInterval)
	if got := p.batchSpan(); got != 150*int64(time.Millisecond) {
		t.Fatalf("batchSpan = %v, want 150ms (half of MaxLag)", time.Duration(got))
	}
	tests := []struct {
		name     string
		p        Params
		bindings int
		calls    []int64 // Advance at these times
		want     int64   // BatchDue, ticks after NextDue
	}{
		{name: "empty table: the whole span", want: 15},
		{name: "a few bindings: the whole span", bindings: 30, want: 15},
		// 3,000 ticks; 10,000 bindings: 3 or 4 per tick, a batch of
		// 100 reaches no further than the span.
		{name: "10,000 bindings", bindings: 10000, want: 15},
		// 100,000 bindings: 33 or 34 per tick, so two or three ticks fit
		// 100. The first three slots in placement order are 0, 1500 and
		// 750 (van der Corput), so slots 0 and 1 hold 34 and slot 2 33:
		// 34+34 fit, +33 does not.
		{name: "100,000 bindings", bindings: 100000, want: 1},
		{name: "100,000 bindings, a tick later", bindings: 100000, calls: []int64{1000 + iv/2}, want: 2},
		// 300,000: 100 per tick, each tick a batch of its own.
		{name: "full ticks", bindings: 300000, want: 0},
		// One more than the budget in the first tick: it is cut short,
		// and the rest of it is due at once.
		{name: "budget spent mid-tick", bindings: 300001, calls: []int64{1000}, want: 0},
		// period/100 (10 ms) is shorter than MaxLag/2 (50 ms): one tick.
		{name: "1 s period: 1 % of it", p: fastPeriod(time.Second), want: 1},
		// 1 % of 30 s is less than a 1 s interval: no coalescing.
		{name: "1 s interval", p: func() Params { p := DefaultParams(); p.SendInterval = time.Second; return p }(), want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pp := tt.p
			if pp.Period == 0 {
				pp = p
			}
			tab := advanced(t, pp, tt.bindings, tt.calls)
			next := tab.NextDue()
			if got := (tab.BatchDue() - next) / int64(pp.SendInterval); got != tt.want {
				t.Errorf("BatchDue = NextDue + %d ticks, want + %d", got, tt.want)
			}
		})
	}
}

// advanced returns a table paced by p, its first tick due at 1000, with
// the given number of bindings, after Advance at each of calls.
func advanced(t *testing.T, p Params, bindings int, calls []int64) *Table {
	t.Helper()
	tab := mustNew(t, max(bindings, 1), p, 1000)
	for i := range bindings {
		if _, err := tab.Upsert(aor(i), "c", forever(i)); err != nil {
			t.Fatal(err)
		}
	}
	var out []Event
	for _, now := range calls {
		out = tab.Advance(now, out[:0])
	}
	return tab
}

func fastPeriod(d time.Duration) Params {
	p := DefaultParams()
	p.Period = d
	return p
}

// TestBatchDriver drives the pacer as the registrar does: each Advance
// half an interval after BatchDue. Batches never exceed send_one_time,
// every binding's interval is the period (within batchSpan, 1 % of the
// period, while bindings come and go), every binding is pinged once per
// period, and the driver wakes far less often than once per tick.
func TestBatchDriver(t *testing.T) {
	p := DefaultParams()
	iv := int64(p.SendInterval)
	tests := []struct {
		name     string
		n        int
		maxCalls int // Advance calls per period
	}{
		// 34+33+33 = 100 at best: two or three ticks a batch, about
		// 1,030 calls in 3,000 ticks (34 a second, against 100 a tick at
		// a time; fixed groups of 16 ticks took 1,125).
		{"100,000 bindings", 100000, 1060},
		// 3.33 per tick: a 150-ms span (16 ticks, 53 pings) a batch.
		{"10,000 bindings", 10000, 3000/16 + 1},
		{"100 bindings", 100, 3000/16 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustNew(t, tt.n, p, 0)
			rng := rand.New(rand.NewPCG(1, 2))
			ids := make([]ID, 0, tt.n)
			for i := range tt.n {
				id, err := tab.Upsert(aor(i), "c", forever(i))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			d := newDriver(t, tab, 0)
			drive := func(periods int, churn bool) int {
				calls := 0
				end := d.now + int64(periods)*int64(p.Period)
				for d.now < end {
					d.advance(tab.BatchDue() + iv/2)
					calls++
					if churn && calls%10 == 0 {
						// a binding leaves and another comes: loads move
						k := rng.IntN(len(ids))
						tab.Remove(ids[k])
						d.forget(ids[k])
						id, err := tab.Upsert(aor(tt.n+calls), "c", forever(tt.n+calls))
						if err != nil {
							t.Fatal(err)
						}
						ids[k] = id
					}
				}
				return calls
			}
			drive(2, false)
			d.resetGaps()
			calls := drive(3, false)
			if d.maxBatch > p.SendOneTime {
				t.Errorf("largest batch %d > %d", d.maxBatch, p.SendOneTime)
			}
			if calls > 3*tt.maxCalls {
				t.Errorf("%d Advance calls in 3 periods, want at most %d", calls, 3*tt.maxCalls)
			}
			// A stable table: each tick is released at the same place in
			// every period.
			if d.minGap != int64(p.Period) || d.maxGap != int64(p.Period) {
				t.Errorf("gaps %v..%v, want exactly %v", time.Duration(d.minGap), time.Duration(d.maxGap), p.Period)
			}
			// The window ends with the first call past 3 periods, up to a
			// span later: a binding whose tick is in that span gets 4.
			for id, n := range d.pings {
				if n < 3 || n > 4 {
					t.Fatalf("binding %#x pinged %d times in 3 periods", uint64(id), n)
				}
			}
			if len(d.pings) != tt.n {
				t.Errorf("%d bindings pinged, want %d", len(d.pings), tt.n)
			}
			t.Logf("%d calls in 3 periods, gaps %v..%v, largest batch %d", calls,
				time.Duration(d.minGap), time.Duration(d.maxGap), d.maxBatch)
			// With bindings coming and going the batches move, and every
			// interval still stays within the span.
			span := p.batchSpan()
			d.resetGaps()
			drive(3, true)
			if d.maxBatch > p.SendOneTime || d.minGap < int64(p.Period)-span || d.maxGap > int64(p.Period)+span {
				t.Errorf("with churn: largest batch %d, gaps %v..%v", d.maxBatch, time.Duration(d.minGap), time.Duration(d.maxGap))
			}
			checkInvariants(t, tab)
		})
	}
}
