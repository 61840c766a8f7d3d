package mgmt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

const (
	goodConfig = "[sip]\nmax_calls = 100\n"
	badConfig  = "[sip]\nmax_calls = 0 # bad\n"
	problems   = "sbcd.toml:2: sip.max_calls: 0 is below the minimum 1 (hint: at least one call)\nsbcd.toml:5: ssh.listen: \"x\" is not HOST:PORT"
	cdrData    = "start,end,from,to\n2026-11-24T10:00:00Z,2026-11-24T10:01:00Z,1001,1002\n"
	statusText = "calls: 3\nregistrations: 7\n"
)

// env is one running server with its files and a client key.
type env struct {
	t                           *testing.T
	dir, cfgPath, cdrDir, trDir string
	keyPath, keyLine            string
	signer                      ssh.Signer
	srv                         *Server
	port                        string

	mu      sync.Mutex
	uploads [][]byte
}

// clientKey writes an ed25519 private key (OpenSSH format, 0600) and
// returns its path, its authorized_keys line and a signer.
func clientKey(t *testing.T, dir, name string) (string, string, ssh.Signer) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, name)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return p, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + name, signer
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start runs a server on 127.0.0.1:0 until the test ends.
func start(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.cfgPath = filepath.Join(e.dir, "sbcd.toml")
	e.cdrDir = filepath.Join(e.dir, "cdr")
	e.trDir = filepath.Join(e.dir, "trace")
	for _, d := range []string{e.cdrDir, e.trDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, e.cfgPath, goodConfig)
	mustWrite(t, filepath.Join(e.cdrDir, "2026-11-24.csv"), cdrData)
	mustWrite(t, filepath.Join(e.cdrDir, "notes.txt"), "not a cdr")
	mustWrite(t, filepath.Join(e.trDir, "sip.pcap"), "trace bytes")
	e.keyPath, e.keyLine, e.signer = clientKey(t, e.dir, "id_admin")
	o := Options{
		Listen:         "127.0.0.1:0",
		AuthorizedKeys: []string{e.keyLine},
		HostKeyPath:    filepath.Join(e.dir, "ssh_host_ed25519_key"),
		ConfigPath:     e.cfgPath,
		CDRDir:         e.cdrDir,
		TraceDir:       e.trDir,
		Status:         func() string { return statusText },
		Logger:         testLogger(t),
		Upload: func(data []byte) error {
			e.mu.Lock()
			e.uploads = append(e.uploads, bytes.Clone(data))
			e.mu.Unlock()
			if bytes.Contains(data, []byte("bad")) {
				return errors.New(problems)
			}
			return os.WriteFile(e.cfgPath, data, 0o600)
		},
	}
	if mod != nil {
		mod(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	_, e.port, _ = net.SplitHostPort(srv.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return e
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e *env) uploaded() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slicesClone(e.uploads)
}

func slicesClone(in [][]byte) [][]byte { return append([][]byte(nil), in...) }

func commonOpts(key string) []string {
	return []string{"-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-i", key}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs an OpenSSH client binary with a deadline.
func run(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = strings.NewReader("")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("%s %v: %v", name, args, err)
		}
		code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v: timed out", name, args)
	}
	return result{out.String(), errb.String(), code}
}

func needClient(t *testing.T, bin string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not installed", bin)
	}
}

// scp runs /usr/bin/scp; classic selects -O.
func (e *env) scp(classic bool, key string, src, dst string) result {
	e.t.Helper()
	needClient(e.t, "/usr/bin/scp")
	args := append(commonOpts(key), "-P", e.port)
	if classic {
		args = append(args, "-O")
	}
	return run(e.t, "/usr/bin/scp", append(args, src, dst)...)
}

func (e *env) ssh(key string, args ...string) result {
	e.t.Helper()
	needClient(e.t, "/usr/bin/ssh")
	a := append(commonOpts(key), "-p", e.port, "admin@127.0.0.1")
	return run(e.t, "/usr/bin/ssh", append(a, args...)...)
}

func (e *env) remote(p string) string { return "admin@127.0.0.1:" + p }

var modes = []struct {
	name    string
	classic bool
}{{"sftp", false}, {"classic", true}}

