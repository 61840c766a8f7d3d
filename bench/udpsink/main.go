// Command udpsink is the receiving end of bench/keepalive.sh (DESIGN.md §10
// keep-alive target): it counts the NAT keep-alive datagrams a registrar
// sends to its bindings, and samples the registrar's CPU time over exactly
// the same window.
//
// It listens on every -addr (the address SIPp registered the bulk of the
// bindings from, which SIPp has released by then, plus optionally the
// Contact host:port, where nothing should arrive). With -sample K it also
// registers K bindings of its own with the registrar at -register, each from
// its own ephemeral UDP socket on the first -addr's host, so that the
// keep-alives of those K bindings can be told apart: their per-binding
// intervals give the spread (all the bulk bindings share one source address
// and one payload).
//
// After -warmup it reads utime+stime of every -pids process from
// /proc/PID/stat, counts for -measure, reads them again, and prints
// key=value lines (also to -out). Receive times are the kernel's
// (SO_TIMESTAMPNS), so a late reader does not distort bursts or intervals.
//
// On loopback the kernel delivers each datagram to the sink, and wakes it,
// inside the sender's system call: the registrar is charged for the
// receiving end too, which on the box is the phone's. With -egress TUN
// (a persistent tun device in the benchmark's own network namespace) and
// -egress-prefix P (the sink's host, for example 10.203.1.1/32, an address
// on lo) a second window follows: udpsink attaches to the tun device,
// routes P through it and takes P off lo, so the keep-alives leave through
// an interface as on the box (tun's transmit queues each packet for the
// reader, as a NIC driver queues it for the hardware), and counts them
// there (read times, not the kernel's), with the CPU of the same window.
// Its keys carry the prefix "egress.".
//
// Standard library only. Every address must be one of this host's own (of
// its network namespace): nothing is sent elsewhere.
package main

