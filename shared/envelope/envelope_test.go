package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/shared/envelope"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const dialogID = "0123456789abcdef0123456789abcdef"

// goldenRequest is the request written to testdata/request.golden.json.
func goldenRequest() envelope.Request {
	return envelope.Request{
		V:         1,
		RequestID: "req-0001",
		Tenant:    "t1",
		User:      "u1",
		DialogID:  dialogID,
		Text:      "我的快递什么时候到？ \"quoted\" <tag> & done",
		CreatedAt: time.Date(2026, 3, 1, 12, 30, 45, 123456789, time.UTC),
		Deadline:  time.Date(2026, 3, 1, 12, 31, 15, 123456789, time.UTC),
		Reply:     envelope.ReplyTo{Topic: "chat.replies", Partition: 3, CallbackURL: ""},
	}
}

// goldenReply is the reply written to testdata/reply.golden.json.
func goldenReply() envelope.Reply {
	req := goldenRequest()
	r := envelope.NewReply(&req, envelope.StatusDone, time.Date(2026, 3, 1, 12, 30, 46, 5000000, time.UTC))
	r.Answer = "订单付款后 24 小时内发货。"
	r.Source = envelope.SourceLLM
	r.Handoff = false
	r.LLMMs = 123
	return r
}

// goldenBytes marshals v as it goes on the wire (json.Marshal) and indents
// the result, so that the golden file is reviewable; indenting only adds
// whitespace, so the comparison is as strict as on the compact bytes.
func goldenBytes(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("indent: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func checkGolden(t *testing.T, name string, got []byte) []byte {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("update golden: %v", err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the marshalled value (run with -update if the change is intended):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
	return want
}

// topLevelKeys returns the sorted keys of a JSON object.
func topLevelKeys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal object: %v", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestGoldenRequest(t *testing.T) {
	want := goldenRequest()
	golden := checkGolden(t, "request.golden.json", goldenBytes(t, want))

	// The field names are the contract in DESIGN.md "Kafka wire format";
	// -update must not silently rename them.
	wantKeys := []string{"created_at", "deadline", "dialog_id", "reply", "request_id", "tenant", "text", "user", "v"}
	if got := topLevelKeys(t, golden); !slices.Equal(got, wantKeys) {
		t.Errorf("request keys = %v, want %v", got, wantKeys)
	}
	var raw struct {
		Reply map[string]json.RawMessage `json:"reply"`
	}
	if err := json.Unmarshal(golden, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"topic", "partition", "callback_url"} {
		if _, ok := raw.Reply[k]; !ok {
			t.Errorf("reply.%s missing from the golden request", k)
		}
	}

	got, err := envelope.DecodeRequest(golden)
	if err != nil {
		t.Fatalf("DecodeRequest(golden): %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeRequest(golden) = %+v, want %+v", got, want)
	}
}

func TestGoldenReply(t *testing.T) {
	want := goldenReply()
	golden := checkGolden(t, "reply.golden.json", goldenBytes(t, want))

	wantKeys := []string{"answer", "dialog_id", "finished_at", "handoff", "llm_ms", "request_id", "source", "status", "tenant", "user", "v"}
	if got := topLevelKeys(t, golden); !slices.Equal(got, wantKeys) {
		t.Errorf("reply keys = %v, want %v", got, wantKeys)
	}

	got, err := envelope.DecodeReply(golden)
	if err != nil {
		t.Fatalf("DecodeReply(golden): %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeReply(golden) = %+v, want %+v", got, want)
	}
}

func TestNewReply(t *testing.T) {
	req := goldenRequest()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := envelope.NewReply(&req, envelope.StatusExpired, at)
	want := envelope.Reply{
		V: envelope.Version, RequestID: req.RequestID, Tenant: req.Tenant, User: req.User,
		DialogID: req.DialogID, Status: envelope.StatusExpired, FinishedAt: at,
	}
	if got != want {
		t.Errorf("NewReply = %+v, want %+v", got, want)
	}
}

