package keepalive_test

import (
	"fmt"
	"math"
	"net/netip"
	"time"

	"sbcd/timers/keepalive"
)

// The registrar owns the table and drives it from its own loop: every
// send_interval it calls Advance and sends what the events ask for.
func Example() {
	p := keepalive.DefaultParams()
	p.Period = time.Second // short, for the example: 100 ticks of 10 ms
	start := int64(0)      // the owner's monotonic clock, in nanoseconds
	tab, err := keepalive.New(1000, 256, p, start)
	if err != nil {
		panic(err)
	}
	for i, c := range []string{"sip:1001@10.0.0.5:5060", "sip:1002@10.0.0.6:5060", "sip:1003@10.0.0.7:5060"} {
		_, err := tab.Upsert("sip:"+c[4:8]+"@example.net", c, keepalive.Binding{
			Source:  netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), uint16(40000+i)),
			Flow:    1, // the UDP listening socket
			Expires: start + int64(time.Hour),
			NATed:   true,
		})
		if err != nil {
			panic(err) // keepalive.ErrFull: answer the REGISTER with 503
		}
	}
	_, _ = tab.Upsert("sip:pbx@example.net", "sip:pbx@192.0.2.20", keepalive.Binding{
		Source: netip.MustParseAddrPort("192.0.2.20:5060"), Expires: math.MaxInt64, // not NATed: visited, not pinged (slot at 750 ms)
	})

	out := make([]keepalive.Event, 0, p.SendOneTime) // never grows
	for now := start; now < start+int64(p.Period); now += int64(p.SendInterval) {
		out = tab.Advance(now, out[:0])
		for _, ev := range out {
			fmt.Printf("%dms %s %v\n", time.Duration(now).Milliseconds(), ev.Kind, ev.Source)
		}
	}
	fmt.Printf("%+v\n", tab.Stats())
	// Output:
	// 0ms ping 203.0.113.9:40000
	// 250ms ping 203.0.113.9:40002
	// 500ms ping 203.0.113.9:40001
	// {Bindings:4 NATed:3 PingsSent:3 Evictions:0 Expirations:0}
}
