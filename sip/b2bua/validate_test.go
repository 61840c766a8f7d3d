package b2bua

import (
	"context"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"

	"sbcd/sip/header"
)

// TestUASChecks sends requests that sbcd must refuse (or answer itself)
// before routing (RFC 3261 §8.2), from a device, and checks code and
// headers; newEnv checks that no slot or goroutine is left.
func TestUASChecks(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	sdpCT := sip.NewHeader("Content-Type", "application/sdp")
	for _, tc := range []struct {
		name   string
		method sip.RequestMethod
		scheme string
		body   string
		hdrs   []sip.Header
		code   int
		want   map[string]string // header: value
	}{
		{name: "options", method: sip.OPTIONS, code: 200,
			want: map[string]string{"Allow": allow, "Accept": "application/sdp", "Supported": "timer"}},
		{name: "options max-forwards 0", method: sip.OPTIONS, hdrs: []sip.Header{sip.NewHeader("Max-Forwards", "0")}, code: 200},
		{name: "register", method: sip.REGISTER, code: 405, want: map[string]string{"Allow": allow}},
		{name: "message", method: sip.MESSAGE, code: 405},
		{name: "unknown method", method: "FOO", code: 501},
		{name: "escaped method", method: "RE%47IST%45R", code: 501},
		{name: "tel uri", method: sip.INVITE, scheme: "tel", body: testSDP, hdrs: []sip.Header{sdpCT}, code: 416},
		{name: "require", method: sip.INVITE, body: testSDP, hdrs: []sip.Header{sdpCT, sip.NewHeader("Require", "timer, foo,bar")},
			code: 420, want: map[string]string{"Unsupported": "foo, bar"}},
		{name: "require on options", method: sip.OPTIONS, hdrs: []sip.Header{sip.NewHeader("Require", "nope")}, code: 420},
		{name: "media type", method: sip.INVITE, body: "hello", hdrs: []sip.Header{sip.NewHeader("Content-Type", "text/plain")},
			code: 415, want: map[string]string{"Accept": "application/sdp"}},
		{name: "multipart", method: sip.INVITE, body: testSDP, hdrs: []sip.Header{sip.NewHeader("Content-Type", "multipart/mixed;boundary=x")}, code: 415},
		{name: "encoding", method: sip.INVITE, body: testSDP, hdrs: []sip.Header{sdpCT, sip.NewHeader("Content-Encoding", "gzip")},
			code: 415, want: map[string]string{"Accept-Encoding": "identity"}},
		{name: "accept", method: sip.INVITE, body: testSDP, hdrs: []sip.Header{sdpCT, sip.NewHeader("Accept", "text/nobodyKnowsThis")}, code: 406},
		{name: "accept wildcard", method: sip.INVITE, body: testSDP, hdrs: []sip.Header{sdpCT, sip.NewHeader("Accept", "text/plain, application/*"),
			sip.NewHeader("Max-Forwards", "0")}, code: 483},
		{name: "max-forwards 0", method: sip.INVITE, body: testSDP, hdrs: []sip.Header{sdpCT, sip.NewHeader("Max-Forwards", "0")}, code: 483},
		{name: "duplicate call-id", method: sip.OPTIONS, hdrs: []sip.Header{sip.NewHeader("i", "other@test")}, code: 400},
		{name: "bye outside a dialog", method: sip.BYE, code: 481},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.caller.send(ctx, e.addr, tc.method, tc.scheme, tc.body, tc.hdrs...)
			if res.StatusCode != tc.code {
				t.Fatalf("%s answered %d %s, want %d", tc.method, res.StatusCode, res.Reason, tc.code)
			}
			for name, v := range tc.want {
				if h := res.GetHeader(name); h == nil || h.Value() != v {
					t.Errorf("%s: %v, want %q", name, h, v)
				}
			}
		})
	}
	if st := e.b.Stats(); st.FreeSlots != 8 || st.Early != 0 {
		t.Errorf("refused requests left calls: %+v", st)
	}
}

