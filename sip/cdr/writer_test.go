package cdr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 20 * time.Second

func newTestWriter(t *testing.T, o Options, fsync func(*os.File) error) *Writer {
	t.Helper()
	if fsync == nil {
		fsync = (*os.File).Sync
	}
	w, err := newWriter(o, fsync)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = w.Close(ctx)
	})
	return w
}

func closeWriter(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// dones records the done callbacks of n records.
type dones struct {
	mu    sync.Mutex
	errs  []error
	calls []int
	left  int
	all   chan struct{}
	each  []chan struct{} // closed at the first call of each done
}

func newDones(n int) *dones {
	d := &dones{errs: make([]error, n), calls: make([]int, n), left: n, all: make(chan struct{}),
		each: make([]chan struct{}, n)}
	for i := range d.each {
		d.each[i] = make(chan struct{})
	}
	return d
}

// waitFor waits for the done of record i.
func (d *dones) waitFor(t *testing.T, i int) {
	t.Helper()
	select {
	case <-d.each[i]:
	case <-time.After(testTimeout):
		t.Fatalf("timed out waiting for the done of record %d", i)
	}
}

func (d *dones) done(i int) func(error) {
	return func(err error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.calls[i]++
		d.errs[i] = err
		if d.calls[i] == 1 {
			close(d.each[i])
			if d.left--; d.left == 0 {
				close(d.all)
			}
		}
	}
}

func (d *dones) wait(t *testing.T) {
	t.Helper()
	select {
	case <-d.all:
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for done callbacks")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, n := range d.calls {
		if n != 1 {
			t.Fatalf("done of record %d called %d times", i, n)
		}
	}
}

func (d *dones) err(i int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errs[i]
}

func (d *dones) called(i int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[i]
}

// holder is an fsync hook that stops the writer goroutine inside fsync
// until released, so a test controls what is queued.
type holder struct {
	entered chan string
	release chan struct{}
}

func newHolder() *holder {
	return &holder{entered: make(chan string, 100), release: make(chan struct{})}
}

func (h *holder) fsync(f *os.File) error {
	h.entered <- f.Name()
	<-h.release
	return f.Sync()
}

func (h *holder) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for the writer to reach fsync")
	}
}

func rec(id string, end time.Time) *Record {
	return &Record{CallID: id, Caller: "1001", Callee: "1002", Transport: "udp",
		SetupTime: end.Add(-time.Minute), AnswerTime: end.Add(-50 * time.Second), EndTime: end, Code: 200}
}

// readDay reads a day file, checks it is valid CSV with exactly one header
// row at the top, and returns its call ids in order.
func readDay(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows := readCSV(t, data)
	if len(rows) == 0 || strings.Join(rows[0], ",") != Header {
		t.Fatalf("%s does not start with the header:\n%s", path, data)
	}
	if n := bytes.Count(data, []byte("\n")); n != len(rows) {
		t.Fatalf("%s: %d lines for %d records", path, n, len(rows))
	}
	var ids []string
	for _, r := range rows[1:] {
		if strings.Join(r, ",") == Header {
			t.Fatalf("%s: second header row", path)
		}
		ids = append(ids, r[0])
	}
	return ids
}

func equal(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func TestNewOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{},
		{Dir: t.TempDir(), QueueLen: -1},
		{Dir: t.TempDir(), QueueLen: MaxQueueLen + 1},
		{Dir: filepath.Join(file, "cdr")},
		{Dir: t.TempDir(), Interval: -time.Millisecond},
		{Dir: t.TempDir(), Interval: MaxInterval + 1},
	} {
		w, err := New(o)
		if err == nil {
			_ = w.Close(context.Background())
			t.Errorf("New(%+v) succeeded", o)
		} else if !strings.HasPrefix(err.Error(), "cdr: new: ") {
			t.Errorf("New(%+v): error %q", o, err)
		}
	}
}

func TestAppendRejects(t *testing.T) {
	w := newTestWriter(t, Options{Dir: t.TempDir()}, nil)
	called := false
	done := func(error) { called = true }
	for _, r := range []*Record{nil, {CallID: "no end"}, rec("y10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))} {
		if err := w.Append(r, done); err == nil || !strings.HasPrefix(err.Error(), "cdr: append: ") {
			t.Errorf("Append(%+v) = %v", r, err)
		}
	}
	closeWriter(t, w)
	if err := w.Append(rec("late", t0), done); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if called {
		t.Error("done called for a refused record")
	}
}

// TestPermissions: a missing directory is created 0750, a day file 0640 (at
// most: the umask may take more away).
func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "cdr")
	w := newTestWriter(t, Options{Dir: dir}, nil)
	d := newDones(1)
	if err := w.Append(rec("c1", t0), d.done(0)); err != nil {
		t.Fatal(err)
	}
	d.wait(t)
	closeWriter(t, w)
	for path, want := range map[string]os.FileMode{dir: 0o750, filepath.Join(dir, "2026-11-24.csv"): 0o640} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&^want != 0 || perm&0o600 != 0o600 {
			t.Errorf("%s: mode %v, want %v", path, perm, want)
		}
	}
}

