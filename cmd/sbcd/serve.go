package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"sbcd/platform/config"
	"sbcd/platform/mgmt"
	"sbcd/sip/b2bua"
	"sbcd/sip/cdr"
	"sbcd/sip/registrar"
)

// How long a clean stop may take: calls get their BYEs and their CDRs are
// fsynced first (DESIGN.md §2: on SIGTERM sbcd stops taking calls, BYEs what
// is up, writes the CDRs, exits).
const (
	shutdownCalls = 40 * time.Second // beyond Timer F for the BYEs
	shutdownCDRs  = 10 * time.Second
)

// b2buaOptions maps the configuration onto the call engine's options.
func b2buaOptions(c *config.Config, log *slog.Logger, sink b2bua.CDRSink) (b2bua.Options, error) {
	sp, err := sessionParams(c.SessionTimer)
	if err != nil {
		return b2bua.Options{}, err
	}
	o := b2bua.Options{
		Advertised: c.SIP.AdvertisedAddress,
		Devices:    make(map[string]netip.AddrPort, len(c.Devices)),
		Params:     sp,
		MaxCalls:   c.SIP.MaxCalls,
		CDR:        sink,
		Logger:     log,
		Trace:      c.Trace.Enabled,
	}
	for i, s := range c.SIP.Listen {
		l, err := config.ParseListen(s)
		if err != nil {
			return b2bua.Options{}, fmt.Errorf("map sip.listen[%d]: %w", i, err)
		}
		o.Listen = append(o.Listen, b2bua.Listen{Network: l.Transport, Addr: l.Addr.String()})
	}
	if c.SIP.Upstream != "" {
		u, err := config.ParseSIPURI(c.SIP.Upstream)
		if err != nil {
			return b2bua.Options{}, fmt.Errorf("map sip.upstream: %w", err)
		}
		o.Upstream = u.HostPort()
	}
	for i, d := range c.Devices {
		a, err := netip.ParseAddrPort(d.Address)
		if err != nil {
			return b2bua.Options{}, fmt.Errorf("map device[%d].address: %w", i, err)
		}
		o.Devices[d.Name] = a
	}
	return o, nil
}

// registrarOptions maps [registrar] and [nat_keepalive] onto the
// registrar's options (DESIGN.md §3).
func registrarOptions(c *config.Config, log *slog.Logger) (registrar.Options, error) {
	kp, err := keepaliveParams(c.NATKeepalive)
	if err != nil {
		return registrar.Options{}, err
	}
	o := registrar.Options{
		MaxBindings: c.Registrar.MaxBindings,
		MinExpires:  c.Registrar.MinExpiresDuration(),
		MaxExpires:  c.Registrar.MaxExpiresDuration(),
		Auth:        c.Registrar.Auth,
		Realm:       c.System.Hostname,
		Keepalive:   kp,
		Logger:      log,
	}
	if len(c.Registrar.Users) > 0 {
		o.Users = make(map[string]string, len(c.Registrar.Users))
		for _, u := range c.Registrar.Users {
			o.Users[u.Name] = u.Password
		}
	}
	return o, nil
}

// maxUDPMessage is the largest SIP message sbcd sends over UDP. sipgo
// refuses to send anything within 200 bytes of sip.UDPMTUSize (1500 by
// default), reading RFC 3261 §18.1.1 as "use TCP instead"; but a response,
// or a request to a UDP-only phone behind NAT, has no other transport, and a
// dropped 2xx with a large SDP loses the call. sbcd sends such messages and
// lets IP fragment them, as SBCs commonly do.
const maxUDPMessage = 65507 // largest UDP payload over IPv4

// cdrCommitInterval gathers CDRs for up to 50 ms between group commits: at
// most 20 fsyncs a second however high the call rate, and a slot waits at
// most 50 ms more for its record to be durable (DESIGN.md §4: durable before
// the slot is freed). Each fsync costs the kernel journal work in sbcd's
// thread and, as a blocking system call, wakes the runtime's sysmon thread
// into 20-µs polling; at 1,500 calls/s, 10 ms (100 fsyncs/s) cost about
// 15-25 µs per call more than 50 ms (BENCHMARKS.md). A record after a quiet
// spell is still written at once.
const cdrCommitInterval = 50 * time.Millisecond