func TestSCPUpload(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := start(t, nil)
			newCfg := "[sip]\nmax_calls = 2000\n# uploaded via " + m.name + "\n"
			src := filepath.Join(t.TempDir(), "sbcd.toml")
			mustWrite(t, src, newCfg)
			r := e.scp(m.classic, e.keyPath, src, e.remote("/etc/sbcd/sbcd.toml"))
			if r.code != 0 {
				t.Fatalf("scp exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if diff := cmp.Diff([]string{newCfg}, toStrings(e.uploaded())); diff != "" {
				t.Errorf("Upload calls (-want +got):\n%s", diff)
			}
			got, _ := os.ReadFile(e.cfgPath)
			if string(got) != newCfg {
				t.Errorf("config file = %q, want %q", got, newCfg)
			}
		})
	}
}

func TestSCPUploadToLoginDir(t *testing.T) {
	// `scp sbcd.toml box:` lands in the login directory, /etc/sbcd.
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := start(t, nil)
			src := filepath.Join(t.TempDir(), "sbcd.toml")
			mustWrite(t, src, goodConfig+"# home\n")
			if r := e.scp(m.classic, e.keyPath, src, e.remote("")); r.code != 0 {
				t.Fatalf("scp exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if got := toStrings(e.uploaded()); len(got) != 1 || got[0] != goodConfig+"# home\n" {
				t.Errorf("uploads = %q", got)
			}
		})
	}
}

func toStrings(b [][]byte) []string {
	var out []string
	for _, x := range b {
		out = append(out, string(x))
	}
	return out
}

func TestSCPUploadRefused(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := start(t, nil)
			src := filepath.Join(t.TempDir(), "sbcd.toml")
			mustWrite(t, src, badConfig)
			r := e.scp(m.classic, e.keyPath, src, e.remote("/etc/sbcd/sbcd.toml"))
			t.Logf("scp exit %d, stderr:\n%s", r.code, r.stderr)
			if r.code == 0 {
				t.Errorf("scp exit 0, want failure")
			}
			for _, line := range strings.Split(problems, "\n") {
				if !strings.Contains(r.stderr, line) {
					t.Errorf("stderr lacks %q", line)
				}
			}
			if diff := cmp.Diff([]string{badConfig}, toStrings(e.uploaded())); diff != "" {
				t.Errorf("Upload calls (-want +got):\n%s", diff)
			}
			got, _ := os.ReadFile(e.cfgPath)
			if string(got) != goodConfig {
				t.Errorf("config file changed to %q", got)
			}
		})
	}
}

func TestSCPUploadTooLarge(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := start(t, nil)
			src := filepath.Join(t.TempDir(), "sbcd.toml")
			mustWrite(t, src, strings.Repeat("#\n", MaxUpload/2+1))
			r := e.scp(m.classic, e.keyPath, src, e.remote("/etc/sbcd/sbcd.toml"))
			t.Logf("scp exit %d, stderr:\n%s", r.code, r.stderr)
			if r.code == 0 {
				t.Errorf("scp exit 0, want failure")
			}
			if n := len(e.uploaded()); n != 0 {
				t.Errorf("Upload called %d times", n)
			}
		})
	}
}

