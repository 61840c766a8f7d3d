package cdr

import (
	"bytes"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sbcd/timers/session"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var t0 = time.Date(2026, 11, 24, 13, 5, 9, 123456789, time.UTC)

// goldenRecords are the records of testdata/golden.csv, all ending on
// 2026-11-24 (UTC).
func goldenRecords() []Record {
	berlin := time.FixedZone("CET", 3600)
	return []Record{
		{ // answered, both legs with session timers, caller hangs up
			CallID: "a84b4c76e66710@pc33.example.com", Caller: "+4930123456", Callee: "1001",
			Source: netip.MustParseAddrPort("203.0.113.7:5060"), Transport: "udp",
			SetupTime:  t0,
			AnswerTime: t0.Add(4321 * time.Millisecond),
			EndTime:    t0.Add(17*time.Minute + 2*time.Second + 999*time.Millisecond).In(berlin),
			Reason:     session.ReasonCallerBye, EndedBy: EndedByCaller, Code: 200,
			A: Leg{SE: 600, Refresher: RefresherEndpoint, Mode: session.ModeTimer, RefreshesReceived: 3},
			B: Leg{SE: 600, Refresher: RefresherSBCD, Mode: session.ModeTimer, RefreshesSent: 3},
		},
		{ // rejected by the callee: never answered, legs never established
			CallID: "reject-1", Caller: "1001", Callee: "sip:1002@192.0.2.20",
			Source: netip.MustParseAddrPort("192.0.2.33:5080"), Transport: "udp",
			SetupTime: t0.Add(time.Hour),
			EndTime:   t0.Add(time.Hour + 800*time.Millisecond),
			Reason:    session.ReasonRejected, EndedBy: EndedByCallee, Code: 486,
		},
		{ // callee without session timers: probed, the probe failed
			CallID: "probe-7", Caller: "1003", Callee: "+15551234567",
			Source: netip.MustParseAddrPort("[2001:db8::5]:5062"), Transport: "tcp",
			SetupTime:  t0.Add(2 * time.Hour),
			AnswerTime: t0.Add(2*time.Hour + time.Second),
			EndTime:    t0.Add(4*time.Hour + time.Second + 40*time.Millisecond),
			Reason:     session.ReasonNoTimerProbeFailed, EndedBy: EndedBySBCD, Code: 200,
			A: Leg{SE: 1800, Refresher: RefresherSBCD, Mode: session.ModeTimer, RefreshesSent: 8},
			B: Leg{Mode: session.ModeProbe, RefreshesSent: 1},
		},
		{ // hostile strings from the network
			CallID: "-x\"y", Caller: "=HYPERLINK(\"http://evil\",\"a,b\")\nrow2\r\x1b[31m",
			Callee: "@SUM(1)", Transport: "udp",
			SetupTime: t0.Add(3 * time.Hour),
			EndTime:   t0.Add(3*time.Hour + 5*time.Second),
			Reason:    session.ReasonEarlyTimeout, EndedBy: EndedBySBCD, Code: 0,
		},
	}
}

// wantText is the documented neutralisation of a text field, written
// independently of the formatter: control bytes become U+FFFD, and a
// leading = + - @ gets an apostrophe unless the field is a number with a
// sign.
func wantText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			b.WriteString("\uFFFD")
		} else {
			b.WriteByte(c)
		}
	}
	out := b.String()
	if s != "" && strings.ContainsRune("=+-@", rune(s[0])) {
		if !((s[0] == '+' || s[0] == '-') && len(s) > 1 && strings.Trim(s[1:], "0123456789") == "") {
			out = "'" + out
		}
	}
	return out
}

// wantFields is what a line of r must read back as, built with the
// standard library's formatting rather than the package's.
func wantFields(r *Record) []string {
	tm := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	dur := "0.000"
	if !r.AnswerTime.IsZero() {
		ms := r.EndTime.UnixMilli() - r.AnswerTime.UnixMilli()
		dur = fmt.Sprintf("%d.%03d", ms/1000, ms%1000)
	}
	src := ""
	if r.Source.IsValid() {
		src = r.Source.String()
	}
	mode := func(m session.Mode) string {
		if m == session.ModeIdle {
			return ""
		}
		return m.String()
	}
	leg := func(l Leg) []string {
		return []string{
			strconv.Itoa(int(l.SE)), l.Refresher.String(), mode(l.Mode),
			strconv.Itoa(int(l.RefreshesSent)), strconv.Itoa(int(l.RefreshesReceived)),
		}
	}
	f := []string{
		wantText(r.CallID), wantText(r.Caller), wantText(r.Callee), src, wantText(r.Transport),
		tm(r.SetupTime), tm(r.AnswerTime), tm(r.EndTime), dur,
		r.Reason.String(), r.EndedBy.String(), strconv.Itoa(r.Code),
	}
	f = append(f, leg(r.A)...)
	return append(f, leg(r.B)...)
}

