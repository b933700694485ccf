package producer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"sluice/producer"
	"sluice/shared/callback"
	"sluice/shared/envelope"
)

// fuzzResolver answers callback host names without DNS: "nx." names do not
// exist, "internal." names are private, every other name is public.
type fuzzResolver struct{}

func (fuzzResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	switch {
	case strings.HasPrefix(host, "nx."):
		return nil, errors.New("no such host")
	case strings.HasPrefix(host, "internal."):
		return []netip.Addr{netip.MustParseAddr("10.0.0.1")}, nil
	}
	return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
}

// chatSchema is the POST /v1/chat body as the API documents it (DESIGN.md,
// docs/openapi.yaml), written apart from the handler's decoder: the oracle
// of FuzzPostChat.
type chatSchema struct {
	maxChars  int
	waitMax   time.Duration
	callbacks callback.Policy
}

var dialogIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// valid reports whether body is one JSON object of the documented fields,
// with the semantics the API inherits from encoding/json: names match
// case-insensitively, the last of repeated names wins, and null leaves a
// field as it was (wait_ms: unset). It returns the dialog_id a valid body
// names ("": a new dialog).
func (sc chatSchema) valid(body []byte) (string, bool) {
	if !utf8.Valid(body) {
		return "", false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	var text, dialogID, mode, callbackURL, lane string
	var waitMS, deadlineMS *int64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", false
		}
		null := string(raw) == "null"
		str := func(dst *string) bool { return null || json.Unmarshal(raw, dst) == nil }
		ok := false
		switch {
		case strings.EqualFold(key, "text"):
			ok = str(&text)
		case strings.EqualFold(key, "dialog_id"):
			ok = str(&dialogID)
		case strings.EqualFold(key, "mode"):
			ok = str(&mode)
		case strings.EqualFold(key, "callback_url"):
			ok = str(&callbackURL)
		case strings.EqualFold(key, "lane"):
			ok = str(&lane)
		case strings.EqualFold(key, "wait_ms"):
			var n int64
			ok = null || json.Unmarshal(raw, &n) == nil
			if waitMS = &n; null {
				waitMS = nil
			}
		case strings.EqualFold(key, "deadline_ms"):
			var n int64
			ok = null || json.Unmarshal(raw, &n) == nil
			if deadlineMS = &n; null {
				deadlineMS = nil
			}
		}
		if !ok {
			return "", false
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return "", false
	}
	if _, err := dec.Token(); err != io.EOF { // only white space after the object
		return "", false
	}

	if strings.TrimSpace(text) == "" || utf8.RuneCountInString(text) > sc.maxChars {
		return "", false
	}
	if dialogID != "" && !dialogIDPattern.MatchString(dialogID) {
		return "", false
	}
	if waitMS != nil && (*waitMS < 0 || *waitMS > sc.waitMax.Milliseconds()) {
		return "", false
	}
	if lane != "" && lane != envelope.LaneInteractive && lane != envelope.LaneBulk {
		return "", false
	}
	if deadlineMS != nil && *deadlineMS <= 0 {
		return "", false
	}
	switch mode {
	case "", producer.ModeWait, producer.ModeAsync:
		return dialogID, callbackURL == ""
	case producer.ModeCallback:
		if callbackURL == "" {
			return "", false
		}
		_, err := sc.callbacks.Check(context.Background(), callbackURL)
		return dialogID, err == nil
	}
	return "", false
}

