package mgmt

import (
	"bufio"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
)

const (
	prompt      = "sbcd> "
	maxLineSize = 4096
)

// shell runs the interactive command line: with a pty (ssh box) it echoes
// and edits like a terminal and prompts; without one (ssh -T box, or a
// script piping commands) it reads plain lines silently.
func (s *Server) shell(ch ssh.Channel, pty bool) int {
	e := &lineEditor{r: bufio.NewReader(ch), w: ch, echo: pty}
	out := func(w io.Writer, text string) {
		if pty {
			text = strings.ReplaceAll(text, "\n", "\r\n")
		}
		io.WriteString(w, text)
	}
	for {
		if pty {
			out(ch, prompt)
		}
		line, err := e.readLine()
		if err != nil {
			return 0
		}
		line = strings.TrimSpace(line)
		switch line {
		case "":
			continue
		case "exit", "quit", "logout":
			return 0
		}
		res, err := s.run(line)
		out(ch, withNewline(res))
		if err != nil {
			w := ch.Stderr()
			if pty {
				w = ch
			}
			out(w, withNewline("error: "+err.Error()))
		}
	}
}

// lineEditor is a minimal terminal line discipline: echo, backspace,
// Ctrl-U (erase line), Ctrl-C (drop line), Ctrl-D (end on an empty line),
// CR, LF and CR LF as one end of line; escape sequences (arrow keys) and
// other control characters are ignored.
type lineEditor struct {
	r      *bufio.Reader
	w      io.Writer
	echo   bool
	lastCR bool
}

func (e *lineEditor) write(s string) {
	if e.echo {
		io.WriteString(e.w, s)
	}
}

func (e *lineEditor) readLine() (string, error) {
	var buf []byte
	for {
		b, err := e.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				return string(buf), nil
			}
			return "", err
		}
		afterCR := e.lastCR
		e.lastCR = b == '\r'
		switch {
		case b == '\n' && afterCR:
			// The LF of a CR LF pair already ended the line.
		case b == '\r' || b == '\n':
			e.write("\r\n")
			return string(buf), nil
		case b == 0x7f || b == 0x08:
			if len(buf) > 0 {
				_, n := utf8.DecodeLastRune(buf)
				buf = buf[:len(buf)-n]
				e.write("\b \b")
			}
		case b == 0x15:
			e.write(strings.Repeat("\b \b", utf8.RuneCount(buf)))
			buf = buf[:0]
		case b == 0x03:
			e.write("^C\r\n")
			return "", nil
		case b == 0x04:
			if len(buf) == 0 {
				return "", io.EOF
			}
		case b == 0x1b:
			e.skipEscape()
		case b < 0x20:
		default:
			if len(buf) < maxLineSize {
				buf = append(buf, b)
				e.write(string(b))
			}
		}
	}
}

// skipEscape drops the rest of an escape sequence (CSI "ESC [ ... final"
// or SS3 "ESC O x").
func (e *lineEditor) skipEscape() {
	b, err := e.r.ReadByte()
	if err != nil {
		return
	}
	switch b {
	case 'O':
		_, _ = e.r.ReadByte()
	case '[':
		for range 32 {
			c, err := e.r.ReadByte()
			if err != nil || (c >= 0x40 && c <= 0x7e) {
				return
			}
		}
	}
}
