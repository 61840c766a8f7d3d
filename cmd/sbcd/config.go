package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"sbcd/platform/config"
	"sbcd/timers/keepalive"
	"sbcd/timers/session"
)

// loadConfig applies the search order of DESIGN.md §5: the -config file
// when given (a missing file is an error), else /data/sbcd.toml, else the
// image's /etc/sbcd/sbcd.toml, else the built-in defaults (path "").
func loadConfig(flagPath string) (*config.Config, string, error) {
	if flagPath != "" {
		c, err := config.LoadFile(flagPath)
		return c, flagPath, err
	}
	return config.Load(config.SavedPath, config.ImagePath)
}

// sessionParams maps [session_timer] onto the timer core's parameters.
func sessionParams(st config.SessionTimer) (session.Params, error) {
	method, err := session.ParseMethod(st.RefreshMethod)
	if err != nil {
		return session.Params{}, fmt.Errorf("map session_timer.refresh_method: %w", err)
	}
	pref, err := session.ParsePreference(st.Refresher)
	if err != nil {
		return session.Params{}, fmt.Errorf("map session_timer.refresher: %w", err)
	}
	p := session.Params{
		TTL:                     st.TTLDuration(),
		UpdateSegment:           st.UpdateSegment,
		MinSE:                   st.MinSEDuration(),
		RefreshMethod:           method,
		Refresher:               pref,
		NoTimerReinviteInterval: st.NoTimerReinviteIntervalDuration(),
		MaxCallDuration:         st.CallDurationLimit(),
		EarlyTimeout:            st.EarlyTimeoutDuration(),
	}
	if err := p.Validate(); err != nil {
		return session.Params{}, fmt.Errorf("map [session_timer]: %w", err)
	}
	return p, nil
}

// keepaliveParams maps [nat_keepalive] onto the keep-alive engine's
// parameters.
func keepaliveParams(k config.NATKeepalive) (keepalive.Params, error) {
	mode, err := keepalive.ParseMode(k.Mode)
	if err != nil {
		return keepalive.Params{}, fmt.Errorf("map nat_keepalive.mode: %w", err)
	}
	p := keepalive.Params{
		Message:      k.Message,
		Period:       k.PeriodDuration(),
		SendInterval: k.SendIntervalDuration(),
		SendOneTime:  k.SendOneTime,
		Mode:         mode,
		NATedOnly:    k.NATedOnly,
		MaxFailures:  k.MaxFailures,
	}
	if err := p.Validate(); err != nil {
		return keepalive.Params{}, fmt.Errorf("map [nat_keepalive]: %w", err)
	}
	return p, nil
}

// check is `sbcd check FILE`: validate the file, then say in plain words
// what the box will do with it (DESIGN.md §5). Exit 0 when valid, 1 when
// not.
func check(path string, stdout, stderr io.Writer) int {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "sbcd: check: %v\n", err)
		return exitError
	}
	c, warnings, err := config.Check(data, path)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n%s: invalid\n", err, path)
		return exitError
	}
	sp, err := sessionParams(c.SessionTimer)
	if err == nil {
		var kp keepalive.Params
		kp, err = keepaliveParams(c.NATKeepalive)
		if err == nil {
			fmt.Fprintf(stdout, "%s: valid\n", path)
			timeline(stdout, c, sp, kp)
		}
	}
	if err != nil {
		// The file passed the schema but a domain package refuses it:
		// a gap between the two rule sets, reported rather than hidden.
		fmt.Fprintf(stderr, "%s: %v\n%s: invalid\n", path, err, path)
		return exitError
	}
	if warnings != nil {
		fmt.Fprintln(stdout, "warnings:")
		for _, w := range warnings.List {
			fmt.Fprintf(stdout, "  %s\n", w.Format(path))
		}
	}
	return exitOK
}

// timeline prints the effective behaviour of a valid configuration.
func timeline(w io.Writer, c *config.Config, sp session.Params, kp keepalive.Params) {
	secs := func(d time.Duration) string { return fmt.Sprintf("%d s", int64(d/time.Second)) }
	st := c.SessionTimer
	fmt.Fprintf(w, "session timers (RFC 4028):\n")
	fmt.Fprintf(w, "  ttl (SS_SIP_SESSION_TTL) = %d s, min_se = %d s, update_segment (SS_SIP_SESSION_UPDATE_SEGMENT) = %d\n",
		st.TTL, st.MinSE, st.UpdateSegment)
	fmt.Fprintf(w, "  when sbcd refreshes: refresh at %s after each refresh (ttl/update_segment), by %s\n",
		secs(sp.RefreshAfter(sp.TTL)), refreshMethodWords(sp.RefreshMethod))
	fmt.Fprintf(w, "  when the endpoint refreshes: a call without refresh is torn down at %s (SE - min(32 s, SE/3))\n",
		secs(session.TeardownAfter(sp.TTL)))
	fmt.Fprintf(w, "  who refreshes where sbcd may choose: %s\n", sp.Refresher)
	if sp.NoTimerReinviteInterval > 0 {
		fmt.Fprintf(w, "  legs without timer support: probed with a re-INVITE every %s (SS_SIP_NO_TIMER_REINVITE_INTERVAL)\n",
			secs(sp.NoTimerReinviteInterval))
	} else {
		fmt.Fprintf(w, "  legs without timer support: not probed (no_timer_reinvite_interval = 0)\n")
	}
	if sp.MaxCallDuration > 0 {
		fmt.Fprintf(w, "  calls are cut at %s (max_call_duration)\n", secs(sp.MaxCallDuration))
	} else {
		fmt.Fprintf(w, "  no maximum call duration\n")
	}
	fmt.Fprintf(w, "  unanswered calls are cleaned up after %s (SS_SIP_SESSION_TIMEOUT_EARLY_HANGUP); an unacknowledged 2xx after %s (Timer H)\n",
		secs(sp.EarlyTimeout), secs(session.TimerH))

	fmt.Fprintf(w, "NAT keep-alive:\n")
	if !kp.Enabled() {
		fmt.Fprintf(w, "  off (empty message in message mode)\n")
	} else {
		fmt.Fprintf(w, "  mode %s, one keep-alive per binding every %s (SS_SIP_NAT_KEEP_ALIVE_PERIOD), %s\n",
			kp.Mode, secs(kp.Period), natScope(kp.NATedOnly))
		fmt.Fprintf(w, "  at most %d per batch (SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME), batches at least %v apart (SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL): room for %d bindings per period\n",
			kp.SendOneTime, kp.SendInterval, kp.Capacity())
		n := c.Registrar.MaxBindings
		fmt.Fprintf(w, "  with a full binding table (%d): %.1f packets/s\n", n, kp.PacketsPerSecond(min(n, kp.Capacity())))
	}
	fmt.Fprintf(w, "capacity: %d calls, %d bindings (allocated at start)\n", c.SIP.MaxCalls, c.Registrar.MaxBindings)
}

func refreshMethodWords(m session.Method) string {
	switch m {
	case session.MethodUpdate:
		return "UPDATE"
	case session.MethodInvite:
		return "re-INVITE"
	}
	return "UPDATE when the peer allows it, else re-INVITE"
}

func natScope(natedOnly bool) string {
	if natedOnly {
		return "NATed bindings only"
	}
	return "every binding"
}
