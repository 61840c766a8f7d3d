package cdr

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppendCSV formats one record (an answered call with session
// timers on both legs) into a reused buffer.
func BenchmarkAppendCSV(b *testing.B) {
	r := &goldenRecords()[0]
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCSV(buf[:0], r)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkWriter measures Append plus group commit: producers append as
// fast as the writer takes records (waiting on ErrQueueFull for a batch to
// complete), and the benchmark ends when every done has been called. It
// reports records/s and fsyncs per 1,000 records. The directory is
// $CDR_BENCH_DIR (for example a tmpfs, or the SD card of a board) or a
// temporary directory.
//
//	go test ./sip/cdr -run '^$' -bench Writer -benchtime 50000x
func BenchmarkWriter(b *testing.B) {
	for _, bc := range []struct {
		name      string
		producers int
	}{{"1producer", 1}, {"8producers", 8}} {
		b.Run(bc.name, func(b *testing.B) {
			dir := os.Getenv("CDR_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			} else {
				var err error
				if dir, err = os.MkdirTemp(dir, "cdrbench"); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = os.RemoveAll(dir) })
			}
			w, err := New(Options{Dir: dir})
			if err != nil {
				b.Fatal(err)
			}
			r := goldenRecords()[0]
			var wg sync.WaitGroup
			var failed atomic.Int64
			progress := make(chan struct{}, bc.producers)
			done := func(err error) {
				if err != nil {
					failed.Add(1)
				}
				select {
				case progress <- struct{}{}:
				default:
				}
				wg.Done()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var next atomic.Int64
			var pwg sync.WaitGroup
			for range bc.producers {
				pwg.Add(1)
				go func() {
					defer pwg.Done()
					for next.Add(1) <= int64(b.N) {
						wg.Add(1)
						for {
							err := w.Append(&r, done)
							if err == nil {
								break
							}
							if !errors.Is(err, ErrQueueFull) {
								wg.Done()
								failed.Add(1)
								return
							}
							<-progress
						}
					}
				}()
			}
			pwg.Wait()
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err := w.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			if n := failed.Load(); n != 0 {
				b.Fatalf("%d records failed", n)
			}
			s := w.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(s.Fsyncs)*1000/float64(b.N), "fsyncs/1000rec")
			b.ReportMetric(float64(s.Written)/float64(s.Batches), "records/batch")
		})
	}
}

// BenchmarkWriterPaced1500 appends b.N records at 1,500 records/s (DESIGN.md
// §10's churn rate, one CDR per call) from 8 producers, and reports the
// fsyncs per 1,000 records and the latency from Append to done (what a call
// slot waits before it is freed). It runs in real time: -benchtime 3000x
// takes 2 s.
func BenchmarkWriterPaced1500(b *testing.B) {
	const rate, producers = 1500, 8
	dir := os.Getenv("CDR_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		var err error
		if dir, err = os.MkdirTemp(dir, "cdrbench"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	w, err := New(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	r := goldenRecords()[0]
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var pwg sync.WaitGroup
	for p := range producers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := p; i < b.N; i += producers {
				at := start.Add(time.Duration(i) * time.Second / rate)
				time.Sleep(time.Until(at))
				sent := time.Now()
				wg.Add(1)
				err := w.Append(&r, func(err error) {
					if err != nil {
						failed.Add(1)
					}
					lat[i] = time.Since(sent)
					wg.Done()
				})
				if err != nil {
					wg.Done()
					failed.Add(1)
				}
			}
		}()
	}
	pwg.Wait()
	wg.Wait()
	b.StopTimer()
	if err := w.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	if n := failed.Load(); n != 0 {
		b.Fatalf("%d records failed", n)
	}
	slices.Sort(lat)
	s := w.Stats()
	b.ReportMetric(float64(s.Fsyncs)*1000/float64(b.N), "fsyncs/1000rec")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
