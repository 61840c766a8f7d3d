package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSIPpRegisteredPhone is the registrar's real-peer test (DESIGN.md §3,
// §9 layer 3): a SIPp phone registers with digest authentication from one
// port while its Contact names a private address and another port, as a
// phone behind NAT does; then the SIPp upstream calls the phone by its
// user name and the call must arrive at the phone's binding (the port it
// registered from), with the registered Contact as Request-URI.
func TestSIPpRegisteredPhone(t *testing.T) {
	if testing.Short() {
		t.Skip("real peers: skipped with -short")
	}
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed (Debian package sip-tester; make test installs it)")
	}
	bin := sbcdBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	sbcdPort, phonePort, upPort := freePort(t), freePort(t), freePort(t)
	cdrDir := filepath.Join(dir, "cdr")
	conf := fmt.Sprintf(`[system]
data_dir = %q

[sip]
listen = ["udp:127.0.0.1:%d"]
upstream = "sip:127.0.0.1:%d"
max_calls = 10

[nat_keepalive]
message = ""  # no keep-alives into SIPp's parser; tested in sip/b2bua

[registrar]
max_bindings = 10
auth = true
[[registrar.user]]
name = "phone"
password = "n4t-s3cret"

[cdr]
dir = %q

[trace]
enabled = true
`, dir, sbcdPort, upPort, cdrDir)
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
	var stopped bool
	stopDaemon := func() {
		if stopped {
			return
		}
		stopped = true
		stopSbcd(t, daemon)
	}
	defer func() {
		stopDaemon()
		if t.Failed() {
			t.Logf("sbcd log:\n%s", daemonLog.String())
		}
	}()
	waitListening(t, ctx, sbcdPort)

	scen, err := os.ReadFile(filepath.Join("testdata", "sipp", "phone_register.xml"))
	if err != nil {
		t.Fatal(err)
	}
	regScen := filepath.Join(dir, "phone_register.xml")
	if err := os.WriteFile(regScen, bytes.ReplaceAll(scen, []byte("PHONE_PORT"), []byte(fmt.Sprint(phonePort))), 0o600); err != nil {
		t.Fatal(err)
	}
	sbcdAddr := fmt.Sprintf("127.0.0.1:%d", sbcdPort)
	run := func(name string, args ...string) *exec.Cmd {
		c := exec.CommandContext(ctx, sipp, append(args, "-i", "127.0.0.1", "-m", "1", "-timeout", "30s", "-nostdin",
			"-trace_err", "-error_file", filepath.Join(dir, name+"_err.log"))...)
		return c
	}
	fail := func(name string, err error, out []byte) {
		errLog, _ := os.ReadFile(filepath.Join(dir, name+"_err.log"))
		t.Fatalf("SIPp %s failed: %v\n%s\n%s", name, err, lastLines(string(out), 15), errLog)
	}

	// 1. Register from phonePort, advertising 192.168.1.77:5099.
	reg := run("register", "-sf", regScen, "-p", fmt.Sprint(phonePort), "-s", "phone",
		"-au", "phone", "-ap", "n4t-s3cret", sbcdAddr)
	if out, err := reg.CombinedOutput(); err != nil {
		fail("register", err, out)
	}

	// 2. The phone waits for calls on the port it registered from.
	phone := run("phone", "-sf", filepath.Join("testdata", "sipp", "phone_answer.xml"), "-p", fmt.Sprint(phonePort))
	var phoneOut bytes.Buffer
	phone.Stdout, phone.Stderr = &phoneOut, &phoneOut
	if err := phone.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let SIPp bind the port

	// 3. The upstream calls "phone".
	up := run("upstream", "-sf", filepath.Join("testdata", "sipp", "upstream_caller.xml"), "-p", fmt.Sprint(upPort),
		"-s", "phone", sbcdAddr)
	if out, err := up.CombinedOutput(); err != nil {
		_ = phone.Process.Kill()
		fail("upstream", err, out)
	}
	if err := phone.Wait(); err != nil {
		fail("phone", err, phoneOut.Bytes())
	}
	stopDaemon() // the CDR writer flushes on its own schedule; stopping flushes for sure
	checkCDR(t, cdrDir, map[string]string{"end_reason": "caller_bye", "ended_by": "caller", "sip_code": "200"})
	if !strings.Contains(daemonLog.String(), "REGISTER") {
		t.Errorf("sbcd's trace shows no REGISTER")
	}
}
