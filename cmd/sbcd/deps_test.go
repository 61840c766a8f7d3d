package main

// The import-direction test: it enforces the dependency table of DESIGN.md §1
// on the real import graph of the linux/arm64 build, as `go list -deps`
// reports it. Every package of the module must fall under one rule, so new
// packages are covered without touching this file.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// listedPackage is the part of `go list -json` output the rules need.
type listedPackage struct {
	ImportPath string
	Standard   bool     // part of the standard library
	Imports    []string // direct imports
	Deps       []string // all transitive dependencies
	Module     *struct {
		Path string
		Main bool
	}
}

// importRule constrains the packages whose import path matches pattern.
type importRule struct {
	pattern string // a `go list` style pattern: "sbcd/timers/..." matches sbcd/timers and below
	// mayImport lists the patterns of the module's own packages that a
	// matching package may depend on; any other package of the module is
	// forbidden. nil means no restriction.
	mayImport []string
	// stdlibOnly forbids every dependency outside the standard library,
	// including third-party modules.
	stdlibOnly bool
}

// importRules is the table of DESIGN.md §1, written as allow-lists: what a
// package may import from sbcd; everything else of sbcd is forbidden.
//
//	package        may import from sbcd        must never import
//	timers/...     timers/...                  anything outside the standard library
//	sip/...        timers/..., sip/...         platform, board, cmd
//	platform/...   platform/..., timers/...    sip, board, cmd
//	board/...      board/..., timers/...       sip, platform, cmd
//	cmd/...        everything                  —
//	bench/...      nothing                     all of sbcd (stand-alone load tools, issue 6)
var importRules = []importRule{
	{pattern: "sbcd/timers/...", mayImport: []string{"sbcd/timers/..."}, stdlibOnly: true},
	{pattern: "sbcd/sip/...", mayImport: []string{"sbcd/timers/...", "sbcd/sip/..."}},
	{pattern: "sbcd/platform/...", mayImport: []string{"sbcd/platform/...", "sbcd/timers/..."}},
	{pattern: "sbcd/board/...", mayImport: []string{"sbcd/board/...", "sbcd/timers/..."}},
	{pattern: "sbcd/cmd/..."},
	{pattern: "sbcd/bench/...", mayImport: []string{}},
}

// matchPattern reports whether importPath matches a pattern that is either
// an exact import path or "prefix/..." (the prefix itself and below).
func matchPattern(pattern, importPath string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return importPath == prefix || strings.HasPrefix(importPath, prefix+"/")
	}
	return importPath == pattern
}

func matchAny(patterns []string, importPath string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return matchPattern(p, importPath) })
}

// checkImports applies rules to every package of the main module in pkgs
// and returns one line per violation, sorted. pkgs must hold the
// dependencies too (as `go list -deps` prints them), to tell the standard
// library from third-party modules and the module's own packages.
func checkImports(pkgs []listedPackage, rules []importRule) []string {
	byPath := make(map[string]*listedPackage, len(pkgs))
	for i := range pkgs {
		byPath[pkgs[i].ImportPath] = &pkgs[i]
	}
	inModule := func(p *listedPackage) bool { return p != nil && p.Module != nil && p.Module.Main }

	var violations []string
	for i := range pkgs {
		pkg := &pkgs[i]
		if !inModule(pkg) {
			continue
		}
		ruleIdx := slices.IndexFunc(rules, func(r importRule) bool { return matchPattern(r.pattern, pkg.ImportPath) })
		if ruleIdx < 0 {
			violations = append(violations, fmt.Sprintf(
				"%s: no import rule covers this package; the top-level layout is fixed by DESIGN.md §1", pkg.ImportPath))
			continue
		}
		rule := rules[ruleIdx]
		for _, dep := range pkg.Deps {
			how := "depends (indirectly) on"
			if slices.Contains(pkg.Imports, dep) {
				how = "imports"
			}
			d := byPath[dep]
			switch {
			case inModule(d):
				if rule.mayImport != nil && !matchAny(rule.mayImport, dep) {
					violations = append(violations, fmt.Sprintf("%s %s %s; %s may import only %s from sbcd",
						pkg.ImportPath, how, dep, rule.pattern, strings.Join(rule.mayImport, ", ")))
				}
			case d != nil && d.Standard:
				// The standard library is allowed everywhere.
			default: // a third-party package, or one go list did not describe
				if rule.stdlibOnly {
					violations = append(violations, fmt.Sprintf("%s %s %s; %s may import only the standard library",
						pkg.ImportPath, how, dep, rule.pattern))
				}
			}
		}
	}
	slices.Sort(violations)
	return violations
}

