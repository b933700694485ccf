// Package callback delivers answers to a client's callback URL: the policy
// that decides which URLs may be called (checked at the door and again at
// every connection, against the resolved IP, so DNS rebinding cannot reach
// an internal address), the signature, and delivery with bounded retries.
//
// A delivery POSTs the JSON body with the headers
//
//	Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//	Sluice-Request-Id: <request id>
//
// A receiver recomputes the HMAC with the shared secret, compares it in
// constant time and rejects timestamps older than a few minutes.
//
// Metrics (on the registerer given to NewDeliverer): see docs/metrics.md,
// generated from the registries by tests/metrics_doc_test.go.
package callback

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"sluice/shared/backoff"
	"sluice/shared/metric"
	"sluice/shared/settings"
)

// Header names of a delivery.
const (
	HeaderSignature = "Sluice-Signature"
	HeaderRequestID = "Sluice-Request-Id"
)

// ErrNotAllowed wraps every refusal of a URL by the policy.
var ErrNotAllowed = errors.New("callback URL not allowed")

// Policy decides which callback URLs may be called.
type Policy struct {
	// AllowedHosts are host names, exact ("hooks.shop.example") or a suffix
	// pattern ("*.shop.example"). Empty: no callback is allowed.
	AllowedHosts []string
	// AllowPrivate lets callbacks reach loopback, private, link-local and
	// other non-public addresses (tests, on-premises receivers).
	AllowPrivate bool
	// AllowHTTP permits plain http URLs; otherwise only https.
	AllowHTTP bool
	// Resolver looks up the addresses of a URL's host name; nil means
	// net.DefaultResolver. Tests set it to check the policy without DNS.
	Resolver Resolver
}

// Resolver resolves host names; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// Enabled reports whether any callback can be allowed.
func (p Policy) Enabled() bool { return len(p.AllowedHosts) > 0 }

// Check parses raw and refuses it unless its scheme and host are allowed and
// the host is an address, or a name that resolves (through Resolver) to at
// least one, every one public (or AllowPrivate). Errors wrap ErrNotAllowed,
// except resolution failures.
func (p Policy) Check(ctx context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%w: %q is not an absolute URL without credentials or fragment", ErrNotAllowed, raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && p.AllowHTTP:
	case p.AllowHTTP:
		return nil, fmt.Errorf("%w: scheme %q (http or https required)", ErrNotAllowed, u.Scheme)
	default:
		return nil, fmt.Errorf("%w: scheme %q (https required)", ErrNotAllowed, u.Scheme)
	}
	host := u.Hostname()
	for i := range len(host) {
		if host[i] >= utf8.RuneSelf {
			// A host name on the wire is ASCII (an IDN in its xn-- form).
			// Unicode case mapping would match names DNS tells apart:
			// "K" (the Kelvin sign) lowers to "k".
			return nil, fmt.Errorf("%w: host %q is not ASCII", ErrNotAllowed, host)
		}
	}
	host = strings.ToLower(host)
	if !p.hostAllowed(host) {
		return nil, fmt.Errorf("%w: host %q is not in the allowlist", ErrNotAllowed, host)
	}
	addrs, err := p.resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve callback host %q: %w", host, err)
	}
	if len(addrs) == 0 {
		// A resolver that finds nothing without an error leaves nothing
		// checked: refuse rather than let the dial resolve on its own.
		return nil, fmt.Errorf("resolve callback host %q: no address", host)
	}
	for _, a := range addrs {
		if !p.AllowPrivate && !Public(a) {
			return nil, fmt.Errorf("%w: host %q resolves to the non-public address %s", ErrNotAllowed, host, a)
		}
	}
	return u, nil
}