import (
	"bufio"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type sock struct {
	name   string // "main:ADDR", "contact:ADDR" or "sample"
	conn   *net.UDPConn
	sample bool
	user   string

	mu  sync.Mutex
	ts  []int64 // kernel receive times, ns since the epoch
	pay map[string]int
	sip int // SIP messages (responses) seen after registration
}

func main() {
	addrs := flag.String("addr", "127.0.0.1:15070", "comma-separated host:port list (this host's own addresses) to count datagrams on")
	register := flag.String("register", "", "registrar host:port (this host's) for the -sample bindings")
	sample := flag.Int("sample", 0, "bindings to register from their own sockets (per-binding intervals)")
	prefix := flag.String("user-prefix", "s", "user part prefix of the sample bindings (user = prefix + index)")
	contact := flag.String("contact", "127.0.0.2:15069", "host:port in the sample bindings' Contact URI")
	expires := flag.Int("expires", 3600, "Expires of the sample REGISTERs")
	regTimeout := flag.Duration("reg-timeout", 20*time.Second, "give up registering the sample after this long")
	warmup := flag.Duration("warmup", 35*time.Second, "time from start (after the sample is registered) to the measurement window")
	measure := flag.Duration("measure", 60*time.Second, "measurement window")
	period := flag.Duration("period", 30*time.Second, "expected keep-alive period (interval spread is relative to it)")
	pids := flag.String("pids", "", "comma-separated pids whose utime+stime is summed over the window")
	out := flag.String("out", "", "also write the key=value report to this file")
	egress := flag.String("egress", "", "a persistent tun device: after the window, a second one with the keep-alives leaving through it")
	egressPrefix := flag.String("egress-prefix", "", "with -egress: the sink's host as a prefix on lo (for example 10.203.1.1/32), moved to the tun device")
	egressWarmup := flag.Duration("egress-warmup", 5*time.Second, "with -egress: settling time before its window")
	flag.Parse()

	w := io.Writer(os.Stdout)
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fatal("%v", err)
		}
		defer f.Close()
		w = io.MultiWriter(os.Stdout, f)
	}
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	put := func(k string, v any) { fmt.Fprintf(bw, "%s=%v\n", k, v) }

	var socks []*sock
	for _, a := range strings.Split(*addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		ua, err := ownAddr(a)
		if err != nil {
			fatal("-addr: %v", err)
		}
		c, err := listen(ua)
		if err != nil {
			fatal("listen %s: %v", a, err)
		}
		socks = append(socks, &sock{name: a, conn: c, pay: map[string]int{}})
	}
	if len(socks) == 0 {
		fatal("no -addr")
	}
	if (*egress == "") != (*egressPrefix == "") {
		fatal("-egress and -egress-prefix go together")
	}

	var pidList []int
	for _, p := range strings.Split(*pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil {
			fatal("-pids: %v", err)
		}
		pidList = append(pidList, n)
	}

	// sample bindings: register each from its own socket
	var samples []*sock
	regStatus := map[string]int{}
	if *sample > 0 {
		ra, err := ownAddr(*register)
		if err != nil {
			fatal("-register: %v", err)
		}
		host := socks[0].conn.LocalAddr().(*net.UDPAddr).IP
		samples = make([]*sock, *sample)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		deadline := time.Now().Add(*regTimeout)
		for i := range samples {
			c, err := listen(&net.UDPAddr{IP: host})
			if err != nil {
				fatal("sample socket %d: %v", i, err)
			}
			s := &sock{name: "sample", conn: c, sample: true, user: fmt.Sprintf("%s%d", *prefix, i+1), pay: map[string]int{}}
			samples[i] = s
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				st := doRegister(s, ra, *contact, *expires, deadline)
				<-sem
				mu.Lock()
				regStatus[st]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		keys := make([]string, 0, len(regStatus))
		for k := range regStatus {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			put("sample.register."+k, regStatus[k])
		}
		socks = append(socks, samples...)
	}
	put("sample.bindings", *sample)
	put("sample.registered", regStatus["200"])

	// readers: every datagram's kernel receive time
	var wg sync.WaitGroup
	for _, s := range socks {
		wg.Add(1)
		go func() { defer wg.Done(); s.read() }()
	}

	time.Sleep(*warmup)
	lo := measureWindow(pidList, *measure)
	time.Sleep(50 * time.Millisecond)  // datagrams already queued at end
	put("sink.drops", udpDrops(socks)) // receive-buffer overflows on our sockets

	var eg *window
	var tun *tunSink
	if *egress != "" {
		var err error
		if tun, err = openTun(*egress, socks); err != nil {
			fatal("egress: %v", err)
		}
		if err := route(*egressPrefix, *egress); err != nil {
			fatal("egress: %v", err)
		}
		time.Sleep(*egressWarmup)
		d0, err0 := tunDropped(*egress)
		eg = measureWindow(pidList, *measure)
		time.Sleep(50 * time.Millisecond)
		d1, err1 := tunDropped(*egress)
		if err0 != nil || err1 != nil {
			put("egress.tun.error", strings.ReplaceAll(fmt.Sprint(errors.Join(err0, err1)), "\n", "; "))
		}
		put("egress.tun.dropped", d1-d0) // the reader fell behind
		put("egress.tun.other", tun.other.Load())
		tun.close()
	}
	for _, s := range socks {
		s.conn.Close()
	}
	wg.Wait()

	analyze(put, "", lo, socks, samples, *period)
	if eg != nil {
		analyze(put, "egress.", eg, socks, samples, *period)
	}
}

// window is one measurement window: its wall-clock bounds and the CPU
// ticks of each pid over it.
type window struct {
	start, end time.Time
	pids       []int
	cpu0, cpu1 []int64
	err        error
}

// measureWindow samples the pids' CPU, sleeps d and samples it again.
func measureWindow(pids []int, d time.Duration) *window {
	w := &window{pids: pids}
	var err0, err1 error
	w.cpu0, err0 = cpuTicks(pids)
	w.start = time.Now()
	time.Sleep(d)
	w.cpu1, err1 = cpuTicks(pids)
	w.end = time.Now()
	w.err = errors.Join(err0, err1)
	return w
}

