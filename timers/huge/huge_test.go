package huge

import (
	"reflect"
	"runtime"
	"testing"
	"unsafe"

	"sbcd/timers/huge/hugetest"
)

type owner struct{ s []uint64 }

// TestMake: whatever Make returns is n zeroed, writable elements; only a
// pointer-free table of a huge page or more may be mapped apart.
func TestMake(t *testing.T) {
	type flat struct {
		a uint64
		b [3]uint32
		c bool
	}
	type withString struct {
		a uint64
		s string
	}
	big := Page/8 + 1
	tests := []struct {
		name      string
		make      func(o *owner) (n int, first, last unsafe.Pointer, zero bool, advised bool)
		n         int
		mayAdvise bool
	}{
		{"empty", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[uint64](o, 0)
			return len(s), nil, nil, true, adv
		}, 0, false},
		{"negative", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[uint64](o, -5)
			return len(s), nil, nil, true, adv
		}, 0, false},
		{"below a huge page", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[uint64](o, Page/8-1)
			return len(s), unsafe.Pointer(&s[0]), unsafe.Pointer(&s[len(s)-1]), allZero(s), adv
		}, Page/8 - 1, false},
		{"a huge page and more", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[uint64](o, big)
			o.s = s
			return len(s), unsafe.Pointer(&s[0]), unsafe.Pointer(&s[len(s)-1]), allZero(s), adv
		}, big, true},
		{"structs without pointers", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[flat](o, Page)
			return len(s), unsafe.Pointer(&s[0]), unsafe.Pointer(&s[len(s)-1]), allZero(s), adv
		}, Page, true},
		{"structs with a string", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[withString](o, Page)
			return len(s), unsafe.Pointer(&s[0]), unsafe.Pointer(&s[len(s)-1]), allZero(s), adv
		}, Page, false},
		{"pointers", func(o *owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[*int](o, Page)
			return len(s), unsafe.Pointer(&s[0]), unsafe.Pointer(&s[len(s)-1]), allZero(s), adv
		}, Page, false},
		{"no owner", func(*owner) (int, unsafe.Pointer, unsafe.Pointer, bool, bool) {
			s, adv := Make[uint64]((*owner)(nil), big)
			return len(s), unsafe.Pointer(&s[0]), unsafe.Pointer(&s[len(s)-1]), allZero(s), adv
		}, big, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &owner{}
			n, first, last, zero, advised := tt.make(o)
			if n != tt.n {
				t.Fatalf("len %d, want %d", n, tt.n)
			}
			if !zero {
				t.Errorf("not zeroed")
			}
			if advised && !tt.mayAdvise {
				t.Errorf("advised huge pages: want an ordinary slice")
			}
			if tt.mayAdvise && hugetest.Enabled() && !advised {
				t.Errorf("transparent huge pages are on but the table was not advised")
			}
			if first != nil {
				*(*byte)(first), *(*byte)(last) = 1, 2 // writable end to end
			}
			runtime.KeepAlive(o) // the owner of a mapping outlives its use
		})
	}
}

func allZero[T comparable](s []T) bool {
	var zero T
	for _, v := range s {
		if v != zero {
			return false
		}
	}
	return true
}

func TestHasPointers(t *testing.T) {
	type inner struct{ p *int }
	tests := []struct {
		v    any
		want bool
	}{
		{uint8(0), false},
		{int64(0), false},
		{uintptr(0), false},
		{complex128(0), false},
		{[4]uint32{}, false},
		{[0]*int{}, false},
		{struct {
			a uint64
			b [2]int16
		}{}, false},
		{"", true},
		{[]byte(nil), true},
		{(*int)(nil), true},
		{map[int]int(nil), true},
		{(chan int)(nil), true},
		{(func())(nil), true},
		{unsafe.Pointer(nil), true},
		{[2]string{}, true},
		{struct{ a, b inner }{}, true},
		{[1]struct{ e error }{}, true},
	}
	for _, tt := range tests {
		typ := reflect.TypeOf(tt.v)
		if got := hasPointers(typ); got != tt.want {
			t.Errorf("hasPointers(%v) = %v, want %v", typ, got, tt.want)
		}
	}
	if !hasPointers(reflect.TypeFor[error]()) {
		t.Errorf("hasPointers(error) = false, want true")
	}
}
