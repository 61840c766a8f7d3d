//go:build !linux

package keepalive

// makeEntries returns n zeroed binding slots (mem.go: huge pages are
// asked for on Linux only).
func makeEntries(t *Table, n int) []entry { return make([]entry, n) }
