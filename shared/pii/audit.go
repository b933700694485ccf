package pii

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Auditor masks texts, counts every hit by kind and writes one audit log
// line per masked text, naming the kinds and counts but never the values.
type Auditor struct {
	log    *slog.Logger
	masked *prometheus.CounterVec
}

// NewAuditor returns an auditor that logs to log and counts on reg (nil
// skips the metric registration). A second auditor on the same registerer
// shares the first one's counter. It returns an error when the metric
// cannot be registered.
func NewAuditor(log *slog.Logger, reg prometheus.Registerer) (*Auditor, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	masked := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_pii_masked_total", Help: "Personal data values masked, by kind.",
	}, []string{"kind"})
	if reg != nil {
		if err := reg.Register(masked); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register pii metrics: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
			if !ok {
				return nil, fmt.Errorf("register pii metrics: %w", err)
			}
			masked = existing
		}
	}
	for _, k := range Kinds {
		masked.WithLabelValues(k.String()) // export zeros
	}
	return &Auditor{log: log, masked: masked}, nil
}

// Mask masks s like Mask. When it masked something, it counts the hits and
// logs an audit line "pii masked" with where (what the text was: question,
// answer, prompt ...), the count of each kind found and attrs (request id,
// tenant: never the text).
func (a *Auditor) Mask(ctx context.Context, s, where string, attrs ...slog.Attr) string {
	out, hits := Scan(s)
	if hits.Total() == 0 {
		return s
	}
	a.Record(ctx, hits, where, attrs...)
	return out
}

// Record counts hits found elsewhere (see Scan) and logs their audit line.
func (a *Auditor) Record(ctx context.Context, hits Hits, where string, attrs ...slog.Attr) {
	if hits.Total() == 0 {
		return
	}
	all := make([]slog.Attr, 0, len(attrs)+1+len(Kinds))
	all = append(all, slog.String("where", where))
	for _, k := range Kinds {
		if n := hits[k]; n > 0 {
			a.masked.WithLabelValues(k.String()).Add(float64(n))
			all = append(all, slog.Int(k.String(), n))
		}
	}
	all = append(all, attrs...)
	a.log.LogAttrs(ctx, slog.LevelInfo, "pii masked", all...)
}

// Counter returns the counter of kind k, for tests and dashboards built in code.
func (a *Auditor) Counter(k Kind) prometheus.Counter { return a.masked.WithLabelValues(k.String()) }
