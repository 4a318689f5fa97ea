package fakeapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
)

// Running is a fake API listening on a TCP address.
type Running struct {
	*Server
	// URL is the base URL, e.g. "http://127.0.0.1:40123".
	URL string

	http      *http.Server
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

// Start listens on cfg.Listen (default 127.0.0.1:0) and serves until ctx is
// cancelled or Close is called; either way the state file, if configured,
// is saved.
func Start(ctx context.Context, cfg Config) (*Running, error) {
	srv, err := New(cfg)
	if err != nil {
		return nil, err
	}
	cfg = srv.cfg
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return nil, setting.Errorf("fakeapi.listen", "listen on %s: %w; is the port in use? pick another address (127.0.0.1:0 for any free port)", cfg.Listen, err)
	}
	scheme := "http://"
	if cfg.TLS != nil {
		ln, scheme = tls.NewListener(ln, cfg.TLS), "https://"
	}
	r := &Running{
		Server: srv,
		URL:    scheme + ln.Addr().String(),
		http: &http.Server{
			Handler:           srv.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			// Failed TLS handshakes (a client with the wrong CA) are the
			// client's to report.
			ErrorLog:    slog.NewLogLogger(srv.log.Handler(), slog.LevelDebug),
			IdleTimeout: 2 * time.Minute,
		},
		serveDone: make(chan struct{}),
		done:      make(chan struct{}),
	}
	go func() {
		defer close(r.serveDone)
		if err := r.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			srv.log.Error("fakeapi: serve failed", "err", err)
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-r.serveDone:
		case <-r.done:
			return
		}
		_ = r.Close()
	}()
	srv.log.Info("fakeapi: listening", "url", r.URL)
	return r, nil
}

// Close stops the listener, releases held responses, waits up to 10 s for
// requests in flight, then saves the state file if one is configured.
func (r *Running) Close() error {
	r.closeOnce.Do(func() {
		defer close(r.done)
		r.Server.stopWaiting()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := r.http.Shutdown(ctx)
		if err != nil {
			err = errors.Join(fmt.Errorf("shut down fake API: %w", err), r.http.Close())
		}
		<-r.serveDone
		r.closeErr = errors.Join(err, r.Server.Close())
		r.Server.log.Info("fakeapi: stopped", "url", r.URL)
	})
	return r.closeErr
}

// Done is closed when the server has stopped (after Close finished).
func (r *Running) Done() <-chan struct{} { return r.done }

// Err returns Close's result once Done is closed.
func (r *Running) Err() error {
	select {
	case <-r.done:
		return r.closeErr
	default:
		return nil
	}
}
