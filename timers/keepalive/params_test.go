package keepalive

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultParams(t *testing.T) {
	p := DefaultParams()
	if err := p.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	want := Params{Message: "HELLO", Period: 30 * time.Second, SendInterval: 10 * time.Millisecond,
		SendOneTime: 100, Mode: ModeMessage, NATedOnly: true, MaxFailures: 3}
	if p != want {
		t.Fatalf("DefaultParams() = %+v, want %+v", p, want)
	}
	if got := p.Capacity(); got != 300000 {
		t.Errorf("Capacity() = %d, want 300000", got)
	}
}

func TestValidate(t *testing.T) {
	mod := func(f func(*Params)) Params {
		p := DefaultParams()
		f(&p)
		return p
	}
	tests := []struct {
		name string
		p    Params
		want []string // substrings, one per expected problem
	}{
		{"defaults", DefaultParams(), nil},
		{"limits low", mod(func(p *Params) {
			p.Period, p.SendInterval, p.SendOneTime, p.MaxFailures = time.Second, time.Millisecond, 1, 1
		}), nil},
		{"limits high", mod(func(p *Params) {
			p.Period, p.SendInterval, p.SendOneTime, p.MaxFailures = time.Hour, time.Second, 100000, 100
			p.Message = strings.Repeat("x", 1024)
		}), nil},
		{"empty message is allowed", mod(func(p *Params) { p.Message = "" }), nil},
		{"period zero", mod(func(p *Params) { p.Period = 0 }),
			[]string{"keepalive: nat_keepalive.period (SS_SIP_NAT_KEEP_ALIVE_PERIOD): 0s is below the minimum 1s"}},
		{"period high", mod(func(p *Params) { p.Period = time.Hour + time.Second }),
			[]string{"nat_keepalive.period (SS_SIP_NAT_KEEP_ALIVE_PERIOD): 1h0m1s is above the maximum 1h0m0s"}},
		{"interval low", mod(func(p *Params) { p.SendInterval = time.Millisecond - 1 }),
			[]string{"nat_keepalive.send_interval (SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL): 999.999µs is below the minimum 1ms"}},
		{"interval high", mod(func(p *Params) { p.SendInterval = 2 * time.Second }),
			[]string{"nat_keepalive.send_interval (SS_SIP_NAT_KEEP_ALIVE_SEND_INTERVAL): 2s is above the maximum 1s"}},
		{"not a multiple", mod(func(p *Params) { p.SendInterval = 7 * time.Millisecond }),
			[]string{"nat_keepalive.period (SS_SIP_NAT_KEEP_ALIVE_PERIOD): 30s is not a whole multiple of send_interval 7ms (the pacer works in send_interval ticks)"}},
		{"one time low", mod(func(p *Params) { p.SendOneTime = 0 }),
			[]string{"nat_keepalive.send_one_time (SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME): 0 is below the minimum 1"}},
		{"one time high", mod(func(p *Params) { p.SendOneTime = 100001 }),
			[]string{"nat_keepalive.send_one_time (SS_SIP_NAT_KEEP_ALIVE_SEND_ONE_TIME): 100001 is above the maximum 100000"}},
		{"failures low", mod(func(p *Params) { p.MaxFailures = 0 }),
			[]string{"nat_keepalive.max_failures: 0 is below the minimum 1"}},
		{"failures high", mod(func(p *Params) { p.MaxFailures = 101 }),
			[]string{"nat_keepalive.max_failures: 101 is above the maximum 100"}},
		{"message long", mod(func(p *Params) { p.Message = strings.Repeat("x", 1025) }),
			[]string{"nat_keepalive.message (SS_SIP_NAT_KEEP_ALIVE_MESSAGE): 1025 bytes is above the maximum 1024"}},
		{"mode", mod(func(p *Params) { p.Mode = 3 }),
			[]string{"nat_keepalive.mode: Mode(3) is not one of message, crlf, options"}},
		{"everything at once", Params{Message: strings.Repeat("x", 2000), Mode: 9, SendOneTime: -1, MaxFailures: -1},
			[]string{"message", "period", "send_interval", "send_one_time", "mode", "max_failures"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("Validate() gave %d problems, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, lines[i], w)
				}
				if !strings.HasPrefix(lines[i], "keepalive: nat_keepalive.") {
					t.Errorf("problem %d = %q lacks the package prefix and TOML key", i, lines[i])
				}
			}
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Key == "" {
				t.Errorf("errors.As(*ParamError) failed on %v", err)
			}
		})
	}
}

