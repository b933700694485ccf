// Package envelope defines Sluice's Kafka wire format: the chat.requests and
// chat.replies record values, their keys and their validation. It does no I/O.
//
// Records are JSON, UTF-8, versioned by the field "v". Unknown fields are
// ignored. A request that fails DecodeRequest belongs on the dead-letter topic
// with the error text in the header named by HeaderError.
package envelope

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Version is the only wire version this build reads and writes.
const Version = 1

// Record header names.
const (
	// HeaderError carries the reason a record was dead-lettered.
	HeaderError = "sluice-error"
	// HeaderTraceparent is the W3C trace context header, propagated when present.
	HeaderTraceparent = "traceparent"
)

// Reply statuses.
const (
	StatusDone    = "done"
	StatusExpired = "expired"
	// StatusQueued is used by the HTTP API only, never on the reply topic.
	StatusQueued = "queued"
)

// Answer sources, as reported in Reply.Source.
const (
	SourceLLM           = "llm"
	SourceFallbackModel = "fallback_model"
	SourceFAQ           = "faq"
	SourceCache         = "cache"
	SourceCanned        = "canned"
)

// AnyPartition in ReplyTo.Partition lets the replier pick the partition.
const AnyPartition int32 = -1

// Limits on identifiers and text. Tenant and user ids end up in record keys
// ("tenant/user/dialog") and Redis keys, so their alphabet excludes the
// separators used there.
const (
	MaxIDLen = 128
	// MaxTextBytes bounds a request's text on the wire; the HTTP API applies
	// its own, usually smaller, limit counted in characters.
	MaxTextBytes = 64 << 10
)

// Validation errors. DecodeRequest wraps them with the offending field.
var (
	ErrMissingField = errors.New("missing required field")
	ErrVersion      = errors.New("unsupported version")
	ErrInvalidField = errors.New("invalid field")
)

// NewDialogID returns a new random dialog id: 32 lowercase hex characters
// (128 bits from crypto/rand), which ValidDialogID accepts.
func NewDialogID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b[:])
}

