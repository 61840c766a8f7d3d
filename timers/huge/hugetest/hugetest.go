// Package hugetest helps the tests of packages whose tables come from
// timers/huge: whether this machine's kernel gives transparent huge pages
// on advice, so a test can tell a table that should have been advised
// from one that could not be. Tests only: it reads sysfs, which the timer
// core itself never does.
package hugetest

import (
	"os"
	"strings"
)

// Enabled reports whether the kernel backs advised mappings with
// transparent huge pages: /sys/kernel/mm/transparent_hugepage/enabled is
// "always" or "madvise" (false where there is no such file).
func Enabled() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return false
	}
	s := string(b)
	return strings.Contains(s, "[always]") || strings.Contains(s, "[madvise]")
}