// decodePackages reads the stream of JSON objects `go list -json` prints.
func decodePackages(r io.Reader) ([]listedPackage, error) {
	var pkgs []listedPackage
	dec := json.NewDecoder(r)
	for {
		var p listedPackage
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return pkgs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}

// goFilesIn returns the .go files directly in dir (not in sub-directories).
func goFilesIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".go") {
			files = append(files, e.Name())
		}
	}
	return files, nil
}

// moduleRoot asks the go command where go.mod is.
func moduleRoot(ctx context.Context, t *testing.T, goBin string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside the sbcd module", gomod)
	}
	return filepath.Dir(gomod)
}

// TestImportDirection enforces DESIGN.md §1 on the linux/arm64 build graph.
// The go command is a host binary; this test also works when the test binary
// itself runs under qemu-aarch64-static, which executes host binaries
// natively.
func TestImportDirection(t *testing.T) {
	goBin := goTool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root := moduleRoot(ctx, t, goBin)

	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, goBin, "list", "-deps",
		"-json=ImportPath,Standard,Imports,Deps,Module", "./...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list -deps for linux/arm64: %v\n%s", err, stderr.String())
	}
	pkgs, err := decodePackages(&stdout)
	if err != nil {
		t.Fatal(err)
	}

	var own []string
	for _, p := range pkgs {
		if p.Module != nil && p.Module.Main {
			own = append(own, p.ImportPath)
		}
	}
	if !slices.Contains(own, "sbcd/cmd/sbcd") {
		t.Fatalf("go list did not report sbcd/cmd/sbcd; got module packages %v", own)
	}
	t.Logf("checked %d module packages (of %d listed): %s", len(own), len(pkgs), strings.Join(own, " "))

	for _, v := range checkImports(pkgs, importRules) {
		t.Error(v)
	}
}

// TestSipFolderHasNoGoFiles: sip/ holds only sub-packages, because sipgo
// already owns the package name sip (DESIGN.md §1).
func TestSipFolderHasNoGoFiles(t *testing.T) {
	goBin := goTool(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(moduleRoot(ctx, t, goBin), "sip")
	files, err := goFilesIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) > 0 {
		t.Errorf("%s must hold only sub-packages, found Go files: %s", dir, strings.Join(files, ", "))
	}
}

