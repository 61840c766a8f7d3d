package cdr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// ErrQueueFull is returned by Append when the queue holds Options.QueueLen
// records waiting for the disk: the caller retries later or counts the loss.
var ErrQueueFull = errors.New("cdr: queue full")

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("cdr: writer closed")

// Queue length bounds (Options.QueueLen).
const (
	DefaultQueueLen = 4096
	MaxQueueLen     = 1 << 20
)

// flushAt is the size at which a batch's buffer is written out before the
// batch is complete, which bounds the buffer whatever the records hold.
const flushAt = 256 << 10

// Options configure a Writer.
type Options struct {
	// Dir is the CDR directory (DESIGN.md §4: /data/cdr), created with
	// mode 0750 if missing.
	Dir string
	// QueueLen is how many records may wait for the disk (default
	// DefaultQueueLen, at most MaxQueueLen). Memory for twice as many
	// records is allocated at New (one queue fills while the other is
	// written).
	QueueLen int
	// Now is the clock of Stats.LastCommit (default time.Now). Records
	// carry their own times.
	Now func() time.Time
	// OnError, when set, receives every open, write and fsync error, on the
	// writer goroutine; it must not block. The records of the failed batch
	// also get the error through their done callbacks.
	OnError func(error)
	// Interval is the least time between the starts of two commits (0:
	// commit as soon as the previous one is done). A record that arrives
	// when the last commit started longer ago than Interval is committed at
	// once; under load, records gather for up to Interval so that one fsync
	// serves more of them: at most 1/Interval fsyncs per second, each record
	// waiting at most Interval plus one commit. A queue half full, or Close,
	// ends the wait. At most MaxInterval.
	Interval time.Duration
}

// MaxInterval bounds Options.Interval: a record's slot stays taken until its
// line is fsynced (DESIGN.md §4), so the wait must stay short.
const MaxInterval = time.Second

// Stats are a Writer's counters since New.
type Stats struct {
	Written   uint64 // records written and fsynced
	Failed    uint64 // records whose done got an error
	Batches   uint64 // group commits
	Fsyncs    uint64 // fsyncs of day files (directory fsyncs not counted)
	Errors    uint64 // open, write and fsync errors (each passed to OnError)
	Truncated uint64 // partial last lines cut off when a day file was opened
	Rejected  uint64 // Append calls refused with ErrQueueFull
	Queued    int    // records waiting now
	MaxQueued int    // the most records that have waited at once
	// LastCommit is Options.Now when the last batch was fsynced; zero
	// before the first.
	LastCommit time.Time
}

type item struct {
	rec  Record
	done func(error)
	day  int32 // yyyymmdd of rec.EndTime in UTC
	err  error
}

// Writer appends records to the day files from one goroutine, in group
// commits. Its methods are safe for concurrent use.
type Writer struct {
	dir     string
	qlen    int
	now     func() time.Time
	onError func(error)
	fsync   func(*os.File) error                 // (*os.File).Sync; tests hold or fail it
	every   time.Duration                        // Options.Interval
	mono    func() time.Time                     // time.Now; tests use a fake
	after   func(time.Duration) <-chan time.Time // time.After; tests use a fake

	mu     sync.Mutex
	queue  []item
	closed bool
	stats  Stats

	wake     chan struct{} // capacity 1: something was queued, or Close
	exited   chan struct{} // closed when the writer goroutine has finished
	closeErr error         // set by the writer goroutine before exited

	// Owned by the writer goroutine.
	buf  []byte
	days []int32
	errs []error
	cur  *dayFile // the newest day's file, kept open between batches
}

// New checks o, creates the directory if needed and starts the writer
// goroutine. Close stops it.
func New(o Options) (*Writer, error) {
	return newWriter(o, (*os.File).Sync)
}