// analyze reports what arrived in window w, its keys prefixed with pre.
func analyze(put func(string, any), pre string, w *window, socks, samples []*sock, period time.Duration) {
	t0, t1 := w.start.UnixNano(), w.end.UnixNano()
	win := w.end.Sub(w.start).Seconds()
	put(pre+"window_s", fmt.Sprintf("%.3f", win))

	// CPU over the window
	tck := 100.0 // CLK_TCK on Linux/amd64
	if len(w.pids) > 0 {
		if w.err != nil {
			put(pre+"cpu.error", strings.ReplaceAll(fmt.Sprint(w.err), "\n", "; "))
		}
		var sum int64
		for i, p := range w.pids {
			d := w.cpu1[i] - w.cpu0[i]
			sum += d
			put(fmt.Sprintf("%scpu.pid.%d_ticks", pre, p), d)
		}
		put(pre+"cpu.ticks", sum)
		put(pre+"cpu.s", fmt.Sprintf("%.2f", float64(sum)/tck))
		put(pre+"cpu.pct_core", fmt.Sprintf("%.3f", float64(sum)/tck/win*100))
	}

	// datagrams in the window, everything merged
	var all []int64
	payloads := map[string]int{}
	for _, s := range socks {
		s.mu.Lock()
		n := 0
		for _, t := range s.ts {
			if t >= t0 && t < t1 {
				all = append(all, t)
				n++
			}
		}
		for p, c := range s.pay {
			payloads[p] += c
		}
		s.mu.Unlock()
		if !s.sample {
			put(pre+"dgrams.addr."+s.name, n)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	nSample := 0
	for _, s := range samples {
		for _, t := range s.ts {
			if t >= t0 && t < t1 {
				nSample++
			}
		}
	}
	put(pre+"dgrams.sample", nSample)
	put(pre+"dgrams.total", len(all))
	put(pre+"dgrams.per_s", fmt.Sprintf("%.1f", float64(len(all))/win))

	// payloads (whole run, not only the window)
	pk := make([]string, 0, len(payloads))
	for p := range payloads {
		pk = append(pk, p)
	}
	sort.Slice(pk, func(i, j int) bool { return payloads[pk[i]] > payloads[pk[j]] })
	put(pre+"payload.distinct", len(pk))
	for i, p := range pk {
		if i == 3 {
			break
		}
		put(fmt.Sprintf("%spayload.%d.hex", pre, i), hex.EncodeToString([]byte(p)))
		put(fmt.Sprintf("%spayload.%d.bytes", pre, i), len(p))
		put(fmt.Sprintf("%spayload.%d.count", pre, i), payloads[p])
	}

	// burst shape: per-second counts (whole seconds from window start),
	// the largest number in any sliding 10 ms and 100 ms window, and how
	// long each second's datagrams take from first to last
	if len(all) > 0 {
		nsec := int(w.end.Sub(w.start) / time.Second)
		per := make([]int, nsec)
		first := make([]int64, nsec)
		last := make([]int64, nsec)
		for _, t := range all {
			i := int((t - t0) / int64(time.Second))
			if i < nsec {
				if per[i] == 0 {
					first[i] = t
				}
				per[i]++
				last[i] = t
			}
		}
		cp := append([]int(nil), per...)
		sort.Ints(cp)
		if nsec > 0 {
			put(pre+"per_s.min", cp[0])
			put(pre+"per_s.median", cp[nsec/2])
			put(pre+"per_s.max", cp[nsec-1])
		}
		var spans []float64
		for i := range per {
			if per[i] > 1 {
				spans = append(spans, float64(last[i]-first[i])/1e6)
			}
		}
		sort.Float64s(spans)
		if len(spans) > 0 {
			put(pre+"per_s.span_ms.median", fmt.Sprintf("%.2f", spans[len(spans)/2]))
			put(pre+"per_s.span_ms.max", fmt.Sprintf("%.2f", spans[len(spans)-1]))
		}
		put(pre+"burst.max_in_1ms", maxInWindow(all, int64(time.Millisecond)))
		put(pre+"burst.max_in_10ms", maxInWindow(all, int64(10*time.Millisecond)))
		put(pre+"burst.max_in_100ms", maxInWindow(all, int64(100*time.Millisecond)))
		// clusters: runs of datagrams less than 5 ms apart (below sbcd's
		// 10-ms batch interval, far above a batch's own spacing)
		var sizes []int
		var spans2 []float64
		cs, cn := all[0], 1
		for i := 1; i <= len(all); i++ {
			if i < len(all) && all[i]-all[i-1] < int64(5*time.Millisecond) {
				cn++
				continue
			}
			sizes = append(sizes, cn)
			spans2 = append(spans2, float64(all[i-1]-cs)/1e6)
			if i < len(all) {
				cs, cn = all[i], 1
			}
		}
		sort.Ints(sizes)
		sort.Float64s(spans2)
		put(pre+"cluster.count", len(sizes))
		put(pre+"cluster.size_median", sizes[len(sizes)/2])
		put(pre+"cluster.size_max", sizes[len(sizes)-1])
		put(pre+"cluster.span_ms_median", fmt.Sprintf("%.3f", spans2[len(spans2)/2]))
		put(pre+"cluster.span_ms_max", fmt.Sprintf("%.3f", spans2[len(spans2)-1]))
		// inter-arrival gaps
		gaps := make([]int64, 0, len(all))
		for i := 1; i < len(all); i++ {
			gaps = append(gaps, all[i]-all[i-1])
		}
		sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
		if len(gaps) > 0 {
			q := func(f float64) string {
				return fmt.Sprintf("%.3f", float64(gaps[int(f*float64(len(gaps)-1))])/1e6)
			}
			put(pre+"gap_ms.p50", q(0.5))
			put(pre+"gap_ms.p99", q(0.99))
			put(pre+"gap_ms.max", q(1))
		}
	}

	// per-binding intervals of the sample bindings
	if len(samples) > 0 {
		var ivs []float64
		pinged, silent, sipAfter := 0, 0, 0
		for _, s := range samples {
			var prev int64
			n := 0
			for _, t := range s.ts {
				if t < t0 || t >= t1 {
					continue
				}
				if n > 0 {
					ivs = append(ivs, float64(t-prev)/1e9)
				}
				prev = t
				n++
			}
			if n > 0 {
				pinged++
			} else {
				silent++
			}
			sipAfter += s.sip
		}
		put(pre+"sample.pinged_in_window", pinged)
		put(pre+"sample.silent_in_window", silent)
		put(pre+"sample.sip_messages_after_register", sipAfter)
		put(pre+"interval.n", len(ivs))
		if len(ivs) > 0 {
			sort.Float64s(ivs)
			p := period.Seconds()
			var sum float64
			for _, v := range ivs {
				sum += v
			}
			dev := max(p-ivs[0], ivs[len(ivs)-1]-p) / p * 100
			put(pre+"interval.min_s", fmt.Sprintf("%.4f", ivs[0]))
			put(pre+"interval.median_s", fmt.Sprintf("%.4f", ivs[len(ivs)/2]))
			put(pre+"interval.mean_s", fmt.Sprintf("%.4f", sum/float64(len(ivs))))
			put(pre+"interval.max_s", fmt.Sprintf("%.4f", ivs[len(ivs)-1]))
			put(pre+"interval.max_dev_pct", fmt.Sprintf("%.3f", dev))
		}
	}
}

// ownAddr resolves an IPv4 host:port and checks that the host is one of
// this host's (or network namespace's) own addresses.
func ownAddr(a string) (*net.UDPAddr, error) {
	ua, err := net.ResolveUDPAddr("udp4", a)
	if err != nil {
		return nil, err
	}
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	if ua.IP.IsLoopback() {
		return ua, nil
	}
	for _, ifa := range ifas {
		if n, ok := ifa.(*net.IPNet); ok && n.IP.Equal(ua.IP) {
			return ua, nil
		}
	}
	return nil, fmt.Errorf("%s: not an address of this host", a)
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "udpsink: "+f+"\n", a...)
	os.Exit(1)
}

// listen binds a UDP socket with kernel receive timestamps and a large
// receive buffer (a whole second's burst must fit).
func listen(a *net.UDPAddr) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", a)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(8 << 20)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// past rmem_max when allowed (root); SetReadBuffer above otherwise
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		c.Close()
		return nil, fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
	}
	return c, nil
}

