package producer

import (
	"slices"
	"sync"
	"time"

	"sluice/shared/envelope"
	"sluice/shared/store"
)

// viaStore is the reply partition of a waiter that is woken through the
// store's announcement, not the reply topic (a poll).
const viaStore int32 = -2

// waiters wakes the handlers waiting for a request's answer. A wake carries
// the reply, or nil when only a notification arrived and the handler must
// read the result store.
type waiters struct {
	mu sync.Mutex
	m  map[string][]*waiter
	n  int
}

// waiter is one handler waiting for a request's answer.
type waiter struct {
	ch chan *envelope.Reply
	// part is the reply partition the reply will come on, or viaStore.
	part    int32
	dialog  store.Dialog
	created time.Time
}

// stranded is a waiter whose reply will come on a partition this replica
// no longer reads.
type stranded struct {
	requestID string
	dialog    store.Dialog
	created   time.Time
}

func newWaiters() *waiters { return &waiters{m: map[string][]*waiter{}} }

// add registers a waiter for the request requestID of dialog d, created at
// created, whose reply comes on partition part (viaStore for a poll). Call
// the returned func when done.
func (w *waiters) add(requestID string, part int32, d store.Dialog, created time.Time) (<-chan *envelope.Reply, func()) {
	wt := &waiter{ch: make(chan *envelope.Reply, 1), part: part, dialog: d, created: created}
	w.mu.Lock()
	w.m[requestID] = append(w.m[requestID], wt)
	w.n++
	w.mu.Unlock()
	return wt.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.m[requestID]
		if i := slices.Index(list, wt); i >= 0 {
			list = slices.Delete(list, i, i+1)
			w.n--
		}
		if len(list) == 0 {
			delete(w.m, requestID)
		} else {
			w.m[requestID] = list
		}
	}
}

// wake hands r to every waiter of requestID and reports whether there was one.
func (w *waiters) wake(requestID string, r *envelope.Reply) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.m[requestID]
	for _, wt := range list {
		select {
		case wt.ch <- r:
		default: // already woken; the first wake wins
		}
	}
	return len(list) > 0
}

// has reports whether anyone waits for requestID.
func (w *waiters) has(requestID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m[requestID]) > 0
}

// on returns the waiters whose replies come on one of parts.
func (w *waiters) on(parts []int32) []stranded {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []stranded
	for id, list := range w.m {
		for _, wt := range list {
			if slices.Contains(parts, wt.part) {
				out = append(out, stranded{requestID: id, dialog: wt.dialog, created: wt.created})
				break
			}
		}
	}
	return out
}

// len returns the number of registered waiters.
func (w *waiters) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
