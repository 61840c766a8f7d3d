package mgmt

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// The classic scp protocol (rcp's): after the remote `scp -t` (sink) or
// `scp -f` (source) starts, the source sends control lines
//
//	C0644 123 name   a file of 123 bytes follows (after the sink's ack)
//	D0755 0 name     a directory follows (refused here)
//	E                end of directory
//	T1 0 2 0         times of the next file (mtime s us, atime s us)
//
// and every line and every file's data is answered with one byte: 0 (ok),
// or 1 (warning) / 2 (fatal) followed by a message line.

const maxSCPLine = 4096

type scpHeader struct {
	Kind  byte // 'C', 'D', 'E' or 'T'
	Mode  fs.FileMode
	Size  int64
	Name  string
	Mtime int64
	Atime int64
}

// parseSCPHeader parses one control line, without its trailing newline.
func parseSCPHeader(line string) (scpHeader, error) {
	if line == "" {
		return scpHeader{}, errors.New("empty control line")
	}
	h := scpHeader{Kind: line[0]}
	rest := line[1:]
	switch h.Kind {
	case 'E':
		if rest != "" {
			return scpHeader{}, errors.New("bad end of directory line")
		}
		return h, nil
	case 'T':
		f := strings.Split(rest, " ")
		if len(f) != 4 {
			return scpHeader{}, errors.New("bad times line")
		}
		var v [4]int64
		for i, s := range f {
			n, err := parseDecimal(s)
			if err != nil || (i%2 == 1 && n > 999999) {
				return scpHeader{}, errors.New("bad times line")
			}
			v[i] = n
		}
		h.Mtime, h.Atime = v[0], v[2]
		return h, nil
	case 'C', 'D':
		if len(rest) < 5 || rest[4] != ' ' {
			return scpHeader{}, errors.New("bad mode")
		}
		for i := range 4 {
			c := rest[i]
			if c < '0' || c > '7' {
				return scpHeader{}, errors.New("bad mode")
			}
			h.Mode = h.Mode<<3 | fs.FileMode(c-'0')
		}
		rest = rest[5:]
		sp := strings.IndexByte(rest, ' ')
		if sp < 0 {
			return scpHeader{}, errors.New("size not delimited")
		}
		n, err := parseDecimal(rest[:sp])
		if err != nil {
			return scpHeader{}, errors.New("bad size")
		}
		h.Size = n
		h.Name = rest[sp+1:]
		if !validName(h.Name) {
			return scpHeader{}, fmt.Errorf("unexpected file name %q", h.Name)
		}
		return h, nil
	}
	return scpHeader{}, fmt.Errorf("unknown control line type %q", h.Kind)
}

// parseDecimal accepts only ASCII digits (no sign), without overflow.
func parseDecimal(s string) (int64, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, errors.New("not a decimal number")
	}
	return strconv.ParseInt(s, 10, 64)
}

// scpCommand is a parsed remote `scp -t|-f [-r -p -d -v] PATH...`.
type scpCommand struct {
	sink      bool // -t: we receive
	recursive bool
	preserve  bool
	targetDir bool
	paths     []string
}

// parseSCPCommand recognises an exec command line that runs scp: ok
// reports whether it is one at all; err says what is wrong with it.
func parseSCPCommand(cmd string) (c scpCommand, ok bool, err error) {
	words, err := splitWords(cmd)
	if err != nil || len(words) == 0 || path.Base(words[0]) != "scp" {
		return c, false, nil
	}
	var to, from, endFlags bool
	for _, w := range words[1:] {
		if !endFlags && w == "--" {
			endFlags = true
			continue
		}
		if endFlags || !strings.HasPrefix(w, "-") || w == "-" {
			c.paths = append(c.paths, w)
			continue
		}
		for _, f := range w[1:] {
			switch f {
			case 't':
				to = true
			case 'f':
				from = true
			case 'r':
				c.recursive = true
			case 'p':
				c.preserve = true
			case 'd':
				c.targetDir = true
			case 'v', 'q':
			default:
				return c, true, fmt.Errorf("unsupported option -%c", f)
			}
		}
	}
	switch {
	case to == from:
		return c, true, errors.New("exactly one of -t and -f is required")
	case len(c.paths) == 0:
		return c, true, errors.New("no path given")
	case to && len(c.paths) != 1:
		return c, true, errors.New("one target path expected")
	}
	c.sink = to
	return c, true, nil
}

