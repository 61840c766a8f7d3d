// Package mgmt is the box's management service over SSH (DESIGN.md §5).
//
// The appliance has no shell, no OpenSSH and no general file system to
// offer, yet operators must be able to read CDRs and traces, replace the
// configuration with the tools they already have (scp, sftp, ssh) and reach
// the same command line as the serial console. This package serves exactly
// that over golang.org/x/crypto/ssh: public-key (and optionally password)
// login, SFTP (github.com/pkg/sftp) and the classic scp protocol over one
// small virtual tree, and an interactive or one-shot command line.
//
// The virtual tree, seen identically by SFTP and scp:
//
//	/                       listable
//	/etc, /etc/sbcd         listable (/etc/sbcd is the login directory)
//	/etc/sbcd/sbcd.toml     read and write: the effective configuration
//	/cdr/*.csv              read-only, the *.csv files of Options.CDRDir
//	/trace/*                read-only, the files of Options.TraceDir
//
// Everything else is "no such file" (reads) or "permission denied" (writes,
// renames, removes, mkdir). An upload of /etc/sbcd/sbcd.toml is buffered in
// memory (at most 1 MiB) and handed whole to Options.Upload; nothing is
// replaced unless Upload accepts it, and a refusal is shown to the scp or
// sftp user with the validation problems.
package mgmt

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxSessions      = 8
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 15 * time.Minute
	// MaxUpload is the largest configuration file an upload may carry.
	MaxUpload = 1 << 20
)

// Options configures a Server. cmd/sbcd maps the [ssh] table onto it.
type Options struct {
	// Listen is ssh.listen, HOST:PORT. Port 0 picks a free port (tests;
	// see Server.Addr).
	Listen string
	// AuthorizedKeys are OpenSSH public key lines (ssh.authorized_keys).
	// A line with key options ("from=...", "command=...") is refused:
	// sbcd does not enforce them.
	AuthorizedKeys []string
	// Password, when not empty, also allows password login (compared in
	// constant time). Empty: public keys only, and the password method is
	// not even offered.
	Password string
	// HostKeyPath is the host key file, e.g. /data/ssh_host_ed25519_key.
	// A missing file is generated (ed25519, OpenSSH format, mode 0600,
	// written atomically) and reused afterwards; a file that exists but
	// does not parse is an error from New, never silently replaced. Empty:
	// an ephemeral key, new on every start (development only).
	HostKeyPath string
	// ConfigPath is the real file behind /etc/sbcd/sbcd.toml (on the box
	// /data/sbcd.toml). Reading /etc/sbcd/sbcd.toml shows it when it
	// exists.
	ConfigPath string
	// DefaultConfigPath is what /etc/sbcd/sbcd.toml shows while ConfigPath
	// does not exist yet (on the box the image's /etc/sbcd/sbcd.toml), so
	// the virtual file is always the effective configuration. Optional.
	DefaultConfigPath string
	// CDRDir is the real directory behind /cdr (only *.csv shown).
	CDRDir string
	// TraceDir is the real directory behind /trace.
	TraceDir string
	// Upload is called with the complete bytes of an uploaded sbcd.toml
	// before anything is replaced. It validates (and, in sbcd, persists
	// atomically and applies live); a non-nil error refuses the upload and
	// its text (one line per problem) is shown to the user. Calls are
	// serialised. Nil: config.Save(ConfigPath, data), which validates and
	// writes atomically.
	Upload func(data []byte) error
	// Command runs one command line (interactive shell or `ssh box CMD`)
	// and returns its output. Nil: a minimal built-in set, "show status"
	// (Status), "help" and "exit".
	Command func(line string) (string, error)
	// Status feeds the built-in "show status".
	Status func() string
	// Logger receives logins, refusals and uploads; nil discards.
	Logger *slog.Logger
	// MaxSessions bounds concurrent connections (default 8); more are
	// closed right after accept.
	MaxSessions int
	// HandshakeTimeout bounds the SSH handshake including authentication
	// (default 10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that has neither sent nor accepted a
	// byte for this long (default 15 min; SSH keep-alives count as
	// traffic), so a stalled client cannot hold a slot forever.
	IdleTimeout time.Duration
}

// Server is the management SSH service. Create it with New, run it with
// Serve.
type Server struct {
	o       Options
	log     *slog.Logger
	hostKey ssh.Signer
	ln      net.Listener
	auth    atomic.Pointer[authState]
	sem     chan struct{}

	uploadMu sync.Mutex

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closed  bool
	serving bool
	wg      sync.WaitGroup
}

