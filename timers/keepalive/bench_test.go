package keepalive

import (
	"runtime"
	"strconv"
	"testing"
)

func benchTable(b *testing.B, n int, p Params) (*Table, []string) {
	b.Helper()
	tab, err := New(n+1, 64, p, 0)
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "sip:" + strconv.Itoa(i) + "@example.net"
		if _, err := tab.Upsert(keys[i], "sip:u@192.168.1.2:5060", forever(i)); err != nil {
			b.Fatal(err)
		}
	}
	return tab, keys
}

// BenchmarkAdvance drives the pacer one send_interval per iteration with
// 100,000 bindings at the defaults (30 s period, 10 ms, 100 per batch): about
// 33 pings per tick. ns/ping is the pacer's CPU per keep-alive.
func BenchmarkAdvance(b *testing.B) {
	for _, mode := range []Mode{ModeMessage, ModeOptions} {
		b.Run("100k/"+mode.String(), func(b *testing.B) {
			p := DefaultParams()
			p.Mode = mode
			tab, _ := benchTable(b, 100000, p)
			out := make([]Event, 0, p.SendOneTime)
			iv := int64(p.SendInterval)
			now := int64(0)
			pings := 0
			b.ReportAllocs()
			for b.Loop() {
				out = tab.Advance(now, out[:0])
				for _, ev := range out {
					if ev.Kind == Ping {
						pings++
						if mode == ModeOptions {
							tab.Answered(ev.ID)
						}
					}
				}
				now += iv
			}
			if pings == 0 {
				b.Fatal("no pings")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pings), "ns/ping")
			b.ReportMetric(float64(pings)/float64(b.N), "pings/tick")
		})
	}
}

func BenchmarkUpsert(b *testing.B) {
	p := DefaultParams()
	b.Run("100k/update", func(b *testing.B) {
		tab, keys := benchTable(b, 100000, p)
		bd := forever(1)
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tab.Upsert(keys[i], "sip:u@192.168.1.2:5060", bd); err != nil {
				b.Fatal(err)
			}
			i++
			if i == len(keys) {
				i = 0
			}
		}
	})
	b.Run("100k/new+remove", func(b *testing.B) {
		tab, _ := benchTable(b, 100000, p)
		bd := forever(1)
		b.ReportAllocs()
		for b.Loop() {
			id, err := tab.Upsert("sip:new@example.net", "sip:u@192.168.1.2:5060", bd)
			if err != nil {
				b.Fatal(err)
			}
			tab.Remove(id)
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	tab, keys := benchTable(b, 100000, DefaultParams())
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tab.Lookup(keys[i], "sip:u@192.168.1.2:5060"); !ok {
			b.Fatal("missing")
		}
		i++
		if i == len(keys) {
			i = 0
		}
	}
}

// BenchmarkNew reports the memory of a table per binding slot (64-byte keys,
// default params).
func BenchmarkNew(b *testing.B) {
	const n = 100000
	var before, after runtime.MemStats
	var total uint64
	b.ReportAllocs()
	for b.Loop() {
		runtime.ReadMemStats(&before)
		tab, err := New(n, 64, DefaultParams(), 0)
		if err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		total += after.TotalAlloc - before.TotalAlloc
		runtime.KeepAlive(tab)
	}
	b.ReportMetric(float64(total)/float64(b.N)/n, "B/binding")
}