// validRequest returns a valid chat.requests value as a JSON object that a
// test case can change before encoding it.
func validRequest() map[string]any {
	return map[string]any{
		"v":          1,
		"request_id": "r-1",
		"tenant":     "t1",
		"user":       "u1",
		"dialog_id":  dialogID,
		"text":       "where is my parcel?",
		"created_at": "2026-03-01T12:00:00.5Z",
		"deadline":   "2026-03-01T12:00:30+08:00",
		"reply":      map[string]any{"topic": "bot.replies", "partition": 2, "callback_url": "http://bot/cb"},
	}
}

func reply(m map[string]any) map[string]any { return m["reply"].(map[string]any) }

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(m map[string]any) // changes a valid request; nil keeps it
		raw    []byte                 // used instead of the edited object when non-nil
		err    error                  // sentinel the error must wrap; nil for success
		errMsg string                 // substring of the error text
		check  func(t *testing.T, r envelope.Request)
	}{
		{name: "Valid", check: func(t *testing.T, r envelope.Request) {
			want := envelope.Request{
				V: 1, RequestID: "r-1", Tenant: "t1", User: "u1", DialogID: dialogID,
				Text:      "where is my parcel?",
				CreatedAt: time.Date(2026, 3, 1, 12, 0, 0, 5e8, time.UTC),
				Deadline:  time.Date(2026, 3, 1, 4, 0, 30, 0, time.UTC),
				Reply:     envelope.ReplyTo{Topic: "bot.replies", Partition: 2, CallbackURL: "http://bot/cb"},
			}
			if !r.Deadline.Equal(want.Deadline) {
				t.Errorf("deadline = %v, want %v", r.Deadline, want.Deadline)
			}
			if _, off := r.Deadline.Zone(); off != 8*3600 {
				t.Errorf("deadline zone offset = %d, want +08:00 kept", off)
			}
			r.Deadline = want.Deadline
			if !reflect.DeepEqual(r, want) {
				t.Errorf("got %+v, want %+v", r, want)
			}
		}},
		{name: "PartitionAbsentMeansAny", edit: func(m map[string]any) { delete(reply(m), "partition") },
			check: func(t *testing.T, r envelope.Request) {
				if r.Reply.Partition != envelope.AnyPartition || envelope.AnyPartition != -1 {
					t.Errorf("partition = %d, want AnyPartition (-1)", r.Reply.Partition)
				}
			}},
		{name: "PartitionNullMeansAny", edit: func(m map[string]any) { reply(m)["partition"] = nil },
			check: func(t *testing.T, r envelope.Request) {
				if r.Reply.Partition != envelope.AnyPartition {
					t.Errorf("partition = %d, want AnyPartition", r.Reply.Partition)
				}
			}},
		{name: "PartitionZeroKept", edit: func(m map[string]any) { reply(m)["partition"] = 0 },
			check: func(t *testing.T, r envelope.Request) {
				if r.Reply.Partition != 0 {
					t.Errorf("partition = %d, want 0 (explicit zero is not absent)", r.Reply.Partition)
				}
			}},
		{name: "PartitionMinusOneExplicit", edit: func(m map[string]any) { reply(m)["partition"] = -1 },
			check: func(t *testing.T, r envelope.Request) {
				if r.Reply.Partition != envelope.AnyPartition {
					t.Errorf("partition = %d, want -1", r.Reply.Partition)
				}
			}},
		{name: "CallbackURLOptional", edit: func(m map[string]any) { delete(reply(m), "callback_url") },
			check: func(t *testing.T, r envelope.Request) {
				if r.Reply.CallbackURL != "" {
					t.Errorf("callback_url = %q, want empty", r.Reply.CallbackURL)
				}
			}},
		{name: "UnknownFieldsIgnored", edit: func(m map[string]any) {
			m["priority"] = "high"
			m["meta"] = map[string]any{"nested": []any{1, 2, 3}}
			reply(m)["headers"] = map[string]any{"x": "y"}
		}, check: func(t *testing.T, r envelope.Request) {
			if r.RequestID != "r-1" || r.Reply.Topic != "bot.replies" {
				t.Errorf("got %+v", r)
			}
		}},
		{name: "IDAlphabet", edit: func(m map[string]any) {
			m["tenant"] = "Acme.Corp_1"
			m["user"] = "a.b+c|d-e@x.io"
			m["request_id"] = strings.Repeat("z", envelope.MaxIDLen)
		}, check: func(t *testing.T, r envelope.Request) {
			if r.User != "a.b+c|d-e@x.io" || r.Tenant != "Acme.Corp_1" {
				t.Errorf("got %+v", r)
			}
		}},
		{name: "TextAtLimit", edit: func(m map[string]any) { m["text"] = strings.Repeat("a", envelope.MaxTextBytes) }},
		{name: "TextMultibyte", edit: func(m map[string]any) { m["text"] = "你好 👋" },
			check: func(t *testing.T, r envelope.Request) {
				if r.Text != "你好 👋" {
					t.Errorf("text = %q", r.Text)
				}
			}},

		// Malformed JSON.
		{name: "NotJSON", raw: []byte(`{"v":1,`), errMsg: "decode request"},
		{name: "Array", raw: []byte(`[1,2]`), errMsg: "decode request"},
		{name: "Empty", raw: []byte(``), errMsg: "decode request"},
		{name: "VNotNumber", edit: func(m map[string]any) { m["v"] = "1" }, errMsg: "decode request"},
		{name: "TenantNotString", edit: func(m map[string]any) { m["tenant"] = 7 }, errMsg: "decode request"},
		{name: "ReplyNotObject", edit: func(m map[string]any) { m["reply"] = "chat.replies" }, errMsg: "decode request"},
		{name: "PartitionOverflow", edit: func(m map[string]any) { reply(m)["partition"] = int64(1) << 40 }, errMsg: "decode request"},
		{name: "CreatedAtNotRFC3339", edit: func(m map[string]any) { m["created_at"] = "yesterday" }, errMsg: "decode request"},
		{name: "ValueNotUTF8", raw: []byte("{\"v\":1,\"text\":\"\xff\xfe\"}"), err: envelope.ErrInvalidField, errMsg: "UTF-8"},

		// Version.
		{name: "MissingV", edit: func(m map[string]any) { delete(m, "v") }, err: envelope.ErrMissingField, errMsg: "v"},
		{name: "NullV", edit: func(m map[string]any) { m["v"] = nil }, err: envelope.ErrMissingField, errMsg: "v"},
		{name: "NullDocument", raw: []byte(`null`), err: envelope.ErrMissingField, errMsg: "v"},
		{name: "VZero", edit: func(m map[string]any) { m["v"] = 0 }, err: envelope.ErrVersion, errMsg: "v=0"},
		{name: "VTwo", edit: func(m map[string]any) { m["v"] = 2 }, err: envelope.ErrVersion, errMsg: "v=2"},

		// Missing required fields.
		{name: "MissingRequestID", edit: func(m map[string]any) { delete(m, "request_id") }, err: envelope.ErrMissingField, errMsg: "request_id"},
		{name: "MissingTenant", edit: func(m map[string]any) { delete(m, "tenant") }, err: envelope.ErrMissingField, errMsg: "tenant"},
		{name: "MissingUser", edit: func(m map[string]any) { delete(m, "user") }, err: envelope.ErrMissingField, errMsg: "user"},
		{name: "MissingDialogID", edit: func(m map[string]any) { delete(m, "dialog_id") }, err: envelope.ErrMissingField, errMsg: "dialog_id"},
		{name: "MissingText", edit: func(m map[string]any) { delete(m, "text") }, err: envelope.ErrMissingField, errMsg: "text"},
		{name: "EmptyText", edit: func(m map[string]any) { m["text"] = "" }, err: envelope.ErrMissingField, errMsg: "text"},
		{name: "MissingCreatedAt", edit: func(m map[string]any) { delete(m, "created_at") }, err: envelope.ErrMissingField, errMsg: "created_at"},
		{name: "MissingDeadline", edit: func(m map[string]any) { delete(m, "deadline") }, err: envelope.ErrMissingField, errMsg: "deadline"},
		{name: "MissingReply", edit: func(m map[string]any) { delete(m, "reply") }, err: envelope.ErrMissingField, errMsg: "reply"},
		{name: "NullReply", edit: func(m map[string]any) { m["reply"] = nil }, err: envelope.ErrMissingField, errMsg: "reply"},
		{name: "MissingReplyTopic", edit: func(m map[string]any) { delete(reply(m), "topic") }, err: envelope.ErrMissingField, errMsg: "reply.topic"},

		// Invalid fields.
		{name: "RequestIDSlash", edit: func(m map[string]any) { m["request_id"] = "a/b" }, err: envelope.ErrInvalidField, errMsg: "request_id"},
		{name: "RequestIDTooLong", edit: func(m map[string]any) { m["request_id"] = strings.Repeat("r", envelope.MaxIDLen+1) }, err: envelope.ErrInvalidField, errMsg: "request_id"},
		{name: "TenantSlash", edit: func(m map[string]any) { m["tenant"] = "t/1" }, err: envelope.ErrInvalidField, errMsg: "tenant"},
		{name: "TenantColon", edit: func(m map[string]any) { m["tenant"] = "t:1" }, err: envelope.ErrInvalidField, errMsg: "tenant"},
		{name: "TenantBrace", edit: func(m map[string]any) { m["tenant"] = "t{1" }, err: envelope.ErrInvalidField, errMsg: "tenant"},
		{name: "TenantCloseBrace", edit: func(m map[string]any) { m["tenant"] = "t}1" }, err: envelope.ErrInvalidField, errMsg: "tenant"},
		{name: "TenantTooLong", edit: func(m map[string]any) { m["tenant"] = strings.Repeat("t", envelope.MaxIDLen+1) }, err: envelope.ErrInvalidField, errMsg: "tenant"},
		{name: "UserSlash", edit: func(m map[string]any) { m["user"] = "u/1" }, err: envelope.ErrInvalidField, errMsg: "user"},
		{name: "UserColon", edit: func(m map[string]any) { m["user"] = "u:1" }, err: envelope.ErrInvalidField, errMsg: "user"},
		{name: "UserBrace", edit: func(m map[string]any) { m["user"] = "{u1}" }, err: envelope.ErrInvalidField, errMsg: "user"},
		{name: "UserSpace", edit: func(m map[string]any) { m["user"] = "u 1" }, err: envelope.ErrInvalidField, errMsg: "user"},
		{name: "UserNonASCII", edit: func(m map[string]any) { m["user"] = "用户" }, err: envelope.ErrInvalidField, errMsg: "user"},
		{name: "DialogIDUppercase", edit: func(m map[string]any) { m["dialog_id"] = strings.ToUpper(dialogID) }, err: envelope.ErrInvalidField, errMsg: "dialog_id"},
		{name: "DialogIDShort", edit: func(m map[string]any) { m["dialog_id"] = dialogID[:31] }, err: envelope.ErrInvalidField, errMsg: "dialog_id"},
		{name: "DialogIDLong", edit: func(m map[string]any) { m["dialog_id"] = dialogID + "0" }, err: envelope.ErrInvalidField, errMsg: "dialog_id"},
		{name: "DialogIDNotHex", edit: func(m map[string]any) { m["dialog_id"] = "g" + dialogID[1:] }, err: envelope.ErrInvalidField, errMsg: "dialog_id"},
		{name: "DialogIDTrailingNewline", edit: func(m map[string]any) { m["dialog_id"] = dialogID + "\n" }, err: envelope.ErrInvalidField, errMsg: "dialog_id"},
		{name: "TextTooLong", edit: func(m map[string]any) { m["text"] = strings.Repeat("a", envelope.MaxTextBytes+1) }, err: envelope.ErrInvalidField, errMsg: "text"},
		{name: "PartitionBelowAny", edit: func(m map[string]any) { reply(m)["partition"] = -2 }, err: envelope.ErrInvalidField, errMsg: "reply.partition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.raw
			if b == nil {
				m := validRequest()
				if tt.edit != nil {
					tt.edit(m)
				}
				var err error
				if b, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			}
			r, err := envelope.DecodeRequest(b)
			if tt.err == nil && tt.errMsg == "" {
				if err != nil {
					t.Fatalf("DecodeRequest(%s) = %v, want success", b, err)
				}
				if verr := r.Validate(); verr != nil {
					t.Errorf("decoded request does not validate: %v", verr)
				}
				if tt.check != nil {
					tt.check(t, r)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeRequest(%.200s) succeeded, want error", b)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("error %q does not wrap %q", err, tt.err)
			}
			if !strings.Contains(err.Error(), tt.errMsg) {
				t.Errorf("error %q does not mention %q", err, tt.errMsg)
			}
			if !reflect.DeepEqual(r, envelope.Request{}) {
				t.Errorf("request on error = %+v, want zero", r)
			}
		})
	}
}

