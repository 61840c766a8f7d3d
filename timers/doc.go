// Package timers is the timer and keep-alive core of sbcd: everything that
// decides when a session must be refreshed, when a silent call must be torn
// down and when a NAT binding needs its next keep-alive.
//
// An SBC carries hundreds of thousands of timers at once (a refresh and a
// teardown deadline per call leg, a keep-alive per registered binding), and
// almost every one of them is rescheduled long before it fires. A runtime
// timer per deadline (time.AfterFunc) costs an allocation, a goroutine per
// expiry and well over a hundred bytes each, and its firing order depends on
// the scheduler. This package instead keeps every timer in memory that is
// allocated once, at start, with the configured capacity:
//
//   - it is deterministic: time only moves when the owner calls Advance(now)
//     with a monotonic time in nanoseconds; nothing inside reads the clock
//     (no time.Now), starts a goroutine or does I/O, so tests drive it in
//     virtual time and a given sequence of calls always yields the same
//     expiries in the same order;
//   - it is allocation-free: scheduling, rescheduling, cancelling and
//     advancing never allocate, so the garbage collector never sees the timer
//     path, however many calls are up;
//   - it is small: a timer is 20 bytes in one slice, linked by uint32 indices
//     (see Wheel), and every operation but Advance is O(1).
//
// The owner of a Wheel (in sbcd, the goroutine that owns one shard of the
// dialog table) is its only user: a Wheel is not safe for concurrent use.
//
// This package holds the hashed timing wheel itself (Wheel). Its
// sub-packages build the protocol state on top of it, each with fixed
// capacity and no allocation on the hot path:
//
//   - index: a fixed-capacity, string-keyed hash index (slots found by a hash
//     of the key, with a collision check on the stored key);
//   - session: the RFC 4028 per-leg session-timer state machine (negotiation,
//     refresh and teardown deadlines, what to do on each refresh outcome);
//   - dialog: the fixed-capacity dialog table holding per-call, per-leg timer
//     state;
//   - keepalive: the NAT binding table and the keep-alive pacer that spreads
//     one keep-alive per binding evenly over the period.
package timers
