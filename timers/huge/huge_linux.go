package huge

import (
	"runtime"
	"syscall"
	"unsafe"
)

// mapArray maps size bytes (n Ts) aligned to Page and advises
// MADV_HUGEPAGE on them before the first touch; the mapping is unmapped
// when owner is garbage. ok is false when the kernel refuses the mapping.
func mapArray[T any, O any](owner *O, n, size int) (s []T, advised, ok bool) {
	alen := (size + Page - 1) / Page * Page
	mlen := alen + Page // room to align
	b, err := syscall.Mmap(-1, 0, mlen, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return nil, false, false
	}
	off := (Page - int(uintptr(unsafe.Pointer(&b[0]))%Page)) % Page
	arr := b[off : off+alen]
	advised = syscall.Madvise(arr, syscall.MADV_HUGEPAGE) == nil
	runtime.AddCleanup(owner, func(b []byte) { _ = syscall.Munmap(b) }, b)
	return unsafe.Slice((*T)(unsafe.Pointer(&arr[0])), n), advised, true
}