// ValidDialogID reports whether id is 32 lowercase hex characters
// (^[0-9a-f]{32}$).
func ValidDialogID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := range len(id) {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidID reports whether s can be used as a tenant or user id: 1 to MaxIDLen
// bytes of ASCII letters, digits and ._@|+- (no '/', ':', '{' or '}', which
// delimit keys).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '@', c == '|', c == '+', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidTopic reports whether s is a legal Kafka topic name: 1 to 249 of
// [a-zA-Z0-9._-], and not "." or "..".
func ValidTopic(s string) bool {
	if len(s) == 0 || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Lanes of chat requests. A lane is the requests topic a request is put
// on, not a field of the envelope: the consumers start interactive requests
// first and give bulk ones what is left (docs/kafka.md, "Two lanes").
const (
	// LaneInteractive is the storefront's lane, chat.requests: a person
	// waits for the answer.
	LaneInteractive = "interactive"
	// LaneBulk is the lane of bots that can wait minutes,
	// chat.requests.bulk.
	LaneBulk = "bulk"
)

// ValidLane reports whether s names a lane.
func ValidLane(s string) bool { return s == LaneInteractive || s == LaneBulk }

// ReplyTo says where the answer to a request goes.
type ReplyTo struct {
	Topic string `json:"topic"`
	// Partition of Topic, or AnyPartition.
	Partition   int32  `json:"partition"`
	CallbackURL string `json:"callback_url"`
}

// Request is the value of a chat.requests record.
type Request struct {
	V         int       `json:"v"`
	RequestID string    `json:"request_id"`
	Tenant    string    `json:"tenant"`
	User      string    `json:"user"`
	DialogID  string    `json:"dialog_id"`
	Text      string    `json:"text"`
	CreatedAt time.Time `json:"created_at"`
	Deadline  time.Time `json:"deadline"`
	Reply     ReplyTo   `json:"reply"`
	// Stream asks the consumer to publish the answer's pieces, as the
	// model produces them, to the request's answer stream (a client reads
	// it over SSE or WebSocket). Optional; a consumer that does not stream
	// ignores it and the stream ends with the whole answer.
	Stream bool `json:"stream,omitempty"`
}

// Key returns the record key "tenant/user/dialog_id". All turns of one dialog
// share it, so they land in one partition, in order.
func (r *Request) Key() string { return Key(r.Tenant, r.User, r.DialogID) }

// Key returns the chat.requests record key of a dialog.
func Key(tenant, user, dialogID string) string {
	return tenant + "/" + user + "/" + dialogID
}

// Expired reports whether the request's deadline has passed at now.
func (r *Request) Expired(now time.Time) bool { return !now.Before(r.Deadline) }

// Validate checks the fields of a request that was built in memory. It returns
// an error wrapping ErrMissingField, ErrVersion or ErrInvalidField.
func (r *Request) Validate() error {
	if r.V != Version {
		return fmt.Errorf("%w: v=%d, want %d", ErrVersion, r.V, Version)
	}
	switch {
	case r.RequestID == "":
		return fmt.Errorf("%w: request_id", ErrMissingField)
	case !ValidID(r.RequestID):
		return fmt.Errorf("%w: request_id: 1-%d of [A-Za-z0-9._@|+-]", ErrInvalidField, MaxIDLen)
	case r.Tenant == "":
		return fmt.Errorf("%w: tenant", ErrMissingField)
	case !ValidID(r.Tenant):
		return fmt.Errorf("%w: tenant: 1-%d of [A-Za-z0-9._@|+-]", ErrInvalidField, MaxIDLen)
	case r.User == "":
		return fmt.Errorf("%w: user", ErrMissingField)
	case !ValidID(r.User):
		return fmt.Errorf("%w: user: 1-%d of [A-Za-z0-9._@|+-]", ErrInvalidField, MaxIDLen)
	case r.DialogID == "":
		return fmt.Errorf("%w: dialog_id", ErrMissingField)
	case !ValidDialogID(r.DialogID):
		return fmt.Errorf("%w: dialog_id: want 32 lowercase hex", ErrInvalidField)
	case r.Text == "":
		return fmt.Errorf("%w: text", ErrMissingField)
	case len(r.Text) > MaxTextBytes:
		return fmt.Errorf("%w: text: over %d bytes", ErrInvalidField, MaxTextBytes)
	case !utf8.ValidString(r.Text):
		return fmt.Errorf("%w: text: not valid UTF-8", ErrInvalidField)
	case r.CreatedAt.IsZero():
		return fmt.Errorf("%w: created_at", ErrMissingField)
	case r.Deadline.IsZero():
		return fmt.Errorf("%w: deadline", ErrMissingField)
	case r.Reply.Topic == "":
		return fmt.Errorf("%w: reply.topic", ErrMissingField)
	case !ValidTopic(r.Reply.Topic):
		return fmt.Errorf("%w: reply.topic: not a legal Kafka topic name", ErrInvalidField)
	case r.Reply.Partition < AnyPartition:
		return fmt.Errorf("%w: reply.partition: %d", ErrInvalidField, r.Reply.Partition)
	}
	return nil
}

// wireRequest mirrors Request with pointers where presence matters.
type wireRequest struct {
	V         *int      `json:"v"`
	RequestID string    `json:"request_id"`
	Tenant    string    `json:"tenant"`
	User      string    `json:"user"`
	DialogID  string    `json:"dialog_id"`
	Text      string    `json:"text"`
	CreatedAt time.Time `json:"created_at"`
	Deadline  time.Time `json:"deadline"`
	Reply     *struct {
		Topic       string `json:"topic"`
		Partition   *int32 `json:"partition"`
		CallbackURL string `json:"callback_url"`
	} `json:"reply"`
	Stream bool `json:"stream"`
}

// DecodeRequest parses and validates a chat.requests record value. A missing
// reply.partition means AnyPartition. Errors wrap ErrMissingField, ErrVersion
// or ErrInvalidField, or describe malformed JSON.
func DecodeRequest(b []byte) (Request, error) {
	if !utf8.Valid(b) {
		return Request{}, fmt.Errorf("%w: value is not valid UTF-8", ErrInvalidField)
	}
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	if w.V == nil {
		return Request{}, fmt.Errorf("%w: v", ErrMissingField)
	}
	if *w.V != Version {
		return Request{}, fmt.Errorf("%w: v=%d, want %d", ErrVersion, *w.V, Version)
	}
	if w.Reply == nil {
		return Request{}, fmt.Errorf("%w: reply", ErrMissingField)
	}
	r := Request{
		V: *w.V, RequestID: w.RequestID, Tenant: w.Tenant, User: w.User,
		DialogID: w.DialogID, Text: w.Text, CreatedAt: w.CreatedAt, Deadline: w.Deadline,
		Reply:  ReplyTo{Topic: w.Reply.Topic, Partition: AnyPartition, CallbackURL: w.Reply.CallbackURL},
		Stream: w.Stream,
	}
	if w.Reply.Partition != nil {
		r.Reply.Partition = *w.Reply.Partition
	}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// Reply is the value of a chat.replies record, keyed by request_id.
type Reply struct {
	V          int       `json:"v"`
	RequestID  string    `json:"request_id"`
	Tenant     string    `json:"tenant"`
	User       string    `json:"user"`
	DialogID   string    `json:"dialog_id"`
	Status     string    `json:"status"`
	Answer     string    `json:"answer"`
	Source     string    `json:"source"`
	Handoff    bool      `json:"handoff"`
	FinishedAt time.Time `json:"finished_at"`
	LLMMs      int64     `json:"llm_ms"`
}

// NewReply starts the reply to req with the identifying fields filled in.
func NewReply(req *Request, status string, finishedAt time.Time) Reply {
	return Reply{
		V: Version, RequestID: req.RequestID, Tenant: req.Tenant, User: req.User,
		DialogID: req.DialogID, Status: status, FinishedAt: finishedAt,
	}
}

// DecodeReply parses a chat.replies record value. It returns an error wrapping
// ErrVersion or ErrMissingField when the record is not a v1 reply.
func DecodeReply(b []byte) (Reply, error) {
	var r Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return Reply{}, fmt.Errorf("decode reply: %w", err)
	}
	if r.V != Version {
		return Reply{}, fmt.Errorf("%w: v=%d, want %d", ErrVersion, r.V, Version)
	}
	if r.RequestID == "" {
		return Reply{}, fmt.Errorf("%w: request_id", ErrMissingField)
	}
	if r.Status != StatusDone && r.Status != StatusExpired {
		return Reply{}, fmt.Errorf("%w: status %q", ErrInvalidField, r.Status)
	}
	return r, nil
}

// Turn is one entry of a dialog's history.
type Turn struct {
	Role      string    `json:"role"` // "user" or "assistant"
	Content   string    `json:"content"`
	RequestID string    `json:"request_id"`
	At        time.Time `json:"at"`
}

// Turn roles.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Done is the HTTP API's body of a finished request (200 of POST /v1/chat
// and of a poll) and the body of a callback.
type Done struct {
	RequestID string `json:"request_id"`
	DialogID  string `json:"dialog_id"`
	Status    string `json:"status"`
	Answer    string `json:"answer,omitempty"`
	Source    string `json:"source,omitempty"`
	Handoff   bool   `json:"handoff"`
	CostMS    int64  `json:"cost_ms"`
}

// DoneOf returns the Done body of a final reply to a request created at
// created (zero: cost unknown, reported as 0).
func DoneOf(r Reply, created time.Time) Done {
	d := Done{RequestID: r.RequestID, DialogID: r.DialogID, Status: r.Status, Answer: r.Answer, Source: r.Source, Handoff: r.Handoff}
	if !created.IsZero() && !r.FinishedAt.IsZero() {
		d.CostMS = max(r.FinishedAt.Sub(created).Milliseconds(), 0)
	}
	return d
}
