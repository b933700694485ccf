package pii

import (
	"context"
	"fmt"
	"log/slog"
)

// Handler is a slog.Handler that masks personal data in every record's
// message and attributes before passing it on: string values, errors,
// fmt.Stringers, byte slices and, when their printed form holds personal
// data, any other value (then logged as the masked string). Groups and
// attributes added with WithAttrs are masked too. It counts nothing: it is
// the safety net under code that should not log user text in the first
// place.
type Handler struct {
	next slog.Handler
}

var _ slog.Handler = (*Handler)(nil)

// NewHandler returns a handler that masks records and passes them to next.
func NewHandler(next slog.Handler) *Handler { return &Handler{next: next} }

// Enabled reports whether next handles records of level l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle masks r and passes it on.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Mask(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(maskAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs masks as and returns a handler that adds them to every record.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	masked := make([]slog.Attr, len(as))
	for i, a := range as {
		masked[i] = maskAttr(a)
	}
	return &Handler{next: h.next.WithAttrs(masked)}
}

// WithGroup returns a handler that puts later attributes in group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name)}
}

func maskAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); suspicious(s) {
			a.Value = slog.StringValue(Mask(s))
			return a
		}
	case slog.KindGroup:
		as := v.Group()
		masked := make([]slog.Attr, len(as))
		for i, g := range as {
			masked[i] = maskAttr(g)
		}
		a.Value = slog.GroupValue(masked...)
		return a
	case slog.KindAny:
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		case []byte:
			s = string(x)
		default:
			s = fmt.Sprintf("%+v", x)
		}
		if m := Mask(s); m != s {
			a.Value = slog.StringValue(m)
			return a
		}
	}
	a.Value = v
	return a
}
