package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// powerCutChild is the environment variable that makes the test binary a
// writer that saves two configurations in turn until it is killed.
const powerCutChild = "SBCD_POWERCUT_CHILD"

// powerCutConfigs are the two files the child saves in turn. They differ in
// length, so a torn write could not pass for either.
func powerCutConfigs() [2][]byte {
	a := []byte("[session_timer]\nttl = 600\n")
	b := []byte("# saved by the power-cut test\n[session_timer]\nttl = 1800\nupdate_segment = 3\n\n[nat_keepalive]\nmessage = \"PING\"\nperiod = 20\n" +
		string(bytes.Repeat([]byte("# padding so the write takes more than one block\n"), 200)))
	return [2][]byte{a, b}
}

func TestMain(m *testing.M) {
	if path := os.Getenv(powerCutChild); path != "" {
		// The writer: write the two files in turn, as fast as it can,
		// until the parent kills it, and write one byte to stdout after
		// each, so the parent can aim its kill. It calls WriteFileAtomic,
		// not Save: Save's parse of the longer file (under -race, most of
		// a save's time) comes before the write, so kills would mostly
		// land while the file is still the first version.
		cfgs := powerCutConfigs()
		for i := 0; ; i++ {
			if err := WriteFileAtomic(path, cfgs[i%2], 0o600); err != nil {
				fmt.Fprintln(os.Stderr, "save:", err)
				os.Exit(3)
			}
			if _, err := os.Stdout.Write([]byte{'.'}); err != nil {
				os.Exit(4)
			}
		}
	}
	os.Exit(m.Run())
}

// TestPowerCut kills a process that saves the configuration over and over
// with SIGKILL at random moments (DESIGN.md §5): after every kill the file
// on disk parses and is exactly one of the two versions, and at most the
// one temporary file of the interrupted write is left beside it. Each kill
// lands after a random number of completed saves (0 to 9) and a random
// part of a save's time more, so it falls anywhere in a save however slow
// the machine is (a start-up under -race on a loaded machine can take
// longer than a fixed sleep).
func TestPowerCut(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sbcd.toml")
	cfgs := powerCutConfigs()
	if err := Save(path, cfgs[0]); err != nil {
		t.Fatal(err)
	}
	kills := 200
	if testing.Short() {
		kills = 30
	}
	deadline := time.Now().Add(90 * time.Second)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	seen := [2]int{}
	for i := 0; i < kills && time.Now().Before(deadline); i++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), powerCutChild+"="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		saves, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			if errors.Is(err, syscall.ENOEXEC) {
				// An arm64 test binary run through qemu-aarch64-static
				// (make test-arm64) cannot re-execute itself without
				// binfmt_misc; the file system calls are the host
				// kernel's either way, and the host run covers them.
				t.Skipf("cannot re-execute the test binary as the writer: %v", err)
			}
			t.Fatal(err)
		}
		// After 0 to 9 completed saves, and somewhere in the next one.
		waitSaves(t, saves, rng.IntN(10), time.Until(deadline))
		time.Sleep(time.Duration(rng.IntN(2_000)) * time.Microsecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("writer ended by itself (%v): %s", err, stderr.String())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("kill %d: the file is gone: %v", i, err)
		}
		switch {
		case bytes.Equal(data, cfgs[0]):
			seen[0]++
		case bytes.Equal(data, cfgs[1]):
			seen[1]++
		default:
			t.Fatalf("kill %d: the file is neither version (%d bytes):\n%s", i, len(data), data)
		}
		if _, err := Parse(data, "sbcd.toml"); err != nil {
			t.Fatalf("kill %d: the file does not parse: %v", i, err)
		}
		if tmp, _ := filepath.Glob(filepath.Join(dir, ".sbcd.toml.tmp-*")); len(tmp) > 1 {
			t.Fatalf("kill %d: %d temporary files left: %v", i, len(tmp), tmp)
		}
	}
	t.Logf("after the kills the file was the first version %d times, the second %d times", seen[0], seen[1])
	if seen[0] == 0 || seen[1] == 0 {
		t.Errorf("the kills never caught one of the versions (%v): the writer did not run long enough to matter", seen)
	}
}

// waitSaves reads n bytes from the writer's stdout (one per completed
// save), failing the test after limit.
func waitSaves(t *testing.T, r io.Reader, n int, limit time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(r, make([]byte, n))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the writer did not report %d saves: %v", n, err)
		}
	case <-time.After(limit):
		t.Fatalf("the writer did not report %d saves in %v", n, limit)
	}
}
