package keepalive

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

func thpMode(t *testing.T) string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return "none"
	}
	s := string(b)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return "none"
}

// TestEntriesHugePages: a table of 100,000 bindings gets its binding array
// in a mapping of its own, aligned to a huge page and backed by huge pages
// when the kernel has them on (madvise or always), and the mapping goes
// away once the table is garbage. A small table stays on the Go heap.
func TestEntriesHugePages(t *testing.T) {
	small, err := New(1000, 64, DefaultParams(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if small.huge {
		t.Errorf("a table of 1,000 bindings (%d bytes) was mapped apart: want the Go heap below %d bytes", 1000*entrySize, hugeMin)
	}

	fallback0 := vmstat(t, "thp_fault_fallback")
	tab, err := New(100000, 64, DefaultParams(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := tab.Upsert(strconv.Itoa(i), "c", forever(i)); err != nil {
			t.Fatal(err)
		}
	}
	addr := uintptr(unsafe.Pointer(&tab.e[0]))
	if addr%hugePage != 0 {
		t.Errorf("binding array at %#x: want it aligned to %d", addr, hugePage)
	}
	start, hugeKB, hg, ok := mapping(t, addr)
	if !ok {
		t.Fatalf("no mapping holds the binding array at %#x", addr)
	}
	mode := thpMode(t)
	t.Logf("transparent huge pages %q: advised %v, VmFlags hg %v, AnonHugePages %d KiB", mode, tab.huge, hg, hugeKB)
	if mode == "madvise" || mode == "always" {
		if !tab.huge {
			t.Errorf("huge pages are %q but the binding array was not advised", mode)
		}
		// qemu-aarch64 (the arm64 tests) takes madvise and drops it:
		// then the mapping lacks the kernel's "hg" flag.
		if !hg {
			t.Logf("the mapping lacks VmFlags hg: the advice did not reach the kernel (user-mode emulation); huge pages not checked")
		} else if hugeKB < hugePage>>10 {
			// The kernel may have had no free huge page at hand (a
			// fragmented machine): it counts that as a fallback, and
			// the table works the same on base pages.
			if fb := vmstat(t, "thp_fault_fallback"); fb > fallback0 {
				t.Logf("no huge page for the binding array: the kernel fell back to base pages (thp_fault_fallback %d -> %d)", fallback0, fb)
			} else {
				t.Errorf("AnonHugePages of the binding array %d KiB: want at least one huge page", hugeKB)
			}
		}
	}
	if _, err := tab.Upsert("after", "c", forever(1)); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(tab)

	// Garbage: the cleanup unmaps it.
	tab = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		s, _, _, ok := mapping(t, addr)
		if !ok || s != start {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the binding array's mapping at %#x is still there 10 s after its table became garbage", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
