// Package huge keeps sbcd's large preallocated tables on transparent huge
// pages, outside the Go heap.
//
// sbcd allocates its tables once, at their full capacity (DESIGN.md §1):
// at 100,000 bindings the registrar's key arena, records and binding
// array, and the 32 MiB retransmission cache, about 75 MB that fill as
// the box works. On 4-KiB pages that is some 19,000 page-table entries,
// and the keep-alive pacer, which wakes about 34 times a second to send a
// batch, paid for them on every wake-up: on the reference machine (a
// guest whose page tables the hypervisor shadows) a program's cost per
// context switch grows with the base pages it has mapped. bench/kafloor,
// sending keep-alives and doing nothing else, spent 2.5 times its CPU
// with 500 MB touched on base pages, and no more than without it with the
// same 500 MB on huge pages (BENCHMARKS.md, change 35). Huge pages also
// spare the TLB misses of a walk over a table (change 30: the pacer's
// walk over the binding array).
//
// Make maps such a table as an anonymous private mapping of its own,
// aligned to a huge page and advised MADV_HUGEPAGE before anything touches
// it, so the page faults take huge pages (no khugepaged needed) whenever
// transparent huge pages are not "never". Memory outside the Go heap is
// invisible to the garbage collector, which suits these tables: they hold
// no pointers, the collector has nothing to scan in them, and the GC
// percentage (cmd/sbcd/gc.go) no longer lets garbage pile up in proportion
// to them. The price is paid once per 2 MiB, at the first touch: a fault
// that zeroes a whole huge page (and, with the kernel's default defrag
// setting "madvise", may first compact memory to find one). A table
// smaller than a huge page, a type with pointers, a failed mapping and
// other systems get an ordinary slice.
package huge

import (
	"math/bits"
	"reflect"
)

// Page is the size of a transparent huge page on amd64, and on arm64 with
// 4-KiB base pages (the board's kernel).
const Page = 2 << 20

// Make returns n zeroed Ts for owner to hold. From Page bytes on, on Linux,
// they live in a mapping of their own outside the Go heap, aligned to Page
// and advised MADV_HUGEPAGE; advised reports that the kernel took the
// advice. The mapping is unmapped once owner is unreachable, so the slice
// must live no longer than owner: keep it (and any part of it) only in
// owner's fields. T must hold no pointers, as the garbage collector does
// not look outside its heap; a T that does, fewer than Page bytes, n < 1, a
// failed mapping and other systems get make([]T, n) and advised false.
func Make[T any, O any](owner *O, n int) (s []T, advised bool) {
	typ := reflect.TypeFor[T]()
	hi, size := bits.Mul64(uint64(max(n, 0)), uint64(typ.Size()))
	if n < 1 || hi != 0 || size < Page || size > maxSize || owner == nil || hasPointers(typ) {
		return make([]T, max(n, 0)), false
	}
	if s, advised, ok := mapArray[T](owner, n, int(size)); ok {
		return s, advised
	}
	return make([]T, n), false
}

// maxSize bounds a mapping (and keeps n*size from overflowing an int on
// 32-bit systems): 1 GiB, far beyond any table of sbcd.
const maxSize = 1 << 30

// hasPointers reports whether a value of type t holds a pointer the garbage
// collector would have to see.
func hasPointers(t reflect.Type) bool {
	if t == nil {
		return true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Array:
		return t.Len() > 0 && hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	default: // pointers, strings, slices, maps, channels, functions, interfaces
		return true
	}
}