func readCSV(t *testing.T, data []byte) [][]string {
	t.Helper()
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = 22
	rows, err := cr.ReadAll()
	if err != nil {
		t.Fatalf("encoding/csv: %v\n%s", err, data)
	}
	return rows
}

func TestHeader(t *testing.T) {
	want := "call_id,caller,callee,source,transport,setup_time,answer_time,end_time,duration,end_reason,ended_by,sip_code,a_se,a_refresher,a_mode,a_refreshes_sent,a_refreshes_received,b_se,b_refresher,b_mode,b_refreshes_sent,b_refreshes_received"
	if Header != want {
		t.Fatalf("Header =\n%s\nwant\n%s", Header, want)
	}
}

// TestGolden writes the golden records through a Writer and compares the day
// file with testdata/golden.csv (go test -run Golden -update rewrites it).
func TestGolden(t *testing.T) {
	dir := t.TempDir()
	w := newTestWriter(t, Options{Dir: dir}, nil)
	recs := goldenRecords()
	d := newDones(len(recs))
	for i := range recs {
		if err := w.Append(&recs[i], d.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	closeWriter(t, w)
	d.wait(t)
	for i, err := range d.errs {
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, "2026-11-24.csv"))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "golden.csv")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("day file differs from %s:\n--- got\n%s\n--- want\n%s", golden, got, want)
	}
	if n := bytes.Count(got, []byte("\n")); n != len(recs)+1 {
		t.Fatalf("%d lines, want %d: a record is always one line", n, len(recs)+1)
	}
}

// TestRoundTrip: encoding/csv reads every field of every golden record back.
func TestRoundTrip(t *testing.T) {
	recs := goldenRecords()
	data := append([]byte(Header), '\n')
	for i := range recs {
		data = AppendCSV(data, &recs[i])
	}
	rows := readCSV(t, data)
	if len(rows) != len(recs)+1 {
		t.Fatalf("%d rows, want %d", len(rows), len(recs)+1)
	}
	if got := strings.Join(rows[0], ","); got != Header {
		t.Fatalf("header row %q", got)
	}
	for i := range recs {
		want := wantFields(&recs[i])
		for j := range want {
			if rows[i+1][j] != want[j] {
				t.Errorf("record %d column %s = %q, want %q", i, rows[0][j], rows[i+1][j], want[j])
			}
		}
	}
	// Spot checks of the documented format against literal values.
	r := rows[1]
	if r[5] != "2026-11-24T13:05:09.123Z" || r[6] != "2026-11-24T13:05:13.444Z" ||
		r[7] != "2026-11-24T13:22:12.122Z" || r[8] != "1018.678" {
		t.Errorf("times of record 0: %q", r[5:9])
	}
	if r[1] != "+4930123456" {
		t.Errorf("an E.164 number must not get the formula prefix: %q", r[1])
	}
	if rows[2][6] != "" || rows[2][8] != "0.000" || rows[2][14] != "" {
		t.Errorf("unanswered call: answer %q duration %q a_mode %q", rows[2][6], rows[2][8], rows[2][14])
	}
	if rows[4][0] != "'-x\"y" || rows[4][2] != "'@SUM(1)" ||
		rows[4][1] != "'=HYPERLINK(\"http://evil\",\"a,b\")\uFFFDrow2\uFFFD\uFFFD[31m" {
		t.Errorf("hostile fields: %q", rows[4][:3])
	}
}