type authState struct {
	keys     map[string]struct{} // ssh.PublicKey.Marshal()
	password [sha256.Size]byte
	hasPass  bool
}

// New checks the options, loads or creates the host key and opens the
// listening socket (so Addr is valid before Serve).
func New(o Options) (*Server, error) {
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, log: log, sem: make(chan struct{}, o.MaxSessions), conns: map[net.Conn]struct{}{}}
	a, err := parseAuth(o.AuthorizedKeys, o.Password)
	if err != nil {
		return nil, err
	}
	s.auth.Store(a)
	if o.HostKeyPath == "" {
		s.hostKey, err = ephemeralHostKey()
		if err == nil {
			log.Warn("ssh: no host key path, using an ephemeral host key")
		}
	} else {
		s.hostKey, err = loadOrCreateHostKey(o.HostKeyPath)
	}
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("ssh listen: %w", err)
	}
	s.ln = ln
	return s, nil
}

func parseAuth(keys []string, password string) (*authState, error) {
	a := &authState{keys: make(map[string]struct{}, len(keys))}
	for i, line := range keys {
		k, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("ssh.authorized_keys[%d]: %w", i, err)
		}
		if len(opts) > 0 {
			// sbcd cannot honour from=, command=, restrict and the like:
			// refusing the line beats granting full rights silently.
			return nil, fmt.Errorf("ssh.authorized_keys[%d]: key options (%s) are not supported: remove them", i, strings.Join(opts, ","))
		}
		a.keys[string(k.Marshal())] = struct{}{}
	}
	if password != "" {
		a.password = sha256.Sum256([]byte(password))
		a.hasPass = true
	}
	return a, nil
}

// SetAuth replaces the authorized keys and the password (a live config
// apply). New connections use them; established sessions are kept. On
// error nothing changes.
func (s *Server) SetAuth(keys []string, password string) error {
	a, err := parseAuth(keys, password)
	if err != nil {
		return err
	}
	s.auth.Store(a)
	return nil
}

// Addr is the listening address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops listening and closes every connection. Serve, if running,
// returns nil. Close is only needed when Serve's context cannot be used
// (for example when Serve was never called).
func (s *Server) Close() error {
	s.shutdown()
	return nil
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	s.ln.Close()
	for c := range conns {
		c.Close()
	}
}

// Serve accepts connections until ctx is done (or Close), then closes
// every connection, waits for their handlers and returns nil. Another
// accept failure is returned as an error, after the same cleanup.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("ssh serve: already serving")
	}
	s.serving = true
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()
	defer s.wg.Wait()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			s.shutdown()
			return fmt.Errorf("ssh accept: %w", err)
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.log.Warn("ssh connection refused: too many sessions", "remote", nc.RemoteAddr().String(), "max", s.o.MaxSessions)
			nc.Close()
			continue
		}
		if !s.track(nc) {
			<-s.sem
			nc.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer s.untrack(nc)
			s.handleConn(nc)
		}()
	}
}

func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[nc] = struct{}{}
	return true
}

func (s *Server) untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
	nc.Close()
}

// serverConfig builds the SSH configuration for one connection from the
// authentication in force when it arrives.
func (s *Server) serverConfig(remote string) *ssh.ServerConfig {
	a := s.auth.Load()
	cfg := &ssh.ServerConfig{
		MaxAuthTries:  6,
		ServerVersion: "SSH-2.0-sbcd",
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			fp := ssh.FingerprintSHA256(key)
			if _, ok := a.keys[string(key.Marshal())]; !ok {
				s.log.Warn("ssh key refused", "remote", remote, "user", c.User(), "key", fp)
				return nil, errors.New("key not authorized")
			}
			return &ssh.Permissions{Extensions: map[string]string{"method": "publickey", "key": fp}}, nil
		},
	}
	if a.hasPass {
		cfg.PasswordCallback = func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			h := sha256.Sum256(pw)
			if subtle.ConstantTimeCompare(h[:], a.password[:]) != 1 {
				s.log.Warn("ssh password refused", "remote", remote, "user", c.User())
				return nil, errors.New("wrong password")
			}
			return &ssh.Permissions{Extensions: map[string]string{"method": "password"}}, nil
		}
	}
	cfg.AddHostKey(s.hostKey)
	return cfg
}

