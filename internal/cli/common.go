package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/eventsync/eventsync/internal/config"
)

// connFlags are the flags every subcommand shares; they mean the same thing
// everywhere and override the config file and the environment.
type connFlags struct {
	config    string
	bus       string
	store     string
	source    string
	namespace string
	dataDir   string
	logLevel  string
}

func addConnFlags(fs *flag.FlagSet, which ...string) *connFlags {
	c := &connFlags{}
	fs.StringVar(&c.config, "config", "", "YAML config file shared by all subcommands (env: EVENTSYNC_CONFIG)")
	for _, w := range which {
		switch w {
		case "bus":
			fs.StringVar(&c.bus, "bus", "", "bus URL: amqp://user:pass@host:5672/ or nats://host:4222; empty = embedded NATS (env: EVENTSYNC_BUS)")
		case "store":
			fs.StringVar(&c.store, "store", "", "state store URL: postgres://…, redis://… or nats://…; empty = embedded (env: EVENTSYNC_STORE)")
		case "source":
			fs.StringVar(&c.source, "source", "", "application database: postgres://… or sqlite://path (env: EVENTSYNC_SOURCE)")
		}
	}
	fs.StringVar(&c.namespace, "namespace", "", "prefix of queues, keys and tables (default eventsync; env: EVENTSYNC_NAMESPACE)")
	fs.StringVar(&c.dataDir, "data-dir", "", "embedded-mode data directory (default ./eventsync-data; env: EVENTSYNC_DATA_DIR)")
	fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn or error (env: EVENTSYNC_LOG_LEVEL)")
	return c
}

// load reads the config file and environment, applies flags, validates.
func (c *connFlags) load(env Env) (*config.Config, error) {
	path := c.config
	if path == "" {
		path = lookupEnv("EVENTSYNC_CONFIG")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	for _, o := range []struct {
		dst *string
		val string
	}{{&cfg.Bus, c.bus}, {&cfg.Store, c.store}, {&cfg.Source, c.source}, {&cfg.Namespace, c.namespace}, {&cfg.DataDir, c.dataDir}, {&cfg.Log.Level, c.logLevel}} {
		if o.val != "" {
			*o.dst = o.val
		}
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "eventsync"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "eventsync-data"
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

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
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// startAdmin listens on addr ("" means none) and serves until Stop.
func startAdmin(addr string, reg *prometheus.Registry, extra map[string]http.Handler, log *slog.Logger) (*adminServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener on %s: %w (choose another port with --admin or admin.listen, or \"off\" to disable)", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	for path, h := range extra {
		mux.Handle(path, h)
	}
	a := &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, done: make(chan error, 1)}
	go func() {
		err := a.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		a.done <- err
	}()
	log.Info("admin HTTP listening", "addr", "http://"+ln.Addr().String(), "paths", "/metrics /healthz")
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