func TestEveryReason(t *testing.T) {
	for _, reason := range append(session.Reasons(), session.ReasonNone, session.Reason(200)) {
		r := Record{EndTime: t0, Reason: reason}
		rows := readCSV(t, AppendCSV(nil, &r))
		want := reason.String()
		if reason == 200 {
			want = "reason(200)"
		}
		if rows[0][9] != want {
			t.Errorf("reason %d written %q, want %q", reason, rows[0][9], want)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		answer, end time.Time
		want        string
	}{
		{time.Time{}, t0, "0.000"},
		{t0, t0, "0.000"},
		{t0.Truncate(time.Millisecond), t0.Truncate(time.Millisecond).Add(999 * time.Microsecond), "0.000"},
		{t0, t0.Add(999 * time.Microsecond), "0.001"}, // .123 to .124 as printed
		{t0, t0.Add(5 * time.Millisecond), "0.005"},
		{t0, t0.Add(61*time.Second + 70*time.Millisecond), "61.070"},
		{t0, t0.Add(-time.Second), "0.000"}, // clock stepped back
		{t0, t0.Add(48 * time.Hour), "172800.000"},
	} {
		if got := string(appendDuration(nil, tc.answer, tc.end)); got != tc.want {
			t.Errorf("duration(%v, %v) = %s, want %s", tc.answer, tc.end, got, tc.want)
		}
	}
}

func TestFieldNeutralisation(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"1001", "1001"},
		{"+4930123456", "+4930123456"},
		{"-17", "-17"},
		{"+", "'+"},
		{"-", "'-"},
		{"+1 555", "'+1 555"},
		{"+1e5", "'+1e5"},
		{"=1+1", "'=1+1"},
		{"@x", "'@x"},
		{"a,b", `"a,b"`},
		{`say "hi"`, `"say ""hi"""`},
		{"=a,b", `"'=a,b"`},
		{" lead", `" lead"`},
		{"a\r\nb", "a\uFFFD\uFFFDb"},
		{"\t=1", "\uFFFD=1"},
		{"x\x00\x7f", "x\uFFFD\uFFFD"},
		{"ünïcödé", "ünïcödé"},
	} {
		if got := string(appendField(nil, tc.in)); got != tc.want {
			t.Errorf("appendField(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLegFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *session.Leg
		want Leg
	}{
		{"nil", nil, Leg{}},
		{"idle", &session.Leg{}, Leg{}},
		{"timer, sbcd refreshes", &session.Leg{SE: 600, MinSE: 90, Mode: session.ModeTimer, LocalRefresher: true, RefreshesSent: 4, RefreshesReceived: 1},
			Leg{SE: 600, Refresher: RefresherSBCD, Mode: session.ModeTimer, RefreshesSent: 4, RefreshesReceived: 1}},
		{"timer, endpoint refreshes", &session.Leg{SE: 1800, Mode: session.ModeTimer, RefreshesReceived: 2},
			Leg{SE: 1800, Refresher: RefresherEndpoint, Mode: session.ModeTimer, RefreshesReceived: 2}},
		{"probe", &session.Leg{SE: 90, Mode: session.ModeProbe, LocalRefresher: true, RefreshesSent: 1},
			Leg{Mode: session.ModeProbe, RefreshesSent: 1}},
		{"off", &session.Leg{Mode: session.ModeOff}, Leg{Mode: session.ModeOff}},
	} {
		if got := LegFields(tc.in); got != tc.want {
			t.Errorf("%s: LegFields = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestAppendCSVNil(t *testing.T) {
	if got := AppendCSV([]byte("x"), nil); string(got) != "x" {
		t.Fatalf("AppendCSV(nil record) = %q", got)
	}
}

func TestAppendCSVAllocs(t *testing.T) {
	recs := goldenRecords()
	buf := make([]byte, 0, 4096)
	for i := range recs {
		r := &recs[i]
		if n := testing.AllocsPerRun(200, func() { buf = AppendCSV(buf[:0], r) }); n != 0 {
			t.Errorf("record %d: %v allocations per AppendCSV, want 0", i, n)
		}
	}
	zoned := Record{EndTime: t0, Source: netip.MustParseAddrPort("[fe80::1%eth0]:5060")}
	if n := testing.AllocsPerRun(200, func() { buf = AppendCSV(buf[:0], &zoned) }); n != 0 {
		t.Errorf("zoned source: %v allocations per AppendCSV, want 0", n)
	}
}

// FuzzAppendCSV: whatever a peer sends, a text field is one line that
// encoding/csv reads back as the documented neutralisation of the input, and
// a whole record made of such strings is one line of 22 fields.
func FuzzAppendCSV(f *testing.F) {
	for _, s := range []string{"", "1001", "+4930123456", "a,b", `"`, `""`, "\r\n", "a\rb\n",
		"=1+1", "@", "-", " x", "\x00", "\xff\xfe", "\"\n,\r", "'=x", "x\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		line := append([]byte("a,"), appendField(nil, s)...)
		line = append(line, ",b\n"...)
		if i := bytes.IndexAny(line, "\r\n"); i != len(line)-1 {
			t.Fatalf("field %q is not one line: %q", s, line)
		}
		cr := csv.NewReader(bytes.NewReader(line))
		row, err := cr.Read()
		if err != nil {
			t.Fatalf("field %q: line %q: %v", s, line, err)
		}
		if _, err := cr.Read(); !errors.Is(err, io.EOF) {
			t.Fatalf("field %q: line %q: more than one record (%v)", s, line, err)
		}
		if len(row) != 3 || row[0] != "a" || row[2] != "b" {
			t.Fatalf("field %q: line %q read as %q", s, line, row)
		}
		if want := wantText(s); row[1] != want {
			t.Fatalf("field %q read back as %q, want %q", s, row[1], want)
		}

		r := Record{CallID: s, Caller: s, Callee: s, Transport: s, EndTime: t0}
		rec := AppendCSV(nil, &r)
		if i := bytes.IndexAny(rec, "\r\n"); i != len(rec)-1 {
			t.Fatalf("record with %q is not one line: %q", s, rec)
		}
		rows, err := csv.NewReader(bytes.NewReader(rec)).ReadAll()
		if err != nil || len(rows) != 1 || len(rows[0]) != 22 {
			t.Fatalf("record with %q: %q read as %q, %v", s, rec, rows, err)
		}
		want := wantFields(&r)
		for j := range want {
			if rows[0][j] != want[j] {
				t.Fatalf("record with %q: field %d = %q, want %q", s, j, rows[0][j], want[j])
			}
		}
	})
}
