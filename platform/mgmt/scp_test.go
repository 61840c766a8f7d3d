package mgmt

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseSCPHeader(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    scpHeader
		wantErr bool
	}{
		{line: "C0644 123 name", want: scpHeader{Kind: 'C', Mode: 0o644, Size: 123, Name: "name"}},
		{line: "C0600 0 sbcd.toml", want: scpHeader{Kind: 'C', Mode: 0o600, Name: "sbcd.toml"}},
		{line: "C0644 5 with space", want: scpHeader{Kind: 'C', Mode: 0o644, Size: 5, Name: "with space"}},
		{line: "D0755 0 dir", want: scpHeader{Kind: 'D', Mode: 0o755, Name: "dir"}},
		{line: "E", want: scpHeader{Kind: 'E'}},
		{line: "T1764000000 0 1764000001 999999", want: scpHeader{Kind: 'T', Mtime: 1764000000, Atime: 1764000001}},
		{line: "", wantErr: true},
		{line: "X", wantErr: true},
		{line: "E extra", wantErr: true},
		{line: "C0844 1 x", wantErr: true},
		{line: "C644 1 x", wantErr: true},
		{line: "C0644  x", wantErr: true},
		{line: "C0644 -1 x", wantErr: true},
		{line: "C0644 +1 x", wantErr: true},
		{line: "C0644 99999999999999999999 x", wantErr: true},
		{line: "C0644 1", wantErr: true},
		{line: "C0644 1 ", wantErr: true},
		{line: "C0644 1 ..", wantErr: true},
		{line: "C0644 1 .", wantErr: true},
		{line: "C0644 1 a/b", wantErr: true},
		{line: "C0644 1 ../x", wantErr: true},
		{line: "C0644 1 a\x00b", wantErr: true},
		{line: "T1 0 2", wantErr: true},
		{line: "T1 1000000 2 0", wantErr: true},
		{line: "T-1 0 2 0", wantErr: true},
		{line: "T1 0 2 0 ", wantErr: true},
	} {
		got, err := parseSCPHeader(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseSCPHeader(%q) error = %v, want error %v", tc.line, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseSCPHeader(%q) (-want +got):\n%s", tc.line, diff)
		}
	}
}

func FuzzSCPHeader(f *testing.F) {
	for _, s := range []string{"C0644 123 name", "D0755 0 d", "E", "T1 0 2 0", "C0644 1 ..", "", "C9999 x y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		h, err := parseSCPHeader(line)
		if err != nil {
			return
		}
		if h.Kind != line[0] || h.Size < 0 || h.Mode > 0o7777 {
			t.Errorf("parseSCPHeader(%q) = %+v", line, h)
		}
		if (h.Kind == 'C' || h.Kind == 'D') && !validName(h.Name) {
			t.Errorf("parseSCPHeader(%q) accepted name %q", line, h.Name)
		}
	})
}

// sinkServer is a Server for driving the scp sink without SSH.
func sinkServer(uploads *[]string) *Server {
	return &Server{log: slog.New(slog.DiscardHandler), o: Options{Upload: func(data []byte) error {
		*uploads = append(*uploads, string(data))
		if strings.Contains(string(data), "bad") {
			return errors.New("line 1: bad\nline 2: worse")
		}
		return nil
	}}}
}

