package keepalive

import "unsafe"

// The binding array is the part of the table the pacer walks: 100,000
// bindings are 5.6 MB, 1,400 pages of 4 KiB, and each batch, 30 ms after
// the last, reads another part of it. Before the bindings of one tick were
// kept together (Table.home, change 33) every binding was a page of its
// own; on 4-KiB pages each keep-alive then cost a TLB miss besides the
// cache miss: perf showed Advance at 14 % of sbcd's CPU in
// bench/keepalive.sh, nearly all of it on the load of the next binding,
// and 4.9 % with huge pages (BENCHMARKS.md, change 30). On Linux, New
// therefore maps an array of hugeMin or more
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
