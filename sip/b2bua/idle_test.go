package b2bua

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestIdleShardSleeps: a shard without calls stops its ticker (no wakeups
// while the box is idle, DESIGN.md §10), wakes on the first event with its
// wheel caught up to the clock, fires the call's timers on time in virtual
// time, and goes back to sleep once the call is over.
func TestIdleShardSleeps(t *testing.T) {
	e := newEnv(t, behavior{allowUpdate: true}, shortTimers, withClock())
	ctx := testCtx(t)
	asleep := func() bool {
		for _, s := range e.b.shards {
			if !s.asleep.Load() {
				return false
			}
		}
		return true
	}
	ticks := func() uint64 {
		var n uint64
		for _, s := range e.b.shards {
			n += s.ticks.Load()
		}
		return n
	}
	waitFor(ctx, t, asleep)
	before := ticks()
	time.Sleep(10 * shardTick) // real time: an awake shard would tick 10 times
	if n := ticks() - before; n != 0 || !asleep() {
		t.Fatalf("idle shards ticked %d times in %v (asleep %v)", n, 10*shardTick, asleep())
	}

	// An hour passes while the shards sleep; a call then arrives. Its
	// timers must be armed relative to now, not to the tick the wheel
	// stopped at.
	e.clock.Advance(time.Hour)
	a, _, ok, _ := e.call(ctx, sip.NewHeader("Supported", "timer"))
	if se := ok.GetHeader("Session-Expires"); se == nil || se.Value() != "90;refresher=uas" {
		t.Fatalf("A-leg Session-Expires %v", se)
	}
	if asleep() {
		t.Fatal("the shard holding the call is asleep")
	}
	e.clock.Advance(44 * time.Second)
	if err := e.callee.none(sip.UPDATE, 50*time.Millisecond); err != nil {
		t.Fatal("refresh before SE/2:", err)
	}
	e.clock.Advance(2 * time.Second) // 46 s: the refresh is due (RFC 4028 §10)
	e.caller.expect(ctx, sip.UPDATE)
	e.callee.expect(ctx, sip.UPDATE)

	if r := e.caller.request(ctx, a, sip.BYE, ""); r.StatusCode != 200 {
		t.Fatalf("BYE answered %d", r.StatusCode)
	}
	e.callee.expect(ctx, sip.BYE)
	e.cdr.next(ctx, t)
	waitFor(ctx, t, func() bool { return e.b.Stats().FreeSlots == 8 })
	waitFor(ctx, t, asleep)
}

// TestUntilTick: every shard's next tick is the next multiple of shardTick
// of the wall clock, strictly after now, at most shardTick away.
func TestUntilTick(t *testing.T) {
	base := time.Unix(1_800_000_000, 0) // a multiple of shardTick
	for _, c := range []struct {
		after time.Duration
		want  time.Duration
	}{
		{0, shardTick},
		{time.Nanosecond, shardTick - time.Nanosecond},
		{shardTick / 2, shardTick / 2},
		{shardTick - time.Nanosecond, time.Nanosecond},
		{7*shardTick + time.Millisecond, shardTick - time.Millisecond},
	} {
		now := base.Add(c.after)
		got := untilTick(now)
		if got != c.want {
			t.Errorf("untilTick(base+%v) = %v, want %v", c.after, got, c.want)
		}
		if next := now.Add(got).UnixNano(); next%int64(shardTick) != 0 {
			t.Errorf("base+%v: next tick at %d ns, not on the grid", c.after, next)
		}
	}
}