func TestSCPDownload(t *testing.T) {
	for _, m := range modes {
		for _, tc := range []struct{ remote, want string }{
			{"/cdr/2026-11-24.csv", cdrData},
			{"/etc/sbcd/sbcd.toml", goodConfig},
			{"/trace/sip.pcap", "trace bytes"},
			{"sbcd.toml", goodConfig}, // relative to the login directory
		} {
			t.Run(m.name+tc.remote, func(t *testing.T) {
				e := start(t, nil)
				dst := filepath.Join(t.TempDir(), "out")
				r := e.scp(m.classic, e.keyPath, e.remote(tc.remote), dst)
				if r.code != 0 {
					t.Fatalf("scp exit %d, stderr:\n%s", r.code, r.stderr)
				}
				got, err := os.ReadFile(dst)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, string(got)); diff != "" {
					t.Errorf("content (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestDownloadDefaultConfig(t *testing.T) {
	// Without ConfigPath on disk, /etc/sbcd/sbcd.toml is the image default.
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			def := filepath.Join(t.TempDir(), "default.toml")
			mustWrite(t, def, "# image default\n")
			e := start(t, func(o *Options) { o.DefaultConfigPath = def })
			if err := os.Remove(e.cfgPath); err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(t.TempDir(), "out")
			if r := e.scp(m.classic, e.keyPath, e.remote("/etc/sbcd/sbcd.toml"), dst); r.code != 0 {
				t.Fatalf("scp exit %d, stderr:\n%s", r.code, r.stderr)
			}
			if got, _ := os.ReadFile(dst); string(got) != "# image default\n" {
				t.Errorf("content = %q", got)
			}
		})
	}
}

func TestSCPOutsideTree(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.csv")
	mustWrite(t, outside, "secret")
	for _, m := range modes {
		for _, tc := range []struct {
			name     string
			download bool
			remote   string
		}{
			{"passwd", true, "/etc/passwd"},
			{"dotdot", true, "/cdr/../../etc/passwd"},
			{"symlink", true, "/cdr/escape.csv"},
			{"not csv", true, "/cdr/notes.txt"},
			{"directory", true, "/cdr"},
			{"upload elsewhere", false, "/tmp/x"},
			{"upload cdr", false, "/cdr/2026-11-24.csv"},
		} {
			t.Run(m.name+" "+tc.name, func(t *testing.T) {
				e := start(t, nil)
				if err := os.Symlink(outside, filepath.Join(e.cdrDir, "escape.csv")); err != nil {
					t.Fatal(err)
				}
				tmp := t.TempDir()
				var r result
				if tc.download {
					r = e.scp(m.classic, e.keyPath, e.remote(tc.remote), filepath.Join(tmp, "out"))
					if _, err := os.Stat(filepath.Join(tmp, "out")); err == nil {
						t.Errorf("a file was downloaded")
					}
				} else {
					src := filepath.Join(tmp, "x")
					mustWrite(t, src, goodConfig)
					r = e.scp(m.classic, e.keyPath, src, e.remote(tc.remote))
					if n := len(e.uploaded()); n != 0 {
						t.Errorf("Upload called %d times", n)
					}
				}
				t.Logf("scp exit %d, stderr:\n%s", r.code, r.stderr)
				if r.code == 0 {
					t.Errorf("scp exit 0, want failure")
				}
			})
		}
	}
}

func TestWrongKeyRefused(t *testing.T) {
	e := start(t, nil)
	other, _, _ := clientKey(t, t.TempDir(), "id_other")
	r := e.ssh(other, "show status")
	if r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
		t.Errorf("ssh exit %d, stderr %q; want 255 and Permission denied", r.code, r.stderr)
	}
}

func TestExecCommand(t *testing.T) {
	e := start(t, nil)
	r := e.ssh(e.keyPath, "show", "status")
	if r.code != 0 || r.stdout != statusText {
		t.Errorf("ssh show status = exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.ssh(e.keyPath, "frobnicate")
	if r.code != 1 || !strings.Contains(r.stderr, "unknown command") {
		t.Errorf("ssh frobnicate = exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestExecCustomCommand(t *testing.T) {
	e := start(t, func(o *Options) {
		o.Command = func(line string) (string, error) {
			if line == "fail" {
				return "", errors.New("it failed")
			}
			return "ran " + line, nil
		}
	})
	r := e.ssh(e.keyPath, "show calls")
	if diff := cmp.Diff(result{stdout: "ran show calls\n"}, r, cmp.AllowUnexported(result{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	r = e.ssh(e.keyPath, "fail")
	if diff := cmp.Diff(result{stderr: "it failed\n", code: 1}, r, cmp.AllowUnexported(result{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// dial logs in with a Go client.
func (e *env) dial(auth ...ssh.AuthMethod) (*ssh.Client, error) {
	return ssh.Dial("tcp", "127.0.0.1:"+e.port, &ssh.ClientConfig{
		User:            "admin",
		Auth:            auth,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         5 * time.Second,
	})
}

func TestInteractiveShell(t *testing.T) {
	e := start(t, nil)
	c, err := e.dial(ssh.PublicKeys(e.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sess.Stdout = &out
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "show statux\x7fs\r\nhelp\r\x1b[Aexit\r")
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		c.Close()
		t.Fatal("shell did not end after exit")
	}
	if err != nil {
		t.Errorf("Wait: %v", err)
	}
	want := "sbcd> show statux\b \bs\r\n" + strings.ReplaceAll(statusText, "\n", "\r\n") +
		"sbcd> help\r\ncommands: show status, help, exit\r\n" +
		"sbcd> exit\r\n"
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("terminal output (-want +got):\n%s", diff)
	}
}

func TestPasswordLogin(t *testing.T) {
	e := start(t, func(o *Options) { o.Password = "s3cret" })
	c, err := e.dial(ssh.Password("s3cret"))
	if err != nil {
		t.Fatalf("password login: %v", err)
	}
	c.Close()
	if c, err := e.dial(ssh.Password("wrong")); err == nil {
		c.Close()
		t.Errorf("wrong password accepted")
	}
	// Without a password, password login is off.
	e2 := start(t, nil)
	if c, err := e2.dial(ssh.Password("")); err == nil {
		c.Close()
		t.Errorf("empty password accepted")
	}
}

func TestSetAuthRevokes(t *testing.T) {
	e := start(t, nil)
	c, err := e.dial(ssh.PublicKeys(e.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, line2, signer2 := clientKey(t, t.TempDir(), "id_new")
	if err := e.srv.SetAuth([]string{line2}, ""); err != nil {
		t.Fatal(err)
	}
	if c, err := e.dial(ssh.PublicKeys(e.signer)); err == nil {
		c.Close()
		t.Errorf("revoked key still logs in")
	}
	c2, err := e.dial(ssh.PublicKeys(signer2))
	if err != nil {
		t.Fatalf("new key: %v", err)
	}
	c2.Close()
	// The established connection is kept.
	sess, err := c.NewSession()
	if err != nil {
		t.Fatalf("existing connection: %v", err)
	}
	sess.Close()
	if err := e.srv.SetAuth([]string{"ssh-ed25519 garbage"}, ""); err == nil || !strings.Contains(err.Error(), "[0]") {
		t.Errorf("SetAuth(bad) = %v, want an error naming index 0", err)
	}
}

func TestNewBadKey(t *testing.T) {
	dir := t.TempDir()
	_, line, _ := clientKey(t, dir, "id")
	_, err := New(Options{Listen: "127.0.0.1:0", HostKeyPath: filepath.Join(dir, "hk"), AuthorizedKeys: []string{line, "nonsense"}})
	if err == nil || !strings.Contains(err.Error(), "ssh.authorized_keys[1]") {
		t.Errorf("New = %v, want an error naming ssh.authorized_keys[1]", err)
	}
	// Options such as from= are not enforced by sbcd, so the line is
	// refused rather than granting full rights.
	_, err = New(Options{Listen: "127.0.0.1:0", HostKeyPath: filepath.Join(dir, "hk"),
		AuthorizedKeys: []string{`from="10.0.0.0/8" ` + line}})
	if err == nil || !strings.Contains(err.Error(), "key options") {
		t.Errorf("New with from= = %v, want a refusal of key options", err)
	}
}

func TestMaxSessions(t *testing.T) {
	e := start(t, func(o *Options) { o.MaxSessions = 2 })
	var clients []*ssh.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range 2 {
		c, err := e.dial(ssh.PublicKeys(e.signer))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if c, err := e.dial(ssh.PublicKeys(e.signer)); err == nil {
		c.Close()
		t.Fatalf("third connection accepted with MaxSessions 2")
	}
	clients[0].Close()
	clients = clients[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := e.dial(ssh.PublicKeys(e.signer))
		if err == nil {
			clients = append(clients, c)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	e := start(t, func(o *Options) { o.HandshakeTimeout = 200 * time.Millisecond; o.MaxSessions = 1 })
	nc, err := net.DialTimeout("tcp", "127.0.0.1:"+e.port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A silent client is dropped, freeing its slot.
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := e.dial(ssh.PublicKeys(e.signer))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIdleTimeout(t *testing.T) {
	e := start(t, func(o *Options) { o.IdleTimeout = 300 * time.Millisecond })
	c, err := e.dial(ssh.PublicKeys(e.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

func hostFingerprint(t *testing.T, port string, signer ssh.Signer) string {
	t.Helper()
	var fp string
	c, err := ssh.Dial("tcp", "127.0.0.1:"+port, &ssh.ClientConfig{
		User: "admin",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			fp = ssh.FingerprintSHA256(k)
			return nil
		},
		Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return fp
}

func TestHostKeyStable(t *testing.T) {
	dir := t.TempDir()
	hk := filepath.Join(dir, "ssh_host_ed25519_key")
	var fps []string
	for range 2 {
		e := start(t, func(o *Options) { o.HostKeyPath = hk })
		fps = append(fps, hostFingerprint(t, e.port, e.signer))
		e.srv.Close()
	}
	if fps[0] == "" || fps[0] != fps[1] {
		t.Errorf("host key fingerprints %q, want one stable key", fps)
	}
	fi, err := os.Stat(hk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("host key mode %v, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("host key dir holds %d entries, want 1 (no temp files)", len(ents))
	}
}

func TestHostKeyCorrupt(t *testing.T) {
	for _, content := range []string{"", "garbage\n", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"} {
		t.Run(strconv.Quote(content), func(t *testing.T) {
			hk := filepath.Join(t.TempDir(), "hk")
			mustWrite(t, hk, content)
			if s, err := New(Options{Listen: "127.0.0.1:0", HostKeyPath: hk}); err == nil {
				s.Close()
				t.Fatal("New accepted a corrupt host key")
			}
			if got, _ := os.ReadFile(hk); string(got) != content {
				t.Errorf("host key file replaced")
			}
		})
	}
}

func TestServeStopsWithConnections(t *testing.T) {
	e := start(t, nil)
	c, err := e.dial(ssh.PublicKeys(e.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.srv.Close()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection survived Close")
	}
}

func TestSFTPClient(t *testing.T) {
	needClient(t, "/usr/bin/sftp")
	e := start(t, nil)
	batch := filepath.Join(t.TempDir(), "batch")
	mustWrite(t, batch, "ls -1 /\nls -1 /cdr\nls -1 /trace\nls -1 /etc/sbcd\npwd\n-rm /etc/sbcd/sbcd.toml\n-rename /etc/sbcd/sbcd.toml /etc/sbcd/x\n-mkdir /cdr/x\n-chmod 600 /etc/sbcd/sbcd.toml\n-ln -s /etc/passwd /cdr/p.csv\n")
	args := append(commonOpts(e.keyPath), "-P", e.port, "-b", batch, "admin@127.0.0.1")
	r := run(t, "/usr/bin/sftp", args...)
	t.Logf("sftp exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	var listed []string
	for _, l := range strings.Split(r.stdout, "\n") {
		if l != "" && !strings.HasPrefix(l, "sftp>") {
			listed = append(listed, strings.TrimSpace(l))
		}
	}
	want := []string{"/cdr", "/etc", "/trace", "/cdr/2026-11-24.csv", "/trace/sip.pcap", "/etc/sbcd/sbcd.toml", "Remote working directory: /etc/sbcd"}
	if diff := cmp.Diff(want, listed); diff != "" {
		t.Errorf("listing (-want +got):\n%s", diff)
	}
	for _, denied := range []string{"delete", "rename", "mkdir", "symlink"} {
		if !strings.Contains(strings.ToLower(r.stderr), denied) {
			t.Errorf("stderr does not mention the refused %s", denied)
		}
	}
	if got, _ := os.ReadFile(e.cfgPath); string(got) != goodConfig {
		t.Errorf("config changed to %q", got)
	}
	if n := len(e.uploaded()); n != 0 {
		t.Errorf("Upload called %d times", n)
	}
}

func TestInteractiveOpenSSH(t *testing.T) {
	needClient(t, "/usr/bin/ssh")
	e := start(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	args := append(commonOpts(e.keyPath), "-tt", "-p", e.port, "admin@127.0.0.1")
	cmd := exec.CommandContext(ctx, "/usr/bin/ssh", args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = strings.NewReader("show status\nexit\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssh -tt: %v (output %q)", err, out)
	}
	want := "sbcd> show status\r\n" + strings.ReplaceAll(statusText, "\n", "\r\n") + "sbcd> exit\r\n"
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("terminal output (-want +got):\n%s", diff)
	}
}

func TestSCPGlobDownload(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := start(t, nil)
			mustWrite(t, filepath.Join(e.cdrDir, "2026-11-25.csv"), "second\n")
			dst := t.TempDir()
			if r := e.scp(m.classic, e.keyPath, e.remote("/cdr/*.csv"), dst); r.code != 0 {
				t.Fatalf("scp exit %d, stderr:\n%s", r.code, r.stderr)
			}
			got := map[string]string{}
			ents, _ := os.ReadDir(dst)
			for _, de := range ents {
				b, _ := os.ReadFile(filepath.Join(dst, de.Name()))
				got[de.Name()] = string(b)
			}
			want := map[string]string{"2026-11-24.csv": cdrData, "2026-11-25.csv": "second\n"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("downloaded (-want +got):\n%s", diff)
			}
		})
	}
}
