package main

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sbcd/platform/config"
	"sbcd/sip/b2bua"
	"sbcd/sip/registrar"
	"sbcd/timers/keepalive"
	"sbcd/timers/session"
)

// liveKey is a well-formed ed25519 public key line (no private key kept).
const liveKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICnJJPY1HAevWoVRIiZ2BBXulHelASgKbTuAO/GsPnBt admin@laptop"

// fakeParts records what live apply handed to the components, and fails
// on demand.
type fakeParts struct {
	calls []string
	fail  map[string]bool // setter name -> fail

	params   session.Params
	upstream string
	devices  map[string]netip.AddrPort
	trace    bool
	policy   registrar.Options
	ka       keepalive.Params
	keys     []string
}

func (f *fakeParts) record(name string) error {
	f.calls = append(f.calls, name)
	if f.fail[name] {
		return errors.New(name + " refused")
	}
	return nil
}

func (f *fakeParts) SetParams(p session.Params) error {
	if err := f.record("SetParams"); err != nil {
		return err
	}
	f.params = p
	return nil
}

func (f *fakeParts) SetRouting(up string, d map[string]netip.AddrPort) error {
	if err := f.record("SetRouting"); err != nil {
		return err
	}
	f.upstream, f.devices = up, d
	return nil
}

func (f *fakeParts) SetTrace(on bool) { _ = f.record("SetTrace"); f.trace = on }

func (f *fakeParts) SetPolicy(o registrar.Options) error {
	if err := f.record("SetPolicy"); err != nil {
		return err
	}
	f.policy = o
	return nil
}

func (f *fakeParts) SetKeepalive(p keepalive.Params) error {
	if err := f.record("SetKeepalive"); err != nil {
		return err
	}
	f.ka = p
	return nil
}

func (f *fakeParts) SetAuth(keys []string, _ string) error {
	if err := f.record("SetAuth"); err != nil {
		return err
	}
	f.keys = keys
	return nil
}

func newTestLive(t *testing.T, boot *config.Config, f *fakeParts) *live {
	t.Helper()
	clock := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	return &live{
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		calls:    f,
		reg:      f,
		ssh:      f,
		savePath: filepath.Join(t.TempDir(), "data", "sbcd.toml"),
		now:      func() time.Time { clock = clock.Add(time.Second); return clock },
		boot:     boot,
		running:  boot,
		state:    configState{Source: "boot"},
	}
}

func bootConfig() *config.Config {
	c := config.Default()
	c.SSH.AuthorizedKeys = []string{liveKey}
	c.SIP.Upstream = "sip:192.0.2.1:5060"
	return &c
}

