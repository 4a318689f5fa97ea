package eventsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/source"
	pgsource "github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/natskv"
	pgstore "github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/store/redis"
)

// This file is the one place that maps URL schemes to adapters. Validation
// asks it which schemes exist, and every command and the Client open
// through it. The throttle's cluster-wide state needs no entry: a store
// offers it by implementing throttle.LimiterProvider.

type adapterKind int

const (
	kindBus adapterKind = iota
	kindStore
	kindSource
)

func (k adapterKind) String() string {
	return [...]string{"bus", "store", "source"}[k]
}

// openParams is what every opener gets.
type openParams struct {
	URL       string
	Namespace string
	// Partitions is Config.BusPartitions (buses only).
	Partitions int
	// TLS and NATS are the connection's TLS settings and NATS credentials
	// (bus_tls and bus_nats for the bus, store_tls and store_nats for
	// the store).
	TLS    TLSConfig
	NATS   NATSAuth
	Logger *slog.Logger
}

type adapter struct {
	kind    adapterKind
	schemes []string
	example string
	bus     func(context.Context, openParams) (bus.Bus, error)
	store   func(context.Context, openParams) (store.Store, error)
	source  func(context.Context, openParams) (source.Source, error)
}

var adapters = []adapter{
	{kind: kindBus, schemes: []string{"amqp", "amqps"}, example: "amqp://user:pass@host:5672/",
		bus: func(ctx context.Context, p openParams) (bus.Bus, error) {
			return rabbitmq.Open(ctx, rabbitmq.Config{URL: p.URL, Namespace: p.Namespace, Partitions: p.Partitions, TLS: p.TLS, Logger: p.Logger})
		}},
	{kind: kindBus, schemes: []string{"nats", "tls"}, example: "nats://host:4222",
		bus: func(ctx context.Context, p openParams) (bus.Bus, error) {
			return natsjs.Open(ctx, natsjs.Config{URL: p.URL, Namespace: p.Namespace, Partitions: p.Partitions, TLS: p.TLS, CredentialsFile: p.NATS.CredentialsFile, NKeyFile: p.NATS.NKeyFile, Logger: p.Logger})
		}},
	{kind: kindStore, schemes: []string{"postgres", "postgresql"}, example: "postgres://user:pass@host:5432/db",
		store: func(ctx context.Context, p openParams) (store.Store, error) {
			return pgstore.Open(ctx, pgstore.Config{DSN: p.URL, Schema: p.Namespace, Logger: p.Logger})
		}},
	{kind: kindStore, schemes: []string{"redis", "rediss"}, example: "redis://host:6379/0",
		store: func(ctx context.Context, p openParams) (store.Store, error) {
			return redis.Open(ctx, redis.Config{URL: p.URL, Prefix: p.Namespace, TLS: p.TLS, Logger: p.Logger})
		}},
	{kind: kindStore, schemes: []string{"nats", "tls"}, example: "nats://host:4222",
		store: func(ctx context.Context, p openParams) (store.Store, error) {
			return natskv.Open(ctx, natskv.Config{URL: p.URL, Bucket: p.Namespace, TLS: p.TLS, CredentialsFile: p.NATS.CredentialsFile, NKeyFile: p.NATS.NKeyFile, Logger: p.Logger})
		}},
	{kind: kindSource, schemes: []string{"postgres", "postgresql"}, example: "postgres://user@host:5432/db",
		source: func(ctx context.Context, p openParams) (source.Source, error) {
			return pgsource.Open(ctx, pgsource.Config{DSN: p.URL, Logger: p.Logger})
		}},
	{kind: kindSource, schemes: []string{"sqlite"}, example: "sqlite:///abs/path/app.db",
		source: openSQLiteSource},
}

// openSQLiteSource opens sqlite://path, refusing a file that does not
// exist: a typo must not create an empty database the relay then watches
// forever.
func openSQLiteSource(ctx context.Context, p openParams) (source.Source, error) {
	path := strings.TrimPrefix(p.URL, "sqlite://")
	if path == "" {
		return nil, errors.New("sqlite:// needs a path: sqlite:///abs/path/app.db or sqlite://relative/app.db")
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("SQLite database %s: %w; check the path (sqlite:///abs/path/app.db)", path, err)
	}
	return sqlite.Open(ctx, sqlite.Config{Path: path, Logger: p.Logger})
}

// Schemes returns the URL schemes eventsync can open for kind "bus",
// "store" or "source", in the registry's order.
func Schemes(kind string) []string {
	var out []string
	for _, a := range adapters {
		if a.kind.String() == kind {
			out = append(out, a.schemes...)
		}
	}
	return out
}

// lookupScheme finds the adapter of kind for rawURL's scheme.
func lookupScheme(kind adapterKind, rawURL string) (adapter, error) {
	scheme, _, found := strings.Cut(rawURL, "://")
	var examples []string
	for _, a := range adapters {
		if a.kind != kind {
			continue
		}
		if found {
			for _, s := range a.schemes {
				if strings.EqualFold(s, scheme) {
					return a, nil
				}
			}
		}
		examples = append(examples, a.example)
	}
	return adapter{}, fmt.Errorf("%q has an unsupported scheme; use %s", RedactURL(rawURL), strings.Join(examples, " or "))
}

func openBus(ctx context.Context, p openParams) (bus.Bus, error) {
	a, err := lookupScheme(kindBus, p.URL)
	if err != nil {
		return nil, err
	}
	return a.bus(ctx, p)
}

func openStore(ctx context.Context, p openParams) (store.Store, error) {
	a, err := lookupScheme(kindStore, p.URL)
	if err != nil {
		return nil, err
	}
	return a.store(ctx, p)
}

func openSource(ctx context.Context, p openParams) (source.Source, error) {
	a, err := lookupScheme(kindSource, p.URL)
	if err != nil {
		return nil, err
	}
	return a.source(ctx, p)
}

// RedactURL returns a connection string (a URL, or a PostgreSQL key=value
// DSN) with its secrets hidden, as everything eventsync prints shows it:
// passwords (including ones holding '@'), token-only user names
// (nats://TOKEN@host) and secret query parameters (password=,
// sslpassword=, token=, …) read "xxxxx".
func RedactURL(raw string) string { return redact.URL(raw) }