// TestDecodeRequestInvalidFiles decodes every record in testdata/invalid,
// requests a bot might really send, and checks each is refused for its reason.
func TestDecodeRequestInvalidFiles(t *testing.T) {
	want := map[string]struct {
		err error
		msg string
	}{
		"missing_v.json":           {envelope.ErrMissingField, "v"},
		"v2.json":                  {envelope.ErrVersion, "v=2"},
		"missing_reply.json":       {envelope.ErrMissingField, "reply"},
		"missing_reply_topic.json": {envelope.ErrMissingField, "reply.topic"},
		"bad_dialog_id.json":       {envelope.ErrInvalidField, "dialog_id"},
		"tenant_with_slash.json":   {envelope.ErrInvalidField, "tenant"},
		"user_with_colon.json":     {envelope.ErrInvalidField, "user"},
		"user_with_brace.json":     {envelope.ErrInvalidField, "user"},
		"text_not_utf8.json":       {envelope.ErrInvalidField, "UTF-8"},
		"missing_deadline.json":    {envelope.ErrMissingField, "deadline"},
		"truncated.json":           {nil, "decode request"},
	}
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	for name := range want {
		if !slices.Contains(names, name) {
			t.Errorf("testdata/invalid/%s is missing", name)
		}
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for testdata/invalid/%s: add it to the table", name)
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = envelope.DecodeRequest(b)
			if err == nil {
				t.Fatal("DecodeRequest succeeded, want error")
			}
			if w.err != nil && !errors.Is(err, w.err) {
				t.Errorf("error %q does not wrap %q", err, w.err)
			}
			if !strings.Contains(err.Error(), w.msg) {
				t.Errorf("error %q does not mention %q", err, w.msg)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	// Validate guards requests built in memory, where no JSON decoder has
	// replaced invalid UTF-8.
	tests := []struct {
		name string
		edit func(r *envelope.Request)
		err  error
		msg  string
	}{
		{"OK", func(*envelope.Request) {}, nil, ""},
		{"TextNotUTF8", func(r *envelope.Request) { r.Text = "abc\xffdef" }, envelope.ErrInvalidField, "UTF-8"},
		{"VersionZero", func(r *envelope.Request) { r.V = 0 }, envelope.ErrVersion, "v=0"},
		{"ZeroCreatedAt", func(r *envelope.Request) { r.CreatedAt = time.Time{} }, envelope.ErrMissingField, "created_at"},
		{"ZeroDeadline", func(r *envelope.Request) { r.Deadline = time.Time{} }, envelope.ErrMissingField, "deadline"},
		{"PartitionBelowAny", func(r *envelope.Request) { r.Reply.Partition = -5 }, envelope.ErrInvalidField, "reply.partition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := goldenRequest()
			tt.edit(&r)
			err := r.Validate()
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Validate = %v, want %v mentioning %q", err, tt.err, tt.msg)
			}
		})
	}
}

