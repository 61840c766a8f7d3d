package registrar

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// policy is the part of Options that SetPolicy changes at run time. A
// REGISTER loads it once, so it sees one policy throughout.
type policy struct {
	minExpires time.Duration
	maxExpires time.Duration
	auth       bool
	users      map[string]string // a private copy
	realm      string
}

// newPolicy validates the run-time-changeable part of o (errors wrap
// ErrOptions).
func newPolicy(o Options) (*policy, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrOptions}, args...)...))
	}
	if o.MinExpires < 0 {
		bad("registrar.min_expires %v is negative", o.MinExpires)
	}
	if o.MaxExpires < time.Second {
		bad("registrar.max_expires %v is below 1s", o.MaxExpires)
	}
	if o.MinExpires > o.MaxExpires {
		bad("registrar.min_expires %v is above registrar.max_expires %v", o.MinExpires, o.MaxExpires)
	}
	if o.Auth && len(o.Users) == 0 {
		bad("registrar.auth is on but no [[registrar.user]] is listed: nobody could register")
	}
	for name, pw := range o.Users {
		if name == "" {
			bad("registrar.user: empty name")
		}
		if o.Auth && pw == "" {
			bad("registrar.user %q: empty password with registrar.auth on", name)
		}
	}
	realm := o.Realm
	if realm == "" {
		realm = DefaultRealm
	}
	if strings.ContainsAny(realm, "\"\\\r\n") {
		bad("realm %q contains a quote, backslash or line break", realm)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p := &policy{
		minExpires: o.MinExpires,
		maxExpires: o.MaxExpires,
		auth:       o.Auth,
		realm:      realm,
		users:      make(map[string]string, len(o.Users)),
	}
	for k, v := range o.Users {
		p.users[k] = v
	}
	return p, nil
}

// SetPolicy changes, for the REGISTERs that follow, what a live config
// apply may change: MinExpires, MaxExpires, Auth, Users and Realm. Other
// fields of o are ignored (MaxBindings needs a restart; the keep-alive
// parameters go through SetKeepalive). Existing bindings keep their
// expiry: a user removed from Users can no longer refresh, and the binding
// lapses when it expires. On error nothing changes.
func (r *Registrar) SetPolicy(o Options) error {
	p, err := newPolicy(o)
	if err != nil {
		return fmt.Errorf("registrar: set policy: %w", err)
	}
	r.pol.Store(p)
	return nil
}
