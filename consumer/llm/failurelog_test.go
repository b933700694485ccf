package llm_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// logLines returns the JSON log lines of c with message msg.
func logLines(t *testing.T, c *client, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(c.log.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestFailuresReachTheLog checks that a failing endpoint's cause is logged,
// and that a burst of failures gives one line per interval (10 s), not one
// per call.
func TestFailuresReachTheLog(t *testing.T) {
	s, url := serveScript(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"message":"The model does not exist","type":"invalid_request_error","code":"model_not_found"}}`))
	})
	cfg := fastConfig(url)
	cfg.BreakerFailures = 1000 // every request calls
	c := mustNew(t, cfg)

	start := time.Now()
	const requests = 20
	for range requests {
		if a, _ := answer(t, c, "hi", 5*time.Second); a.Source != "canned" {
			t.Fatalf("answer %+v from a dead endpoint, want canned", a)
		}
	}
	elapsed := time.Since(start)
	if s.Calls() != requests { // a 404 is not retried
		t.Fatalf("%d calls, want %d", s.Calls(), requests)
	}

	lines := logLines(t, c, "llm call failed")
	if most := 1 + int(elapsed/(10*time.Second)); len(lines) < 1 || len(lines) > most {
		t.Fatalf("%d failure lines for %d failures in %v, want 1..%d:\n%s", len(lines), requests, elapsed, most, c.log.String())
	}
	first := lines[0]
	for k, want := range map[string]any{
		"level": "WARN", "endpoint": "primary", "outcome": "error",
		"code": "model_not_found", "type": "invalid_request_error", "failures": float64(1),
	} {
		if first[k] != want {
			t.Errorf("first failure line: %s = %v, want %v (line %v)", k, first[k], want, first)
		}
	}
	if e, _ := first["err"].(string); !strings.Contains(e, "404") {
		t.Errorf("first failure line: err %q does not name the 404", e)
	}
}

// TestBreakerOpenLogsCause checks that the warning of a breaker opening
// names the failure that opened it.
func TestBreakerOpenLogsCause(t *testing.T) {
	_, url := serveScript(t, status(http.StatusServiceUnavailable))
	cfg := fastConfig(url)
	cfg.Attempts, cfg.BreakerFailures, cfg.BreakerFailureRatio = 1, 3, 0
	c := mustNew(t, cfg)
	for range 3 {
		answer(t, c, "hi", 5*time.Second)
	}
	if st := c.BreakerState("primary"); st != "open" {
		t.Fatalf("breaker %s after 3 failures, want open", st)
	}
	var opened map[string]any
	for _, l := range logLines(t, c, "llm circuit breaker") {
		if l["to"] == "open" {
			opened = l
		}
	}
	if opened == nil {
		t.Fatalf("no breaker-open line in the log:\n%s", c.log.String())
	}
	if opened["level"] != "WARN" || opened["endpoint"] != "primary" || opened["outcome"] != "error" {
		t.Errorf("breaker-open line %v, want a warning for primary with outcome error", opened)
	}
	if e, _ := opened["err"].(string); !strings.Contains(e, "503") {
		t.Errorf("breaker-open line: err %q does not name the 503", e)
	}
}