// TestDayRotation: records whose EndTime crosses midnight UTC go to two
// files, each with one header; a late record of the previous day, in the
// same batch as records of the new day, goes back to the previous file.
func TestDayRotation(t *testing.T) {
	dir := t.TempDir()
	h := newHolder()
	w := newTestWriter(t, Options{Dir: dir}, h.fsync)
	midnight := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	recs := []*Record{
		rec("d1-a", midnight.Add(-2*time.Second)),
		rec("d1-b", midnight.Add(-time.Millisecond)),
		rec("d2-a", midnight),
		rec("d1-late", midnight.Add(-500*time.Millisecond).In(time.FixedZone("EST", -5*3600))),
		rec("d2-b", midnight.Add(time.Second)),
	}
	d := newDones(len(recs))
	if err := w.Append(recs[0], d.done(0)); err != nil {
		t.Fatal(err)
	}
	h.waitEntered(t) // d1-a is being committed; the rest is one batch
	for i := 1; i < len(recs); i++ {
		if err := w.Append(recs[i], d.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(h.release)
	d.wait(t)
	closeWriter(t, w)
	if got := readDay(t, filepath.Join(dir, "2026-11-24.csv")); !equal(got, []string{"d1-a", "d1-b", "d1-late"}) {
		t.Errorf("2026-11-24.csv holds %q", got)
	}
	if got := readDay(t, filepath.Join(dir, "2026-11-25.csv")); !equal(got, []string{"d2-a", "d2-b"}) {
		t.Errorf("2026-11-25.csv holds %q", got)
	}
	s := w.Stats()
	if s.Batches != 2 || s.Fsyncs != 3 || s.Written != 5 {
		t.Errorf("stats %+v: want 2 batches, 3 fsyncs (one per batch and file), 5 written", s)
	}
}

// TestRestartAppends: a second Writer on the same directory appends to the
// day file without a second header.
func TestRestartAppends(t *testing.T) {
	dir := t.TempDir()
	for run, ids := range [][]string{{"c1", "c2"}, {"c3"}} {
		w := newTestWriter(t, Options{Dir: dir}, nil)
		d := newDones(len(ids))
		for i, id := range ids {
			if err := w.Append(rec(id, t0.Add(time.Duration(i)*time.Second)), d.done(i)); err != nil {
				t.Fatal(err)
			}
		}
		closeWriter(t, w)
		d.wait(t)
		if s := w.Stats(); s.Truncated != 0 || s.Written != uint64(len(ids)) {
			t.Errorf("run %d: stats %+v", run, s)
		}
	}
	if got := readDay(t, filepath.Join(dir, "2026-11-24.csv")); !equal(got, []string{"c1", "c2", "c3"}) {
		t.Errorf("day file holds %q", got)
	}
}

// TestPartialLineTruncated: a file left with half a line by a power cut is
// cut back to its last LF before appending, and counted.
func TestPartialLineTruncated(t *testing.T) {
	full := string(AppendCSV([]byte(Header+"\n"), rec("old", t0)))
	for _, tc := range []struct {
		name, content string
		want          []string
		truncated     uint64
	}{
		{"complete", full, []string{"old", "new"}, 0},
		{"partial record", full + "half-a-rec,10", []string{"old", "new"}, 1},
		{"partial quoted record", full + `"x,""y",100`, []string{"old", "new"}, 1},
		{"long partial record", full + strings.Repeat("z", 10000), []string{"old", "new"}, 1},
		{"partial header", Header[:20], []string{"new"}, 1},
		{"empty", "", []string{"new"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "2026-11-24.csv")
			if err := os.WriteFile(path, []byte(tc.content), 0o640); err != nil {
				t.Fatal(err)
			}
			w := newTestWriter(t, Options{Dir: dir}, nil)
			d := newDones(1)
			if err := w.Append(rec("new", t0), d.done(0)); err != nil {
				t.Fatal(err)
			}
			d.wait(t)
			if err := d.err(0); err != nil {
				t.Fatal(err)
			}
			closeWriter(t, w)
			if got := readDay(t, path); !equal(got, tc.want) {
				t.Errorf("day file holds %q, want %q", got, tc.want)
			}
			if s := w.Stats(); s.Truncated != tc.truncated {
				t.Errorf("Truncated = %d, want %d", s.Truncated, tc.truncated)
			}
		})
	}
}

// TestConcurrentAppends: 8 goroutines append 10,000 records through a small
// queue (so ErrQueueFull and retries happen); every done is called exactly
// once and the file holds every record once, after one header.
func TestConcurrentAppends(t *testing.T) {
	const goroutines, total = 8, 10000
	dir := t.TempDir()
	w := newTestWriter(t, Options{Dir: dir, QueueLen: 64}, nil)
	d := newDones(total)
	progress := make(chan struct{}, goroutines)
	var wg sync.WaitGroup
	var failed atomic.Value
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < total; i += goroutines {
				done := d.done(i)
				cb := func(err error) {
					done(err)
					select {
					case progress <- struct{}{}:
					default:
					}
				}
				r := rec(fmt.Sprintf("call-%05d", i), t0.Add(time.Duration(i)*time.Millisecond))
				for {
					err := w.Append(r, cb)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrQueueFull) {
						failed.Store(err)
						return
					}
					select {
					case <-progress: // a batch completed: there is room again
					case <-time.After(testTimeout):
						failed.Store(errors.New("no progress"))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	d.wait(t)
	closeWriter(t, w)
	for i := range total {
		if err := d.err(i); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	ids := readDay(t, filepath.Join(dir, "2026-11-24.csv"))
	if len(ids) != total {
		t.Fatalf("%d records in the file, want %d", len(ids), total)
	}
	seen := make(map[string]bool, total)
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("%s written twice", id)
		}
		seen[id] = true
	}
	s := w.Stats()
	if s.Written != total || s.Failed != 0 || s.Errors != 0 || s.Fsyncs != s.Batches {
		t.Errorf("stats %+v", s)
	}
	t.Logf("%d records in %d batches, %d rejected with ErrQueueFull, max queued %d",
		s.Written, s.Batches, s.Rejected, s.MaxQueued)
}

// TestQueueFull: while the writer is held in fsync, QueueLen records can
// wait; the next Append fails at once with ErrQueueFull.
func TestQueueFull(t *testing.T) {
	h := newHolder()
	w := newTestWriter(t, Options{Dir: t.TempDir(), QueueLen: 4}, h.fsync)
	d := newDones(5)
	if err := w.Append(rec("c0", t0), d.done(0)); err != nil {
		t.Fatal(err)
	}
	h.waitEntered(t)
	for i := 1; i <= 4; i++ {
		if err := w.Append(rec(fmt.Sprint("c", i), t0), d.done(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	if err := w.Append(rec("c5", t0), func(error) { t.Error("done of a refused record") }); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Append on a full queue = %v, want ErrQueueFull", err)
	}
	if s := w.Stats(); s.Rejected != 1 || s.Queued != 4 || s.MaxQueued != 4 {
		t.Errorf("stats while full: %+v", s)
	}
	close(h.release)
	d.wait(t)
	for i := range 5 {
		if err := d.err(i); err != nil {
			t.Errorf("record %d: %v", i, err)
		}
	}
}

// TestWriteErrorReachesDone: an fsync error goes to the done of every
// record of the batch and to OnError; the failed lines are taken back out
// of the file, and the next batch works.
func TestWriteErrorReachesDone(t *testing.T) {
	dir := t.TempDir()
	injected := errors.New("injected EIO")
	var calls atomic.Int32
	fsync := func(f *os.File) error {
		if calls.Add(1) == 1 {
			return injected
		}
		return f.Sync()
	}
	onError := make(chan error, 10)
	w := newTestWriter(t, Options{Dir: dir, OnError: func(err error) { onError <- err }}, fsync)
	d := newDones(2)
	if err := w.Append(rec("lost", t0), d.done(0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-onError:
		if !errors.Is(err, injected) || !strings.HasPrefix(err.Error(), "cdr: fsync ") {
			t.Errorf("OnError got %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("OnError not called")
	}
	if err := w.Append(rec("kept", t0), d.done(1)); err != nil {
		t.Fatal(err)
	}
	d.wait(t)
	if err := d.err(0); !errors.Is(err, injected) {
		t.Errorf("done of the failed record got %v", err)
	}
	if err := d.err(1); err != nil {
		t.Errorf("done of the next record got %v", err)
	}
	closeWriter(t, w)
	if got := readDay(t, filepath.Join(dir, "2026-11-24.csv")); !equal(got, []string{"kept"}) {
		t.Errorf("day file holds %q", got)
	}
	if s := w.Stats(); s.Errors != 1 || s.Failed != 1 || s.Written != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestOpenErrorRetried: a day file that cannot be opened fails its batch;
// the next batch opens it again.
func TestOpenErrorRetried(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "2026-11-24.csv")
	if err := os.Mkdir(path, 0o750); err != nil { // a directory in the way
		t.Fatal(err)
	}
	var got []error
	var mu sync.Mutex
	w := newTestWriter(t, Options{Dir: dir, OnError: func(err error) { mu.Lock(); got = append(got, err); mu.Unlock() }}, nil)
	d := newDones(2)
	if err := w.Append(rec("c0", t0), d.done(0)); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, 0)
	if err := d.err(0); err == nil || !strings.HasPrefix(err.Error(), "cdr: open "+path+": ") {
		t.Fatalf("done got %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(rec("c1", t0), d.done(1)); err != nil {
		t.Fatal(err)
	}
	d.wait(t)
	if err := d.err(1); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Errorf("OnError called with %v", got)
	}
	if ids := readDay(t, path); !equal(ids, []string{"c1"}) {
		t.Errorf("day file holds %q", ids)
	}
}

// TestFileMovedAway: a day file renamed by an operator while open is
// started anew, with its header; the moved file keeps what it had.
func TestFileMovedAway(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "2026-11-24.csv")
	w := newTestWriter(t, Options{Dir: dir}, nil)
	d := newDones(2)
	if err := w.Append(rec("before", t0), d.done(0)); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, 0)
	moved := filepath.Join(dir, "downloaded.csv")
	if err := os.Rename(path, moved); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(rec("after", t0), d.done(1)); err != nil {
		t.Fatal(err)
	}
	d.wait(t)
	closeWriter(t, w)
	if got := readDay(t, moved); !equal(got, []string{"before"}) {
		t.Errorf("moved file holds %q", got)
	}
	if got := readDay(t, path); !equal(got, []string{"after"}) {
		t.Errorf("new day file holds %q", got)
	}
}

// TestCloseFlushes: Close writes what is queued and calls every done before
// it returns; Append then fails with ErrClosed.
func TestCloseFlushes(t *testing.T) {
	dir := t.TempDir()
	h := newHolder()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	w := newTestWriter(t, Options{Dir: dir, Now: func() time.Time { return now }}, h.fsync)
	d := newDones(4)
	if err := w.Append(rec("c0", t0), d.done(0)); err != nil {
		t.Fatal(err)
	}
	h.waitEntered(t)
	for i := 1; i < 4; i++ {
		if err := w.Append(rec(fmt.Sprint("c", i), t0), d.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		closed <- w.Close(ctx)
	}()
	// Once Close has begun, nothing can be appended any more; what was
	// accepted before is written like the rest.
	want := []string{"c0", "c1", "c2", "c3"}
	deadline := time.Now().Add(testTimeout)
	for {
		err := w.Append(rec("x", t0), nil)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("Append while Close starts: %v", err)
		}
		want = append(want, "x")
		runtime.Gosched()
	}
	close(h.release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Close did not return")
	}
	for i := range 4 { // before Close returned
		if d.called(i) != 1 || d.err(i) != nil {
			t.Errorf("record %d: %d calls, %v", i, d.called(i), d.err(i))
		}
	}
	if got := readDay(t, filepath.Join(dir, "2026-11-24.csv")); !equal(got, want) {
		t.Errorf("day file holds %q, want %q", got, want)
	}
	if err := w.Append(rec("late", t0), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if s := w.Stats(); s.LastCommit != now || s.Written != uint64(len(want)) {
		t.Errorf("stats %+v", s)
	}
}

// TestCloseDeadline: when Close's context ends while the disk is stuck,
// the records still queued get the context's error at once; the batch being
// written reports on its own when the disk comes back.
func TestCloseDeadline(t *testing.T) {
	h := newHolder()
	w := newTestWriter(t, Options{Dir: t.TempDir()}, h.fsync)
	d := newDones(3)
	for i := range 3 {
		if err := w.Append(rec(fmt.Sprint("c", i), t0), d.done(i)); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			h.waitEntered(t)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Close(ctx); !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "cdr: close: ") {
		t.Fatalf("Close = %v", err)
	}
	for i := 1; i < 3; i++ {
		if d.called(i) != 1 || !errors.Is(d.err(i), context.Canceled) {
			t.Errorf("queued record %d: %d calls, %v", i, d.called(i), d.err(i))
		}
	}
	if d.called(0) != 0 {
		t.Error("the stuck batch reported before the disk came back")
	}
	close(h.release)
	d.wait(t)
	if err := d.err(0); err != nil {
		t.Errorf("stuck record: %v", err)
	}
	closeWriter(t, w)
	if s := w.Stats(); s.Written != 1 || s.Failed != 2 {
		t.Errorf("stats %+v", s)
	}
}

// fakeTimer stands in for the writer's clock and time.After: the clock
// stays where the test puts it, and each wait is reported on asked and ends
// when the test sends on fire.
type fakeTimer struct {
	mu    sync.Mutex
	now   time.Time
	asked chan time.Duration
	fire  chan time.Time
}

func installFakeTimer(w *Writer) *fakeTimer {
	f := &fakeTimer{now: t0, asked: make(chan time.Duration, 10), fire: make(chan time.Time)}
	// Set before the first Append: the writer goroutine reads them only
	// after a wake-up that Append sends.
	w.mono = func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	w.after = func(d time.Duration) <-chan time.Time { f.asked <- d; return f.fire }
	return f
}

func (f *fakeTimer) advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

func (f *fakeTimer) waitAsked(t *testing.T, want time.Duration) {
	t.Helper()
	select {
	case d := <-f.asked:
		if d != want {
			t.Fatalf("writer waits %v, want %v", d, want)
		}
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for the writer to wait")
	}
}

// TestInterval: with Options.Interval, a record arriving within Interval of
// the last commit's start waits, with those behind it, for one commit; a
// record arriving later is committed at once; a half-full queue and Close
// end the wait.
func TestInterval(t *testing.T) {
	const every = 50 * time.Millisecond
	t.Run("gathers", func(t *testing.T) {
		dir := t.TempDir()
		w := newTestWriter(t, Options{Dir: dir, Interval: every}, nil)
		f := installFakeTimer(w)
		d := newDones(5)
		if err := w.Append(rec("first", t0), d.done(0)); err != nil {
			t.Fatal(err)
		}
		d.waitFor(t, 0) // at once: no commit before it
		f.advance(20 * time.Millisecond)
		for i := 1; i < 4; i++ {
			if err := w.Append(rec(fmt.Sprintf("call-%d", i), t0), d.done(i)); err != nil {
				t.Fatal(err)
			}
		}
		f.waitAsked(t, every-20*time.Millisecond) // the rest of the interval
		for i := 1; i < 4; i++ {
			if d.called(i) != 0 {
				t.Fatalf("record %d committed before the interval ended", i)
			}
		}
		f.fire <- t0
		for i := 1; i < 4; i++ {
			d.waitFor(t, i)
		}
		if s := w.Stats(); s.Batches != 2 || s.Written != 4 {
			t.Fatalf("after the wait: %d batches, %d written; want 2 batches, 4 written", s.Batches, s.Written)
		}
		f.advance(every) // the interval is over: no wait
		if err := w.Append(rec("late", t0), d.done(4)); err != nil {
			t.Fatal(err)
		}
		d.waitFor(t, 4)
		closeWriter(t, w)
		if got, want := readDay(t, filepath.Join(dir, "2026-11-24.csv")), []string{"first", "call-1", "call-2", "call-3", "late"}; !equal(got, want) {
			t.Fatalf("file holds %v, want %v", got, want)
		}
		select {
		case x := <-f.asked:
			t.Fatalf("writer waited %v for a record after the interval", x)
		default:
		}
	})
	t.Run("half full queue", func(t *testing.T) {
		w := newTestWriter(t, Options{Dir: t.TempDir(), Interval: every, QueueLen: 4}, nil)
		f := installFakeTimer(w)
		d := newDones(3)
		if err := w.Append(rec("first", t0), d.done(0)); err != nil {
			t.Fatal(err)
		}
		d.waitFor(t, 0)
		if err := w.Append(rec("second", t0), d.done(1)); err != nil {
			t.Fatal(err)
		}
		f.waitAsked(t, every)
		if err := w.Append(rec("third", t0), d.done(2)); err != nil { // 2 of 4: half
			t.Fatal(err)
		}
		d.waitFor(t, 1) // without the timer firing
		d.waitFor(t, 2)
	})
	t.Run("close", func(t *testing.T) {
		w := newTestWriter(t, Options{Dir: t.TempDir(), Interval: every}, nil)
		f := installFakeTimer(w)
		d := newDones(2)
		for i, id := range []string{"first", "second"} {
			if err := w.Append(rec(id, t0), d.done(i)); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				d.waitFor(t, 0)
			}
		}
		f.waitAsked(t, every)
		closeWriter(t, w) // without the timer firing
		d.wait(t)
		if err := d.err(1); err != nil {
			t.Fatalf("record written at Close: %v", err)
		}
	})
}
