package callback_test

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"sluice/shared/callback"
)

// fuzzHosts is the allowlist of FuzzPolicyCheck, with the spellings an
// operator may use (upper case, spaces around an entry).
var fuzzHosts = []string{"hooks.shop.example", "*.partner.example", " HOOKS.Upper.Example ", "203.0.113.9", "10.1.2.3", "2001:db8::1"}

// allowedHost is the allowlist rule written independently of the policy:
// DNS names compare ASCII-case-insensitively, and "*.suffix" stands for one
// or more labels in front of suffix.
func allowedHost(host string) bool {
	host = asciiLower(host)
	switch host {
	case "hooks.shop.example", "hooks.upper.example", "203.0.113.9", "10.1.2.3", "2001:db8::1":
		return true
	}
	label, ok := strings.CutSuffix(host, ".partner.example")
	return ok && label != ""
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// fakeResolver answers every name with the addresses encoded in its bytes,
// and records the names it was asked: the fuzz does no DNS.
type fakeResolver struct {
	addrs []netip.Addr
	err   error
	asked []string
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.asked = append(r.asked, host)
	return r.addrs, r.err
}

// newFakeResolver decodes b: empty is a lookup failure; otherwise b[0]'s low
// bit picks IPv6 (16-byte chunks, IPv4-mapped ones included) or IPv4
// (4-byte chunks) for the rest. Zero chunks is an empty answer without error.
func newFakeResolver(b []byte) *fakeResolver {
	if len(b) == 0 {
		return &fakeResolver{err: errors.New("no such host")}
	}
	r := &fakeResolver{}
	size := 4
	if b[0]&1 == 1 {
		size = 16
	}
	for rest := b[1:]; len(rest) >= size; rest = rest[size:] {
		if size == 4 {
			r.addrs = append(r.addrs, netip.AddrFrom4([4]byte(rest[:4])))
		} else {
			r.addrs = append(r.addrs, netip.AddrFrom16([16]byte(rest[:16])))
		}
	}
	return r
}

// FuzzPolicyCheck checks that Check never panics, that every refusal is a
// documented kind, and that an accepted URL is absolute, https (or http when
// allowed), without credentials or fragment, names an allowed host, reads
// back the same when the deliverer prints and re-parses it, and reaches only
// public addresses unless private ones are allowed.
func FuzzPolicyCheck(f *testing.F) {
	public4 := []byte{0, 93, 184, 216, 34}
	private4 := []byte{0, 93, 184, 216, 34, 10, 0, 0, 1}
	mapped := append([]byte{1}, netip.MustParseAddr("::ffff:127.0.0.1").AsSlice()...)
	for _, s := range []struct {
		raw                string
		addrs              []byte
		allowPrivate, http bool
	}{
		{"https://hooks.shop.example/cb", public4, false, false},
		{"https://hooks.shop.example/cb", private4, false, false},
		{"https://hooks.shop.example/cb", private4, true, false},
		{"https://a.b.partner.example:8443/cb?x=1", public4, false, false},
		{"https://partner.example/cb", public4, false, false},
		{"https://.partner.example/cb", public4, false, false},
		{"https://HOOKS.SHOP.EXAMPLE/cb", mapped, false, false},
		{"https://hooks.upper.example/cb", nil, false, false},
		{"https://hooks.upper.example/cb", []byte{0}, false, false},
		{"http://hooks.shop.example/cb", public4, false, true},
		{"http://hooks.shop.example/cb", public4, false, false},
		{"https://203.0.113.9/cb", nil, false, false},
		{"https://10.1.2.3/cb", nil, false, false},
		{"https://10.1.2.3/cb", nil, true, false},
		{"https://[2001:db8::1]:443/cb", nil, false, false},
		{"https://[::ffff:10.1.2.3]/cb", nil, false, false},
		{"https://user:pw@hooks.shop.example/cb", public4, false, false},
		{"https://hooks.shop.example/cb#frag", public4, false, false},
		{"//hooks.shop.example/cb", public4, false, false},
		{"https://hooks.shop.example%2e/cb", public4, false, false},
		{"https://hoo\u212As.shop.example/cb", public4, false, false},
		{"https://hooks.shop.example./cb", public4, false, false},
		{"https://evil.example\\@hooks.shop.example/cb", public4, false, false},
		{"", nil, false, false},
	} {
		f.Add(s.raw, s.addrs, s.allowPrivate, s.http)
	}
	f.Fuzz(func(t *testing.T, raw string, addrs []byte, allowPrivate, allowHTTP bool) {
		r := newFakeResolver(addrs)
		p := callback.Policy{AllowedHosts: fuzzHosts, AllowPrivate: allowPrivate, AllowHTTP: allowHTTP, Resolver: r}
		u, err := p.Check(context.Background(), raw)
		if err != nil {
			if u != nil {
				t.Fatalf("Check(%q) returned a URL with the error %v", raw, err)
			}
			if !errors.Is(err, callback.ErrNotAllowed) && !strings.HasPrefix(err.Error(), "resolve callback host ") {
				t.Fatalf("Check(%q): undocumented error %v", raw, err)
			}
			return
		}
		if u == nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
			t.Fatalf("Check(%q) accepted %#v: not an absolute URL with a host", raw, u)
		}
		if u.Scheme != "https" && !(allowHTTP && u.Scheme == "http") {
			t.Fatalf("Check(%q) accepted scheme %q (allowHTTP %v)", raw, u.Scheme, allowHTTP)
		}
		if u.User != nil || u.Fragment != "" {
			t.Fatalf("Check(%q) accepted credentials or a fragment: %#v", raw, u)
		}
		host := u.Hostname()
		if !allowedHost(host) {
			t.Fatalf("Check(%q) accepted host %q, not in %q", raw, host, fuzzHosts)
		}
		// The deliverer requests u.String(): it must name the host checked.
		again, err := url.Parse(u.String())
		if err != nil || again.Scheme != u.Scheme || again.Hostname() != host || again.User != nil {
			t.Fatalf("Check(%q) accepted %q, which reads back as %#v (%v)", raw, u.String(), again, err)
		}
		var reached []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			if len(r.asked) != 0 {
				t.Fatalf("Check(%q) resolved the address %s", raw, host)
			}
			reached = []netip.Addr{a}
		} else {
			if len(r.asked) != 1 || !strings.EqualFold(r.asked[0], host) || r.err != nil || len(r.addrs) == 0 {
				t.Fatalf("Check(%q) accepted host %q after the lookups %q gave %v, %v", raw, host, r.asked, r.addrs, r.err)
			}
			reached = r.addrs
		}
		if !allowPrivate {
			for _, a := range reached {
				if !callback.Public(a) {
					t.Fatalf("Check(%q) accepted the non-public address %s", raw, a)
				}
			}
		}
	})
}