func TestSCPSink(t *testing.T) {
	for _, tc := range []struct {
		name, target, in string
		dirFlag          bool
		wantOut          string
		wantStatus       int
		wantUploads      []string
	}{
		{name: "file", target: "/etc/sbcd/sbcd.toml", in: "C0644 3 x\nabc\x00",
			wantOut: "\x00\x00\x00", wantUploads: []string{"abc"}},
		{name: "times then file into dir", target: "/etc/sbcd", in: "T1 0 2 0\nC0644 2 sbcd.toml\nok\x00",
			wantOut: "\x00\x00\x00\x00", wantUploads: []string{"ok"}},
		{name: "refused", target: "/etc/sbcd/sbcd.toml", in: "C0644 3 x\nbad\x00", wantStatus: 1,
			wantOut:     "\x00\x00\x01scp: /etc/sbcd/sbcd.toml: refused with 2 problems (listed above), the configuration is unchanged\n",
			wantUploads: []string{"bad"}},
		{name: "wrong name in dir", target: "/etc/sbcd", in: "C0644 3 other\n", wantStatus: 1,
			wantOut: "\x00\x01scp: /etc/sbcd/other: permission denied (only /etc/sbcd/sbcd.toml can be written)\n"},
		{name: "source error after data", target: "sbcd.toml", in: "C0644 3 x\nabc\x01read error\n", wantStatus: 1,
			wantOut: "\x00\x00\x01scp: /etc/sbcd/sbcd.toml: incomplete upload, nothing changed\n"},
		{name: "truncated data", target: "sbcd.toml", in: "C0644 30 x\nabc", wantStatus: 1, wantOut: "\x00\x00"},
		{name: "directory", target: "/etc/sbcd", in: "D0755 0 d\n", wantStatus: 1,
			wantOut: "\x00\x02scp: d: directories are not supported, copy single files\n"},
		{name: "garbage", target: "/etc/sbcd", in: "hello\n", wantStatus: 1,
			wantOut: "\x00\x02scp: protocol error: unknown control line type 'h'\n"},
		{name: "-d on a file", target: "/etc/sbcd/sbcd.toml", dirFlag: true, wantStatus: 1,
			wantOut: "\x02scp: /etc/sbcd/sbcd.toml: not a directory\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var uploads []string
			s := sinkServer(&uploads)
			var out, stderr bytes.Buffer
			sc := &scpConn{r: bufio.NewReader(strings.NewReader(tc.in)), w: &out, stderr: &stderr}
			status := s.scpSink(sc, scpCommand{sink: true, targetDir: tc.dirFlag, paths: []string{tc.target}}, "test")
			if status != tc.wantStatus {
				t.Errorf("status %d, want %d", status, tc.wantStatus)
			}
			if diff := cmp.Diff(tc.wantOut, out.String()); diff != "" {
				t.Errorf("protocol output (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantUploads, uploads); diff != "" {
				t.Errorf("uploads (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzSCPSink feeds arbitrary client bytes to the sink: no panic, and it
// ends (the input is finite).
func FuzzSCPSink(f *testing.F) {
	f.Add("C0644 3 sbcd.toml\nabc\x00")
	f.Add("T1 0 2 0\nC0644 2 sbcd.toml\nok\x00E\n")
	f.Add("D0755 0 d\nE\n\x01x\n")
	f.Fuzz(func(t *testing.T, in string) {
		var uploads []string
		s := sinkServer(&uploads)
		sc := &scpConn{r: bufio.NewReader(strings.NewReader(in)), w: io.Discard, stderr: io.Discard}
		s.scpSink(sc, scpCommand{sink: true, paths: []string{"/etc/sbcd"}}, "fuzz")
	})
}

func TestParseSCPCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd     string
		want    scpCommand
		isSCP   bool
		wantErr bool
	}{
		{cmd: "scp -t /etc/sbcd/sbcd.toml", isSCP: true, want: scpCommand{sink: true, paths: []string{"/etc/sbcd/sbcd.toml"}}},
		{cmd: "scp -v -p -d -t -- /etc/sbcd", isSCP: true, want: scpCommand{sink: true, preserve: true, targetDir: true, paths: []string{"/etc/sbcd"}}},
		{cmd: "scp -f /cdr/a.csv", isSCP: true, want: scpCommand{paths: []string{"/cdr/a.csv"}}},
		{cmd: "scp -r -f '/cdr/a b.csv' \"/cdr/c\\\"d\" /cdr/e\\ f", isSCP: true, want: scpCommand{recursive: true, paths: []string{"/cdr/a b.csv", "/cdr/c\"d", "/cdr/e f"}}},
		{cmd: "/usr/bin/scp -pf x", isSCP: true, want: scpCommand{preserve: true, paths: []string{"x"}}},
		{cmd: "scp -t", isSCP: true, wantErr: true},
		{cmd: "scp a b", isSCP: true, wantErr: true},
		{cmd: "scp -t -f x", isSCP: true, wantErr: true},
		{cmd: "scp -t a b", isSCP: true, wantErr: true},
		{cmd: "scp -X -t a", isSCP: true, wantErr: true},
		{cmd: "show status"},
		{cmd: "scpx -t a"},
		{cmd: "scp -t 'unterminated"},
		{cmd: ""},
	} {
		got, isSCP, err := parseSCPCommand(tc.cmd)
		if isSCP != tc.isSCP || (err != nil) != tc.wantErr {
			t.Errorf("parseSCPCommand(%q) = scp %v, err %v; want scp %v, error %v", tc.cmd, isSCP, err, tc.isSCP, tc.wantErr)
			continue
		}
		if err != nil || !isSCP {
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(scpCommand{})); diff != "" {
			t.Errorf("parseSCPCommand(%q) (-want +got):\n%s", tc.cmd, diff)
		}
	}
}

func TestLineEditor(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		echo     bool
		want     []string
		wantEcho string
	}{
		{name: "crlf", in: "a\r\nb\rc\n", echo: true, want: []string{"a", "b", "c"}, wantEcho: "a\r\nb\r\nc\r\n"},
		{name: "backspace", in: "ab\x7f\x7f\x7fc\x08d\r", echo: true, want: []string{"d"}, wantEcho: "ab\b \b\b \bc\b \bd\r\n"},
		{name: "utf8 backspace", in: "é\x7fx\n", want: []string{"x"}},
		{name: "ctrl-u ctrl-c", in: "abc\x15d\rxyz\x03e\r", echo: true, want: []string{"d", "", "e"}, wantEcho: "abc\b \b\b \b\b \bd\r\nxyz^C\r\ne\r\n"},
		{name: "escapes", in: "\x1b[A\x1b[1;5Cab\x1bOPc\t\r", want: []string{"abc"}},
		{name: "ctrl-d", in: "a\x04\rb\x04c\r\x04x", want: []string{"a", "bc"}},
		{name: "eof mid line", in: "abc", want: []string{"abc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var echo bytes.Buffer
			e := &lineEditor{r: bufio.NewReader(strings.NewReader(tc.in)), w: &echo, echo: tc.echo}
			var got []string
			for range 100 {
				line, err := e.readLine()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, line)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			if tc.echo {
				if diff := cmp.Diff(tc.wantEcho, echo.String()); diff != "" {
					t.Errorf("echo (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		path    string
		want    node
		wantErr bool
	}{
		{path: "/", want: node{kind: kindDir, path: "/", name: "/"}},
		{path: "/etc/sbcd/", want: node{kind: kindDir, path: "/etc/sbcd", name: "sbcd"}},
		{path: ".", want: node{kind: kindDir, path: "/etc/sbcd", name: "sbcd"}},
		{path: "sbcd.toml", want: node{kind: kindConfig, path: "/etc/sbcd/sbcd.toml", name: "sbcd.toml"}},
		{path: "/etc/sbcd/../sbcd/sbcd.toml", want: node{kind: kindConfig, path: "/etc/sbcd/sbcd.toml", name: "sbcd.toml"}},
		{path: "/cdr/a.csv", want: node{kind: kindCDR, path: "/cdr/a.csv", name: "a.csv"}},
		{path: "../../cdr/a.csv", want: node{kind: kindCDR, path: "/cdr/a.csv", name: "a.csv"}},
		{path: "/trace/x.pcap", want: node{kind: kindTrace, path: "/trace/x.pcap", name: "x.pcap"}},
		{path: "/cdr/a.txt", wantErr: true},
		{path: "/cdr/../etc/passwd", wantErr: true},
		{path: "/cdr/sub/a.csv", wantErr: true},
		{path: "/cdr/a\x00.csv", wantErr: true},
		{path: "/etc/passwd", wantErr: true},
		{path: "/data/sbcd.toml", wantErr: true},
	} {
		got, err := resolve(tc.path)
		if (err != nil) != tc.wantErr {
			t.Errorf("resolve(%q) error = %v, want error %v", tc.path, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(node{})); diff != "" {
			t.Errorf("resolve(%q) (-want +got):\n%s", tc.path, diff)
		}
	}
}

func FuzzSCPCommand(f *testing.F) {
	for _, s := range []string{"scp -t /etc/sbcd", "scp -v -r -f -- '/cdr/a b' \"x\\\"y\" z\\ w", "scp -t 'x", "show status"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		c, ok, err := parseSCPCommand(cmd)
		if ok && err == nil && len(c.paths) == 0 {
			t.Errorf("parseSCPCommand(%q) accepted no paths", cmd)
		}
	})
}
