package producer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"golang.org/x/text/unicode/norm"

	"sluice/shared/metric"
)

// hotAnswers answers frequent first-turn questions without a Kafka round
// trip. When a new dialog's first question is answered by the model (or the
// FAQ), the answer is kept for the TTL under the tenant and the normalised
// question, in a local LRU and in Redis for the other replicas; the same
// question opening another dialog of the tenant within the TTL is answered
// from it with source "cache". A dialog that has history is never answered
// from the cache: a follow-up depends on its context.
//
// Normalisation folds full-width to half-width (NFKC), case, and drops
// punctuation, symbols and spaces, so "优惠券还能用吗？" and "优惠券 还能用吗?"
// are one question.
type hotAnswers struct {
	local  *expirable.LRU[string, hotEntry]
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	result metric.Children[prometheus.Counter] // by result: hit, miss
}

type hotEntry struct {
	Answer  string `json:"answer"`
	Source  string `json:"source"`
	Handoff bool   `json:"handoff"`
}

func newHotAnswers(f promauto.Factory, rdb redis.UniversalClient, prefix string, size int, ttl time.Duration) *hotAnswers {
	return &hotAnswers{
		local:  expirable.NewLRU[string, hotEntry](size, nil, ttl),
		rdb:    rdb,
		prefix: prefix,
		ttl:    ttl,
		result: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_producer_hot_answers_total",
			Help: "First-turn questions looked up in the hot-answer cache, by result (hit, miss): the hit ratio.",
		}, []string{"result"}), "hit", "miss"),
	}
}

// normalize returns the cache form of a question.
func normalize(q string) string {
	q = norm.NFKC.String(q)
	var b strings.Builder
	b.Grow(len(q))
	for _, r := range q {
		switch {
		case unicode.IsPunct(r), unicode.IsSymbol(r), unicode.IsSpace(r), unicode.IsControl(r):
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

func (h *hotAnswers) key(tenant, question string) string {
	sum := sha256.Sum256([]byte(normalize(question)))
	return h.prefix + ":hot:{" + tenant + "}:" + hex.EncodeToString(sum[:16])
}

// get looks a first-turn question up locally and, when shared is set, then
// in Redis.
func (h *hotAnswers) get(ctx context.Context, tenant, question string, shared bool) (hotEntry, bool) {
	k := h.key(tenant, question)
	if e, ok := h.local.Get(k); ok {
		h.result.With("hit").Inc()
		return e, true
	}
	if !shared {
		h.result.With("miss").Inc()
		return hotEntry{}, false
	}
	// MGET, not GET: a miss, the common case, is then a nil value, not
	// the redis.Nil error that go-redis inspects for a retry (17
	// allocations).
	vals, err := h.rdb.MGet(ctx, k).Result()
	var e hotEntry
	if err != nil || len(vals) != 1 || !decodeHot(vals[0], &e) {
		h.result.With("miss").Inc()
		return hotEntry{}, false
	}
	h.local.Add(k, e)
	h.result.With("hit").Inc()
	return e, true
}

// decodeHot decodes a cached entry read from Redis into e and reports
// whether it holds an answer.
func decodeHot(v any, e *hotEntry) bool {
	raw, ok := v.(string)
	return ok && json.Unmarshal([]byte(raw), e) == nil && e.Answer != ""
}

// put keeps the answer to a first-turn question.
func (h *hotAnswers) put(ctx context.Context, tenant, question string, e hotEntry) {
	k := h.key(tenant, question)
	h.local.Add(k, e)
	if b, err := json.Marshal(e); err == nil {
		_ = h.rdb.Set(ctx, k, b, h.ttl).Err() // best effort: the local copy serves meanwhile
	}
}
