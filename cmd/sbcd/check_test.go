package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/check")

// TestCheckGolden runs `sbcd check` on the files in testdata/check and
// compares what it prints with the .golden files beside them.
func TestCheckGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "check", "*.toml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test configs: %v", err)
	}
	// The example that ships in the image, as an operator would check it.
	files = append(files, filepath.Join("..", "..", "rootfs", "etc", "sbcd", "sbcd.toml"))
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := check(f, &stdout, &stderr)
			got := stdout.String() + stderr.String()
			golden := strings.TrimSuffix(f, ".toml") + ".golden"
			if strings.HasPrefix(f, "..") {
				golden = filepath.Join("testdata", "check", "rootfs-example.golden")
			}
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestCheckGolden -update)", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("sbcd check %s (-want +got):\n%s", f, d)
			}
			if code != exitOK {
				t.Errorf("exit code %d for a valid file", code)
			}
		})
	}
}