func newWriter(o Options, fsync func(*os.File) error) (*Writer, error) {
	if o.Dir == "" {
		return nil, errors.New("cdr: new: empty directory")
	}
	if o.QueueLen == 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.QueueLen < 0 || o.QueueLen > MaxQueueLen {
		return nil, fmt.Errorf("cdr: new: queue length %d outside [1, %d]", o.QueueLen, MaxQueueLen)
	}
	if o.Interval < 0 || o.Interval > MaxInterval {
		return nil, fmt.Errorf("cdr: new: commit interval %v outside [0, %v]", o.Interval, MaxInterval)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnError == nil {
		o.OnError = func(error) {}
	}
	w := &Writer{
		dir:     o.Dir,
		qlen:    o.QueueLen,
		now:     o.Now,
		onError: o.OnError,
		fsync:   fsync,
		every:   o.Interval,
		mono:    time.Now,
		after:   time.After,
		queue:   make([]item, 0, o.QueueLen),
		wake:    make(chan struct{}, 1),
		exited:  make(chan struct{}),
	}
	if err := makeDir(w.dir); err != nil {
		return nil, fmt.Errorf("cdr: new: %w", err)
	}
	go w.run()
	return w, nil
}

// Append queues r (copied: the caller may reuse it at once) without
// blocking. done, if not nil, is called exactly once, after the line was
// written and fsynced (nil) or when writing it failed; it runs on the writer
// goroutine (or in a Close whose context ended, see there) and must not
// block: post an event to the call's shard, which frees the slot. When Append
// returns an error, done is never called: ErrQueueFull when the queue is
// full, ErrClosed after Close, or an error for a record without a usable
// EndTime.
func (w *Writer) Append(r *Record, done func(error)) error {
	if r == nil {
		return errors.New("cdr: append: nil record")
	}
	day, ok := dayOf(r.EndTime)
	if !ok {
		return fmt.Errorf("cdr: append: call %q: end time %q is zero or outside years 1-9999",
			r.CallID, r.EndTime.UTC().Format(timeLayout))
	}
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return ErrClosed
	case len(w.queue) >= w.qlen:
		w.stats.Rejected++
		w.mu.Unlock()
		return ErrQueueFull
	}
	w.queue = append(w.queue, item{rec: *r, done: done, day: day})
	w.stats.MaxQueued = max(w.stats.MaxQueued, len(w.queue))
	w.mu.Unlock()
	w.signal()
	return nil
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Queued = len(w.queue)
	return s
}

// Close stops accepting records, writes and fsyncs what is queued, calls its
// done callbacks and closes the files. If ctx ends first, the records not yet
// taken by the writer get the context's error through their done callbacks
// (a batch already being written still completes and reports on its own) and
// Close returns that error. Close may be called more than once.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.signal()
	select {
	case <-w.exited:
		return w.closeErr
	case <-ctx.Done():
	}
	err := fmt.Errorf("cdr: close: %w", ctx.Err())
	w.mu.Lock()
	left := w.queue
	w.queue = nil
	w.stats.Failed += uint64(len(left))
	w.mu.Unlock()
	for i := range left {
		if left[i].done != nil {
			left[i].done(err)
		}
	}
	return err
}

// run is the writer goroutine: it takes everything queued, commits it, and
// starts over, until Close and an empty queue.
func (w *Writer) run() {
	defer close(w.exited)
	spare := make([]item, 0, w.qlen)
	var started time.Time // when the last commit started
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closed {
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		if len(w.queue) == 0 {
			w.mu.Unlock()
			break
		}
		if w.every > 0 && !started.IsZero() {
			w.mu.Unlock()
			w.gather(started)
			w.mu.Lock()
		}
		started = w.mono()
		batch := w.queue
		w.queue = spare
		w.mu.Unlock()

		w.commit(batch)
		clear(batch) // drop the strings and callbacks
		spare = batch[:0]
	}
	if w.cur != nil {
		w.closeErr = w.cur.close()
		w.cur = nil
	}
}

