package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The search order of DESIGN.md §5, for the caller of Load: -config FILE,
// else SavedPath, else ImagePath, else the built-in defaults.
const (
	// SavedPath is where the box keeps the operator's configuration, on
	// the writable data partition.
	SavedPath = "/data/sbcd.toml"
	// ImagePath is the configuration shipped in the (read-only) image.
	ImagePath = "/etc/sbcd/sbcd.toml"
)

// Load reads the first of paths that exists and returns the parsed config
// and that path. Empty paths are skipped. When none exists it returns
// Default() and "" (the built-in configuration). A path that exists but
// cannot be read, or does not parse and validate, is an error (the problems,
// or the I/O error) together with that path: Load never falls back to the
// next file or the defaults behind the operator's back.
//
// The usual call is Load(flagConfig, SavedPath, ImagePath). To insist on
// one file (a missing -config FILE is an error), use LoadFile.
func Load(paths ...string) (*Config, string, error) {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		c, err := LoadFile(p)
		return c, p, err
	}
	c := Default()
	return &c, "", nil
}

// LoadFile reads and parses one file; messages name it by path.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Save validates data as a configuration file (Parse) and, only when it is
// valid, writes it to path with WriteFileAtomic, mode 0600 (the file holds
// passwords). An invalid file is refused with the *Problems, naming the
// file by its base name, and whatever is at path stays untouched.
func Save(path string, data []byte) error {
	if _, err := Parse(data, filepath.Base(path)); err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}

// WriteFileAtomic replaces path with data so that a crash or power cut at
// any point leaves either the old file or the new one, complete: it writes
// a temporary file in the same directory, fsyncs it, renames it over path
// and fsyncs the directory. perm is the mode of the new file, applied
// exactly (the umask does not apply). On failure the temporary file is
// removed; if only the final directory fsync fails, the new file is in
// place but its rename may not survive a power cut, and the error says so.
//
// A temporary file left by a write that a crash interrupted is removed by
// the next write of the same path, so callers must not write one path
// from two places at once (sbcd serialises its saves).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if stale, _ := filepath.Glob(filepath.Join(dir, "."+globEscape(base)+".tmp-*")); len(stale) > 0 {
		for _, s := range stale {
			_ = os.Remove(s) // best effort: a leftover only costs space
		}
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, renamed := f.Name(), false
	defer func() {
		if err != nil && !renamed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed = true
	if derr := syncDir(dir); derr != nil {
		return fmt.Errorf("write %s: the new file is in place, but fsync of %s failed: %w", path, dir, derr)
	}
	return nil
}

// globEscape escapes the pattern characters of filepath.Match in s.
func globEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
