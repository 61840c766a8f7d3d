package main

// Real-peer tests (DESIGN.md §9, layer 3): SIPp caller → sbcd → SIPp callee
// on loopback, with session timers of 90 s, asserting SIPp's exit codes and
// the CDR line sbcd writes. They run in real time (a refresh at 45 s, a
// teardown at 77 s), in parallel, and are skipped with -short.

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// sbcdBinary builds cmd/sbcd once per test run.
func sbcdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sbcd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "sbcd")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, goTool(t), "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// sippCase is one call through a live sbcd.
type sippCase struct {
	name           string
	caller, callee string   // scenario files in testdata/sipp
	callerArgs     []string // extra SIPp arguments for the caller
	limit          time.Duration
	want           map[string]string // CDR columns that must have these values
}

func TestSIPp(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time SIPp calls take up to 90 s; skipped with -short")
	}
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed (Debian package sip-tester; make test installs it)")
	}
	bin := sbcdBinary(t)
	for _, tc := range []sippCase{
		{
			name: "sbcd refreshes both legs", caller: "caller.xml", callee: "callee.xml", limit: 80 * time.Second,
			want: map[string]string{"end_reason": "caller_bye", "ended_by": "caller", "sip_code": "200",
				"a_se": "90", "a_refresher": "sbcd", "a_refreshes_sent": "1",
				"b_se": "90", "b_refresher": "sbcd", "b_refreshes_sent": "1"},
		},
		{
			name: "caller refreshes with UPDATE", caller: "caller_refresh_update.xml", callee: "callee.xml",
			callerArgs: []string{"-d", "30000"}, limit: 60 * time.Second,
			want: map[string]string{"end_reason": "caller_bye", "a_se": "90", "a_refresher": "endpoint",
				"a_refreshes_received": "1", "b_refresher": "sbcd"},
		},
		{
			name: "caller refreshes with re-INVITE", caller: "caller_refresh_reinvite.xml", callee: "callee.xml",
			callerArgs: []string{"-d", "30000"}, limit: 60 * time.Second,
			want: map[string]string{"end_reason": "caller_bye", "a_se": "90", "a_refresher": "endpoint",
				"a_refreshes_received": "1", "b_refresher": "sbcd"},
		},
		{
			// sbcd refreshes the B-leg at 45 s, the callee never answers,
			// the refresh times out at 77 s: BYE on both legs.
			name: "callee stops answering refreshes", caller: "caller_expect_bye.xml", callee: "callee_silent.xml",
			limit: 110 * time.Second,
			want:  map[string]string{"end_reason": "session_timeout", "ended_by": "sbcd", "b_refresher": "sbcd"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runSIPpCase(t, bin, sipp, tc)
		})
	}
}