// gather waits until Interval has passed since the last commit started, so
// that the records arriving meanwhile share the next fsync, or until Close
// or a queue half full.
func (w *Writer) gather(started time.Time) {
	d := w.every - w.mono().Sub(started)
	if d <= 0 {
		return
	}
	timeUp := w.after(d)
	for {
		w.mu.Lock()
		enough := w.closed || len(w.queue) >= (w.qlen+1)/2
		w.mu.Unlock()
		if enough {
			return
		}
		select {
		case <-timeUp:
			return
		case <-w.wake:
		}
	}
}

// commit writes a batch: per day file, one write (or a few for a large
// batch) and one fsync; then the counters, OnError and the done callbacks.
func (w *Writer) commit(batch []item) {
	w.days = w.days[:0]
	last := int32(-1)
	for i := range batch {
		if d := batch[i].day; d != last {
			if !slices.Contains(w.days, d) {
				w.days = append(w.days, d)
			}
			last = d
		}
	}
	var delta Stats
	w.errs = w.errs[:0]
	for _, d := range w.days {
		err := w.writeDay(d, batch, &delta)
		if err != nil {
			w.errs = append(w.errs, err)
		}
		for i := range batch {
			if batch[i].day == d {
				batch[i].err = err
				if err != nil {
					delta.Failed++
				} else {
					delta.Written++
				}
			}
		}
	}
	delta.Errors = uint64(len(w.errs))
	var now time.Time
	if delta.Written > 0 {
		now = w.now()
	}

	w.mu.Lock()
	s := &w.stats
	s.Written += delta.Written
	s.Failed += delta.Failed
	s.Batches++
	s.Fsyncs += delta.Fsyncs
	s.Errors += delta.Errors
	s.Truncated += delta.Truncated
	if !now.IsZero() {
		s.LastCommit = now
	}
	w.mu.Unlock()

	for _, err := range w.errs {
		w.onError(err)
	}
	clear(w.errs)
	for i := range batch {
		if batch[i].done != nil {
			batch[i].done(batch[i].err)
		}
	}
}

// writeDay appends the batch's records of day d to its file and fsyncs it.
// On failure the file is cut back to where the batch started (so a record
// reported failed is not left behind to be duplicated by a retry) and closed;
// the next batch opens it again.
func (w *Writer) writeDay(d int32, batch []item, delta *Stats) error {
	f, err := w.open(d, delta)
	if err != nil {
		return err
	}
	start := f.size
	buf := w.buf[:0]
	if f.size == 0 {
		buf = append(buf, Header...)
		buf = append(buf, '\n')
	}
	for i := range batch {
		if batch[i].day != d {
			continue
		}
		buf = AppendCSV(buf, &batch[i].rec)
		if len(buf) >= flushAt {
			if err = f.write(buf); err != nil {
				break
			}
			buf = buf[:0]
		}
	}
	if err == nil && len(buf) > 0 {
		err = f.write(buf)
	}
	if err == nil {
		delta.Fsyncs++
		if err = w.fsync(f.f); err != nil {
			err = opErr("fsync", f.path, err)
		}
	}
	if cap(buf) > 4*flushAt {
		buf = nil // a batch of huge records: do not keep the memory
	}
	w.buf = buf[:0]
	if err != nil {
		_ = f.f.Truncate(start) // best effort: the error is already reported
		_ = f.close()
		if w.cur == f {
			w.cur = nil
		}
		return err
	}
	if f != w.cur {
		// Another day's file (a late record): fsynced, so a close error
		// cannot lose anything.
		_ = f.close()
	}
	return nil
}

// open returns the file of day d: the current file when it is still the
// one in the directory, else a newly opened one, which becomes current when
// its day is the newest.
func (w *Writer) open(d int32, delta *Stats) (*dayFile, error) {
	if c := w.cur; c != nil && c.day == d {
		if c.inPlace() {
			return c, nil
		}
		_ = c.close() // removed or renamed by an operator: start anew
		w.cur = nil
	}
	f, err := openDay(w.dir, d, delta)
	if err != nil {
		return nil, err
	}
	if w.cur == nil || d > w.cur.day {
		if w.cur != nil {
			_ = w.cur.close() // fsynced at the end of its last batch
		}
		w.cur = f
	}
	return f, nil
}
