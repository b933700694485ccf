package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/auth"
	"sluice/shared/envelope"
)

// questionsPerDialog is how many questions a user asks in one dialog
// before starting another: dialogs of several turns check that a dialog's
// context survives the pods coming and going.
const questionsPerDialog = 5

// labTenant is the tenant of every lab question.
const labTenant = "lab-shop"

// user is one shopper (or bot) of the lab: one question at a time, in the
// current dialog.
type user struct {
	id     string
	token  string
	dialog string
	asked  int // questions in the current dialog
}

// accepted is a question the pipeline took: it must be answered exactly
// once, in its dialog's history.
type accepted struct {
	user, dialog, requestID string
}

// traffic sends a profile's questions, open loop: HTTP wait-mode requests
// to the producer, and a share straight to Kafka as bots do. Every question
// goes to a user that is not waiting for an answer (a new one when all are),
// so a dialog has at most one question under way.
type traffic struct {
	api     string
	secret  string
	cl      *http.Client
	kafka   *kgo.Client // nil without bots
	topic   string      // requests topic, for bots
	replyTo string      // the bots' reply topic
	wait    time.Duration
	tl      *timeline

	mu       sync.Mutex
	idle     []*user
	users    int
	accepted []accepted
	errs     map[string]int // first errors, by text

	offered, refused, failed atomic.Int64
	wg                       sync.WaitGroup
}

// take returns a user with no question under way: the one idle longest,
// so that the questions spread over many dialogs (and partitions) as a
// storefront's do, rather than a few users asking again and again.
func (tr *traffic) take(bot bool) (*user, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.idle) > 0 {
		u := tr.idle[0]
		tr.idle = tr.idle[1:]
		return u, nil
	}
	tr.users++
	u := &user{id: fmt.Sprintf("shopper-%d", tr.users)}
	if bot {
		u.id = fmt.Sprintf("bot-%d", tr.users)
	}
	tok, err := auth.Mint(tr.secret, labTenant, u.id, 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	u.token = tok
	return u, nil
}

func (tr *traffic) release(u *user) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.idle = append(tr.idle, u)
}

func (tr *traffic) accept(a accepted) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.accepted = append(tr.accepted, a)
}

func (tr *traffic) fail(text string) {
	tr.failed.Add(1)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.errs) < 10 {
		tr.errs[text]++
	}
}

// ask sends one question. It returns once the question was refused,
// failed, or answered (HTTP) or produced (bot); the caller's WaitGroup
// tracks it.
func (tr *traffic) ask(ctx context.Context, n int64, bot bool) {
	defer tr.wg.Done()
	tr.offered.Add(1)
	tr.tl.offer(time.Now())
	u, err := tr.take(bot)
	if err != nil {
		tr.fail(err.Error())
		return
	}
	if u.dialog == "" || u.asked >= questionsPerDialog {
		u.dialog, u.asked = envelope.NewDialogID(), 0
	}
	u.asked++
	text := fmt.Sprintf("订单 %d 什么时候发货？", n)
	if bot {
		tr.produce(ctx, u, text)
	} else {
		tr.post(ctx, u, text)
	}
	tr.release(u)
}

// produce writes a question to the requests topic as a bot that speaks
// Kafka does (docs/kafka.md), the reply to the bots' topic.
func (tr *traffic) produce(ctx context.Context, u *user, text string) {
	now := time.Now().UTC()
	req := envelope.Request{
		V: envelope.Version, RequestID: newRequestID(), Tenant: labTenant, User: u.id, DialogID: u.dialog,
		Text: text, CreatedAt: now, Deadline: now.Add(time.Minute),
		Reply: envelope.ReplyTo{Topic: tr.replyTo, Partition: envelope.AnyPartition},
	}
	b, err := json.Marshal(req)
	if err != nil {
		tr.fail(err.Error())
		return
	}
	rec := &kgo.Record{Topic: tr.topic, Key: []byte(req.Key()), Value: b}
	if err := tr.kafka.ProduceSync(ctx, rec).FirstErr(); err != nil {
		tr.fail("produce: " + err.Error())
		return
	}
	tr.accept(accepted{user: u.id, dialog: u.dialog, requestID: req.RequestID})
}

// post asks the producer in wait mode and, when the wait runs out, polls
// until the answer is there.
func (tr *traffic) post(ctx context.Context, u *user, text string) {
	body, _ := json.Marshal(map[string]any{"text": text, "dialog_id": u.dialog, "wait_ms": tr.wait.Milliseconds()})
	code, raw, err := tr.do(ctx, http.MethodPost, tr.api+"/v1/chat", u.token, body)
	if err != nil {
		tr.fail(err.Error())
		return
	}
	switch code {
	case http.StatusOK, http.StatusAccepted:
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		tr.refused.Add(1)
		tr.tl.refuse(time.Now())
		u.asked-- // not asked: the dialog goes on without it
		return
	default:
		tr.fail(fmt.Sprintf("POST /v1/chat: %d %s", code, bytes.TrimSpace(raw)))
		return
	}
	var r struct {
		RequestID string `json:"request_id"`
		Status    string `json:"status"`
		PollURL   string `json:"poll_url"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.RequestID == "" {
		tr.fail(fmt.Sprintf("POST /v1/chat: %d with an undecodable body %q", code, raw))
		return
	}
	tr.accept(accepted{user: u.id, dialog: u.dialog, requestID: r.RequestID})
	for code == http.StatusAccepted && ctx.Err() == nil {
		code, raw, err = tr.do(ctx, http.MethodGet, tr.api+r.PollURL+fmt.Sprintf("?wait_ms=%d", tr.wait.Milliseconds()), u.token, nil)
		if err != nil {
			tr.fail(err.Error())
			return
		}
		if code != http.StatusOK && code != http.StatusAccepted {
			tr.fail(fmt.Sprintf("GET poll_url: %d %s", code, bytes.TrimSpace(raw)))
			return
		}
	}
}

func (tr *traffic) do(ctx context.Context, method, url, token string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := tr.cl.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// run sends the profile's questions from start until its end or ctx's,
// open loop: question k goes out when the profile's integral reaches k,
// whatever the answers do. It returns once every question was sent; the
// answers are awaited with tr.wg.
func (tr *traffic) run(ctx context.Context, p Profile, start time.Time) {
	const tick = 5 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	var due, botDue float64
	var n int64
	last := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			el := now.Sub(start).Seconds()
			if el >= p.Duration() {
				return
			}
			due += p.RateAt(el) * (el - last)
			last = el
			for due >= 1 {
				due--
				n++
				bot := false
				if p.BotShare > 0 && tr.kafka != nil {
					botDue += p.BotShare
					if botDue >= 1 {
						botDue--
						bot = true
					}
				}
				tr.wg.Add(1)
				go tr.ask(ctx, n, bot)
			}
		}
	}
}

// newRequestID returns a UUIDv7, as the producer gives: its time is the
// request's creation, from which the queue wait is read.
func newRequestID() string { return uuid.Must(uuid.NewV7()).String() }
