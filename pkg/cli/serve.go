package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"

	"github.com/eventlog/eventlog/internal/httpapi"
)

// listen opens the HTTP listener first, so that a port in use fails at start
// with a clear message.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("HTTP address %s is in use: stop what listens there or choose another with -http-addr", addr)
		}
		return nil, fmt.Errorf("-http-addr %s: %v", addr, err)
	}
	return ln, nil
}

// serve serves api on ln, behind auth, until ctx ends, then shuts down
// gracefully: the live streams end at once, other requests finish.
func serve(ctx context.Context, ln net.Listener, api *httpapi.Server, auth *httpapi.Auth, log *slog.Logger) error {
	srv := httpapi.NewHTTPServer(ln.Addr().String(), auth.Wrap(api.Handler()), log)
	srv.RegisterOnShutdown(api.CloseStreams)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
