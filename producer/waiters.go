package producer

import (
	"sync"

	"sluice/shared/envelope"
)

// waiters wakes the handlers waiting for a request's answer. A wake carries
// the reply when it came from the reply topic, or nil when only a
// notification arrived and the handler must read the result store.
type waiters struct {
	mu sync.Mutex
	m  map[string][]chan *envelope.Reply
	n  int
}

func newWaiters() *waiters { return &waiters{m: map[string][]chan *envelope.Reply{}} }

// add registers a waiter for requestID. Call the returned func when done.
func (w *waiters) add(requestID string) (<-chan *envelope.Reply, func()) {
	ch := make(chan *envelope.Reply, 1)
	w.mu.Lock()
	w.m[requestID] = append(w.m[requestID], ch)
	w.n++
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.m[requestID]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				w.n--
				break
			}
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
	for _, ch := range list {
		select {
		case ch <- r:
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

// len returns the number of registered waiters.
func (w *waiters) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}
