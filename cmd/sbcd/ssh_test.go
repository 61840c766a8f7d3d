package main

// End-to-end test of configuration management (issue 5, DESIGN.md §5) with
// the real OpenSSH client: scp in SFTP mode and in classic mode (scp -O)
// uploads a configuration into a running sbcd, which validates it, saves it
// and applies it live (the next call carries the new Session-Expires); a
// bad file is refused with its problems shown by scp, and neither the file
// on disk nor the running configuration changes; scp downloads a CDR; a
// key that is not authorized is refused; SIGHUP applies an edited file.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSSHConfigManagement(t *testing.T) {
	if testing.Short() {
		t.Skip("real OpenSSH client and a running sbcd: skipped with -short")
	}
	for _, tool := range []string{"scp", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package openssh-client; make test installs it)", tool)
		}
	}
	bin := sbcdBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()

	keygen := func(name string) (priv, pub string) {
		priv = filepath.Join(dir, name)
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", priv).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
		b, err := os.ReadFile(priv + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		return priv, strings.TrimSpace(string(b))
	}
	goodKey, goodPub := keygen("operator")
	wrongKey, _ := keygen("stranger")

	sbcdPort, upPort, devPort, sshPort := freePort(t), freePort(t), freePort(t), freeTCPPort(t)
	up, dev := listenUDP(t, upPort), listenUDP(t, devPort)
	dataDir := filepath.Join(dir, "data")
	confPath := filepath.Join(dir, "sbcd.toml")
	conf := func(ttl int, extra string) string {
		return fmt.Sprintf(`# uploaded by TestSSHConfigManagement
[system]
data_dir = %q

[sip]
listen = ["udp:127.0.0.1:%d"]
upstream = "sip:127.0.0.1:%d"
max_calls = 10

[session_timer]
ttl = %d
%s
[[device]]
name = "dev"
address = "127.0.0.1:%d"

[nat_keepalive]
message = ""

[registrar]
max_bindings = 10

[ssh]
listen = "127.0.0.1:%d"
authorized_keys = [%q]
`, dataDir, sbcdPort, upPort, ttl, extra, devPort, sshPort, goodPub)
	}
	if err := os.WriteFile(confPath, []byte(conf(600, "")), 0o600); err != nil {
		t.Fatal(err)
	}

	var daemonLog syncBuffer
	daemon := exec.CommandContext(ctx, bin, "-config", confPath)
	daemon.Stdout, daemon.Stderr = &daemonLog, &daemonLog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stopSbcd(t, daemon)
		if t.Failed() || testing.Verbose() {
			t.Logf("sbcd log:\n%s", daemonLog.String())
		}
	}()
	waitListening(t, ctx, sbcdPort)
	waitTCP(t, ctx, sshPort)

	calls := 0
	callTTL := func() int {
		t.Helper()
		calls++
		return inviteSessionExpires(t, up, dev, sbcdPort, upPort, calls)
	}
	sshArgs := func(key string) []string {
		return []string{"-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
			"-o", "ConnectTimeout=10"}
	}
	scp := func(key string, args ...string) (string, error) {
		c := exec.CommandContext(ctx, "scp", append(append(sshArgs(key), "-P", strconv.Itoa(sshPort)), args...)...)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	remote := "operator@127.0.0.1:"
	upload := func(mode, content string) (string, error) {
		local := filepath.Join(dir, "upload.toml")
		if err := os.WriteFile(local, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return scp(goodKey, mode, local, remote+"/etc/sbcd/sbcd.toml")
	}
	onDisk := func() string {
		b, err := os.ReadFile(confPath)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	if got := callTTL(); got != 600 {
		t.Fatalf("before any upload the INVITE carries Session-Expires %d, want 600", got)
	}

	// Good files, in both scp modes: saved and applied to the next call.
	for i, mode := range []string{"-s", "-O"} { // -s: SFTP (the default of OpenSSH 9), -O: classic scp
		ttl := 1200 + 300*i
		good := conf(ttl, "")
		if out, err := upload(mode, good); err != nil {
			t.Fatalf("scp %s of a good config: %v\n%s", mode, err, out)
		}
		if onDisk() != good {
			t.Errorf("scp %s: the file on disk is not the upload", mode)
		}
		if got := callTTL(); got != ttl {
			t.Errorf("after scp %s of ttl = %d the next INVITE carries Session-Expires %d", mode, ttl, got)
		}
	}
	applied := onDisk()

	// Bad files: refused, the problems shown by scp, nothing changed.
	bad := conf(10, "ttll = 1800\n")
	for _, mode := range []string{"-s", "-O"} {
		out, err := upload(mode, bad)
		if err == nil {
			t.Errorf("scp %s of a bad config succeeded:\n%s", mode, out)
		}
		for _, w := range []string{"session_timer.ttl", "below the RFC 4028 minimum", "session_timer.ttll: unknown key", "did you mean ttl?"} {
			if !strings.Contains(out, w) {
				t.Errorf("scp %s output lacks %q:\n%s", mode, w, out)
			}
		}
		if onDisk() != applied {
			t.Errorf("scp %s of a bad config changed the file on disk", mode)
		}
		if got := callTTL(); got != 1500 {
			t.Errorf("after a refused upload (scp %s) the INVITE carries Session-Expires %d, want the running 1500", mode, got)
		}
	}
	out, err := exec.CommandContext(ctx, "ssh", append(append(sshArgs(goodKey), "-p", strconv.Itoa(sshPort)),
		"operator@127.0.0.1", "show status")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config: REJECTED") || !strings.Contains(string(out), "still running upload") {
		t.Errorf("ssh show status after a refused upload: %v\n%s", err, out)
	}

	// The CDRs of the calls above, downloaded with scp.
	cdrs := waitCDR(t, ctx, filepath.Join(dataDir, "cdr"), calls)
	local := filepath.Join(dir, "download.csv")
	if out, err := scp(goodKey, remote+"/cdr/"+filepath.Base(cdrs), local); err != nil {
		t.Fatalf("scp download of %s: %v\n%s", cdrs, err, out)
	}
	got, _ := os.ReadFile(local)
	want, _ := os.ReadFile(cdrs)
	if len(got) == 0 || !bytes.HasPrefix(want, got) {
		t.Errorf("downloaded CDR (%d bytes) is not the file on the box (%d bytes)", len(got), len(want))
	}

	// A key that is not authorized.
	out2, err := scp(wrongKey, filepath.Join(dir, "upload.toml"), remote+"/etc/sbcd/sbcd.toml")
	if err == nil || !strings.Contains(out2, "Permission denied") {
		t.Errorf("scp with an unauthorized key: err %v\n%s", err, out2)
	}
	if onDisk() != applied {
		t.Error("the unauthorized scp changed the file on disk")
	}

	// SIGHUP: an edited file is applied; a broken one is logged and ignored.
	if err := os.WriteFile(confPath, []byte(conf(1800, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = daemon.Process.Signal(syscall.SIGHUP)
	waitLog(t, ctx, &daemonLog, "key=session_timer.ttl old=1500 new=1800")
	if got := callTTL(); got != 1800 {
		t.Errorf("after SIGHUP with ttl = 1800 the INVITE carries Session-Expires %d", got)
	}
	if err := os.WriteFile(confPath, []byte("[session_timer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = daemon.Process.Signal(syscall.SIGHUP)
	waitLog(t, ctx, &daemonLog, "config rejected: the running configuration stays")
	if got := callTTL(); got != 1800 {
		t.Errorf("after SIGHUP with a broken file the INVITE carries Session-Expires %d, want the running 1800", got)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func listenUDP(t *testing.T, port int) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitTCP(t *testing.T, ctx context.Context, port int) {
	t.Helper()
	for ctx.Err() == nil {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on tcp 127.0.0.1:%d", port)
}

func waitLog(t *testing.T, ctx context.Context, log *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if strings.Contains(log.String(), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("sbcd did not log %q within 10 s", want)
}

// waitCDR waits until the one CDR file in dir holds rows for n calls and
// returns its path.
func waitCDR(t *testing.T, ctx context.Context, dir string, n int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.csv"))
		if len(files) == 1 {
			b, _ := os.ReadFile(files[0])
			if bytes.Count(b, []byte("\n")) >= n+1 { // the header and one row per call
				return files[0]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no CDR file with %d calls in %s within 15 s", n, dir)
	return ""
}

// inviteSessionExpires places a call from the upstream socket to device
// "dev" through sbcd, reads the INVITE at the device, refuses it with 486,
// ACKs the 486 on the upstream side, and returns the delta-seconds of the
// Session-Expires header sbcd sent to the device (RFC 4028 §4).
func inviteSessionExpires(t *testing.T, up, dev *net.UDPConn, sbcdPort, upPort, n int) int {
	t.Helper()
	id := fmt.Sprintf("ttl-%d", n)
	sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
	head := fmt.Sprintf("Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:up@127.0.0.1>;tag=up-%s\r\n", upPort, id, id)
	invite := fmt.Sprintf("INVITE sip:dev@127.0.0.1:%d SIP/2.0\r\n%sTo: <sip:dev@127.0.0.1>\r\nCall-ID: %s@127.0.0.1\r\n"+
		"CSeq: 1 INVITE\r\nContact: <sip:up@127.0.0.1:%d>\r\nSupported: timer\r\nContent-Type: application/sdp\r\n"+
		"Content-Length: %d\r\n\r\n%s", sbcdPort, head, id, upPort, len(sdp), sdp)
	sbcd := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sbcdPort}
	if _, err := up.WriteToUDP([]byte(invite), sbcd); err != nil {
		t.Fatal(err)
	}
	req, from := readSIP(t, dev, "INVITE ")
	se := -1
	var via, hdrs []string
	for _, line := range strings.Split(req, "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "session-expires", "x":
			v, _, _ := strings.Cut(value, ";")
			se, _ = strconv.Atoi(strings.TrimSpace(v))
		case "via", "v":
			via = append(via, "Via: "+value)
		case "from", "f", "call-id", "i", "cseq":
			hdrs = append(hdrs, line)
		case "to", "t":
			hdrs = append(hdrs, line+";tag=dev-"+id)
		}
	}
	busy := "SIP/2.0 486 Busy Here\r\n" + strings.Join(via, "\r\n") + "\r\n" + strings.Join(hdrs, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
	if _, err := dev.WriteToUDP([]byte(busy), from); err != nil {
		t.Fatal(err)
	}
	res, _ := readSIP(t, up, "SIP/2.0 486")
	to := ""
	for _, line := range strings.Split(res, "\r\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && (strings.EqualFold(name, "To") || name == "t") {
			to = line
		}
	}
	ack := fmt.Sprintf("ACK sip:dev@127.0.0.1:%d SIP/2.0\r\n%s%s\r\nCall-ID: %s@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		sbcdPort, head, to, id)
	if _, err := up.WriteToUDP([]byte(ack), sbcd); err != nil {
		t.Fatal(err)
	}
	if se < 0 {
		t.Fatalf("the INVITE sbcd sent to the device has no Session-Expires:\n%s", req)
	}
	return se
}

// readSIP reads datagrams on c until one starts with prefix (others, such
// as 100 Trying or retransmissions, are skipped), for at most 5 s.
func readSIP(t *testing.T, c *net.UDPConn, prefix string) (string, *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("waiting for %q on %s: %v", prefix, c.LocalAddr(), err)
		}
		if s := string(buf[:n]); strings.HasPrefix(s, prefix) {
			return s, from
		}
	}
}
