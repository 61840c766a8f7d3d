package keepalive

import "unsafe"

// The binding array is the one part of the table that the pacer reads at
// random: the bindings of one tick were registered a period apart, so they
// sit thousands of slots apart and every one of them is a page of its own
// (100,000 bindings are 5.6 MB, 1,400 pages of 4 KiB). On 4-KiB pages each
// keep-alive then costs a TLB miss besides the cache miss; perf showed
// Advance at 14 % of sbcd's CPU in bench/keepalive.sh, nearly all of it on
// the load of the next binding, and 3 % with huge pages (BENCHMARKS.md,
// change 30). On Linux, New therefore maps an array of hugeMin or more
// apart from the Go heap and asks for transparent huge pages on it
// (mem_linux.go); elsewhere, and when the kernel refuses, it is an ordinary
// slice.

// hugePage is the size of a transparent huge page on amd64 and on arm64
// with 4-KiB base pages (the board's kernel).
const hugePage = 2 << 20

// hugeMin is the smallest binding array that gets its own mapping: one
// huge page. A smaller one fits the TLB's reach with base pages anyway.
const hugeMin = hugePage

// entrySize is the size of one binding slot.
const entrySize = int(unsafe.Sizeof(entry{}))
