package tests

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"encoding/json"

	"sluice/producer"
	"sluice/shared/callback"
	"sluice/shared/envelope"
)

// TestCallbackMode: a callback-mode request is accepted with 202 and its
// done body is POSTed to the callback URL, signed; a URL outside the
// allowlist is refused at the door.
func TestCallbackMode(t *testing.T) {
	const secret = "callback-test-secret-0123456789"
	type delivery struct {
		body      []byte
		signature string
		requestID string
	}
	got := make(chan delivery, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- delivery{b, r.Header.Get(callback.HeaderSignature), r.Header.Get(callback.HeaderRequestID)}
	}))
	defer recv.Close()

	cb := callback.DefaultConfig()
	cb.Policy = callback.Policy{AllowedHosts: []string{"127.0.0.1"}, AllowPrivate: true, AllowHTTP: true}
	cb.Secret = secret
	s := newStack(t, backends()[0], stackOptions{partitions: 3, callbacks: &cb})
	s.addConsumer(testConsumerConfig())
	pcfg := testProducerConfig()
	pcfg.Callbacks = cb.Policy
	p := s.addProducer(pcfg)
	c := s.client(p.url, "shop-1", "carol")

	var q producer.QueuedBody
	code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "退款多久到账", "mode": "callback", "callback_url": recv.URL + "/hook"}, &q)
	if code != http.StatusAccepted || q.PollURL == "" {
		t.Fatalf("callback mode: %d %+v", code, q)
	}
	var d delivery
	select {
	case d = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("no callback within 30s")
	}
	if err := callback.Verify([]byte(secret), d.signature, d.body, time.Now(), time.Minute); err != nil {
		t.Fatalf("signature: %v", err)
	}
	var done envelope.Done
	if err := json.Unmarshal(d.body, &done); err != nil {
		t.Fatal(err)
	}
	if d.requestID != q.RequestID || done.RequestID != q.RequestID || done.Status != envelope.StatusDone || done.Answer == "" || done.DialogID != q.DialogID {
		t.Fatalf("callback %+v (header request id %q), want the done body of %s", done, d.requestID, q.RequestID)
	}

	for _, bad := range []string{"http://10.0.0.1/hook", "https://evil.example/hook", "not a url"} {
		if code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "q", "mode": "callback", "callback_url": bad}, nil); code != http.StatusBadRequest {
			t.Errorf("callback_url %q: %d, want 400", bad, code)
		}
	}
}
