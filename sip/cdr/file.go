package cdr

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// dayOf returns the yyyymmdd of t in UTC, and false for a zero time or a
// year that does not fit the file name.
func dayOf(t time.Time) (int32, bool) {
	if t.IsZero() {
		return 0, false
	}
	y, m, d := t.UTC().Date()
	if y < 1 || y > 9999 {
		return 0, false
	}
	return int32(y*10000 + int(m)*100 + d), true
}

// dayName is the file name of day d: YYYY-MM-DD.csv.
func dayName(d int32) string {
	y, m, dd := int(d/10000), int(d/100%100), int(d%100)
	b := [...]byte{
		byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10), byte('0' + y%10), '-',
		byte('0' + m/10), byte('0' + m%10), '-',
		byte('0' + dd/10), byte('0' + dd%10),
		'.', 'c', 's', 'v',
	}
	return string(b[:])
}

// opErr wraps an error of op on path; the path is not repeated when err is
// already an *fs.PathError.
func opErr(op, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("cdr: %s %s: %w", op, path, err)
}

// makeDir creates dir (mode 0750) if it is missing and fsyncs its parent so
// that the new directory survives a power cut.
func makeDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return opErr("mkdir", dir, err)
	}
	return syncDir(filepath.Dir(dir))
}

// syncDir fsyncs a directory, which makes the names created in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return opErr("open directory", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return opErr("fsync directory", dir, err)
	}
	return nil
}

// dayFile is an open day file.
type dayFile struct {
	day  int32
	path string
	f    *os.File
	info os.FileInfo // identity at open, to notice a removed or renamed file
	size int64       // bytes in the file; 0 means the header is due
}

// openDay opens (creating it if needed) the file of day d in dir for
// appending. A file that does not end with LF lost the end of its last line
// to a power cut: it is cut back to its last LF, or emptied when it has
// none, and counted in delta.Truncated.
func openDay(dir string, d int32, delta *Stats) (*dayFile, error) {
	if err := makeDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, dayName(d))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, opErr("open", path, err)
	}
	df := &dayFile{day: d, path: path, f: f}
	if err := df.prepare(delta); err != nil {
		_ = f.Close()
		return nil, err
	}
	return df, nil
}

func (df *dayFile) prepare(delta *Stats) error {
	info, err := df.f.Stat()
	if err != nil {
		return opErr("stat", df.path, err)
	}
	df.info, df.size = info, info.Size()
	if df.size == 0 {
		// New (or left empty by a power cut): make its name durable
		// before any record is reported written in it.
		return syncDir(filepath.Dir(df.path))
	}
	var chunk [4096]byte
	for end := df.size; end > 0; {
		n := min(end, int64(len(chunk)))
		off := end - n
		if _, err := df.f.ReadAt(chunk[:n], off); err != nil {
			return opErr("read", df.path, err)
		}
		if end == df.size && chunk[n-1] == '\n' {
			return nil // complete: the common case
		}
		if i := bytes.LastIndexByte(chunk[:n], '\n'); i >= 0 {
			return df.truncate(off+int64(i)+1, delta)
		}
		end = off
	}
	return df.truncate(0, delta)
}

func (df *dayFile) truncate(size int64, delta *Stats) error {
	if err := df.f.Truncate(size); err != nil {
		return opErr("truncate", df.path, err)
	}
	df.size = size
	delta.Truncated++
	return nil
}

// write appends b (the file is O_APPEND).
func (df *dayFile) write(b []byte) error {
	n, err := df.f.Write(b)
	df.size += int64(n)
	if err != nil {
		return opErr("write", df.path, err)
	}
	return nil
}

// inPlace reports whether the file is still the one its path names.
func (df *dayFile) inPlace() bool {
	fi, err := os.Stat(df.path)
	return err == nil && os.SameFile(fi, df.info)
}

func (df *dayFile) close() error {
	if err := df.f.Close(); err != nil {
		return opErr("close", df.path, err)
	}
	return nil
}
