package stacktest

import (
	"net"
	"sync"
	"testing"
)

// Freezer is a TCP proxy to a server (a Redis) that can be frozen: from
// then on it holds every connection and forwards nothing, as a server that
// hangs (a network partition without resets, a long-running script).
type Freezer struct {
	// Addr is where the proxy listens.
	Addr   string
	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

// NewFreezer starts a proxy to target, stopped when the test ends.
func NewFreezer(tb testing.TB, target string) *Freezer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &Freezer{Addr: ln.Addr().String()}
	tb.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			go f.pipe(up, c)
			go f.pipe(c, up)
		}
	}()
	return f
}

func (f *Freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if frozen {
			continue // swallowed: the server hangs
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// Freeze makes the server hang: what either side sends is swallowed.
func (f *Freezer) Freeze() { f.set(true) }

// Thaw forwards again (what was swallowed stays lost).
func (f *Freezer) Thaw() { f.set(false) }

func (f *Freezer) set(frozen bool) {
	f.mu.Lock()
	f.frozen = frozen
	f.mu.Unlock()
}
