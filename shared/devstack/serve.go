package devstack

import (
	"context"
	"net"
	"net/http"
	"time"
)

// ServeUntil serves h on ln until ctx ends, then shuts the server down,
// waiting up to 5 s for the requests under way. It returns the server's
// error when it stops by itself, else the shutdown's.
func ServeUntil(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