func TestDecodeReply(t *testing.T) {
	valid := func() map[string]any {
		return map[string]any{
			"v": 1, "request_id": "r-1", "tenant": "t1", "user": "u1", "dialog_id": dialogID,
			"status": "done", "answer": "hi", "source": "llm", "handoff": true,
			"finished_at": "2026-03-01T12:00:01Z", "llm_ms": 42, "extra": "ignored",
		}
	}
	tests := []struct {
		name string
		edit func(m map[string]any)
		raw  []byte
		err  error
		msg  string
	}{
		{name: "Done", edit: func(map[string]any) {}},
		{name: "Expired", edit: func(m map[string]any) { m["status"] = "expired"; m["answer"] = "" }},
		{name: "NotJSON", raw: []byte(`{"v":`), msg: "decode reply"},
		{name: "WrongType", edit: func(m map[string]any) { m["llm_ms"] = "fast" }, msg: "decode reply"},
		{name: "MissingV", edit: func(m map[string]any) { delete(m, "v") }, err: envelope.ErrVersion, msg: "v=0"},
		{name: "V2", edit: func(m map[string]any) { m["v"] = 2 }, err: envelope.ErrVersion, msg: "v=2"},
		{name: "MissingRequestID", edit: func(m map[string]any) { delete(m, "request_id") }, err: envelope.ErrMissingField, msg: "request_id"},
		{name: "StatusQueued", edit: func(m map[string]any) { m["status"] = "queued" }, err: envelope.ErrInvalidField, msg: `"queued"`},
		{name: "MissingStatus", edit: func(m map[string]any) { delete(m, "status") }, err: envelope.ErrInvalidField, msg: "status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.raw
			if tt.edit != nil {
				m := valid()
				tt.edit(m)
				var err error
				if b, err = json.Marshal(m); err != nil {
					t.Fatal(err)
				}
			}
			r, err := envelope.DecodeReply(b)
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("DecodeReply = %v, want success", err)
				}
				if r.RequestID != "r-1" || r.DialogID != dialogID || r.FinishedAt.IsZero() {
					t.Errorf("decoded %+v", r)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeReply(%s) succeeded, want error", b)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Errorf("error %q does not wrap %q", err, tt.err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
	t.Run("Fields", func(t *testing.T) {
		b, _ := json.Marshal(valid())
		r, err := envelope.DecodeReply(b)
		if err != nil {
			t.Fatal(err)
		}
		want := envelope.Reply{
			V: 1, RequestID: "r-1", Tenant: "t1", User: "u1", DialogID: dialogID,
			Status: envelope.StatusDone, Answer: "hi", Source: envelope.SourceLLM, Handoff: true,
			FinishedAt: time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC), LLMMs: 42,
		}
		if !reflect.DeepEqual(r, want) {
			t.Errorf("got %+v, want %+v", r, want)
		}
	})
}

func TestKey(t *testing.T) {
	r := goldenRequest()
	want := "t1/u1/" + dialogID
	if got := r.Key(); got != want {
		t.Errorf("Request.Key() = %q, want %q", got, want)
	}
	if got := envelope.Key("t1", "u1", dialogID); got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	// Different dialogs, users or tenants never share a key.
	keys := map[string]bool{}
	for _, k := range []string{
		envelope.Key("t1", "u1", dialogID),
		envelope.Key("t1", "u2", dialogID),
		envelope.Key("t2", "u1", dialogID),
		envelope.Key("t1", "u1", strings.Repeat("f", 32)),
	} {
		if keys[k] {
			t.Errorf("key %q produced twice", k)
		}
		keys[k] = true
	}
}

func TestNewDialogID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := envelope.NewDialogID()
		if !envelope.ValidDialogID(id) {
			t.Fatalf("NewDialogID() = %q, not a valid dialog id", id)
		}
		if seen[id] {
			t.Fatalf("NewDialogID() returned %q twice", id)
		}
		seen[id] = true
	}
}

