package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// tunSink reads the packets that leave through a tun device and records
// each UDP datagram's read time on the sock it was addressed to.
type tunSink struct {
	f     *os.File
	socks map[string]*sock // by destination "ip:port"
	other atomic.Int64     // packets for no sock, or not IPv4/UDP
	done  chan struct{}
}

// openTun attaches to the persistent tun device name (created by the
// benchmark with `ip tuntap add NAME mode tun`) and starts reading.
func openTun(name string, socks []*sock) (*tunSink, error) {
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var ifr [40]byte // struct ifreq: name, then the flags
	if len(name) >= syscall.IFNAMSIZ {
		syscall.Close(fd)
		return nil, fmt.Errorf("tun %q: name too long", name)
	}
	copy(ifr[:], name)
	binary.NativeEndian.PutUint16(ifr[syscall.IFNAMSIZ:], syscall.IFF_TUN|syscall.IFF_NO_PI)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TUNSETIFF, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("attach to tun %s: %w", name, e)
	}
	t := &tunSink{f: os.NewFile(uintptr(fd), "tun:"+name), socks: map[string]*sock{}, done: make(chan struct{})}
	for _, s := range socks {
		t.socks[s.conn.LocalAddr().String()] = s
	}
	go t.read()
	return t, nil
}

func (t *tunSink) read() {
	defer close(t.done)
	buf := make([]byte, 65536)
	for {
		n, err := t.f.Read(buf)
		if err != nil {
			return
		}
		ts := time.Now().UnixNano()
		p := buf[:n]
		if n < 20 || p[0]>>4 != 4 || p[9] != syscall.IPPROTO_UDP {
			t.other.Add(1)
			continue
		}
		ihl := int(p[0]&0xf) * 4
		if n < ihl+8 {
			t.other.Add(1)
			continue
		}
		dst := net.IP(p[16:20]).String() + ":" + strconv.Itoa(int(binary.BigEndian.Uint16(p[ihl+2:])))
		s := t.socks[dst]
		if s == nil {
			t.other.Add(1)
			continue
		}
		s.record(p[ihl+8:], ts)
	}
}

// close detaches from the device and waits for the reader.
func (t *tunSink) close() {
	t.f.Close()
	select {
	case <-t.done:
	case <-time.After(5 * time.Second):
	}
}

// route sends prefix (an address on lo) through dev: a route in the main
// table first, then the address off lo, whose local route took precedence.
func route(prefix, dev string) error {
	for _, args := range [][]string{
		{"route", "replace", prefix, "dev", dev},
		{"addr", "del", prefix, "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// tunDropped reads the device's count of packets it dropped (its queue
// full: the reader fell behind).
func tunDropped(dev string) (int64, error) {
	b, err := os.ReadFile("/sys/class/net/" + dev + "/statistics/tx_dropped")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
