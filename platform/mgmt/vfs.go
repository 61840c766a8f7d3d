package mgmt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"sbcd/platform/config"
)

// Virtual paths.
const (
	homeDir       = "/etc/sbcd"
	configVirtual = "/etc/sbcd/sbcd.toml"
)

var (
	errNotExist   = fs.ErrNotExist
	errPermission = fs.ErrPermission
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = fmt.Errorf("file too large (at most %d bytes)", MaxUpload)
)

type nodeKind int

const (
	kindDir nodeKind = iota
	kindConfig
	kindCDR
	kindTrace
)

// node is a resolved virtual path.
type node struct {
	kind nodeKind
	path string // clean virtual path
	name string // base name; for kindCDR/kindTrace the name inside the real dir
}

// children of the virtual directories (the real ones are listed live).
var virtualDirs = map[string][]string{
	"/":         {"cdr", "etc", "trace"},
	"/etc":      {"sbcd"},
	"/etc/sbcd": {"sbcd.toml"},
	"/cdr":      nil,
	"/trace":    nil,
}

// cleanVirtual makes p absolute (relative to the login directory) and
// clean; "" when p holds a NUL.
func cleanVirtual(p string) string {
	if strings.IndexByte(p, 0) >= 0 {
		return ""
	}
	if !strings.HasPrefix(p, "/") {
		p = homeDir + "/" + p
	}
	return path.Clean(p)
}

// resolve maps a virtual path onto the tree; unknown paths are
// fs.ErrNotExist. Path cleaning happens first, so ".." can never climb out
// of /cdr or /trace, and a name in those is one path element.
func resolve(p string) (node, error) {
	p = cleanVirtual(p)
	if p == "" {
		return node{}, errNotExist
	}
	if _, ok := virtualDirs[p]; ok {
		return node{kind: kindDir, path: p, name: path.Base(p)}, nil
	}
	if p == configVirtual {
		return node{kind: kindConfig, path: p, name: "sbcd.toml"}, nil
	}
	dir, name := path.Split(p)
	if !validName(name) {
		return node{}, errNotExist
	}
	switch dir {
	case "/cdr/":
		if strings.HasSuffix(name, ".csv") {
			return node{kind: kindCDR, path: p, name: name}, nil
		}
	case "/trace/":
		return node{kind: kindTrace, path: p, name: name}, nil
	}
	return node{}, errNotExist
}

func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// fileInfo is the fs.FileInfo of every virtual entry.
type fileInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.mtime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

func dirInfo(name string) *fileInfo {
	return &fileInfo{name: name, mode: fs.ModeDir | 0o555}
}

// realDir is the real directory behind a read-only virtual one.
func (s *Server) realDir(kind nodeKind) string {
	if kind == kindCDR {
		return s.o.CDRDir
	}
	return s.o.TraceDir
}

// stat describes a virtual path.
func (s *Server) stat(n node) (*fileInfo, error) {
	switch n.kind {
	case kindDir:
		return dirInfo(n.name), nil
	case kindConfig:
		f, fi, err := s.openConfig()
		if err != nil {
			return nil, err
		}
		f.Close()
		return &fileInfo{name: n.name, size: fi.Size(), mode: 0o644, mtime: fi.ModTime()}, nil
	default:
		f, fi, err := s.openReal(n)
		if err != nil {
			return nil, err
		}
		f.Close()
		return &fileInfo{name: n.name, size: fi.Size(), mode: 0o444, mtime: fi.ModTime()}, nil
	}
}

// list returns the entries of a virtual directory, sorted by name.
func (s *Server) list(n node) ([]fs.FileInfo, error) {
	if n.kind != kindDir {
		fi, err := s.stat(n)
		if err != nil {
			return nil, err
		}
		return []fs.FileInfo{fi}, nil
	}
	var out []fs.FileInfo
	switch n.path {
	case "/cdr", "/trace":
		kind := kindTrace
		if n.path == "/cdr" {
			kind = kindCDR
		}
		names, err := s.readRealDir(s.realDir(kind))
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			c, err := resolve(n.path + "/" + name)
			if err != nil {
				continue
			}
			if fi, err := s.stat(c); err == nil {
				out = append(out, fi)
			}
		}
	default:
		for _, name := range virtualDirs[n.path] {
			c, err := resolve(path.Join(n.path, name))
			if err != nil {
				continue
			}
			if fi, err := s.stat(c); err == nil {
				out = append(out, fi)
			}
		}
	}
	return out, nil
}

// readRealDir lists a real directory; a missing or unset one is empty.
func (s *Server) readRealDir(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// openRead opens a virtual file for reading.
func (s *Server) openRead(n node) (*os.File, fs.FileInfo, error) {
	switch n.kind {
	case kindDir:
		return nil, nil, errNotRegular
	case kindConfig:
		return s.openConfig()
	default:
		return s.openReal(n)
	}
}

// openConfig opens the effective configuration: ConfigPath, else
// DefaultConfigPath.
func (s *Server) openConfig() (*os.File, fs.FileInfo, error) {
	for _, p := range []string{s.o.ConfigPath, s.o.DefaultConfigPath} {
		if p == "" {
			continue
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("open %s: %w", configVirtual, err)
		}
		return regular(f)
	}
	return nil, nil, errNotExist
}

// openReal opens a file of /cdr or /trace through os.Root, so that neither
// a name nor a symbolic link inside the directory can lead outside it.
func (s *Server) openReal(n node) (*os.File, fs.FileInfo, error) {
	dir := s.realDir(n.kind)
	if dir == "" {
		return nil, nil, errNotExist
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, errNotExist
	}
	defer root.Close()
	f, err := root.Open(n.name)
	if err != nil {
		return nil, nil, errNotExist
	}
	return regular(f)
}

func regular(f *os.File) (*os.File, fs.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, errNotRegular
	}
	return f, fi, nil
}

// upload validates and persists an uploaded configuration.
func (s *Server) upload(data []byte) error {
	if s.o.Upload != nil {
		return s.o.Upload(data)
	}
	if s.o.ConfigPath == "" {
		return errPermission
	}
	return config.Save(s.o.ConfigPath, data)
}
