// Package metric helps the packages that export Prometheus metrics build
// them in one place: each metric is registered where it is made
// (promauto.With on a Registerer of this package), so no list of collectors
// is kept by hand next to the struct, and a registration error is returned
// by the constructor rather than panicking; and the children of a vector
// whose label values are known in advance are looked up once (Children),
// so that counting one on a hot path does not hash the label and take the
// vector's lock.
//
//	r := metric.NewRegisterer(reg) // reg nil: nothing is registered
//	f := promauto.With(r)
//	m := metrics{
//		records: metric.Resolve(f.NewCounterVec(opts, []string{"outcome"}), "done", "expired"),
//	}
//	if err := r.Err(); err != nil {
//		return nil, fmt.Errorf("register metrics: %w", err)
//	}
package metric

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Registerer registers on the prometheus.Registerer it wraps, and keeps the
// errors of MustRegister instead of panicking on them: promauto.With(r)
// builds metrics through it in constructors that must not panic.
type Registerer struct {
	reg  prometheus.Registerer
	errs []error
}

// NewRegisterer returns a Registerer on reg. With a nil reg nothing is
// registered and Err is nil.
func NewRegisterer(reg prometheus.Registerer) *Registerer {
	return &Registerer{reg: reg}
}

// Register registers c; it returns nil without registering when the
// wrapped registerer is nil.
func (r *Registerer) Register(c prometheus.Collector) error {
	if r.reg == nil {
		return nil
	}
	return r.reg.Register(c)
}

// MustRegister registers cs, keeping the errors for Err.
func (r *Registerer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			r.errs = append(r.errs, err)
		}
	}
}

// Unregister unregisters c.
func (r *Registerer) Unregister(c prometheus.Collector) bool {
	return r.reg != nil && r.reg.Unregister(c)
}

// Err returns the errors MustRegister met, joined, or nil.
func (r *Registerer) Err() error { return errors.Join(r.errs...) }

// vector is a metric vector of one label (or curried down to one), such as
// *prometheus.CounterVec or prometheus.ObserverVec.
type vector[T any] interface {
	WithLabelValues(lvs ...string) T
}

// Children is a vector of one label whose children of known values are
// looked up once each.
type Children[T any] struct {
	vec   vector[T]
	known map[string]*child[T] // read-only after Resolve
}

type child[T any] struct {
	once sync.Once
	m    T
}

// Resolve returns vec with the children of values to be kept on their
// first use. A child is exported from its first use on, as through vec:
// /metrics shows the same series either way.
func Resolve[T any](vec vector[T], values ...string) Children[T] {
	c := Children[T]{vec: vec, known: make(map[string]*child[T], len(values))}
	for _, v := range values {
		c.known[v] = &child[T]{}
	}
	return c
}

// With returns the child for value: for a value given to Resolve, the one
// kept since its first use; for any other, the vector's.
func (c Children[T]) With(value string) T {
	k, ok := c.known[value]
	if !ok {
		return c.vec.WithLabelValues(value)
	}
	k.once.Do(func() { k.m = c.vec.WithLabelValues(value) })
	return k.m
}
