package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sbcd/platform/config"
	"sbcd/sip/registrar"
	"sbcd/timers/keepalive"
	"sbcd/timers/session"
)

// Live apply (DESIGN.md §5): a new configuration arrives by SIGHUP, by an
// upload over SSH, or (with the board work) by the console's `apply`. It is
// loaded and validated, diffed against the running configuration, and what
// can change live is handed to the running components; what needs a
// restart is reported. Any failure keeps the running configuration, is
// logged, and marks the status "config rejected" (which drives the status
// LED once the board work lands) until a configuration is applied again.
// Calls already up keep the values they negotiated: the components apply
// new values to new calls and registrations only.

// callSetter is what live apply changes in the call engine (*b2bua.B2BUA).
type callSetter interface {
	SetParams(session.Params) error
	SetRouting(upstream string, devices map[string]netip.AddrPort) error
	SetTrace(on bool)
}

// registrarSetter is what live apply changes in the registrar
// (*registrar.Registrar).
type registrarSetter interface {
	SetPolicy(registrar.Options) error
	SetKeepalive(keepalive.Params) error
}

// authSetter is what live apply changes in the SSH service (*mgmt.Server).
type authSetter interface {
	SetAuth(keys []string, password string) error
}

// part is one live-applicable piece of the configuration: the keys it
// covers (an exact key, or "table." for a whole table) and how to hand a
// configuration's values to the running component. set must change nothing
// when it fails.
type part struct {
	name string
	keys []string
	set  func(l *live, c *config.Config) error
}

// parts covers every key that config.NeedsRestart says is live;
// TestLivePartsCoverEveryKey holds the two lists together.
var parts = []part{
	{"session timers", []string{"session_timer."}, func(l *live, c *config.Config) error {
		p, err := sessionParams(c.SessionTimer)
		if err != nil {
			return err
		}
		return l.calls.SetParams(p)
	}},
	{"routing", []string{"sip.upstream", "device"}, func(l *live, c *config.Config) error {
		o, err := b2buaOptions(c, nil, nil)
		if err != nil {
			return err
		}
		return l.calls.SetRouting(o.Upstream, o.Devices)
	}},
	{"trace", []string{"trace.enabled"}, func(l *live, c *config.Config) error {
		l.calls.SetTrace(c.Trace.Enabled)
		return nil
	}},
	{"registrar", []string{"system.hostname", "registrar.min_expires", "registrar.max_expires", "registrar.auth", "registrar.user"},
		func(l *live, c *config.Config) error {
			o, err := registrarOptions(c, nil)
			if err != nil {
				return err
			}
			return l.reg.SetPolicy(o)
		}},
	{"keep-alive", []string{"nat_keepalive."}, func(l *live, c *config.Config) error {
		p, err := keepaliveParams(c.NATKeepalive)
		if err != nil {
			return err
		}
		return l.reg.SetKeepalive(p)
	}},
	{"ssh login", []string{"ssh.authorized_keys", "ssh.password"}, func(l *live, c *config.Config) error {
		if l.ssh == nil { // not running: the keys take effect when it starts
			return nil
		}
		return l.ssh.SetAuth(c.SSH.AuthorizedKeys, c.SSH.Password)
	}},
	// The console reads its password from the running configuration each
	// time it asks for it (board work), so storing it is applying it.
	{"console password", []string{"console.password"}, func(*live, *config.Config) error { return nil }},
}

// covers reports whether the part covers key.
func (p *part) covers(key string) bool {
	for _, k := range p.keys {
		if k == key || (strings.HasSuffix(k, ".") && strings.HasPrefix(key, k)) {
			return true
		}
	}
	return false
}

// partFor returns the part covering key, or nil.
func partFor(key string) *part {
	for i := range parts {
		if parts[i].covers(key) {
			return &parts[i]
		}
	}
	return nil
}

// configState is the outcome of the last apply, for `show status` and the
// status LED.
type configState struct {
	Source   string    // where the configuration came from: a path, "upload", "built-in defaults"
	Applied  time.Time // when the running configuration was applied
	Rejected bool      // the last attempt failed; the running configuration is older
	Reason   string    // why, one line per problem
	At       time.Time // when the last attempt failed
	Pending  []string  // keys changed in the saved file that wait for a restart
}

// applyReport says what an apply did.
type applyReport struct {
	Live    []config.Change // applied to the running components
	Restart []config.Change // wait for a restart (against the configuration sbcd started with)
}

// live holds the running configuration and applies new ones. Its methods
// are safe for concurrent use; applies are serialised.
type live struct {
	log   *slog.Logger
	calls callSetter
	reg   registrarSetter
	ssh   authSetter // nil while the SSH service is not running
	// startSSH starts the SSH service when an applied configuration first
	// makes it possible (a key or password added); nil in tests.
	startSSH func(c *config.Config) (authSetter, error)
	// flagPath is -config FILE ("" for the search order of DESIGN.md §5);
	// savePath is where uploads are written.
	flagPath, savePath string
	now                func() time.Time

	mu      sync.Mutex
	boot    *config.Config // what sbcd started with: the reference for restart keys
	running *config.Config // what the components run with
	state   configState
}

// State returns the outcome of the last apply.
func (l *live) State() configState {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state
	st.Pending = append([]string(nil), st.Pending...)
	return st
}

// Running returns a copy of the running configuration.
func (l *live) Running() *config.Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running.Clone()
}