func runSIPpCase(t *testing.T, bin, sipp string, tc sippCase) {
	ctx, cancel := context.WithTimeout(context.Background(), tc.limit+30*time.Second)
	defer cancel()
	dir := t.TempDir()
	sbcdPort, callerPort, calleePort := freePort(t), freePort(t), freePort(t)
	cdrDir := filepath.Join(dir, "cdr")
	conf := fmt.Sprintf(`[system]
data_dir = %q

[sip]
listen = ["udp:127.0.0.1:%d"]
upstream = "sip:127.0.0.1:%d"
max_calls = 100

[session_timer]
ttl = 90
min_se = 90

[[device]]
name = "caller"
address = "127.0.0.1:%d"

[cdr]
dir = %q

[trace]
enabled = true
`, dir, sbcdPort, calleePort, callerPort, cdrDir)
	confPath := filepath.Join(dir, "sbcd.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	var daemonLog bytes.Buffer
	daemon := exec.CommandContext(ctx, bin, "-config", confPath, "-log-level", "debug")
	daemon.Stdout, daemon.Stderr = &daemonLog, &daemonLog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("sbcd log:\n%s", daemonLog.String())
		}
	}()
	stopDaemon := func() {
		stopSbcd(t, daemon)
	}
	waitListening(t, ctx, sbcdPort)

	scen := func(f string) string { return filepath.Join("testdata", "sipp", f) }
	sippTimeout := fmt.Sprintf("%ds", int(tc.limit.Seconds()))
	callee := exec.CommandContext(ctx, sipp, "-sf", scen(tc.callee), "-i", "127.0.0.1", "-p", fmt.Sprint(calleePort),
		"-m", "1", "-timeout", sippTimeout, "-nostdin", "-trace_err", "-error_file", filepath.Join(dir, "callee_err.log"))
	callee.Dir = "."
	var calleeOut bytes.Buffer
	callee.Stdout, callee.Stderr = &calleeOut, &calleeOut
	if err := callee.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the callee bind its port

	args := append([]string{"-sf", scen(tc.caller), "-i", "127.0.0.1", "-p", fmt.Sprint(callerPort),
		"-s", "callee", "-m", "1", "-timeout", sippTimeout, "-nostdin",
		"-trace_err", "-error_file", filepath.Join(dir, "caller_err.log")}, tc.callerArgs...)
	args = append(args, fmt.Sprintf("127.0.0.1:%d", sbcdPort))
	caller := exec.CommandContext(ctx, sipp, args...)
	out, callerErr := caller.CombinedOutput()
	calleeErr := callee.Wait()
	stopDaemon()

	if callerErr != nil {
		errLog, _ := os.ReadFile(filepath.Join(dir, "caller_err.log"))
		t.Errorf("SIPp caller failed: %v\n%s\n%s", callerErr, lastLines(string(out), 15), errLog)
	}
	if calleeErr != nil {
		errLog, _ := os.ReadFile(filepath.Join(dir, "callee_err.log"))
		t.Errorf("SIPp callee failed: %v\n%s\n%s", calleeErr, lastLines(calleeOut.String(), 15), errLog)
	}
	checkCDR(t, cdrDir, tc.want)
}

// waitListening waits until sbcd answers on its UDP port (an OPTIONS gets a
// response) or the context ends.
func waitListening(t *testing.T, ctx context.Context, port int) {
	t.Helper()
	probe := fmt.Sprintf("OPTIONS sip:ping@127.0.0.1:%d SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.1:%%d;branch=z9hG4bK-wait-%%d\r\n"+
		"From: <sip:probe@127.0.0.1>;tag=w\r\nTo: <sip:ping@127.0.0.1>\r\n"+
		"Call-ID: wait-%%d@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", port)
	for i := 0; ctx.Err() == nil; i++ {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lport := c.LocalAddr().(*net.UDPAddr).Port
		dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
		_, _ = c.WriteTo([]byte(fmt.Sprintf(probe, lport, i, i)), dst)
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 2048)
		n, _, err := c.ReadFrom(buf)
		c.Close()
		if err == nil && bytes.HasPrefix(buf[:n], []byte("SIP/2.0 ")) {
			return
		}
	}
	t.Fatalf("sbcd did not answer on 127.0.0.1:%d", port)
}

// stopSbcd sends SIGTERM to a running sbcd and waits up to 30 s for a
// clean exit (it BYEs its calls and flushes its CDRs first), killing it
// after that.
func stopSbcd(t *testing.T, daemon *exec.Cmd) {
	t.Helper()
	_ = daemon.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("sbcd exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = daemon.Process.Kill()
		t.Error("sbcd did not exit within 30 s of SIGTERM")
	}
}

// checkCDR reads the one CDR file sbcd wrote and checks its single call.
func checkCDR(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.csv"))
	if len(files) != 1 {
		t.Fatalf("CDR files in %s: %v, want exactly one", dir, files)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("CDR file %s is not valid CSV: %v", files[0], err)
	}
	if len(rows) != 2 {
		t.Fatalf("CDR file has %d rows, want a header and one call:\n%v", len(rows), rows)
	}
	got := map[string]string{}
	for i, col := range rows[0] {
		if i < len(rows[1]) {
			got[col] = rows[1][i]
		}
	}
	for col, v := range want {
		if got[col] != v {
			t.Errorf("CDR %s = %q, want %q (row: %v)", col, got[col], v, got)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