// splitWords splits a command line like a POSIX shell would for plain
// words, single and double quotes and backslashes (no expansion).
func splitWords(s string) ([]string, error) {
	var words []string
	var b strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		case c == '\\':
			inWord = true
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated quote")
			}
			b.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated quote")
			}
		default:
			inWord = true
			b.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words, nil
}

// scpConn carries the protocol over a channel.
type scpConn struct {
	r      *bufio.Reader
	w      io.Writer
	stderr io.Writer
}

func (c *scpConn) readLine() (string, error) {
	var b []byte
	for {
		ch, err := c.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		if ch == '\n' {
			return string(b), nil
		}
		if len(b) >= maxSCPLine {
			return "", errors.New("control line too long")
		}
		b = append(b, ch)
	}
}

func (c *scpConn) ack() error {
	_, err := c.w.Write([]byte{0})
	return err
}

// warn sends a non-fatal error (1): scp prints it and exits non-zero.
func (c *scpConn) warn(format string, a ...any) error {
	msg := strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " ")
	_, err := io.WriteString(c.w, "\x01scp: "+msg+"\n")
	return err
}

// fatal sends a fatal error (2): scp prints it and gives up.
func (c *scpConn) fatal(format string, a ...any) error {
	msg := strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " ")
	_, err := io.WriteString(c.w, "\x02scp: "+msg+"\n")
	return err
}

// response reads the peer's answer: nil for 0, an error with its message
// for 1 and 2 (fatal tells which).
func (c *scpConn) response() (fatal bool, err error) {
	b, err := c.r.ReadByte()
	if err != nil {
		return true, err
	}
	switch b {
	case 0:
		return false, nil
	case 1, 2:
		msg, err := c.readLine()
		if err != nil {
			return true, err
		}
		return b == 2, errors.New(msg)
	}
	return true, fmt.Errorf("protocol error: unexpected response byte %d", b)
}

// scp runs one remote scp end; it returns the exit status.
func (s *Server) scp(ch ssh.Channel, c scpCommand, remote string) int {
	sc := &scpConn{r: bufio.NewReader(ch), w: ch, stderr: ch.Stderr()}
	if c.sink {
		return s.scpSink(sc, c, remote)
	}
	return s.scpSource(sc, c)
}