func (p Policy) hostAllowed(host string) bool {
	for _, h := range p.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			// At least one label in front: ".shop.example" is no subdomain.
			if label, ok := strings.CutSuffix(host, "."+suffix); ok && label != "" {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

func (p Policy) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	var r Resolver = net.DefaultResolver
	if p.Resolver != nil {
		r = p.Resolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

// Public reports whether a is a public unicast address: not loopback,
// private (RFC 1918, fc00::/7), link-local, unspecified, multicast, CGNAT
// (100.64.0.0/10) or otherwise reserved.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range reserved {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
}

// Sign returns the Sluice-Signature value of body at time t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a Sluice-Signature header against body, refusing signatures
// older than maxAge. Receivers in Go can use it as is.
func Verify(secret []byte, header string, body []byte, now time.Time, maxAge time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("malformed signature header")
	}
	if age := now.Sub(time.Unix(sec, 0)); age > maxAge || age < -maxAge {
		return errors.New("signature timestamp out of range")
	}
	want := Sign(secret, time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return errors.New("signature mismatch")
	}
	return nil
}

// Config holds the deliverer's settings.
type Config struct {
	Policy Policy
	// Secret signs every delivery.
	Secret string
	// Attempts bounds the tries of one delivery. Default 5.
	Attempts int
	// Backoff is the pause after the first failure; it grows linearly, with
	// jitter. Default 500 ms.
	Backoff time.Duration
	// Timeout bounds one attempt. Default 5 s.
	Timeout time.Duration
}

// DefaultConfig returns the defaults (no host allowed).
func DefaultConfig() Config {
	return Config{Attempts: 5, Backoff: 500 * time.Millisecond, Timeout: 5 * time.Second}
}

// Deliverer POSTs signed bodies to callback URLs.
type Deliverer struct {
	cfg        Config
	hc         *http.Client
	deliveries metric.Children[prometheus.Counter] // by outcome
	attempts   metric.Children[prometheus.Counter] // by result
}

// NewDeliverer returns a deliverer. It returns an error when callbacks are
// enabled without a secret, or the metrics cannot be registered.
func NewDeliverer(cfg Config, reg prometheus.Registerer) (*Deliverer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := metric.NewRegisterer(reg)
	f := promauto.With(r)
	d := &Deliverer{cfg: cfg,
		deliveries: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_callback_deliveries_total", Help: "Callback deliveries by outcome.",
		}, []string{"outcome"}), "delivered", "gave_up", "refused"),
		attempts: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_callback_attempts_total", Help: "Callback attempts by result.",
		}, []string{"result"}), "ok", "http_error", "network_error"),
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("register callback metrics: %w", err)
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: func(_, address string, _ syscall.RawConn) error {
		// Checked again at connect time: the name may resolve elsewhere now.
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		if !cfg.Policy.AllowPrivate && !Public(ap.Addr()) {
			return fmt.Errorf("%w: connection to non-public address %s", ErrNotAllowed, ap.Addr())
		}
		return nil
	}}
	d.hc = &http.Client{
		Timeout:       cfg.Timeout,
		Transport:     &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 16, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

// Deliver POSTs body to raw, signed, retrying failures (network errors,
// 408, 429, 5xx) with backoff up to the attempt bound or until ctx ends. A
// 2xx is success; any other 4xx is final. It returns nil when delivered.
func (d *Deliverer) Deliver(ctx context.Context, raw, requestID string, body []byte) error {
	u, err := d.cfg.Policy.Check(ctx, raw)
	if err != nil {
		d.deliveries.With("refused").Inc()
		return err
	}
	var last error
	for attempt := 1; attempt <= d.cfg.Attempts; attempt++ {
		retry, err := d.attempt(ctx, u.String(), requestID, body)
		if err == nil {
			d.deliveries.With("delivered").Inc()
			return nil
		}
		last = err
		if !retry || attempt == d.cfg.Attempts || ctx.Err() != nil {
			break
		}
		_ = backoff.Sleep(ctx, backoff.Linear(attempt, d.cfg.Backoff, 0))
	}
	d.deliveries.With("gave_up").Inc()
	return fmt.Errorf("callback %s: %w", u.Host, last)
}

func (d *Deliverer) attempt(ctx context.Context, u, requestID string, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice-callback/1")
	req.Header.Set(HeaderSignature, Sign([]byte(d.cfg.Secret), time.Now(), body))
	req.Header.Set(HeaderRequestID, requestID)
	resp, err := d.hc.Do(req)
	if err != nil {
		d.attempts.With("network_error").Inc()
		return !errors.Is(err, ErrNotAllowed), err
	}
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		d.attempts.With("ok").Inc()
		return false, nil
	}
	d.attempts.With("http_error").Inc()
	retry = resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return retry, fmt.Errorf("status %d", resp.StatusCode)
}

// RegisterFlags registers c's settings on fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(settings.List{P: &c.Policy.AllowedHosts}, "callback-hosts", "hosts callback URLs may name, comma-separated, exact or *.suffix; empty disables mode callback")
	fs.BoolVar(&c.Policy.AllowPrivate, "callback-allow-private", c.Policy.AllowPrivate, "let callbacks reach loopback, private and link-local addresses")
	fs.BoolVar(&c.Policy.AllowHTTP, "callback-allow-http", c.Policy.AllowHTTP, "allow plain http callback URLs (default https only)")
	fs.StringVar(&c.Secret, "callback-secret", c.Secret, "HMAC-SHA256 secret that signs callbacks (Sluice-Signature), at least 16 bytes")
	fs.IntVar(&c.Attempts, "callback-attempts", c.Attempts, "tries of one callback delivery")
	fs.DurationVar(&c.Timeout, "callback-timeout", c.Timeout, "bound of one callback attempt")
	fs.DurationVar(&c.Backoff, "callback-backoff", c.Backoff, "pause after the first failed attempt; it grows linearly, with jitter")
}

// Validate reports every setting out of range, each named by its flag. The
// secret is needed only when callbacks are enabled.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(!c.Policy.Enabled() || len(c.Secret) >= 16, "callback-secret", "must be at least 16 bytes when callback hosts are allowed")
	p.Check(c.Attempts >= 1, "callback-attempts", "must be at least 1")
	p.Check(c.Backoff > 0, "callback-backoff", "must be positive")
	p.Check(c.Timeout > 0, "callback-timeout", "must be positive")
	return p.Err()
}
