package main

import (
	"fmt"
	"testing"

	"sbcd/platform/config"
)

// TestRuleSetsAgree: the config schema (with line numbers) and the timer
// core's Params.Validate both enforce the [session_timer] and
// [nat_keepalive] ranges. For boundary values of every key they must accept
// and refuse the same things, so the two rule sets cannot drift apart.
func TestRuleSetsAgree(t *testing.T) {
	type edit struct {
		name string
		set  func(c *config.Config, v int)
	}
	st := []edit{
		{"ttl", func(c *config.Config, v int) { c.SessionTimer.TTL = v }},
		{"min_se", func(c *config.Config, v int) { c.SessionTimer.MinSE = v }},
		{"update_segment", func(c *config.Config, v int) { c.SessionTimer.UpdateSegment = v }},
		{"no_timer_reinvite_interval", func(c *config.Config, v int) { c.SessionTimer.NoTimerReinviteInterval = v }},
		{"max_call_duration", func(c *config.Config, v int) { c.SessionTimer.MaxCallDuration = v }},
		{"early_timeout", func(c *config.Config, v int) { c.SessionTimer.EarlyTimeout = v }},
	}
	ka := []edit{
		{"period", func(c *config.Config, v int) { c.NATKeepalive.Period = v }},
		{"send_interval", func(c *config.Config, v int) { c.NATKeepalive.SendInterval = v }},
		{"send_one_time", func(c *config.Config, v int) { c.NATKeepalive.SendOneTime = v }},
		{"max_failures", func(c *config.Config, v int) { c.NATKeepalive.MaxFailures = v }},
	}
	values := []int{-1, 0, 1, 2, 3, 7, 9, 10, 11, 29, 30, 59, 60, 61, 89, 90, 91, 100, 101, 600, 999, 1000, 1001,
		3600, 3601, 7200, 86400, 86401, 100000, 100001, 604800, 604801}
	check := func(section string, edits []edit, domain func(c *config.Config) error) {
		for _, e := range edits {
			for _, v := range values {
				c := config.Default()
				e.set(&c, v)
				schemaErr := c.Validate()
				domainErr := domain(&c)
				if (schemaErr == nil) != (domainErr == nil) {
					t.Errorf("%s.%s = %d: config says %v, domain package says %v", section, e.name, v,
						errOrOK(schemaErr), errOrOK(domainErr))
				}
			}
		}
	}
	check("session_timer", st, func(c *config.Config) error { _, err := sessionParams(c.SessionTimer); return err })
	check("nat_keepalive", ka, func(c *config.Config) error { _, err := keepaliveParams(c.NATKeepalive); return err })
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return fmt.Sprintf("%q", err.Error())
}
