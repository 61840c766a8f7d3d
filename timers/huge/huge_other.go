//go:build !linux

package huge

// mapArray: no mapping of its own outside Linux (madvise and its
// MADV_HUGEPAGE are Linux's), an ordinary slice instead.
func mapArray[T any, O any](owner *O, n, size int) (s []T, advised, ok bool) {
	return nil, false, false
}