func TestValidDialogID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{dialogID, true},
		{strings.Repeat("0", 32), true},
		{strings.Repeat("f", 32), true},
		{"", false},
		{dialogID[:31], false},
		{dialogID + "a", false},
		{strings.ToUpper(dialogID), false},
		{"0123456789abcdef0123456789abcdeg", false},
		{"0123456789abcdef-123456789abcdef", false},
		{dialogID[:31] + "\n", false},
		{"\n" + dialogID, false},
		{"01234567-89ab-cdef-0123-456789abcdef", false},
	}
	for _, tt := range tests {
		if got := envelope.ValidDialogID(tt.id); got != tt.want {
			t.Errorf("ValidDialogID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"0", true},
		{"user.name_1@example.com", true},
		{"a|b+c-d", true},
		{strings.Repeat("x", envelope.MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", envelope.MaxIDLen+1), false},
		{"a/b", false},
		{"a:b", false},
		{"a{b", false},
		{"a}b", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x00b", false},
		{"a*b", false},
		{"a\"b", false},
		{"a\\b", false},
		{"é", false},
		{"用户", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		if got := envelope.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestExpired(t *testing.T) {
	r := goldenRequest()
	d := r.Deadline
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"Before", d.Add(-time.Nanosecond), false},
		{"LongBefore", d.Add(-time.Hour), false},
		{"AtDeadline", d, true},
		{"After", d.Add(time.Nanosecond), true},
		{"OtherZoneBefore", d.Add(-time.Second).In(time.FixedZone("X", -5*3600)), false},
		{"OtherZoneAfter", d.Add(time.Second).In(time.FixedZone("X", 9*3600)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Expired(tt.now); got != tt.want {
				t.Errorf("Expired(%v) with deadline %v = %v, want %v", tt.now, d, got, tt.want)
			}
		})
	}
}

// FuzzDecodeRequest checks that DecodeRequest never panics, that its errors
// are the documented kinds and come with no value, and that whatever it
// accepts is valid and survives a re-encode unchanged.
func FuzzDecodeRequest(f *testing.F) {
	addFiles(f, "request.golden.json", filepath.Join("invalid", "*.json"))
	b, _ := json.Marshal(validRequest())
	f.Add(b)
	f.Add([]byte(`{"v":1,"request_id":"r","tenant":"t","user":"u","dialog_id":"` + dialogID + `","text":"\ud800x","created_at":"0001-01-01T00:00:00.000000001Z","deadline":"9999-12-31T23:59:59+23:59","reply":{"topic":"x"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{}`))

	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := envelope.DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, envelope.ErrMissingField) && !errors.Is(err, envelope.ErrVersion) &&
				!errors.Is(err, envelope.ErrInvalidField) && !strings.HasPrefix(err.Error(), "decode request: ") {
				t.Fatalf("undocumented error kind: %v", err)
			}
			if r != (envelope.Request{}) {
				t.Fatalf("error %v with a non-zero request %+v", err, r)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted request does not validate: %v\ninput: %q", err, b)
		}
		if r.Reply.Partition < envelope.AnyPartition {
			t.Fatalf("accepted partition %d", r.Reply.Partition)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("accepted request does not re-encode: %v\ninput: %q", err, b)
		}
		r2, err := envelope.DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request refused: %v\ninput: %q\nre-encoded: %s", err, b, again)
		}
		if !r2.CreatedAt.Equal(r.CreatedAt) || !r2.Deadline.Equal(r.Deadline) {
			t.Fatalf("times changed on re-encode: %v %v -> %v %v", r.CreatedAt, r.Deadline, r2.CreatedAt, r2.Deadline)
		}
		r2.CreatedAt, r2.Deadline = r.CreatedAt, r.Deadline
		if r2 != r {
			t.Fatalf("re-encode changed the request:\n%+v\n%+v", r, r2)
		}
		if r2.Key() != r.Key() {
			t.Fatalf("key changed: %q -> %q", r.Key(), r2.Key())
		}
	})
}

// addFiles seeds f with the testdata files matching each pattern; a pattern
// matching nothing fails, so that a renamed file cannot thin the seeds.
func addFiles(f *testing.F, patterns ...string) {
	f.Helper()
	for _, pat := range patterns {
		files, err := filepath.Glob(filepath.Join("testdata", pat))
		if err != nil || len(files) == 0 {
			f.Fatalf("no seed file matches testdata/%s (%v)", pat, err)
		}
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

// FuzzDecodeReply checks that DecodeReply never panics, that its errors are
// the documented kinds, that whatever it accepts is a v1 final reply with a
// request id, and that it survives a re-encode unchanged.
func FuzzDecodeReply(f *testing.F) {
	addFiles(f, "reply.golden.json", "request.golden.json")
	for _, s := range []string{
		`{"v":1,"request_id":"r","status":"expired"}`,
		`{"v":1,"request_id":"r","status":"queued"}`,
		`{"v":1,"request_id":"","status":"done"}`,
		`{"v":1.5,"request_id":"r","status":"done"}`,
		`{"V":1,"REQUEST_ID":"r","Status":"done","finished_at":"9999-12-31T23:59:59-23:59","llm_ms":-1}`,
		`{"v":1,"request_id":"\ud800","status":"done","answer":"\u0000\xff","finished_at":null}`,
		"{\"v\":1,\"request_id\":\"r\",\"status\":\"done\",\"answer\":\"\xff\"}",
		`{"v":1,"request_id":"r","status":"done"}{}`,
		`null`,
		`[]`,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := envelope.DecodeReply(b)
		if err != nil {
			if !errors.Is(err, envelope.ErrMissingField) && !errors.Is(err, envelope.ErrVersion) &&
				!errors.Is(err, envelope.ErrInvalidField) && !strings.HasPrefix(err.Error(), "decode reply: ") {
				t.Fatalf("undocumented error kind: %v", err)
			}
			if r != (envelope.Reply{}) {
				t.Fatalf("error %v with a non-zero reply %+v", err, r)
			}
			return
		}
		if r.V != envelope.Version || r.RequestID == "" || (r.Status != envelope.StatusDone && r.Status != envelope.StatusExpired) {
			t.Fatalf("accepted reply is not a v1 final reply: %+v\ninput: %q", r, b)
		}
		if d := envelope.DoneOf(r, r.FinishedAt.Add(-time.Second)); d.CostMS < 0 || d.RequestID != r.RequestID || d.Status != r.Status {
			t.Fatalf("DoneOf(%+v) = %+v", r, d)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("accepted reply does not re-encode: %v\ninput: %q", err, b)
		}
		r2, err := envelope.DecodeReply(again)
		if err != nil {
			t.Fatalf("re-encoded reply refused: %v\ninput: %q\nre-encoded: %s", err, b, again)
		}
		if !r2.FinishedAt.Equal(r.FinishedAt) {
			t.Fatalf("finished_at changed on re-encode: %v -> %v", r.FinishedAt, r2.FinishedAt)
		}
		r2.FinishedAt = r.FinishedAt
		if r2 != r {
			t.Fatalf("re-encode changed the reply:\n%+v\n%+v", r, r2)
		}
	})
}

func TestValidTopic(t *testing.T) {
	for _, tt := range []struct {
		topic string
		ok    bool
	}{
		{"chat.replies", true}, {"bot_replies-1", true}, {strings.Repeat("a", 249), true},
		{"", false}, {".", false}, {"..", false}, {"has space", false}, {"a/b", false},
		{"中文", false}, {strings.Repeat("a", 250), false},
	} {
		if got := envelope.ValidTopic(tt.topic); got != tt.ok {
			t.Errorf("ValidTopic(%q) = %v, want %v", tt.topic, got, tt.ok)
		}
	}
	m := validRequest()
	reply(m)["topic"] = "bad topic"
	b, _ := json.Marshal(m)
	if _, err := envelope.DecodeRequest(b); !errors.Is(err, envelope.ErrInvalidField) || !strings.Contains(err.Error(), "reply.topic") {
		t.Fatalf("reply.topic with a space: %v, want ErrInvalidField naming reply.topic", err)
	}
}