func (s *Server) handleConn(nc net.Conn) {
	remote := nc.RemoteAddr().String()
	ic := &idleConn{Conn: nc, idle: s.o.IdleTimeout}
	_ = nc.SetDeadline(time.Now().Add(s.o.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(ic, s.serverConfig(remote))
	if err != nil {
		s.log.Info("ssh handshake failed", "remote", remote, "err", err)
		return
	}
	defer sc.Close()
	_ = nc.SetDeadline(time.Time{})
	ic.active.Store(true)
	_ = nc.SetReadDeadline(time.Now().Add(s.o.IdleTimeout))
	attrs := []any{"remote", remote, "user", sc.User(), "method", sc.Permissions.Extensions["method"]}
	if fp := sc.Permissions.Extensions["key"]; fp != "" {
		attrs = append(attrs, "key", fp)
	}
	s.log.Info("ssh login", attrs...)
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels are served")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ch, creqs, remote)
		}()
	}
	sc.Close()
	wg.Wait()
	s.log.Info("ssh logout", "remote", remote, "user", sc.User())
}

// idleConn pushes the read and write deadlines forward on every I/O once
// active, so that only a connection silent for the idle timeout dies.
type idleConn struct {
	net.Conn
	idle   time.Duration
	active atomic.Bool
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.active.Load() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.active.Load() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Write(p)
}

// session serves one "session" channel: its requests pick exactly one of
// shell, exec or subsystem.
func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request, remote string) {
	defer ch.Close()
	pty, started := false, false
	for req := range reqs {
		var run func() int
		switch req.Type {
		case "pty-req":
			pty = true
			_ = req.Reply(true, nil)
			continue
		case "env", "window-change":
			_ = req.Reply(true, nil)
			continue
		case "shell":
			withPTY := pty
			run = func() int { return s.shell(ch, withPTY) }
		case "exec":
			var p struct{ Command string }
			if ssh.Unmarshal(req.Payload, &p) != nil {
				break
			}
			run = func() int { return s.exec(ch, p.Command, remote) }
		case "subsystem":
			var p struct{ Name string }
			if ssh.Unmarshal(req.Payload, &p) != nil || p.Name != "sftp" {
				break
			}
			run = func() int { return s.sftp(ch, remote) }
		}
		if run == nil || started {
			_ = req.Reply(false, nil)
			continue
		}
		started = true
		_ = req.Reply(true, nil)
		go func() {
			status := run()
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
			ch.Close()
		}()
	}
}

// exec runs `ssh box CMD`: scp in either direction, or a command line.
func (s *Server) exec(ch ssh.Channel, cmd, remote string) int {
	if c, ok, err := parseSCPCommand(cmd); ok {
		if err != nil {
			fmt.Fprintf(ch.Stderr(), "scp: %v\n", err)
			return 1
		}
		return s.scp(ch, c, remote)
	}
	out, err := s.run(cmd)
	io.WriteString(ch, withNewline(out))
	if err != nil {
		io.WriteString(ch.Stderr(), withNewline(err.Error()))
		return 1
	}
	return 0
}

// run executes one command line with Options.Command or the built-ins.
func (s *Server) run(line string) (string, error) {
	if s.o.Command != nil {
		return s.o.Command(line)
	}
	switch strings.Join(strings.Fields(line), " ") {
	case "":
		return "", nil
	case "help":
		return "commands: show status, help, exit\n", nil
	case "show status":
		if s.o.Status == nil {
			return "no status available\n", nil
		}
		return s.o.Status(), nil
	case "exit", "quit", "logout":
		return "", nil
	default:
		return "", fmt.Errorf("unknown command %q (try help)", strings.TrimSpace(line))
	}
}

func withNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// commit hands an uploaded configuration to Options.Upload (or
// config.Save), one at a time. A refusal's text also goes to stderr, the
// SSH channel's extended data, which ssh prints on the user's terminal
// whatever the file-transfer protocol could carry.
func (s *Server) commit(data []byte, stderr io.Writer, remote string) error {
	s.uploadMu.Lock()
	defer s.uploadMu.Unlock()
	err := s.upload(data)
	if err != nil {
		s.log.Warn("config upload refused", "remote", remote, "bytes", len(data), "problems", strings.Count(strings.TrimSpace(err.Error()), "\n")+1)
		if stderr != nil {
			io.WriteString(stderr, withNewline(err.Error()))
		}
		return err
	}
	s.log.Info("config uploaded", "remote", remote, "bytes", len(data))
	return nil
}
