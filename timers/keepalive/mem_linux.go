package keepalive

import (
	"runtime"
	"syscall"
	"unsafe"
)

// makeEntries returns n zeroed binding slots. From hugeMin on they live in
// an anonymous private mapping of their own, aligned to hugePage and
// advised MADV_HUGEPAGE before the first touch, so the kernel backs them
// with huge pages whenever transparent huge pages are not "never" (the
// page faults of New take them, no khugepaged needed). The mapping is
// outside the Go heap, which is safe because entry holds no pointers; it
// is unmapped when t is garbage (tests build many tables). Any failure
// falls back to make: the table works the same on base pages.
func makeEntries(t *Table, n int) []entry {
	size := n * entrySize
	if size < hugeMin {
		return make([]entry, n)
	}
	mlen := (size+hugePage-1)/hugePage*hugePage + hugePage // room to align
	b, err := syscall.Mmap(-1, 0, mlen, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return make([]entry, n)
	}
	off := (hugePage - int(uintptr(unsafe.Pointer(&b[0]))%hugePage)) % hugePage
	arr := b[off : off+(size+hugePage-1)/hugePage*hugePage]
	if syscall.Madvise(arr, syscall.MADV_HUGEPAGE) == nil {
		t.huge = true
	}
	runtime.AddCleanup(t, func(b []byte) { _ = syscall.Munmap(b) }, b)
	return unsafe.Slice((*entry)(unsafe.Pointer(&arr[0])), n)
}
