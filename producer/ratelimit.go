package producer

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/time/rate"

	"sluice/shared/auth"
	"sluice/shared/store"
)

// Rate is a request rate: N per Per, with bursts of up to Burst (default N).
// The zero Rate means no limit.
type Rate struct {
	N     int
	Per   time.Duration
	Burst int
}

// ParseRate reads "N/unit" or "N/unit:burst", where unit is s, m, h or a Go
// duration ("30/m", "2000/s", "5/10s:20"). "0" or "" means no limit.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Rate{}, nil
	}
	spec, burstS, hasBurst := strings.Cut(s, ":")
	nS, unit, ok := strings.Cut(spec, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/unit, e.g. 30/m", s)
	}
	n, err := strconv.Atoi(nS)
	if err != nil || n < 0 {
		return Rate{}, fmt.Errorf("rate %q: %q is not a count", s, nS)
	}
	var per time.Duration
	switch unit {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		if per, err = time.ParseDuration(unit); err != nil || per <= 0 {
			return Rate{}, fmt.Errorf("rate %q: unit must be s, m, h or a duration", s)
		}
	}
	r := Rate{N: n, Per: per, Burst: n}
	if hasBurst {
		if r.Burst, err = strconv.Atoi(burstS); err != nil || r.Burst < 1 {
			return Rate{}, fmt.Errorf("rate %q: burst %q is not a positive count", s, burstS)
		}
	}
	return r, nil
}

// String formats r as ParseRate reads it.
func (r Rate) String() string {
	if r.N == 0 {
		return "0"
	}
	unit := r.Per.String()
	switch r.Per {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "m"
	case time.Hour:
		unit = "h"
	}
	if r.Burst != r.N {
		return fmt.Sprintf("%d/%s:%d", r.N, unit, r.Burst)
	}
	return fmt.Sprintf("%d/%s", r.N, unit)
}

func (r Rate) limit() redis_rate.Limit {
	return redis_rate.Limit{Rate: r.N, Period: r.Per, Burst: r.Burst}
}

// limiter enforces the request rates: a cheap in-process cap on everything
// this replica accepts (x/time/rate), then per-user and per-tenant GCRA
// limits shared by all replicas through Redis (redis_rate).
//
// While Redis is unreachable the shared limits fail open: the request goes
// on, sluice_producer_ratelimit_errors_total counts it and a warning is
// logged at most every 10 s. A flash sale is the worst moment to turn a
// Redis blip into refusals; the local cap still bounds each replica.
type limiter struct {
	shared *redis_rate.Limiter
	prefix string
	user   Rate
	tenant Rate
	global *rate.Limiter
	errors prometheus.Counter
	warned rate.Sometimes // the fail-open warning, at most every 10 s
	warn   func(msg string, args ...any)
}

func newLimiter(f promauto.Factory, rdb *store.Pipe, prefix string, user, tenant, global Rate, warn func(string, ...any)) *limiter {
	l := &limiter{prefix: prefix, user: user, tenant: tenant, warn: warn,
		warned: rate.Sometimes{Interval: 10 * time.Second},
		errors: f.NewCounter(prometheus.CounterOpts{
			Name: "sluice_producer_ratelimit_errors_total",
			Help: "Shared rate-limit checks that failed open because Redis did not answer.",
		})}
	if user.N > 0 || tenant.N > 0 {
		l.shared = redis_rate.NewLimiter(rdb)
	}
	if global.N > 0 {
		l.global = rate.NewLimiter(rate.Limit(float64(global.N)/global.Per.Seconds()), global.Burst)
	}
	return l
}

// allow returns nil or the 429 for a request of id.
func (l *limiter) allow(ctx context.Context, id auth.Identity) error {
	if l.global != nil {
		if r := l.global.Reserve(); !r.OK() || r.Delay() > 0 {
			d := r.Delay()
			r.Cancel()
			return tooMany("global", "this server is at its request cap", d)
		}
	}
	if l.shared == nil {
		return nil
	}
	checks := []struct {
		scope string
		key   string
		rate  Rate
	}{
		{"user", l.prefix + ":user:{" + id.Tenant + "}:" + id.User, l.user},
		{"tenant", l.prefix + ":tenant:{" + id.Tenant + "}", l.tenant},
	}
	for _, c := range checks {
		if c.rate.N == 0 {
			continue
		}
		res, err := l.shared.Allow(ctx, c.key, c.rate.limit())
		if err != nil {
			l.errors.Inc()
			l.warned.Do(func() { l.warn("rate limit check failed, letting requests through", "err", err) })
			return nil
		}
		if res.Allowed == 0 {
			return tooMany(c.scope, "rate limit of this "+c.scope+" reached ("+c.rate.String()+")", res.RetryAfter)
		}
	}
	return nil
}

func tooMany(scope, detail string, after time.Duration) error {
	secs := int(min(max(math.Ceil(after.Seconds()), 1), 3600))
	return &apiError{status: http.StatusTooManyRequests, slug: "rate-limited", detail: detail, retryAfter: secs, reason: "rate_" + scope}
}
