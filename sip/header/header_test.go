package header

import (
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sbcd/timers/session"
)

func TestParseSessionExpires(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    SE
		wantErr bool
	}{
		{in: "1800", want: SE{Delta: 1800}},
		{in: "1800;refresher=uac", want: SE{Delta: 1800, Refresher: session.RefresherUAC}},
		{in: " 90 ; refresher = uas ", want: SE{Delta: 90, Refresher: session.RefresherUAS}},
		{in: "600;REFRESHER=UAS", want: SE{Delta: 600, Refresher: session.RefresherUAS}},
		{in: "600;foo=bar;refresher=uac;lr", want: SE{Delta: 600, Refresher: session.RefresherUAC}},
		{in: `600;x="a;b";refresher=uac`, want: SE{Delta: 600, Refresher: session.RefresherUAC}},
		{in: "99999999999999999999", want: SE{Delta: math.MaxUint32}},
		{in: "0", want: SE{Delta: 0}},
		{in: "", wantErr: true},
		{in: ";refresher=uac", wantErr: true},
		{in: "-5", wantErr: true},
		{in: "1e3", wantErr: true},
		{in: "90 90", wantErr: true},
		{in: "1800;refresher=proxy", wantErr: true},
		{in: "1800;refresher=", wantErr: true},
		{in: "1800;refresher=uac;refresher=uas", wantErr: true},
		{in: "1800;=uac", wantErr: true},
		{in: `1800;x="unterminated`, wantErr: true},
		{in: "1800,900", wantErr: true},
		{in: "1800;ref resher=uac", wantErr: true},
	} {
		got, err := ParseSessionExpires(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseSessionExpires(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseSessionExpires(%q) error %v does not wrap ErrSyntax", tc.in, err)
		}
	}
}

func TestParseMinSE(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint32
		wantErr bool
	}{
		{in: "90", want: 90},
		{in: " 120 ", want: 120},
		{in: "120;foo", want: 120},
		{in: "", wantErr: true},
		{in: "ninety", wantErr: true},
		{in: "90;", wantErr: true},
	} {
		got, err := ParseMinSE(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseMinSE(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestListHas(t *testing.T) {
	for _, tc := range []struct {
		list, item string
		want       bool
	}{
		{"timer", "timer", true},
		{"100rel, timer ,replaces", "timer", true},
		{"100rel,replaces", "timer", false},
		{"timers", "timer", false},
		{"", "timer", false},
		{"INVITE, ACK, UPDATE", "UPDATE", true},
		{"INVITE, ACK, update", "UPDATE", false},
	} {
		if got := ListHas(tc.list, tc.item); got != tc.want {
			t.Errorf("ListHas(%q, %q) = %v, want %v", tc.list, tc.item, got, tc.want)
		}
	}
}

func TestAppend(t *testing.T) {
	for _, tc := range []struct {
		delta uint32
		r     session.Refresher
		want  string
	}{
		{1800, session.RefresherUAC, "1800;refresher=uac"},
		{90, session.RefresherUAS, "90;refresher=uas"},
		{600, session.RefresherNone, "600"},
	} {
		if got := string(AppendSessionExpires(nil, tc.delta, tc.r)); got != tc.want {
			t.Errorf("AppendSessionExpires = %q, want %q", got, tc.want)
		}
	}
	if got := string(AppendMinSE([]byte("Min-SE: "), 90)); got != "Min-SE: 90" {
		t.Errorf("AppendMinSE = %q", got)
	}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendSessionExpires(buf[:0], 1800, session.RefresherUAC)
		buf = AppendMinSE(buf, 90)
	}); n != 0 {
		t.Errorf("append allocated %v times", n)
	}
}

func TestValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v       Values
		want    session.Request
		wantErr bool
	}{
		{"full", Values{SessionExpires: "1800;refresher=uac", MinSE: "90", Supported: []string{"100rel", "timer"}},
			session.Request{SE: 1800, Refresher: session.RefresherUAC, MinSE: 90, Supported: true}, false},
		{"timer in Require", Values{SessionExpires: "600", Require: []string{"timer"}},
			session.Request{SE: 600, Supported: true}, false},
		{"no timer support", Values{SessionExpires: "600", Supported: []string{"100rel"}},
			session.Request{SE: 600}, false},
		{"nothing", Values{}, session.Request{}, false},
		{"bad Session-Expires", Values{SessionExpires: "soon"}, session.Request{}, true},
		{"bad Min-SE", Values{SessionExpires: "600", MinSE: "x"}, session.Request{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.v.Request()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Request() = %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
			resp, err := tc.v.Response()
			if err == nil && (resp.SE != tc.want.SE || resp.Refresher != tc.want.Refresher || resp.MinSE != tc.want.MinSE) {
				t.Errorf("Response() = %+v", resp)
			}
		})
	}
}

func FuzzParseSessionExpires(f *testing.F) {
	for _, s := range []string{"1800", "1800;refresher=uac", " 90 ; refresher = UAS ", `600;x="a;b\"";refresher=uac`, "99999999999999999999", ";;", `1;a="\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		se, err := ParseSessionExpires(s)
		if err != nil {
			return
		}
		// What parses formats back to an equivalent value.
		again, err := ParseSessionExpires(string(AppendSessionExpires(nil, se.Delta, se.Refresher)))
		if err != nil || again != se {
			t.Fatalf("round trip of %q: %+v -> %+v, %v", s, se, again, err)
		}
	})
}

func FuzzParseMinSE(f *testing.F) {
	for _, s := range []string{"90", "90;a=b", "", "9;\"", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMinSE(s)
		if err != nil {
			return
		}
		if again, err := ParseMinSE(string(AppendMinSE(nil, m))); err != nil || again != m {
			t.Fatalf("round trip of %q: %d -> %d, %v", s, m, again, err)
		}
	})
}

func FuzzListHas(f *testing.F) {
	f.Add("100rel, timer", "timer")
	f.Fuzz(func(t *testing.T, list, item string) {
		_ = ListHas(list, item)
	})
}

// field is a header field for First and All.
type field struct{ name, value string }

func (f field) Name() string  { return f.name }
func (f field) Value() string { return f.value }

func TestFirstAll(t *testing.T) {
	fields := []Field{
		field{"Via", "SIP/2.0/UDP a"},
		field{"session-expires", "90"},
		field{"Supported", "timer"},
		field{"SUPPORTED", "100rel"},
		field{"x", "120"},
		field{"k", "path"},
	}
	for _, tc := range []struct {
		name  string
		first string // "" for none
		all   []string
	}{
		{"Session-Expires", "90", []string{"90"}},
		{"x", "120", []string{"120"}},
		{"X", "120", []string{"120"}},
		{"supported", "timer", []string{"timer", "100rel"}},
		{"Min-SE", "", nil},
		{"", "", nil},
	} {
		f := First(fields, tc.name)
		got := ""
		if f != nil {
			got = f.Value()
		}
		if got != tc.first {
			t.Errorf("First(%q) = %q, want %q", tc.name, got, tc.first)
		}
		var all []string
		for _, f := range All(nil, fields, tc.name) {
			all = append(all, f.Value())
		}
		if diff := cmp.Diff(tc.all, all); diff != "" {
			t.Errorf("All(%q) (-want +got):\n%s", tc.name, diff)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		if First(fields, "Supported") == nil || First(fields, "Require") != nil {
			t.Fatal("First")
		}
	}); n != 0 {
		t.Errorf("First allocates %.1f times, want 0", n)
	}
}
