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

	cb := loopbackCallbacks()
	cb.Secret = secret
	c := callbackStack(t, cb, "carol")

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

// TestStuckCallbackHoldsNothing: a callback receiver that hangs holds
// neither its dialog nor the consumer: the dialog's next question is
// answered at once while the callback is still being tried, and the
// callback arrives once the receiver answers again.
func TestStuckCallbackHoldsNothing(t *testing.T) {
	release := make(chan struct{})
	delivered := make(chan string, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			delivered <- r.Header.Get(callback.HeaderRequestID)
		case <-r.Context().Done(): // the deliverer's timeout: it tries again
		}
	}))
	defer recv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	cb := loopbackCallbacks()
	cb.Timeout, cb.Backoff, cb.Attempts = 500*time.Millisecond, 50*time.Millisecond, 100
	c := callbackStack(t, cb, "dave")

	var q producer.QueuedBody
	if code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "发票开好了吗", "mode": "callback", "callback_url": recv.URL + "/hook"}, &q); code != http.StatusAccepted {
		t.Fatalf("callback mode: %d", code)
	}
	// The same dialog goes on while the receiver hangs.
	var done producer.DoneBody
	// A held dialog would answer only after the release below: its wait
	// would run out to 202, however long.
	if code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "那运费呢", "dialog_id": q.DialogID, "wait_ms": 20000}, &done); code != http.StatusOK {
		t.Fatalf("the dialog's next question while its callback hangs: %d %+v, want 200 within its wait", code, done)
	}
	select {
	case id := <-delivered:
		t.Fatalf("callback of %s delivered before the receiver was released", id)
	default:
	}
	close(release)
	select {
	case id := <-delivered:
		if id != q.RequestID {
			t.Fatalf("callback for %q, want %s", id, q.RequestID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no callback within 30s of the receiver's recovery")
	}
}

// loopbackCallbacks is a callback configuration that lets the consumers
// reach test receivers on 127.0.0.1.
func loopbackCallbacks() callback.Config {
	cb := callback.DefaultConfig()
	cb.Policy = callback.Policy{AllowedHosts: []string{"127.0.0.1"}, AllowPrivate: true, AllowHTTP: true}
	cb.Secret = "callback-test-secret-0123456789"
	return cb
}

// callbackStack runs a consumer delivering callbacks with cb and a producer
// allowing them, and returns a client of user on shop-1.
func callbackStack(t *testing.T, cb callback.Config, user string) *client {
	s := newStack(t, backends()[0], stackOptions{partitions: 3, callbacks: &cb})
	s.addConsumer(testConsumerConfig())
	pcfg := testProducerConfig()
	pcfg.Callbacks = cb.Policy
	p := s.addProducer(pcfg)
	return s.client(p.url, "shop-1", user)
}
