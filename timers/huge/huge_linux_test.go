package huge

import (
	"bufio"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"sbcd/timers/huge/hugetest"
)

// mapping returns the /proc/self/smaps block of the mapping that holds
// addr: its start address, its AnonHugePages in KiB and whether its
// VmFlags hold hg (advised MADV_HUGEPAGE); ok is false when no mapping
// holds addr.
func mapping(t *testing.T, addr uintptr) (start uintptr, hugeKB int, hg, ok bool) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatalf("open smaps: %v", err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) > 0 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			lo, hi, _ := strings.Cut(fields[0], "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			if in {
				return start, hugeKB, hg, true
			}
			in = uintptr(a) <= addr && addr < uintptr(b)
			start = uintptr(a)
			continue
		}
		if in && len(fields) >= 2 {
			switch fields[0] {
			case "AnonHugePages:":
				hugeKB, _ = strconv.Atoi(fields[1])
			case "VmFlags:":
				hg = slices.Contains(fields[1:], "hg")
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read smaps: %v", err)
	}
	return start, hugeKB, hg, in
}

// vmstat returns a counter of /proc/vmstat, 0 when it is not there.
func vmstat(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == name {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// TestMapping: a table of 4 MiB gets a mapping of its own, aligned to a
// huge page and backed by huge pages when the kernel has them on (madvise
// or always), and the mapping goes away once its owner is garbage.
func TestMapping(t *testing.T) {
	fallback0 := vmstat(t, "thp_fault_fallback")
	o := &owner{}
	s, advised := Make[uint64](o, 2*Page/8)
	o.s = s
	for i := range s { // touch every page
		s[i] = uint64(i)
	}
	addr := uintptr(unsafe.Pointer(&s[0]))
	if addr%Page != 0 {
		t.Errorf("table at %#x: want it aligned to %d", addr, Page)
	}
	start, hugeKB, hg, ok := mapping(t, addr)
	if !ok {
		t.Fatalf("no mapping holds the table at %#x", addr)
	}
	t.Logf("transparent huge pages on: %v; advised %v, VmFlags hg %v, AnonHugePages %d KiB", hugetest.Enabled(), advised, hg, hugeKB)
	if hugetest.Enabled() {
		if !advised {
			t.Errorf("huge pages are on but the table was not advised")
		}
		// qemu-aarch64 (the arm64 tests) takes madvise and drops it:
		// then the mapping lacks the kernel's "hg" flag.
		if !hg {
			t.Logf("the mapping lacks VmFlags hg: the advice did not reach the kernel (user-mode emulation); huge pages not checked")
		} else if hugeKB < Page>>10 {
			// The kernel may have had no free huge page at hand (a
			// fragmented machine): it counts that as a fallback, and
			// the table works the same on base pages.
			if fb := vmstat(t, "thp_fault_fallback"); fb > fallback0 {
				t.Logf("no huge page for the table: the kernel fell back to base pages (thp_fault_fallback %d -> %d)", fallback0, fb)
			} else {
				t.Errorf("AnonHugePages of the table %d KiB: want at least one huge page", hugeKB)
			}
		}
	}
	if s[len(s)-1] != uint64(len(s)-1) {
		t.Errorf("last element %d, want %d", s[len(s)-1], len(s)-1)
	}
	runtime.KeepAlive(o)

	// Garbage: the cleanup unmaps it.
	o, s = nil, nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		s, _, _, ok := mapping(t, addr)
		if !ok || s != start {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the table's mapping at %#x is still there 10 s after its owner became garbage", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