// serve runs the call engine with its CDR writer, the registrar and the
// SSH management service until stop is done, applying the configuration
// again on each reload, then shuts down cleanly. It returns the exit code.
func serve(cfg *config.Config, files paths, log *slog.Logger, reload <-chan os.Signal, stop <-chan struct{}, onStop func()) int {
	sip.UDPMTUSize = maxUDPMessage + 200 // process-wide: set once, before any transport exists
	w, err := cdr.New(cdr.Options{
		Dir:      cfg.CDRDir(),
		Interval: cdrCommitInterval,
		OnError:  func(err error) { log.Error("cdr write failed", "err", err) },
	})
	if err != nil {
		log.Error("cannot start the CDR writer: calls are not taken without billing records",
			"dir", cfg.CDRDir(), "err", err, "hint", "set system.data_dir or cdr.dir to a writable directory")
		return exitError
	}
	closeCDRs := func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownCDRs)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			log.Error("closing the CDR writer", "err", err)
		}
	}
	opts, err := b2buaOptions(cfg, log, w)
	if err != nil {
		closeCDRs()
		log.Error("config rejected", "err", err)
		return exitError
	}
	ropts, err := registrarOptions(cfg, log)
	if err != nil {
		closeCDRs()
		log.Error("config rejected", "err", err)
		return exitError
	}
	reg, err := registrar.New(ropts)
	if err != nil {
		closeCDRs()
		log.Error("cannot start the registrar", "err", err)
		return exitError
	}
	opts.Registrar = reg
	b2bua.TuneSipgo()
	b, err := b2bua.New(opts)
	if err != nil {
		closeCDRs()
		log.Error("cannot start SIP", "err", err)
		return exitError
	}
	tuneGC(log, os.Getenv) // the tables are allocated: size the GC's headroom

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- b.Serve(ctx) }()
	var background sync.WaitGroup // the keep-alive engine and the thread tuner
	background.Go(func() {
		if err := reg.Run(ctx, b); err != nil {
			log.Error("keep-alive engine stopped", "err", err)
		}
	})
	background.Go(func() { newProcTuner(log, os.Getenv).run(ctx) })
	defer func() { cancel(); background.Wait() }()

	source := files.loaded
	if source == "" {
		source = "built-in defaults"
	}
	start := time.Now()
	l := &live{
		log:      log,
		calls:    b,
		reg:      reg,
		flagPath: files.flag,
		savePath: files.save(),
		now:      time.Now,
		boot:     cfg,
		running:  cfg,
		state:    configState{Source: source, Applied: start},
	}
	var sshDone sync.WaitGroup
	defer sshDone.Wait() // after cancel (deferred later, runs first)
	defer cancel()
	statusText := func() string {
		return status{Version: version, Up: time.Since(start), Calls: b.Stats(), MaxCall: opts.MaxCalls,
			Reg: reg.Stats(), Config: l.State()}.String()
	}
	l.startSSH = func(c *config.Config) (authSetter, error) {
		srv, err := newSSH(c, files, l.Upload, statusText, log)
		if err != nil {
			return nil, err
		}
		sshDone.Add(1)
		go func() {
			defer sshDone.Done()
			if err := srv.Serve(ctx); err != nil {
				log.Error("ssh service stopped", "err", err)
			}
		}()
		log.Info("serving SSH (sftp, scp)", "listen", srv.Addr().String(), "authorized_keys", len(c.SSH.AuthorizedKeys),
			"password", c.SSH.Password != "", "config", l.savePath)
		return srv, nil
	}
	switch {
	case cfg.SSH.Listen == "":
		log.Info("ssh service off (ssh.listen is empty)")
	case !sshWanted(cfg):
		log.Warn("ssh service not started: no authorized key and no password", "hint", "add a key to ssh.authorized_keys on the console, then apply")
	default:
		srv, err := l.startSSH(cfg)
		if err != nil {
			// SIP keeps running: calls matter more, and the console is still there.
			log.Error("ssh service not started", "err", err)
		} else {
			l.ssh = srv
		}
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-reload:
				l.Reload()
			}
		}
	}()
	addrs := make([]string, 0, len(b.Addrs()))
	for _, a := range b.Addrs() {
		addrs = append(addrs, a.Network+":"+a.Addr)
	}
	log.Info("serving SIP", "listen", strings.Join(addrs, ","), "upstream", opts.Upstream,
		"devices", len(opts.Devices), "max_calls", opts.MaxCalls, "cdr_dir", cfg.CDRDir(),
		"max_bindings", ropts.MaxBindings, "registrar_auth", ropts.Auth,
		"keepalive", ropts.Keepalive.Mode.String(), "keepalive_period", ropts.Keepalive.Period)

	code := exitOK
	select {
	case <-stop:
		if onStop != nil {
			onStop()
		}
		sctx, scancel := context.WithTimeout(context.Background(), shutdownCalls)
		if err := b.Shutdown(sctx); err != nil {
			log.Error("shutdown: calls still up when the time ran out", "err", err)
		}
		scancel()
		cancel()
		if err := <-served; err != nil {
			log.Error("serve", "err", err)
		}
	case err := <-served:
		log.Error("SIP service stopped", "err", err)
		code = exitError
	}
	closeCDRs()
	late := b.Stats().RefreshLate
	log.Info("session refreshes", "sent", late.Count, "late_p50_ms", ms(late.P50),
		"late_p99_ms", ms(late.P99), "late_max_ms", ms(late.Max))
	st := w.Stats()
	log.Info("stopped", "cdrs_written", st.Written, "cdrs_failed", st.Failed)
	return code
}

// ms is d in milliseconds with a tenth, for log lines and status.
func ms(d time.Duration) float64 { return float64(d/(100*time.Microsecond)) / 10 }

// newSSH builds the management service from [ssh] (DESIGN.md §5): the host
// key lives on the data partition, /etc/sbcd/sbcd.toml is the file uploads
// are saved to (showing the file sbcd loaded until there is one), /cdr
// and /trace are read-only views of the data partition.
func newSSH(c *config.Config, files paths, upload func([]byte) error, status func() string, log *slog.Logger) (*mgmt.Server, error) {
	if err := os.MkdirAll(c.System.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("ssh: data directory for the host key: %w", err)
	}
	o := mgmt.Options{
		Listen:         c.SSH.Listen,
		AuthorizedKeys: c.SSH.AuthorizedKeys,
		Password:       c.SSH.Password,
		HostKeyPath:    filepath.Join(c.System.DataDir, "ssh_host_ed25519_key"),
		ConfigPath:     files.save(),
		CDRDir:         c.CDRDir(),
		TraceDir:       filepath.Join(c.System.DataDir, "trace"),
		Upload:         upload,
		Status:         status,
		Logger:         log,
	}
	if files.loaded != o.ConfigPath {
		o.DefaultConfigPath = files.loaded
	}
	return mgmt.New(o)
}