// recv reads one datagram and its kernel receive time.
func recv(c *net.UDPConn, buf, oob []byte) (int, int64, error) {
	n, oobn, _, _, err := c.ReadMsgUDP(buf, oob)
	if err != nil {
		return 0, 0, err
	}
	ts := time.Now().UnixNano()
	if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
				sec := int64(nativeU64(m.Data[0:8]))
				nsec := int64(nativeU64(m.Data[8:16]))
				ts = sec*1e9 + nsec
			}
		}
	}
	return n, ts, nil
}

func nativeU64(b []byte) uint64 { // little endian (amd64, arm64)
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func (s *sock) read() {
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	for {
		n, ts, err := recv(s.conn, buf, oob)
		if err != nil {
			return
		}
		if n >= 8 && string(buf[:8]) == "SIP/2.0 " {
			// a late retransmitted response to our REGISTER: not a ping
			s.mu.Lock()
			s.sip++
			s.mu.Unlock()
			continue
		}
		s.record(buf[:n], ts)
	}
}

// record counts one keep-alive with payload p received at ts.
func (s *sock) record(p []byte, ts int64) {
	s.mu.Lock()
	s.ts = append(s.ts, ts)
	if len(s.pay) < 16 || s.pay[string(p)] > 0 {
		s.pay[string(p)]++
	}
	s.mu.Unlock()
}

// doRegister sends one REGISTER from s and waits for its final response
// (retransmitting like Timer E, 500 ms doubling to 4 s). Returns the status
// code, or "timeout" / "error".
func doRegister(s *sock, to *net.UDPAddr, contact string, expires int, deadline time.Time) string {
	la := s.conn.LocalAddr().(*net.UDPAddr)
	callID := fmt.Sprintf("udpsink-%s-%d@127.0.0.1", s.user, os.Getpid())
	msg := fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d;rport\r\n"+
		"From: <sip:%s@%s>;tag=%s-%d\r\n"+
		"To: <sip:%s@%s>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 REGISTER\r\n"+
		"Contact: <sip:%s@%s>\r\n"+
		"Expires: %d\r\n"+
		"Max-Forwards: 70\r\n"+
		"User-Agent: sbcd-keepalive-bench-udpsink\r\n"+
		"Content-Length: 0\r\n\r\n",
		to, la, s.user, os.Getpid(), s.user, to.IP, s.user, os.Getpid(), s.user, to.IP,
		callID, s.user, contact, expires)
	buf := make([]byte, 65536)
	oob := make([]byte, 128)
	rto := 500 * time.Millisecond
	for time.Now().Before(deadline) {
		if _, err := s.conn.WriteToUDP([]byte(msg), to); err != nil {
			return "error"
		}
		wait := time.Now().Add(rto)
		if wait.After(deadline) {
			wait = deadline
		}
		for {
			s.conn.SetReadDeadline(wait)
			n, _, err := recv(s.conn, buf, oob)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return "error"
			}
			line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "SIP/2.0" || !strings.Contains(string(buf[:n]), callID) {
				continue // an early ping or a stray message
			}
			if f[1][0] == '1' {
				continue
			}
			s.conn.SetReadDeadline(time.Time{})
			return f[1]
		}
		if rto < 4*time.Second {
			rto *= 2
		}
	}
	s.conn.SetReadDeadline(time.Time{})
	return "timeout"
}

