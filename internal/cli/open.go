package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/natskv"
	"github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/store/redis"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/natslimit"
	"github.com/eventsync/eventsync/throttle/pglimit"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

type need int

const (
	needBus need = 1 << iota
	needStore
)

// resources are the adapters a command opened, chosen by URL scheme.
type resources struct {
	Bus       bus.Bus
	Store     store.Store
	BusName   string // redacted URL or "embedded"
	StoreName string
	Embedded  *embedded.Server
	closers   []func()
	storeURL  string // the URL the store was opened with (embedded: its client URL)
}

// Close releases everything in reverse order of opening.
func (r *resources) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// openResources opens the bus and/or store named in cfg. An empty URL means
// the embedded NATS server under cfg.DataDir, started once for both, and
// only when a data directory was given.
func openResources(ctx context.Context, cfg *config.Config, log *slog.Logger, what need) (_ *resources, err error) {
	res := &resources{}
	defer func() {
		if err != nil {
			res.Close()
		}
	}()
	embeddedURL := func(what string) (string, error) {
		if res.Embedded == nil {
			if cfg.DataDir == "" {
				return "", errNoDeployment(what)
			}
			dir := filepath.Join(cfg.DataDir, "nats")
			srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, Logger: log})
			if err != nil {
				return "", fmt.Errorf("start the embedded NATS server in %s: %w (set --data-dir, or point --bus/--store at running services)", dir, err)
			}
			res.Embedded = srv
			res.closers = append(res.closers, srv.Shutdown)
			log.Info("embedded NATS JetStream started", "data_dir", dir, "url", srv.ClientURL())
		}
		return res.Embedded.ClientURL(), nil
	}
	if what&needBus != 0 {
		url := cfg.Bus
		res.BusName = config.Redact(url)
		if url == "" {
			if url, err = embeddedURL("bus"); err != nil {
				return nil, err
			}
			res.BusName = "embedded " + url
		}
		b, err := openBus(ctx, url, cfg.Namespace, log)
		if err != nil {
			return nil, err
		}
		res.Bus = b
		res.closers = append(res.closers, func() { _ = b.Close() })
	}
	if what&needStore != 0 {
		url := cfg.Store
		res.StoreName = config.Redact(url)
		if url == "" {
			if url, err = embeddedURL("state store"); err != nil {
				return nil, err
			}
			res.StoreName = "embedded " + url
		}
		st, err := openStore(ctx, url, cfg.Namespace, log)
		if err != nil {
			return nil, err
		}
		res.Store, res.storeURL = st, url
		res.closers = append(res.closers, func() { _ = st.Close() })
	}
	return res, nil
}

func openBus(ctx context.Context, url, namespace string, log *slog.Logger) (bus.Bus, error) {
	switch {
	case strings.HasPrefix(url, "amqp://"), strings.HasPrefix(url, "amqps://"):
		return rabbitmq.Open(ctx, rabbitmq.Config{URL: url, Namespace: namespace, Logger: log})
	case strings.HasPrefix(url, "nats://"):
		return natsjs.Open(ctx, natsjs.Config{URL: url, Namespace: namespace, Logger: log})
	}
	return nil, fmt.Errorf("bus URL %q: unsupported scheme; use amqp://user:pass@host:5672/ or nats://host:4222 (or leave it empty for the embedded bus)", config.Redact(url))
}

func openStore(ctx context.Context, url, namespace string, log *slog.Logger) (store.Store, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return postgres.Open(ctx, postgres.Config{DSN: url, Schema: namespace, Logger: log})
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"):
		return redis.Open(ctx, redis.Config{URL: url, Prefix: namespace, Logger: log})
	case strings.HasPrefix(url, "nats://"):
		return natskv.Open(ctx, natskv.Config{URL: url, Bucket: namespace, Logger: log})
	}
	return nil, errors.New("store URL " + config.Redact(url) + ": unsupported scheme; use postgres://…, redis://… or nats://… (or leave it empty for the embedded store)")
}

// openLimiter returns the cluster-wide throttle state kept in the same
// service as the state store, sharing its connection where it can, so every
// worker process that shares a store shares one rate budget.
func openLimiter(ctx context.Context, res *resources, namespace string) (throttle.Limiter, func(), error) {
	switch st := res.Store.(type) {
	case *redis.Store:
		l, err := redislimit.New(st.Client(), namespace)
		return l, func() {}, err
	case *postgres.Store:
		l, err := pglimit.New(ctx, st.Pool(), namespace)
		return l, func() {}, err
	case *natskv.Store:
		l, err := natslimit.Open(ctx, natslimit.Config{URL: res.storeURL, Bucket: namespace})
		if err != nil {
			return nil, nil, err
		}
		return l, func() { _ = l.Close() }, nil
	}
	return nil, nil, fmt.Errorf("no cluster-wide throttle for store %T", res.Store)
}