// TestGoFilesIn shows the sip/ check can fail.
func TestGoFilesIn(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "header"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"README.md", "header/header.go"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if files, err := goFilesIn(dir); err != nil || len(files) != 0 {
		t.Fatalf("goFilesIn(only sub-packages) = %v, %v; want none", files, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sip_test.go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if files, err := goFilesIn(dir); err != nil || !slices.Equal(files, []string{"sip_test.go"}) {
		t.Fatalf("goFilesIn(with a Go file) = %v, %v; want [sip_test.go]", files, err)
	}
	if _, err := goFilesIn(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("goFilesIn(missing dir) succeeded; want an error")
	}
}

// TestCheckImports is the negative self-check: synthetic import graphs that
// break each rule must be reported, and a clean one must not.
func TestCheckImports(t *testing.T) {
	mainMod := &struct {
		Path string
		Main bool
	}{Path: "sbcd", Main: true}
	sipgo := &struct {
		Path string
		Main bool
	}{Path: "github.com/emiago/sipgo"}
	own := func(path string, deps ...string) listedPackage {
		return listedPackage{ImportPath: path, Imports: deps, Deps: deps, Module: mainMod}
	}
	// universe holds the dependencies every case can refer to.
	universe := []listedPackage{
		{ImportPath: "fmt", Standard: true},
		{ImportPath: "time", Standard: true},
		{ImportPath: "github.com/emiago/sipgo", Module: sipgo},
		{ImportPath: "github.com/emiago/sipgo/sip", Module: sipgo},
	}
	ownLeaves := []listedPackage{
		own("sbcd/timers"),
		own("sbcd/timers/session"),
		own("sbcd/sip/header"),
		own("sbcd/platform/config"),
		own("sbcd/board/led"),
		own("sbcd/cmd/sbcd"),
	}

	tests := []struct {
		name string
		pkg  listedPackage
		want []string // substrings, one per expected violation, in sorted order
	}{
		// Clean graphs.
		{name: "timers uses the standard library and itself", pkg: own("sbcd/timers/dialog", "fmt", "sbcd/timers", "sbcd/timers/session")},
		{name: "sip uses timers, sip and sipgo", pkg: own("sbcd/sip/b2bua", "github.com/emiago/sipgo", "sbcd/sip/header", "sbcd/timers/session", "time")},
		{name: "platform uses platform and timers", pkg: own("sbcd/platform/net", "sbcd/platform/config", "sbcd/timers")},
		{name: "board uses board and timers", pkg: own("sbcd/board/console", "sbcd/board/led", "sbcd/timers")},
		{name: "cmd uses everything", pkg: own("sbcd/cmd/sbcd", "sbcd/board/led", "sbcd/platform/config", "sbcd/sip/header", "sbcd/timers", "github.com/emiago/sipgo")},
		{name: "a new cmd", pkg: own("sbcd/cmd/sbcdctl", "sbcd/platform/config")},

		// timers: nothing of sbcd outside timers, nothing outside the standard library.
		{name: "timers imports sip", pkg: own("sbcd/timers", "sbcd/sip/header"), want: []string{"sbcd/timers imports sbcd/sip/header"}},
		{name: "timers imports platform", pkg: own("sbcd/timers/session", "sbcd/platform/config"), want: []string{"imports sbcd/platform/config"}},
		{name: "timers imports a module", pkg: own("sbcd/timers", "github.com/emiago/sipgo"), want: []string{"may import only the standard library"}},
		{name: "timers imports an unknown package", pkg: own("sbcd/timers", "example.com/x"), want: []string{"example.com/x; sbcd/timers/... may import only the standard library"}},
		{
			name: "timers depends indirectly on a module",
			pkg:  listedPackage{ImportPath: "sbcd/timers", Imports: []string{"fmt"}, Deps: []string{"fmt", "github.com/emiago/sipgo/sip"}, Module: mainMod},
			want: []string{"depends (indirectly) on github.com/emiago/sipgo/sip"},
		},

		// sip: never platform, board or cmd.
		{name: "sip imports platform", pkg: own("sbcd/sip/registrar", "sbcd/platform/config"), want: []string{"sbcd/sip/registrar imports sbcd/platform/config"}},
		{name: "sip imports board", pkg: own("sbcd/sip/cdr", "sbcd/board/led"), want: []string{"imports sbcd/board/led"}},
		{name: "sip imports cmd", pkg: own("sbcd/sip/b2bua", "sbcd/cmd/sbcd"), want: []string{"imports sbcd/cmd/sbcd"}},

		// platform: never sip or board.
		{name: "platform imports sip", pkg: own("sbcd/platform/config", "sbcd/sip/header"), want: []string{"sbcd/platform/config imports sbcd/sip/header"}},
		{name: "platform imports board", pkg: own("sbcd/platform", "sbcd/board/led"), want: []string{"sbcd/platform imports sbcd/board/led"}},

		// board: never sip or platform.
		{name: "board imports sip", pkg: own("sbcd/board/led", "sbcd/sip/header"), want: []string{"sbcd/board/led imports sbcd/sip/header"}},
		{name: "board imports platform", pkg: own("sbcd/board", "sbcd/platform/config"), want: []string{"sbcd/board imports sbcd/platform/config"}},

		// Packages outside the fixed layout are not covered by any rule.
		{name: "unknown top-level package", pkg: own("sbcd/util"), want: []string{"sbcd/util: no import rule covers this package"}},
		{name: "module root package", pkg: own("sbcd"), want: []string{"sbcd: no import rule covers"}},
		{name: "prefix is not a path element", pkg: own("sbcd/timersx"), want: []string{"sbcd/timersx: no import rule covers"}},

		// Several violations in one package are each reported.
		{
			name: "sip imports board and platform",
			pkg:  own("sbcd/sip/b2bua", "sbcd/board/led", "sbcd/platform/config"),
			want: []string{"imports sbcd/board/led", "imports sbcd/platform/config"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkgs := slices.Concat(universe, ownLeaves, []listedPackage{tt.pkg})
			got := checkImports(pkgs, importRules)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d violations, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("violation %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}

	// Dependencies are packages of the main module only if go list says so:
	// a package outside the module is never judged by the rules.
	t.Run("dependencies are not judged", func(t *testing.T) {
		pkgs := slices.Concat(universe, []listedPackage{
			{ImportPath: "github.com/emiago/sipgo", Module: sipgo, Deps: []string{"example.com/x"}},
		})
		if got := checkImports(pkgs, importRules); len(got) != 0 {
			t.Errorf("got violations for a dependency: %v", got)
		}
	})
}

func TestMatchPattern(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"sbcd/timers/...", "sbcd/timers", true},
		{"sbcd/timers/...", "sbcd/timers/session", true},
		{"sbcd/timers/...", "sbcd/timers/session/x", true},
		{"sbcd/timers/...", "sbcd/timersx", false},
		{"sbcd/timers/...", "sbcd", false},
		{"sbcd/timers", "sbcd/timers", true},
		{"sbcd/timers", "sbcd/timers/session", false},
	}
	for _, tt := range tests {
		if got := matchPattern(tt.pattern, tt.path); got != tt.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}