// FuzzPostChat sends arbitrary bodies, under arbitrary Content-Types, to
// POST /v1/chat through the real handler, middleware included, of one
// producer on kfake and miniredis. Whatever the body, the answer is never a
// 5xx other than 503; every error is a complete problem+json; a body over
// the limit is 413; a body the documented schema calls invalid is 400; a
// valid one is 202 with its poll_url (or 503, overloaded). Waits are capped
// at 1 ms so that valid wait-mode bodies cost little.
func FuzzPostChat(f *testing.F) {
	const dlg = "0123456789abcdef0123456789abcdef"
	for _, s := range []struct{ ctype, body string }{
		{"application/json", `{"text":"hi","mode":"async"}`},
		{"application/json", `{"text":"hi","dialog_id":"` + dlg + `","mode":"wait","wait_ms":1}`},
		{"application/json", `{"text":"hi","wait_ms":0}`},
		{"application/x-www-form-urlencoded", `{"text":"一二三四五六七八九十","mode":"async"}`},
		{"", `{"text":"hi","mode":"callback","callback_url":"https://cb.shop.example/x"}`},
		{"", `{"text":"hi","mode":"callback","callback_url":"https://internal.hooks.example/x"}`},
		{"", `{"text":"hi","mode":"callback","callback_url":"https://nx.hooks.example/x"}`},
		{"", `{"text":"hi","mode":"async","callback_url":"https://cb.shop.example/x"}`},
		{"text/plain", `{"TEXT":"hi","Mode":"async","mode":null}`},
		{"application/json", `{"text":"hi","mode":"async","wait_ms":-1}`},
		{"application/json", `{"text":"hi","mode":"async","wait_ms":2}`},
		{"application/json", `{"text":"hi","mode":"async","wait_ms":1.0}`},
		{"application/json", `{"text":"hi","mode":"async"} `},
		{"application/json", `{"text":"hi","mode":"async"}{}`},
		{"application/json", `{"text":" \t","mode":"async"}`},
		{"application/json", `{"text":"hi","dialog_id":"0123456789ABCDEF0123456789ABCDEF"}`},
		{"application/json", "{\"text\":\"\xff\"}"},
		{"application/json", `{"text":"\ud800","mode":"async"}`},
		{"application/json", `{"text":"hi","txet":1}`},
		{"application/json", `null`},
		{"application/json", `[]`},
		{"application/json", ``},
		{"application/json", `{"text":"` + strings.Repeat("a", 1100) + `"}`},
		{"application/json", `{"text":"hi","mode":"async","lane":"bulk","deadline_ms":3600000}`},
		{"application/json", `{"text":"hi","LANE":"interactive","deadline_ms":1}`},
		{"application/json", `{"text":"hi","mode":"async","lane":"Bulk"}`},
		{"application/json", `{"text":"hi","mode":"async","deadline_ms":0}`},
		{"application/json", `{"text":"hi","mode":"async","deadline_ms":1e3}`},
	} {
		f.Add(s.ctype, []byte(s.body))
	}

	policy := callback.Policy{AllowedHosts: []string{"cb.shop.example", "*.hooks.example"}, Resolver: fuzzResolver{}}
	var limit int64
	var schema chatSchema
	h := mustStart(f, func(c *producer.Config) {
		c.WaitDefault, c.WaitMax = 0, time.Millisecond
		c.Callbacks = policy
		// No consumer drains the requests: keep admission from refusing
		// every valid body once the backlog grows.
		c.AdmissionMinRate, c.MaxLag = 1e9, 1<<40
		limit = c.BodyLimit
		schema = chatSchema{maxChars: c.MaxTextChars, waitMax: c.WaitMax, callbacks: policy}
	})
	bearer := "Bearer " + token(f, "t1", "u1")
	handler := h.srv.Handler()

	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat", bytes.NewReader(body))
		req.Header.Set("Authorization", bearer)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		code := rec.Code

		if code >= 500 && code != http.StatusServiceUnavailable {
			t.Fatalf("status %d for %q: %s", code, body, rec.Body)
		}
		if code >= 400 {
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Fatalf("status %d with Content-Type %q for %q", code, ct, body)
			}
			var p producer.Problem
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatalf("status %d, problem %q: %v", code, rec.Body, err)
			}
			if p.Status != code || p.Title != http.StatusText(code) || !strings.HasPrefix(p.Type, "/problems/") || p.Detail == "" {
				t.Fatalf("status %d with the incomplete problem %+v for %q", code, p, body)
			}
		}

		dialogID, valid := schema.valid(body)
		switch {
		case int64(len(body)) > limit:
			if code != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d for a body of %d bytes over the limit of %d", code, len(body), limit)
			}
		case !valid:
			if code != http.StatusBadRequest {
				t.Fatalf("status %d for a body the schema refuses: %q\n%s", code, body, rec.Body)
			}
		case code == http.StatusServiceUnavailable:
		case code == http.StatusAccepted:
			var q producer.QueuedBody
			if err := json.Unmarshal(rec.Body.Bytes(), &q); err != nil {
				t.Fatalf("202 body %q: %v", rec.Body, err)
			}
			if q.Status != envelope.StatusQueued || q.RequestID == "" || !dialogIDPattern.MatchString(q.DialogID) ||
				q.PollURL != "/v1/chat/"+q.DialogID+"/"+q.RequestID || rec.Header().Get("Location") != q.PollURL {
				t.Fatalf("202 for %q with body %s, Location %q", body, rec.Body, rec.Header().Get("Location"))
			}
			if dialogID != "" && q.DialogID != dialogID {
				t.Fatalf("202 for %q names dialog %q", body, q.DialogID)
			}
		default:
			t.Fatalf("status %d for a valid body %q: %s", code, body, rec.Body)
		}
	})
}
