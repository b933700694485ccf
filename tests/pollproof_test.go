package tests

import (
	"net/http"
	"strings"
	"testing"

	"sluice/producer"
	"sluice/shared/devstack/stacktest"
)

// TestPollAfterRedisLostMarker: a poll of an accepted request whose queued
// marker Redis lost (a restart without persistence) answers 202, not 404:
// the poll URL proves the request was accepted for the caller. Another
// user polling the same URL, or a URL without the proof, still gets 404.
func TestPollAfterRedisLostMarker(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 2})
	p := s.addProducer(testProducerConfig()) // no consumer: the request stays queued
	alice := s.client(p.url, "shop-1", "alice")
	var q producer.QueuedBody
	if code, _ := alice.do(http.MethodPost, "/v1/chat", map[string]any{"text": "where is my parcel?", "mode": "async"}, &q); code != http.StatusAccepted {
		t.Fatalf("async question: %d", code)
	}
	if !strings.Contains(q.PollURL, "~") {
		t.Fatalf("poll_url %q carries no proof", q.PollURL)
	}
	stacktest.DeleteKeys(s.redisAddr, s.prefix+":*") // Redis forgot everything

	if code, _ := alice.do(http.MethodGet, q.PollURL+"?wait_ms=0", nil, nil); code != http.StatusAccepted {
		t.Errorf("poll after the marker was lost: %d, want 202 (accepted, not answered yet)", code)
	}
	if code, _ := s.client(p.url, "shop-1", "mallory").do(http.MethodGet, q.PollURL+"?wait_ms=0", nil, nil); code != http.StatusNotFound {
		t.Errorf("another user's poll of the URL: %d, want 404", code)
	}
	bare, _, _ := strings.Cut(q.PollURL, "~")
	if code, _ := alice.do(http.MethodGet, bare+"?wait_ms=0", nil, nil); code != http.StatusNotFound {
		t.Errorf("poll without the proof after the marker was lost: %d, want 404", code)
	}
}
