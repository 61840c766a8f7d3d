package registrar

import (
	"errors"
	"testing"
	"time"
)

// TestSetPolicy: a live apply changes what the next REGISTER sees, and a bad
// policy changes nothing.
func TestSetPolicy(t *testing.T) {
	r, _ := newTest(t, nil) // open: anyone may register, min_expires 60 s
	reg := func(user, expires string, cseq int) (int, string) {
		t.Helper()
		res := r.Register(rq{user: user, contacts: []string{"<sip:" + user + "@10.0.0.5>"}, expires: expires, cseq: cseq}.req(t), srcA, udp0)
		return res.StatusCode, res.Reason
	}
	if code, reason := reg("1001", "30", 1); code != 423 {
		t.Fatalf("expires 30 under min_expires 60: %d %s, want 423", code, reason)
	}

	closed := Options{MinExpires: 10 * time.Second, MaxExpires: time.Hour, Auth: true, Users: map[string]string{"1001": "secret"}, Realm: "box"}
	if err := r.SetPolicy(closed); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if code, _ := reg("1001", "30", 2); code != 401 {
		t.Errorf("after auth turned on: %d, want 401", code)
	}
	c := getChallenge(t, r, srcA, 3)
	if c.Realm != "box" {
		t.Errorf("challenge realm %q, want the new realm box", c.Realm)
	}
	if res := authed(t, r, srcA, "1001", authorization(t, c, "1001", "secret"), 4); res.StatusCode != 200 {
		t.Errorf("authenticated REGISTER under the new policy: %d %s", res.StatusCode, res.Reason)
	}

	bad := Options{MinExpires: time.Hour, MaxExpires: time.Minute, Auth: true}
	err := r.SetPolicy(bad)
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("SetPolicy(bad) = %v, want an ErrOptions error", err)
	}
	if code, _ := reg("1001", "30", 5); code != 401 {
		t.Errorf("after a refused policy: %d, want the previous policy's 401", code)
	}
}
