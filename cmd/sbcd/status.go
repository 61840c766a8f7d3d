package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"sbcd/sip/b2bua"
	"sbcd/sip/registrar"
)

// status is the snapshot behind `show status` (SSH now, the serial console
// with the board work) and the front-panel LEDs: calls, bindings,
// keep-alives, evictions, and whether the last configuration was applied.
type status struct {
	Version string
	Up      time.Duration
	Calls   b2bua.Stats
	MaxCall int
	Reg     registrar.Stats
	Config  configState
}

// String is the text of `show status`: one fact per line, the
// configuration first because a rejected one is what an operator must see.
func (s status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sbcd %s, up %s\n", s.Version, s.Up.Truncate(time.Second))
	c := s.Config
	switch {
	case c.Rejected:
		fmt.Fprintf(&b, "config: REJECTED at %s, still running %s (applied %s)\n", stamp(c.At), c.Source, stamp(c.Applied))
		for _, line := range strings.Split(strings.TrimSpace(c.Reason), "\n") {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	default:
		fmt.Fprintf(&b, "config: %s, applied %s\n", c.Source, stamp(c.Applied))
	}
	if len(c.Pending) > 0 {
		fmt.Fprintf(&b, "config: restart needed for %s\n", strings.Join(c.Pending, ", "))
	}
	fmt.Fprintf(&b, "calls: %d up, %d ringing, %d of %d slots free\n", s.Calls.Up, s.Calls.Early, s.Calls.FreeSlots, s.MaxCall)
	if l := s.Calls.RefreshLate; l.Count > 0 {
		fmt.Fprintf(&b, "refreshes: %d sent, late p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", l.Count, ms(l.P50), ms(l.P99), ms(l.Max))
	}
	if len(s.Calls.Ended) > 0 {
		reasons := make([]string, 0, len(s.Calls.Ended))
		for r, n := range s.Calls.Ended {
			reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
		}
		sort.Strings(reasons)
		fmt.Fprintf(&b, "calls ended: %s\n", strings.Join(reasons, ", "))
	}
	r := s.Reg
	fmt.Fprintf(&b, "bindings: %d of %d, %d NATed\n", r.Bindings, r.Capacity, r.NATed)
	fmt.Fprintf(&b, "keep-alives: %.0f/s, %d sent, %d send errors, %d evictions\n", r.PingsPerSecond, r.PingsSent, r.SendErrors, r.Evictions)
	fmt.Fprintf(&b, "registrar: %d expired, %d auth failures, %d blocked, %d refused (table full)\n", r.Expirations, r.AuthFailures, r.Blocked, r.Full)
	return b.String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
