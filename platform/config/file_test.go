package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const validFile = "[session_timer]\nttl = 1800\n"

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestLoadOrder(t *testing.T) {
	dir := t.TempDir()
	flagPath := filepath.Join(dir, "flag.toml")
	saved := filepath.Join(dir, "saved.toml")
	image := filepath.Join(dir, "image.toml")
	writeFile(t, saved, "[session_timer]\nttl = 1200\n")
	writeFile(t, image, "[session_timer]\nttl = 900\n")

	load := func(paths ...string) (int, string) {
		t.Helper()
		c, used, err := Load(paths...)
		if err != nil {
			t.Fatalf("Load(%v): %v", paths, err)
		}
		return c.SessionTimer.TTL, used
	}
	// The flag's file is missing: the saved file wins over the image's.
	if ttl, used := load("", saved, image); ttl != 1200 || used != saved {
		t.Errorf("Load = ttl %d from %q, want 1200 from saved", ttl, used)
	}
	if ttl, used := load(flagPath, saved, image); ttl != 1200 || used != saved {
		t.Errorf("missing first path: ttl %d from %q", ttl, used)
	}
	writeFile(t, flagPath, validFile)
	if ttl, used := load(flagPath, saved, image); ttl != 1800 || used != flagPath {
		t.Errorf("Load = ttl %d from %q, want 1800 from the flag's file", ttl, used)
	}
	if ttl, used := load(filepath.Join(dir, "missing"), image); ttl != 900 || used != image {
		t.Errorf("Load = ttl %d from %q, want 900 from the image", ttl, used)
	}
	// Nothing exists: the built-in defaults, and no path.
	c, used, err := Load(filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	if err != nil || used != "" {
		t.Fatalf("Load(nothing) = %q, %v", used, err)
	}
	if diff := cmp.Diff(Default(), *c); diff != "" {
		t.Errorf("Load(nothing) is not Default():\n%s", diff)
	}
	if c, used, err := Load(); err != nil || used != "" || c == nil {
		t.Errorf("Load() = %v, %q, %v", c, used, err)
	}
}

// TestLoadNeverFallsBack: a file that exists but is bad is an error naming
// it, even when a good file comes next.
func TestLoadNeverFallsBack(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	good := filepath.Join(dir, "good.toml")
	writeFile(t, bad, "[session_timer]\nmin_se = 60\n")
	writeFile(t, good, validFile)
	c, used, err := Load(bad, good)
	if c != nil || used != bad || err == nil {
		t.Fatalf("Load(bad, good) = %v, %q, %v", c, used, err)
	}
	if want := bad + ":2: session_timer.min_se"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	// A directory where the file should be.
	c, used, err = Load(dir, good)
	if c != nil || used != dir || err == nil {
		t.Errorf("Load(dir) = %v, %q, %v", c, used, err)
	}
	// LoadFile insists on its file.
	if _, err := LoadFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadFile(missing) = %v", err)
	}
	if c, err := LoadFile(good); err != nil || c.SessionTimer.TTL != 1800 {
		t.Errorf("LoadFile(good) = %v, %v", c, err)
	}
}

func TestLoadUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every file")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "sbcd.toml")
	writeFile(t, p, validFile)
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	if _, used, err := Load(p); err == nil || used != p {
		t.Errorf("Load(unreadable) = %q, %v; want an error", used, err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sbcd.toml")
	if err := WriteFileAtomic(p, []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	check := func(want string, perm os.FileMode) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil || string(got) != want {
			t.Fatalf("content = %q, %v; want %q", got, err, want)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("mode = %v, want %v", fi.Mode().Perm(), perm)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"sbcd.toml"}) {
			t.Errorf("directory holds %v: temporary files left behind", names)
		}
	}
	check("one", 0o640)
	// Replacing: new content and mode, still one file.
	if err := WriteFileAtomic(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("two", 0o600)
	// The mode is exact, whatever the umask.
	if err := WriteFileAtomic(p, []byte("three"), 0o666); err != nil {
		t.Fatal(err)
	}
	check("three", 0o666)

	// A relative path writes in the current directory.
	t.Chdir(dir)
	if err := WriteFileAtomic("rel.toml", []byte("rel"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "rel.toml")); string(got) != "rel" {
		t.Errorf("relative write: %q", got)
	}
}

func TestWriteFileAtomicFailures(t *testing.T) {
	dir := t.TempDir()
	// The directory does not exist.
	if err := WriteFileAtomic(filepath.Join(dir, "no", "such", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	// The rename fails (a non-empty directory is in the way): the
	// temporary file is removed and the directory is untouched.
	target := filepath.Join(dir, "sbcd.toml")
	if err := os.MkdirAll(filepath.Join(target, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(target, []byte("x"), 0o600); err == nil {
		t.Error("rename over a directory succeeded")
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"sbcd.toml"}) {
		t.Errorf("directory holds %v after a failed write", names)
	}
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		t.Errorf("the directory in the way was changed: %v, %v", fi, err)
	}
}

func TestSave(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sbcd.toml")
	if err := Save(p, []byte(validFile)); err != nil {
		t.Fatalf("Save(valid): %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved file: %v, %v; want mode 0600", fi, err)
	}
	before, _ := os.ReadFile(p)

	for _, bad := range []string{
		"[session_timer]\nmin_se = 60\n",
		"[sip\n",
		"unknown = 1\n",
	} {
		err := Save(p, []byte(bad))
		if err == nil {
			t.Fatalf("Save(%q) succeeded", bad)
		}
		ps := problemsOf(t, err)
		if len(ps) == 0 || !strings.HasPrefix(err.Error(), "sbcd.toml:") {
			t.Errorf("Save(%q) error %q: want problems naming sbcd.toml", bad, err)
		}
		after, _ := os.ReadFile(p)
		if string(after) != string(before) {
			t.Errorf("Save(%q) changed the file to %q", bad, after)
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"sbcd.toml"}) {
			t.Errorf("directory holds %v after a refused save", names)
		}
	}
	// A refused save does not create a missing file either.
	missing := filepath.Join(dir, "new.toml")
	if err := Save(missing, []byte("bogus = 1\n")); err == nil {
		t.Fatal("Save(bogus) succeeded")
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused Save created %s: %v", missing, err)
	}
}