// scpSink receives files: only /etc/sbcd/sbcd.toml, committed through
// Upload once its data has arrived.
func (s *Server) scpSink(sc *scpConn, c scpCommand, remote string) int {
	target := cleanVirtual(c.paths[0])
	tn, terr := resolve(target)
	targetIsDir := terr == nil && tn.kind == kindDir
	if c.targetDir && !targetIsDir {
		sc.fatal("%s: not a directory", c.paths[0])
		return 1
	}
	if sc.ack() != nil {
		return 1
	}
	status := 0
	for {
		line, err := sc.readLine()
		if err != nil {
			if err != io.EOF {
				status = 1
			}
			return status
		}
		if line != "" && (line[0] == 1 || line[0] == 2) {
			// The source reports a local error; it carries on after 1.
			status = 1
			if line[0] == 2 {
				return status
			}
			continue
		}
		h, err := parseSCPHeader(line)
		if err != nil {
			sc.fatal("protocol error: %v", err)
			return 1
		}
		switch h.Kind {
		case 'T', 'E':
			if sc.ack() != nil {
				return 1
			}
			continue
		case 'D':
			sc.fatal("%s: directories are not supported, copy single files", h.Name)
			return 1
		}
		dest := target
		if targetIsDir {
			dest = path.Join(target, h.Name)
		}
		if dn, err := resolve(dest); err != nil || dn.kind != kindConfig {
			status = 1
			if sc.warn("%s: permission denied (only %s can be written)", dest, configVirtual) != nil {
				return status
			}
			continue
		}
		if h.Size > MaxUpload {
			status = 1
			if sc.warn("%s: %v", dest, errTooLarge) != nil {
				return status
			}
			continue
		}
		if sc.ack() != nil {
			return 1
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(sc.r, data); err != nil {
			return 1
		}
		if fatal, err := sc.response(); err != nil {
			// The source could not read its file: do not commit what
			// arrived, answer and carry on (or stop after a fatal one).
			status = 1
			if fatal || sc.warn("%s: incomplete upload, nothing changed", dest) != nil {
				return status
			}
			continue
		}
		if err := s.commit(data, sc.stderr, remote); err != nil {
			status = 1
			if sc.warn("%s: %s", configVirtual, summary(err)) != nil {
				return status
			}
			continue
		}
		if sc.ack() != nil {
			return 1
		}
	}
}

// summary says why an upload was refused in one line: the problem when
// there is one, else their number (the full text has gone to stderr, which
// ssh prints).
func summary(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	if len(lines) == 1 {
		return "refused, the configuration is unchanged: " + lines[0]
	}
	return fmt.Sprintf("refused with %d problems (listed above), the configuration is unchanged", len(lines))
}

// scpSource sends files.
func (s *Server) scpSource(sc *scpConn, c scpCommand) int {
	if fatal, err := sc.response(); err != nil || fatal {
		return 1
	}
	status := 0
	for _, p := range c.paths {
		for _, vp := range s.expand(p) {
			fatal, err := s.sendFile(sc, vp, c)
			if err != nil {
				status = 1
			}
			if fatal {
				return 1
			}
		}
	}
	return status
}

// expand resolves a shell-style glob in the last element of p against the
// virtual tree (the remote shell would do this for OpenSSH's scp -f).
func (s *Server) expand(p string) []string {
	vp := cleanVirtual(p)
	if vp == "" || !strings.ContainsAny(path.Base(vp), "*?[") {
		return []string{p}
	}
	if n, err := resolve(vp); err == nil {
		if _, err := s.stat(n); err == nil {
			return []string{vp}
		}
	}
	dir, pattern := path.Split(vp)
	dn, err := resolve(dir)
	if err != nil {
		return []string{p}
	}
	list, err := s.list(dn)
	if err != nil {
		return []string{p}
	}
	var out []string
	for _, fi := range list {
		if ok, _ := path.Match(pattern, fi.Name()); ok && !fi.IsDir() {
			out = append(out, path.Join(dir, fi.Name()))
		}
	}
	if len(out) == 0 {
		return []string{p}
	}
	return out
}

// sendFile sends one file; err is a problem with this file (reported to
// the peer), fatal means the protocol cannot go on.
func (s *Server) sendFile(sc *scpConn, p string, c scpCommand) (fatal bool, err error) {
	n, err := resolve(p)
	if err == nil && n.kind == kindDir {
		if c.recursive {
			err = errors.New("directories are not supported, copy single files (no -r)")
		} else {
			err = errNotRegular
		}
	}
	var fi fs.FileInfo
	var f interface {
		io.Reader
		io.Closer
	}
	if err == nil {
		f, fi, err = s.openRead(n)
	}
	if err != nil {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg = "No such file or directory"
		}
		if sc.warn("%s: %s", p, msg) != nil {
			return true, err
		}
		return false, err
	}
	defer f.Close()
	if c.preserve {
		t := fi.ModTime().Unix()
		if t < 0 {
			t = 0
		}
		if _, err := fmt.Fprintf(sc.w, "T%d 0 %d 0\n", t, t); err != nil {
			return true, err
		}
		if fatal, err := sc.response(); err != nil {
			return fatal, err
		}
	}
	size := fi.Size()
	if _, err := fmt.Fprintf(sc.w, "C0644 %d %s\n", size, n.name); err != nil {
		return true, err
	}
	if fatal, err := sc.response(); err != nil {
		return fatal, err
	}
	written, rerr := io.CopyN(sc.w, f, size)
	if rerr != nil && written < size {
		// The file shrank or failed while being sent: pad to the
		// announced size so the protocol stays in step, then say so.
		if _, err := io.CopyN(sc.w, zeroReader{}, size-written); err != nil {
			return true, err
		}
		if sc.warn("%s: read error: %v", p, rerr) != nil {
			return true, rerr
		}
	} else if sc.ack() != nil {
		return true, errors.New("connection lost")
	}
	if fatal, err := sc.response(); err != nil {
		return fatal, err
	}
	if rerr != nil && written < size {
		return false, rerr
	}
	return false, nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
