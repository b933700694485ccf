package producer

import (
	"context"

	"sluice/shared/store"
)

// SetDeltas has s's WebSockets stream, for every request, the delta pieces
// that gen passes to emit (which reports false once the connection is
// gone), in place of the answers' events.
func SetDeltas(s *Server, gen func(ctx context.Context, requestID string, emit func(text string) bool)) {
	s.events = func(ctx context.Context, _ store.Dialog, requestID, _ string, emit func(wsOut) bool) error {
		seq := 0
		gen(ctx, requestID, func(text string) bool {
			n := seq
			seq++
			return emit(wsOut{Type: "delta", Seq: &n, Text: text})
		})
		return nil
	}
}
