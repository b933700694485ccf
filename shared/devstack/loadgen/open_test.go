package loadgen_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/shared/devstack/loadgen"
)

// chatServer answers wait-mode questions as the producer does, opening a
// dialog for a question without one, and records what it was asked.
type chatServer struct {
	mu      sync.Mutex
	texts   map[string]int
	turns   map[string]int  // questions per dialog
	busy    map[string]bool // dialogs with a question under way
	dialogs int
	asked   int
	errs    []string
}

func (s *chatServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var q struct {
		Text     string `json:"text"`
		DialogID string `json:"dialog_id"`
		Mode     string `json:"mode"`
	}
	if json.NewDecoder(r.Body).Decode(&q) != nil || q.Text == "" || q.Mode != "wait" {
		problem(w, http.StatusBadRequest, "not a wait-mode chat request")
		return
	}
	s.mu.Lock()
	s.asked++
	s.texts[q.Text]++
	id := q.DialogID
	switch {
	case id == "":
		s.dialogs++
		id = fmt.Sprintf("d%d", s.dialogs)
	case s.turns[id] == 0:
		s.errs = append(s.errs, "unknown dialog "+id)
	}
	if s.busy[id] {
		s.errs = append(s.errs, "two questions under way in "+id)
	}
	s.busy[id] = true
	s.turns[id]++
	s.mu.Unlock()
	time.Sleep(time.Millisecond) // a question takes a while: another may come meanwhile
	s.mu.Lock()
	s.busy[id] = false
	s.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]string{"dialog_id": id, "status": "done", "answer": "yes"})
}

// TestOpenLoop runs 200 requests/s for a 100 ms warm-up and a 500 ms
// window, twice: exactly the 100 requests due in the window are counted,
// the window is reported before its first request and after its last,
// every question of both runs is distinct, and dialogs open without an id and go on under the
// one their first answer names, one question at a time, Turns questions
// each.
func TestOpenLoop(t *testing.T) {
	s := &chatServer{texts: map[string]int{}, turns: map[string]int{}, busy: map[string]bool{}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := httpConfig(srv.URL)
	c.Rate, c.Warmup, c.Duration = 200, 100*time.Millisecond, 500*time.Millisecond
	c.Users, c.Turns = 10, 3
	var window []string
	askedAt := map[bool]int{}
	c.OnWindow = func(begin bool) {
		window = append(window, fmt.Sprint(begin))
		s.mu.Lock()
		askedAt[begin] = s.asked
		s.mu.Unlock()
	}
	var answers atomic.Int64
	c.OnAnswer = func(from time.Time, took time.Duration, status int) {
		if status == http.StatusOK && !from.IsZero() && took > 0 {
			answers.Add(1)
		}
	}
	res, err := loadgen.Run(t.Context(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := answers.Load(); n != 120 {
		t.Errorf("OnAnswer called for %d answers, want 120 (the warm-up's too)", n)
	}
	// A second run asks questions of its own too: a cache that kept the
	// first run's answers must not find them.
	c2 := c
	c2.OnWindow, c2.OnAnswer = nil, nil
	if _, err := loadgen.Run(t.Context(), c2, nil); err != nil {
		t.Fatal(err)
	}
	if res.Sent != 100 || res.Answered != 100 || res.Errors+res.Refused+res.Missed != 0 {
		t.Errorf("sent %d, answered %d, errors %d, refused %d, missed %d; want 100 sent and answered", res.Sent, res.Answered, res.Errors, res.Refused, res.Missed)
	}
	if res.Rate != 200 || res.Seconds != 0.5 || res.PerSecond != 200 {
		t.Errorf("rate %g, seconds %g, answered/s %g; want 200, 0.5, 200", res.Rate, res.Seconds, res.PerSecond)
	}
	if strings.Join(window, ",") != "true,false" {
		t.Errorf("OnWindow called with %v, want begin then end", window)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.asked != 240 || askedAt[false] != 120 {
		t.Errorf("server asked %d questions, %d of them by the first window's end; want 120 a run (20 of the warm-up)", s.asked, askedAt[false])
	}
	if len(s.texts) != s.asked {
		t.Errorf("%d distinct questions of %d in two runs", len(s.texts), s.asked)
	}
	for d, n := range s.turns {
		if n > c.Turns {
			t.Errorf("dialog %s has %d questions, want at most %d", d, n, c.Turns)
		}
	}
	// Every dialog but each user's last has all its turns.
	if lo, hi := 240/c.Turns, 240/c.Turns+2*res.Users; s.dialogs < lo || s.dialogs > hi {
		t.Errorf("%d dialogs for 240 questions of %d turns by %d users a run, want %d to %d", s.dialogs, c.Turns, res.Users, lo, hi)
	}
	for _, e := range s.errs {
		t.Error(e)
	}
}