// udpDrops sums the kernel's drop counters (/proc/net/udp) of the sockets.
func udpDrops(socks []*sock) int64 {
	want := map[string]bool{}
	for _, s := range socks {
		a := s.conn.LocalAddr().(*net.UDPAddr)
		ip := a.IP.To4()
		want[fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)] = true
	}
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return -1
	}
	var sum int64
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 13 || !want[f[1]] {
			continue
		}
		n, _ := strconv.ParseInt(f[len(f)-1], 10, 64)
		sum += n
	}
	return sum
}

func maxInWindow(ts []int64, w int64) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i]-ts[j] >= w {
			j++
		}
		if i-j+1 > best {
			best = i - j + 1
		}
	}
	return best
}

// cpuTicks returns utime+stime (clock ticks) of each pid, from /proc/PID/stat.
func cpuTicks(pids []int) ([]int64, error) {
	res := make([]int64, len(pids))
	var errs []error
	for i, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s := string(b)
		k := strings.LastIndexByte(s, ')')
		if k < 0 {
			errs = append(errs, fmt.Errorf("pid %d: bad stat", p))
			continue
		}
		f := strings.Fields(s[k+1:])
		// f[0] is field 3 (state); utime is field 14, stime 15
		if len(f) < 13 {
			errs = append(errs, fmt.Errorf("pid %d: short stat", p))
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		res[i] = u + st
	}
	return res, errors.Join(errs...)
}