// TestLiveApply: which components a change reaches, what waits for a
// restart, and that a failing component leaves everything as it was.
func TestLiveApply(t *testing.T) {
	tests := []struct {
		name        string
		edit        func(c *config.Config)
		fail        string   // a setter that refuses
		wantCalls   []string // setters called, in order
		wantRestart []string
		wantErr     string
	}{
		{name: "nothing changed", edit: func(*config.Config) {}},
		{name: "session TTL", edit: func(c *config.Config) { c.SessionTimer.TTL = 1800 }, wantCalls: []string{"SetParams"}},
		{name: "VOS update segment and early timeout together", edit: func(c *config.Config) {
			c.SessionTimer.UpdateSegment = 3
			c.SessionTimer.EarlyTimeout = 120
		}, wantCalls: []string{"SetParams"}},
		{name: "keep-alive message", edit: func(c *config.Config) { c.NATKeepalive.Message = "PING" }, wantCalls: []string{"SetKeepalive"}},
		{name: "devices and upstream", edit: func(c *config.Config) {
			c.SIP.Upstream = "sip:192.0.2.2:5070"
			c.Devices = []config.Device{{Name: "pbx", Address: "192.0.2.9:5060"}}
		}, wantCalls: []string{"SetRouting"}},
		{name: "registrar users and hostname", edit: func(c *config.Config) {
			c.System.Hostname = "edge1"
			c.Registrar.Auth = true
			c.Registrar.Users = []config.User{{Name: "1001", Password: "s3cret"}}
		}, wantCalls: []string{"SetPolicy"}},
		{name: "trace", edit: func(c *config.Config) { c.Trace.Enabled = true }, wantCalls: []string{"SetTrace"}},
		{name: "ssh password", edit: func(c *config.Config) { c.SSH.Password = "hunter22" }, wantCalls: []string{"SetAuth"}},
		{name: "console password is stored", edit: func(c *config.Config) { c.Console.Password = "x" }},
		{name: "capacity needs a restart", edit: func(c *config.Config) { c.SIP.MaxCalls = 500 }, wantRestart: []string{"sip.max_calls"}},
		{name: "restart and live keys mixed", edit: func(c *config.Config) {
			c.Registrar.MaxBindings = 10
			c.SessionTimer.MinSE = 120
		}, wantCalls: []string{"SetParams"}, wantRestart: []string{"registrar.max_bindings"}},
		{name: "a refusing component undoes the parts applied before it", edit: func(c *config.Config) {
			c.SessionTimer.TTL = 1800
			c.NATKeepalive.Period = 20
		}, fail: "SetKeepalive", wantCalls: []string{"SetParams", "SetKeepalive", "SetParams"}, wantErr: "SetKeepalive refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeParts{fail: map[string]bool{tt.fail: tt.fail != ""}}
			boot := bootConfig()
			l := newTestLive(t, boot, f)
			next := boot.Clone()
			tt.edit(next)
			rep, err := l.apply(next, "test")
			if diff := cmp.Diff(tt.wantCalls, f.calls); diff != "" {
				t.Errorf("setters called (-want +got):\n%s", diff)
			}
			st := l.State()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("apply error = %v, want %q", err, tt.wantErr)
				}
				if !st.Rejected || !strings.Contains(st.Reason, tt.wantErr) {
					t.Errorf("state after a failure = %+v, want rejected", st)
				}
				if l.Running().SessionTimer.TTL != boot.SessionTimer.TTL {
					t.Error("the running config changed although the apply failed")
				}
				p, _ := sessionParams(boot.SessionTimer)
				if f.params != p {
					t.Errorf("after the rollback the call engine runs %+v, want the old %+v", f.params, p)
				}
				return
			}
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			var restart []string
			for _, c := range rep.Restart {
				restart = append(restart, c.Key)
			}
			if diff := cmp.Diff(tt.wantRestart, restart); diff != "" {
				t.Errorf("restart keys (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRestart, st.Pending); diff != "" {
				t.Errorf("pending in status (-want +got):\n%s", diff)
			}
			if st.Rejected || st.Source != "test" {
				t.Errorf("state = %+v, want applied from test", st)
			}
			if diff := cmp.Diff(next, l.Running()); diff != "" {
				t.Errorf("running config (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLiveApplyValues: the values the components receive are the mapped
// configuration, and applying the same file twice changes nothing more.
func TestLiveApplyValues(t *testing.T) {
	f := &fakeParts{}
	l := newTestLive(t, bootConfig(), f)
	next := bootConfig()
	next.SessionTimer.TTL = 1200
	next.NATKeepalive.Message = "PING"
	next.System.Hostname = "edge1"
	next.Devices = []config.Device{{Name: "pbx", Address: "192.0.2.9:5060"}}
	if _, err := l.apply(next, "first"); err != nil {
		t.Fatal(err)
	}
	if f.params.TTL != 1200*time.Second || f.ka.Message != "PING" || f.policy.Realm != "edge1" ||
		f.devices["pbx"] != netip.MustParseAddrPort("192.0.2.9:5060") || f.upstream != "192.0.2.1:5060" {
		t.Errorf("components got params %+v, keep-alive %+v, realm %q, devices %v, upstream %q",
			f.params, f.ka, f.policy.Realm, f.devices, f.upstream)
	}
	n := len(f.calls)
	rep, err := l.apply(next.Clone(), "second")
	if err != nil || len(rep.Live) != 0 || len(f.calls) != n {
		t.Errorf("second apply of the same config: err %v, live %v, setters %v", err, rep.Live, f.calls[n:])
	}
}

// TestLivePartsCoverEveryKey: every key of the schema either needs a
// restart or has a live handler, so a new key cannot be silently ignored.
func TestLivePartsCoverEveryKey(t *testing.T) {
	keys := config.Keys()
	keys = append(keys, "registrar.user", "device", "network.interface") // arrays of tables, diffed whole
	for _, k := range keys {
		restart, p := config.NeedsRestart(k), partFor(k)
		switch {
		case restart && p != nil:
			t.Errorf("%s needs a restart but has the live handler %q", k, p.name)
		case !restart && p == nil:
			t.Errorf("%s is live (not in config's restart keys) but no part applies it", k)
		}
	}
}

// TestLiveUpload: an upload is validated completely before anything is
// written or applied; a good one is saved atomically and applied.
func TestLiveUpload(t *testing.T) {
	good := "[ssh]\nauthorized_keys = [\"" + liveKey + "\"]\n\n[session_timer]\nttl = 900\n"
	tests := []struct {
		name    string
		data    string
		wantErr []string // substrings of the refusal
	}{
		{name: "good", data: good},
		{name: "syntax error", data: "[session_timer\nttl = 900\n", wantErr: []string{"sbcd.toml:1: TOML syntax"}},
		{name: "unknown key and bad value at once", data: "[session_timer]\nttl = 10\nttll = 5\n",
			wantErr: []string{"sbcd.toml:2: session_timer.ttl", "sbcd.toml:3: session_timer.ttll: unknown key"}},
		{name: "VOS name as a key", data: "[session_timer]\nSS_SIP_SESSION_TTL = 900\n", wantErr: []string{"SS_SIP_SESSION_TTL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeParts{}
			l := newTestLive(t, bootConfig(), f)
			before := []byte("# the file before\n")
			if err := os.MkdirAll(filepath.Dir(l.savePath), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(l.savePath, before, 0o600); err != nil {
				t.Fatal(err)
			}
			err := l.Upload([]byte(tt.data))
			onDisk, rerr := os.ReadFile(l.savePath)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Upload: %v", err)
				}
				if string(onDisk) != tt.data {
					t.Errorf("file on disk = %q, want the upload", onDisk)
				}
				if f.params.TTL != 900*time.Second {
					t.Errorf("call engine TTL = %v, want 900s", f.params.TTL)
				}
				if st := l.State(); st.Rejected || st.Source != "upload" {
					t.Errorf("state = %+v", st)
				}
				return
			}
			if err == nil {
				t.Fatal("Upload accepted a bad file")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not mention %q", err, w)
				}
			}
			if string(onDisk) != string(before) {
				t.Errorf("the file on disk changed to %q", onDisk)
			}
			if len(f.calls) != 0 {
				t.Errorf("components were touched: %v", f.calls)
			}
			if st := l.State(); !st.Rejected || st.Source != "boot" {
				t.Errorf("state = %+v, want rejected, still running boot", st)
			}
		})
	}
}

// TestLiveUploadSaveFails: when the file cannot be written, the apply is
// undone, so the box never runs a configuration it would lose on restart.
func TestLiveUploadSaveFails(t *testing.T) {
	f := &fakeParts{}
	l := newTestLive(t, bootConfig(), f)
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l.savePath = filepath.Join(blocker, "sbcd.toml") // a file where a directory must be
	err := l.Upload([]byte("[sip]\nupstream = \"sip:192.0.2.1:5060\"\n[ssh]\nauthorized_keys = [\"" + liveKey + "\"]\n[session_timer]\nttl = 900\n"))
	if err == nil || !strings.Contains(err.Error(), "save") {
		t.Fatalf("Upload = %v, want a save error", err)
	}
	p, _ := sessionParams(bootConfig().SessionTimer)
	if f.params != p {
		t.Errorf("call engine TTL %v after the failed save, want the running %v", f.params.TTL, p.TTL)
	}
	if !slices.Equal(f.calls, []string{"SetParams", "SetParams"}) {
		t.Errorf("setters %v, want apply then undo", f.calls)
	}
	if st := l.State(); !st.Rejected || st.Source != "boot" {
		t.Errorf("state = %+v", st)
	}
}

// TestStatusText: the status names a rejected configuration first.
func TestStatusText(t *testing.T) {
	at := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	s := status{Version: "dev", Up: 90 * time.Second, MaxCall: 10,
		Calls:  b2bua.Stats{RefreshLate: b2bua.Lateness{Count: 7, P50: 1200 * time.Microsecond, P99: 15 * time.Millisecond, Max: 18250 * time.Microsecond}},
		Reg:    registrar.Stats{Capacity: 100, Bindings: 3, NATed: 2, PingsPerSecond: 1, PingsSent: 40, Evictions: 1},
		Config: configState{Source: "/data/sbcd.toml", Applied: at, Rejected: true, At: at.Add(time.Hour), Reason: "sbcd.toml:2: session_timer.ttl: 10 is below 90", Pending: []string{"sip.max_calls"}}}
	got := s.String()
	for _, w := range []string{"config: REJECTED at 2026-11-24 13:00:00Z, still running /data/sbcd.toml",
		"  sbcd.toml:2: session_timer.ttl", "restart needed for sip.max_calls", "bindings: 3 of 100, 2 NATed",
		"keep-alives: 1/s, 40 sent, 0 send errors, 1 evictions",
		"refreshes: 7 sent, late p50 1.2 ms, p99 15.0 ms, max 18.2 ms"} {
		if !strings.Contains(got, w) {
			t.Errorf("status lacks %q:\n%s", w, got)
		}
	}
}

// TestLiveStartsSSH: a box that started without a way in over SSH starts
// the service when an applied configuration first adds a key, once.
func TestLiveStartsSSH(t *testing.T) {
	f := &fakeParts{}
	boot := bootConfig()
	boot.SSH.AuthorizedKeys = nil
	l := newTestLive(t, boot, f)
	l.ssh = nil
	started := 0
	l.startSSH = func(c *config.Config) (authSetter, error) {
		started++
		if len(c.SSH.AuthorizedKeys) != 1 {
			t.Errorf("SSH started with keys %v", c.SSH.AuthorizedKeys)
		}
		return f, nil
	}
	noKey := boot.Clone()
	noKey.SessionTimer.TTL = 900
	if _, err := l.apply(noKey, "first"); err != nil || started != 0 {
		t.Fatalf("apply without a key: err %v, SSH started %d times", err, started)
	}
	withKey := noKey.Clone()
	withKey.SSH.AuthorizedKeys = []string{liveKey}
	if _, err := l.apply(withKey, "second"); err != nil || started != 1 || l.ssh == nil {
		t.Fatalf("apply adding a key: err %v, SSH started %d times", err, started)
	}
	another := withKey.Clone()
	another.SSH.Password = "hunter22"
	if _, err := l.apply(another, "third"); err != nil || started != 1 {
		t.Errorf("apply with SSH running: err %v, SSH started %d times, want once", err, started)
	}
	if !slices.Contains(f.calls, "SetAuth") {
		t.Errorf("the running SSH service did not get the new password: %v", f.calls)
	}
}
