package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/store"
)

func newLogger(w io.Writer, cfg config.Log) *slog.Logger {
	level := slog.LevelInfo
	switch cfg.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// adminServer serves /metrics, /healthz and extra handlers until ctx ends.
type adminServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(runtimeCollectors()...)
	return reg
}

// runtimeCollectors are the Go runtime's and the process's metrics, which
// every eventsync process exports.
func runtimeCollectors() []prometheus.Collector {
	return []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
}

// healthCheck reports whether one dependency answers; it must return
// within its context's deadline.
type healthCheck func(ctx context.Context) error

// startAdmin listens on addr ("" means none) and serves until Stop; with
// profile, also Go's profiler under /debug/pprof/. /healthz and /readyz
// run checks (bus and store reachable) and answer 503 naming the failing
// ones; /livez only says the process serves HTTP, for a liveness probe
// that must not restart a worker because the broker is down.
func startAdmin(addr string, reg *prometheus.Registry, extra map[string]http.Handler, checks map[string]healthCheck, profile bool, log *slog.Logger) (*adminServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener on %s: %w (choose another address with --admin, or \"off\" to disable it)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	health := healthHandler(checks)
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /readyz", health)
	for path, h := range extra {
		mux.Handle(path, h)
	}
	paths := "/metrics /healthz /readyz /livez"
	for path := range extra {
		paths += " " + strings.TrimPrefix(path, "GET ")
	}
	if profile {
		// Registered by hand: importing net/http/pprof for its side effect
		// would put it on http.DefaultServeMux of every embedding program.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		paths += " /debug/pprof/"
	}
	a := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, done: make(chan error, 1)}
	go func() {
		err := a.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		a.done <- err
	}()
	log.Info("admin HTTP listening", "addr", "http://"+ln.Addr().String(), "paths", paths)
	return a, nil
}

// Stop shuts the server down and waits for its goroutine.
func (a *adminServer) Stop() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
	<-a.done
}

// Addr is the bound address (useful with port 0).
func (a *adminServer) Addr() string {
	if a == nil {
		return ""
	}
	return a.ln.Addr().String()
}

func lookupEnv(name string) string { return os.Getenv(name) }

// healthTimeout bounds a health check; /readyz answers by then.
const healthTimeout = 2 * time.Second

// healthHandler runs every check at once, each bounded by healthTimeout,
// and answers 200 "ok" or 503 with one line per failing dependency. It
// answers at the deadline even when a check's client ignores its context
// (go-redis waits for its own read timeout): that check fails as not
// answering, and ends in the background.
func healthHandler(checks map[string]healthCheck) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		names := make([]string, 0, len(checks))
		for name := range checks {
			names = append(names, name)
		}
		sort.Strings(names)
		type result struct {
			i   int
			err error
		}
		results := make(chan result, len(names)) // buffered: a late check never blocks
		for i, name := range names {
			go func() { results <- result{i, checks[name](ctx)} }()
		}
		errs := make([]error, len(names))
		for i := range errs {
			errs[i] = fmt.Errorf("no answer within %v", healthTimeout)
		}
	wait:
		for range names {
			select {
			case res := <-results:
				errs[res.i] = res.err
			case <-ctx.Done():
				break wait
			}
		}
		var failed []string
		for i, err := range errs {
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", names[i], err))
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, strings.Join(failed, "\n")+"\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
}

// busCheck asks the bus for a stream's statistics: a round trip to the
// broker.
func busCheck(b bus.Bus, stream bus.Stream) healthCheck {
	return func(ctx context.Context) error {
		_, err := b.Stats(ctx, stream)
		return err
	}
}

// storeCheck reads a control record: a round trip to the state store.
func storeCheck(st store.Control) healthCheck {
	return func(ctx context.Context) error {
		_, _, err := st.GetControl(ctx, "healthz")
		return err
	}
}
