package b2bua

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestUDPBuffers: the UDP listener asks the kernel for large socket buffers
// (Linux grants min(request, net.core.rmem_max) and reports it doubled).
func TestUDPBuffers(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skipf("no rmem_max: %v", err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, behavior{}, nil)
	if len(e.b.udp) == 0 {
		t.Fatal("no UDP listener")
	}
	sc, err := mustUDPConn(t, e.b.udp[0]).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := sc.Control(func(fd uintptr) {
		got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || gerr != nil {
		t.Fatalf("getsockopt: %v %v", err, gerr)
	}
	if want := 2 * min(udpBuffer, rmemMax); got < want {
		t.Errorf("SO_RCVBUF = %d, want at least %d (rmem_max %d)", got, want, rmemMax)
	}
}