func TestCapacityAndRate(t *testing.T) {
	p := DefaultParams()
	tests := []struct {
		name     string
		p        Params
		bindings int
		capacity int
		pps      float64
	}{
		{"defaults 100k", p, 100000, 300000, 100000.0 / 30},
		{"defaults none", p, 0, 300000, 0},
		{"above capacity is capped", p, 1000000, 300000, 10000},
		{"disabled", Params{Period: 30 * time.Second, SendInterval: 10 * time.Millisecond, SendOneTime: 100}, 100, 300000, 0},
		{"crlf needs no message", Params{Period: 30 * time.Second, SendInterval: 10 * time.Millisecond, SendOneTime: 100, Mode: ModeCRLF}, 300, 300000, 10},
		{"invalid schedule", Params{Message: "x", SendOneTime: 100}, 100, 0, 0},
		{"no batch", Params{Message: "x", Period: time.Second, SendInterval: time.Millisecond}, 100, 0, 0},
	}
	for _, tt := range tests {
		if got := tt.p.Capacity(); got != tt.capacity {
			t.Errorf("%s: Capacity() = %d, want %d", tt.name, got, tt.capacity)
		}
		if got := tt.p.PacketsPerSecond(tt.bindings); got != tt.pps {
			t.Errorf("%s: PacketsPerSecond(%d) = %v, want %v", tt.name, tt.bindings, got, tt.pps)
		}
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    Mode
		wantErr bool
	}{
		{"message", ModeMessage, false},
		{"crlf", ModeCRLF, false},
		{"options", ModeOptions, false},
		{"OPTIONS", ModeOptions, false},
		{"Crlf", ModeCRLF, false},
		{"", 0, true},
		{" message", 0, true},
		{"message ", 0, true},
		{"option", 0, true},
		{"hello", 0, true},
		{"\xff", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "keepalive: ") {
			t.Errorf("ParseMode(%q) error %q lacks the package prefix", tt.in, err)
		}
	}
	for m := range Mode(3) {
		b, err := m.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Mode
		if err := back.UnmarshalText(b); err != nil || back != m {
			t.Errorf("text round trip of %v = %v, %v", m, back, err)
		}
	}
	if _, err := Mode(7).MarshalText(); err == nil {
		t.Error("Mode(7).MarshalText() succeeded")
	}
	var m Mode = ModeCRLF
	if err := m.UnmarshalText([]byte("bogus")); err == nil || m != ModeCRLF {
		t.Errorf("UnmarshalText(bogus) = %v, mode %v", err, m)
	}
	if Mode(200).String() != "Mode(200)" {
		t.Errorf("Mode(200).String() = %q", Mode(200).String())
	}
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"message", "crlf", "options", "OPTIONS", "", "x", "messag", "crlf\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMode(s)
		if err != nil {
			if m != 0 {
				t.Fatalf("ParseMode(%q) returned %v with error", s, m)
			}
			if !strings.HasPrefix(err.Error(), "keepalive: ") {
				t.Fatalf("error %q lacks prefix", err)
			}
			return
		}
		if !m.Valid() {
			t.Fatalf("ParseMode(%q) = invalid %v", s, m)
		}
		if !strings.EqualFold(s, m.String()) {
			t.Fatalf("ParseMode(%q) = %v, spelled differently", s, m)
		}
		again, err := ParseMode(m.String())
		if err != nil || again != m {
			t.Fatalf("round trip of %v = %v, %v", m, again, err)
		}
	})
}
