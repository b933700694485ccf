package callback_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/shared/callback"
)

func TestPolicyCheck(t *testing.T) {
	p := callback.Policy{AllowedHosts: []string{"hooks.shop.example", "*.partner.example", "127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254", "[::1]", "::1"}}
	ctx := context.Background()
	refused := map[string]string{
		"http://hooks.shop.example/cb":       "scheme",
		"https://evil.example/cb":            "allowlist",
		"https://partner.example.evil.io/cb": "allowlist",
		"https://.partner.example/cb":        "allowlist",
		"https://hoo\u212As.shop.example/cb": "not ASCII",
		"https://127.0.0.1/cb":               "non-public",
		"https://10.1.2.3/cb":                "non-public",
		"https://169.254.169.254/latest":     "non-public",
		"https://[::1]/cb":                   "non-public",
		"https://localhost/cb":               "non-public",
		"https://user:pw@hooks.shop.example": "credentials",
		"/relative":                          "absolute",
		"ftp://hooks.shop.example/":          "scheme",
	}
	for u, why := range refused {
		if _, err := p.Check(ctx, u); !errors.Is(err, callback.ErrNotAllowed) || !strings.Contains(err.Error(), why) {
			t.Errorf("Check(%q) = %v, want a refusal mentioning %q", u, err, why)
		}
	}
	p.AllowPrivate, p.AllowHTTP = true, true
	if _, err := p.Check(ctx, "http://127.0.0.1:8080/cb"); err != nil {
		t.Errorf("loopback with AllowPrivate and AllowHTTP: %v", err)
	}
	if (callback.Policy{}).Enabled() {
		t.Error("an empty allowlist enables callbacks")
	}
}

func TestPublic(t *testing.T) {
	for s, want := range map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.5.4": false, "192.168.1.1": false, "169.254.1.1": false,
		"100.64.0.1": false, "0.0.0.0": false, "::1": false, "fc00::1": false, "fe80::1": false, "::ffff:127.0.0.1": false,
		"224.0.0.1": false, "255.255.255.255": false,
	} {
		if got := callback.Public(netip.MustParseAddr(s)); got != want {
			t.Errorf("Public(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestSignVerify(t *testing.T) {
	secret := []byte("callback-secret-0123456789")
	body := []byte(`{"request_id":"r1","status":"done"}`)
	now := time.Unix(1_800_000_000, 0)
	h := callback.Sign(secret, now, body)
	if !strings.HasPrefix(h, "t=1800000000,v1=") {
		t.Fatalf("header %q", h)
	}
	if err := callback.Verify(secret, h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	for name, check := range map[string]error{
		"tampered body": callback.Verify(secret, h, []byte(`{"request_id":"r2"}`), now, 5*time.Minute),
		"wrong secret":  callback.Verify([]byte("another-secret-0123456789"), h, body, now, 5*time.Minute),
		"too old":       callback.Verify(secret, h, body, now.Add(10*time.Minute), 5*time.Minute),
		"malformed":     callback.Verify(secret, "v1=abc", body, now, 5*time.Minute),
	} {
		if check == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// TestDeliverRetriesAndSigns: a receiver that fails twice gets the body a
// third time, signed, with the request id; a 4xx is not retried.
func TestDeliverRetriesAndSigns(t *testing.T) {
	secret := "callback-secret-0123456789"
	var calls atomic.Int32
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		err := callback.Verify([]byte(secret), r.Header.Get(callback.HeaderSignature), body, time.Now(), time.Minute)
		if err == nil && r.Header.Get(callback.HeaderRequestID) != "r1" {
			err = errors.New("no request id header")
		}
		got <- err
	}))
	defer srv.Close()
	cfg := callback.DefaultConfig()
	cfg.Policy = callback.Policy{AllowedHosts: []string{"127.0.0.1"}, AllowPrivate: true, AllowHTTP: true}
	cfg.Secret, cfg.Backoff = secret, 10*time.Millisecond
	d, err := callback.NewDeliverer(cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Deliver(context.Background(), srv.URL+"/cb", "r1", []byte(`{"status":"done"}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("receiver: %v", err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d attempts, want 3", calls.Load())
	}

	var bad atomic.Int32
	srv4 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		bad.Add(1)
		w.WriteHeader(http.StatusGone)
	}))
	defer srv4.Close()
	if err := d.Deliver(context.Background(), srv4.URL, "r2", []byte(`{}`)); err == nil || bad.Load() != 1 {
		t.Fatalf("410: err %v after %d attempts, want one attempt and an error", err, bad.Load())
	}
}

// TestDeliverRefusesPrivateAtConnect: without AllowPrivate the dial itself
// refuses a non-public address, whatever the name resolved to before.
func TestDeliverRefusesPrivateAtConnect(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("reached") }))
	defer srv.Close()
	cfg := callback.DefaultConfig()
	cfg.Policy = callback.Policy{AllowedHosts: []string{"127.0.0.1"}, AllowHTTP: true}
	cfg.Secret = "callback-secret-0123456789"
	d, err := callback.NewDeliverer(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Deliver(context.Background(), srv.URL, "r1", []byte(`{}`)); !errors.Is(err, callback.ErrNotAllowed) {
		t.Fatalf("delivery to loopback: %v, want ErrNotAllowed", err)
	}
}