// TestUnknownSourceForbiddenFirst: a new INVITE from an unknown source
// gets 403 before any protocol check (RFC 3261 §8.2: authentication
// first); the same INVITE from a device gets the protocol answer.
func TestUnknownSourceForbiddenFirst(t *testing.T) {
	e := newEnv(t, behavior{}, nil)
	ctx := testCtx(t)
	stranger := newPhone(t, "mallory", behavior{})
	req := []sip.Header{sip.NewHeader("Require", "foo")}
	if res := stranger.send(ctx, e.addr, sip.INVITE, "", "", req...); res.StatusCode != 403 {
		t.Errorf("stranger's INVITE answered %d, want 403", res.StatusCode)
	}
	if res := stranger.send(ctx, e.addr, sip.OPTIONS, "", ""); res.StatusCode != 200 {
		t.Errorf("stranger's OPTIONS answered %d, want 200", res.StatusCode)
	}
	if res := e.caller.send(ctx, e.addr, sip.INVITE, "", "", req...); res.StatusCode != 420 {
		t.Errorf("device's INVITE answered %d, want 420", res.StatusCode)
	}
}

// send sends an out-of-dialog request to sbcd at dest and returns the
// final answer.
func (p *phone) send(ctx context.Context, dest netip.AddrPort, method sip.RequestMethod, scheme, body string, hdrs ...sip.Header) *sip.Response {
	p.t.Helper()
	if scheme == "" {
		scheme = "sip"
	}
	c := &ucall{callID: sip.GenerateTagN(12) + "@uas-check", localTag: sip.GenerateTagN(8), dest: dest,
		local:  sip.Uri{Scheme: "sip", User: p.name, Host: p.addr.Addr().String()},
		remote: sip.Uri{Scheme: "sip", User: "bob", Host: dest.Addr().String()},
		target: sip.Uri{Scheme: scheme, User: "bob", Host: dest.Addr().String(), Port: int(dest.Port())}}
	if scheme == "tel" {
		c.target = sip.Uri{Scheme: "tel", User: "+15551234", Host: "x"}
	}
	var rest []sip.Header
	mf := -1
	for _, h := range hdrs {
		if h.Name() == "Max-Forwards" {
			mf = atoi(h.Value())
			continue
		}
		rest = append(rest, h)
	}
	req := p.build(c, method, 1, "", rest...)
	if mf >= 0 {
		req.RemoveHeader("Max-Forwards")
		m := sip.MaxForwardsHeader(mf)
		req.AppendHeader(&m)
	}
	if body != "" {
		req.SetBody([]byte(body))
	}
	tx, err := p.tl.Request(ctx, req)
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, method, err)
	}
	res, _ := final(ctx, p.t, tx)
	return res
}

// TestTimerValues: the session-timer fields of a message in one pass, in
// full and compact form (RFC 4028 §4 "x", RFC 3261 §7.3.3 "k"): the first
// of each counts, the full Session-Expires wins over the compact one, and
// Supported lists the full form's values first.
func TestTimerValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdrs [][2]string
		want header.Values
	}{
		{"none", nil, header.Values{}},
		{"full forms", [][2]string{{"Session-Expires", "90;refresher=uac"}, {"Min-SE", "90"},
			{"Supported", "timer"}, {"Require", "timer"}},
			header.Values{SessionExpires: "90;refresher=uac", MinSE: "90", Supported: []string{"timer"}, Require: []string{"timer"}}},
		{"compact forms, any case", [][2]string{{"X", "120"}, {"k", "timer, 100rel"}},
			header.Values{SessionExpires: "120", Supported: []string{"timer, 100rel"}}},
		{"full wins over compact", [][2]string{{"x", "120"}, {"session-expires", "90"}, {"k", "path"}, {"SUPPORTED", "timer"}},
			header.Values{SessionExpires: "90", Supported: []string{"timer", "path"}}},
		{"an empty full form falls back to the compact", [][2]string{{"Session-Expires", ""}, {"x", "120"}},
			header.Values{SessionExpires: "120"}},
		{"the first of each counts", [][2]string{{"Session-Expires", "90"}, {"Session-Expires", "1800"},
			{"Min-SE", "90"}, {"Min-SE", "120"}, {"Require", "timer"}, {"Require", "100rel"}},
			header.Values{SessionExpires: "90", MinSE: "90", Require: []string{"timer", "100rel"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: "127.0.0.1"})
			for _, h := range tc.hdrs {
				req.AppendHeader(sip.NewHeader(h[0], h[1]))
			}
			if diff := cmp.Diff(tc.want, *timerValues(req)); diff != "" {
				t.Errorf("timerValues (-want +got):\n%s", diff)
			}
		})
	}
}