// apply hands next to the running components. On error nothing changes:
// parts already applied are put back to the running values.
func (l *live) apply(next *config.Config, source string) (applyReport, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applyLocked(next, source)
}

func (l *live) applyLocked(next *config.Config, source string) (applyReport, error) {
	var rep applyReport
	liveCh, _ := config.Plan(config.Diff(l.running, next))
	_, rep.Restart = config.Plan(config.Diff(l.boot, next))
	var touched []*part
	for _, c := range liveCh {
		p := partFor(c.Key)
		if p == nil { // TestLivePartsCoverEveryKey keeps this from happening
			return rep, l.reject(fmt.Errorf("apply %s: no live handler for %s", source, c.Key))
		}
		if !containsPart(touched, p) {
			touched = append(touched, p)
		}
	}
	for i, p := range touched {
		if err := p.set(l, next); err != nil {
			for _, q := range touched[:i] {
				if rerr := q.set(l, l.running); rerr != nil {
					l.log.Error("config apply: could not put back the running values", "part", q.name, "err", rerr)
				}
			}
			return rep, l.reject(fmt.Errorf("apply %s: %s: %w", p.name, source, err))
		}
	}
	if l.ssh == nil && l.startSSH != nil && sshWanted(next) {
		s, err := l.startSSH(next)
		if err != nil {
			// The rest is applied; SSH stays off, and says why.
			l.log.Error("ssh service not started", "err", err)
		} else {
			l.ssh = s
		}
	}
	rep.Live = liveCh
	l.running = next
	l.state = configState{Source: source, Applied: l.now()}
	for _, c := range rep.Restart {
		l.state.Pending = append(l.state.Pending, c.Key)
	}
	return rep, nil
}

func containsPart(ps []*part, p *part) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// reject records a failed apply and returns err.
func (l *live) reject(err error) error {
	l.state.Rejected = true
	l.state.Reason = err.Error()
	l.state.At = l.now()
	return err
}

// logReport logs what an apply changed, without secrets (Diff hides them).
func (l *live) logReport(source string, rep applyReport) {
	if len(rep.Live) == 0 && len(rep.Restart) == 0 {
		l.log.Info("config applied: nothing changed", "source", source)
		return
	}
	for _, c := range rep.Live {
		l.log.Info("config applied", "source", source, "key", c.Key, "old", c.Old, "new", c.New)
	}
	for _, c := range rep.Restart {
		l.log.Warn("config saved, takes effect after a restart", "source", source, "key", c.Key, "running", c.Old, "saved", c.New)
	}
}

// Reload is SIGHUP: read the configuration again (the -config file, else
// the search order of DESIGN.md §5) and apply it. A failure is logged and
// leaves the running configuration in place.
func (l *live) Reload() {
	var (
		c    *config.Config
		path string
		err  error
	)
	if l.flagPath != "" {
		path = l.flagPath
		c, err = config.LoadFile(path)
	} else {
		c, path, err = config.Load(config.SavedPath, config.ImagePath)
	}
	source := path
	if source == "" {
		source = "built-in defaults"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		err = l.reject(fmt.Errorf("reload: %w", err))
		l.log.Error("config rejected: the running configuration stays", "source", source, "err", err)
		return
	}
	rep, err := l.applyLocked(c, source)
	if err != nil {
		l.log.Error("config rejected: the running configuration stays", "source", source, "err", err)
		return
	}
	l.logReport(source, rep)
}

// Upload is the SSH service's Options.Upload: validate the uploaded file
// completely (syntax, schema, and the mapping onto every component), and
// only then save it atomically to savePath and apply it. A refusal returns
// the problems (shown to the scp or sftp user, and logged by the SSH
// service); the file on disk and the running configuration stay as they
// were.
func (l *live) Upload(data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	const source = "upload"
	c, warnings, err := config.Check(data, "sbcd.toml")
	if err != nil {
		return l.reject(err)
	}
	if err := mappable(c); err != nil {
		return l.reject(err)
	}
	prev, prevState := l.running, l.state
	rep, err := l.applyLocked(c, source)
	if err != nil {
		return err
	}
	if err := save(l.savePath, data); err != nil {
		// Not on disk, so not applied either: put the running values back.
		if _, rerr := l.applyLocked(prev, "rollback"); rerr != nil {
			l.log.Error("config upload: could not put back the running values", "err", rerr)
		}
		l.state = prevState
		return l.reject(err)
	}
	if warnings != nil {
		l.log.Warn("uploaded config has warnings", "warnings", warnings.Error())
	}
	l.logReport(source, rep)
	return nil
}

// save writes an accepted upload where the next start reads it.
func save(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := config.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// mappable checks that c maps onto every component's options, so that a
// file the schema accepts but a component would refuse is refused before
// it is saved.
func mappable(c *config.Config) error {
	var errs []error
	if _, err := sessionParams(c.SessionTimer); err != nil {
		errs = append(errs, err)
	}
	if _, err := keepaliveParams(c.NATKeepalive); err != nil {
		errs = append(errs, err)
	}
	if _, err := b2buaOptions(c, nil, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sshWanted reports whether the SSH service should run: a listen address
// and a way in (DESIGN.md §5: no key and no password, no SSH).
func sshWanted(c *config.Config) bool {
	return c.SSH.Listen != "" && (len(c.SSH.AuthorizedKeys) > 0 || c.SSH.Password != "")
}
