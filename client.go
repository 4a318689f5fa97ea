package eventsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/busmetrics"
	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/throttle"
)

// Option customises a Client.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	registerer prometheus.Registerer
	sink       sink.Sink
	bus        bus.Bus
	store      store.Store
	source     source.Source
	limiter    throttle.Limiter
	tracer     trace.TracerProvider
}

// WithLogger sets the logger of the Client and everything it runs. Default
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer receives the Prometheus collectors of the workers, relays,
// sink and throttle the Client runs. Default: none (metrics are kept but
// not exported).
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registerer = r }
}

// WithTracerProvider traces what the Client runs with OpenTelemetry: a
// relay starts a trace per published outbox row and puts its W3C
// traceparent in the message's headers; a worker continues it with a span
// per delivery, child spans for its lease calls and API calls, and sends
// the traceparent to the API; a resync makes each page a trace its events
// carry. Default: none (tracing off, at no cost).
// The caller owns tp and shuts it down after the Client's work ends.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

// WithSink makes workers write through s instead of the HTTP sink of
// Config.Sink: use it for APIs that need code (an SDK, a multi-step create,
// request signing). s must meet the port's contract; sink/sinktest checks
// it. The throttle still wraps it unless Config.Throttle disables it.
func WithSink(s sink.Sink) Option { return func(o *options) { o.sink = s } }

// WithBus uses an open bus instead of Config.Bus. The Client does not
// close it.
func WithBus(b bus.Bus) Option { return func(o *options) { o.bus = b } }

// WithStore uses an open state store instead of Config.Store. The Client
// does not close it.
func WithStore(s store.Store) Option { return func(o *options) { o.store = s } }

// WithSource uses an open source database instead of Config.Source. The
// Client does not close it.
func WithSource(s source.Source) Option { return func(o *options) { o.source = s } }

// WithLimiter keeps the throttle's cluster-wide state in l instead of the
// state store (which offers it through throttle.LimiterProvider). Workers
// share one API budget exactly when they share a limiter. The Client does
// not close it.
func WithLimiter(l throttle.Limiter) Option { return func(o *options) { o.limiter = l } }

// Client is one eventsync deployment seen from a Go program: its
// configuration and the connections to its bus, state store and source,
// each opened on first use and shared by the workers, relays and resyncs
// the Client creates. It is safe for concurrent use. Close it when done.
type Client struct {
	cfg  Config
	opts options
	log  *slog.Logger

	mu         sync.Mutex
	closed     bool
	embedded   *embedded.Server
	bus        bus.Bus
	busName    string
	store      store.Store
	storeName  string
	source     source.Source
	limiter    throttle.Limiter
	sink       sink.Sink
	metrics    *engine.Metrics
	throttleMx *throttle.Metrics
	queueMx    *busmetrics.Collector
	closers    []func() error // in opening order; run in reverse
}

// Open validates cfg (with defaults applied) and returns a Client. It
// connects to nothing yet: each connection opens when something first
// needs it, so a relay never opens a state store it does not use.
func Open(cfg Config, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	c := &Client{cfg: cfg.WithDefaults(), opts: o, log: o.logger}
	// Whatever the Client runs logs without its connection strings'
	// secrets, however a driver's error printed them (internal/redact).
	c.log = redact.NewScrubber(cfg.Bus, cfg.Store, cfg.Source, cfg.Sink.Defaults.BaseURL).Logger(c.log)
	return c, nil
}

// Config returns the Client's configuration with defaults applied.
func (c *Client) Config() Config { return c.cfg }

// Close closes every connection the Client opened, in reverse order, and
// the embedded server if it started one. Injected adapters stay open.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for i := len(c.closers) - 1; i >= 0; i-- {
		if err := c.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	c.closers = nil
	return errors.Join(errs...)
}

var errClosed = errors.New("eventsync: client is closed")

func (c *Client) params(url string) openParams {
	return openParams{URL: url, Namespace: c.cfg.Namespace, Logger: c.log}
}

// embeddedURL starts the embedded server once, for the bus and the store.
// Callers hold c.mu.
func (c *Client) embeddedURL(ctx context.Context, key string) (string, error) {
	if c.embedded != nil {
		return c.embedded.ClientURL(), nil
	}
	if c.cfg.DataDir == "" {
		return "", setting.Errorf(key, "no %s: set the %s URL, or a data directory for an embedded deployment", key, key)
	}
	dir := filepath.Join(c.cfg.DataDir, "nats")
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, Logger: c.log})
	if err != nil {
		return "", setting.Errorf("data_dir", "start the embedded NATS server in %s: %w", dir, err)
	}
	c.embedded = srv
	c.closers = append(c.closers, func() error { srv.Shutdown(); return nil })
	c.log.Info("embedded NATS JetStream started", "data_dir", dir, "url", srv.ClientURL())
	return srv.ClientURL(), nil
}

// Bus returns the bus, opening it on first use: the one given with WithBus,
// Config.Bus, or the embedded deployment under Config.DataDir.
func (c *Client) Bus(ctx context.Context) (bus.Bus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.busLocked(ctx)
}

func (c *Client) busLocked(ctx context.Context) (bus.Bus, error) {
	switch {
	case c.closed:
		return nil, errClosed
	case c.opts.bus != nil:
		return c.opts.bus, nil
	case c.bus != nil:
		return c.bus, nil
	}
	url, name := c.cfg.Bus, RedactURL(c.cfg.Bus)
	if url == "" {
		var err error
		if url, err = c.embeddedURL(ctx, "bus"); err != nil {
			return nil, err
		}
		name = "embedded " + url
	}
	p := c.params(url)
	p.Partitions = c.cfg.BusPartitions
	p.TLS, p.NATS = c.cfg.BusTLS, c.cfg.BusNATS
	b, err := openBus(ctx, p)
	if err != nil {
		return nil, setting.Errorf("bus", "open the bus: %w", err)
	}
	c.bus, c.busName = b, name
	c.closers = append(c.closers, b.Close)
	return b, nil
}

// Store returns the state store, opening it on first use: the one given
// with WithStore, Config.Store, or the embedded deployment.
func (c *Client) Store(ctx context.Context) (store.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.storeLocked(ctx)
}

func (c *Client) storeLocked(ctx context.Context) (store.Store, error) {
	switch {
	case c.closed:
		return nil, errClosed
	case c.opts.store != nil:
		return c.opts.store, nil
	case c.store != nil:
		return c.store, nil
	}
	url, name := c.cfg.Store, RedactURL(c.cfg.Store)
	if url == "" {
		var err error
		if url, err = c.embeddedURL(ctx, "store"); err != nil {
			return nil, err
		}
		name = "embedded " + url
	}
	p := c.params(url)
	p.TLS, p.NATS = c.cfg.StoreTLS, c.cfg.StoreNATS
	st, err := openStore(ctx, p)
	if err != nil {
		return nil, setting.Errorf("store", "open the state store: %w", err)
	}
	c.store, c.storeName = st, name
	c.closers = append(c.closers, st.Close)
	return st, nil
}

// Source returns the application's database, opening it on first use: the
// one given with WithSource, or Config.Source.
func (c *Client) Source(ctx context.Context) (source.Source, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sourceLocked(ctx)
}

func (c *Client) sourceLocked(ctx context.Context) (source.Source, error) {
	switch {
	case c.closed:
		return nil, errClosed
	case c.opts.source != nil:
		return c.opts.source, nil
	case c.source != nil:
		return c.source, nil
	case c.cfg.Source == "":
		return nil, setting.Errorf("source", "no source: set the source database URL (postgres://… or sqlite://path)")
	}
	src, err := openSource(ctx, c.params(c.cfg.Source))
	if err != nil {
		return nil, setting.Errorf("source", "open the source: %w", err)
	}
	c.source = src
	c.closers = append(c.closers, src.Close)
	return src, nil
}

// Describe names the bus and the store for logs, passwords hidden; an
// adapter not opened yet, or injected, reads as such.
func (c *Client) Describe() (busName, storeName string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	busName, storeName = c.busName, c.storeName
	if c.opts.bus != nil {
		busName = "injected"
	}
	if c.opts.store != nil {
		storeName = "injected"
	}
	return busName, storeName
}

// engineMetrics registers the workers' collectors once per Client.
// Callers hold c.mu.
func (c *Client) engineMetrics() *engine.Metrics {
	if c.metrics == nil {
		c.metrics = engine.NewMetrics(c.opts.registerer)
	}
	return c.metrics
}

// Sink returns what workers write through, built on first use and shared:
// the Go sink given with WithSink or the HTTP sink of Config.Sink, behind
// the throttle unless Config.Throttle disables it. Every API call a Client
// makes goes through it, so it counts against the fleet's budget.
func (c *Client) Sink(ctx context.Context) (sink.Sink, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sinkLocked(ctx)
}

func (c *Client) sinkLocked(ctx context.Context) (sink.Sink, error) {
	switch {
	case c.closed:
		return nil, errClosed
	case c.sink != nil:
		return c.sink, nil
	}
	base := c.opts.sink
	if base == nil {
		if !c.cfg.HasSink() {
			return nil, setting.Errorf("sink", "no sink: configure the HTTP sink's entities, or give a Go sink")
		}
		metrics := c.engineMetrics()
		hs, err := httpsink.New(c.cfg.Sink, httpsink.WithLogger(c.log), httpsink.WithTracerProvider(c.opts.tracer), httpsink.WithObserver(func(op, entity string, status int, d time.Duration, err error) {
			metrics.ObserveSink(op, entity, status, d, err)
		}))
		if err != nil {
			return nil, setting.Errorf("sink", "sink: %w", err)
		}
		c.closers = append(c.closers, func() error { hs.Close(); return nil })
		base = hs
	}
	if !c.cfg.Throttle.On() {
		c.sink = base
		return base, nil
	}
	lim, err := c.limiterLocked(ctx)
	if err != nil {
		return nil, fmt.Errorf("throttle: %w (or disable the throttle)", err)
	}
	if c.throttleMx == nil {
		c.throttleMx = throttle.NewMetrics(c.opts.registerer)
	}
	ts, err := throttle.New(base, c.cfg.Throttle.Config, throttle.Options{
		Name: c.cfg.Namespace + "/sink", Limiter: lim, Metrics: c.throttleMx, Logger: c.log,
	})
	if err != nil {
		return nil, fmt.Errorf("throttle: %w", err)
	}
	c.sink = ts
	return ts, nil
}

// limiterLocked returns the throttle's shared state: WithLimiter's, or the
// state store's. Callers hold c.mu.
func (c *Client) limiterLocked(ctx context.Context) (throttle.Limiter, error) {
	switch {
	case c.opts.limiter != nil:
		return c.opts.limiter, nil
	case c.limiter != nil:
		return c.limiter, nil
	}
	st, err := c.storeLocked(ctx)
	if err != nil {
		return nil, err
	}
	provider, ok := st.(throttle.LimiterProvider)
	if !ok {
		return nil, fmt.Errorf("the state store %T keeps no throttle state; give a limiter", st)
	}
	lim, err := provider.OpenLimiter(ctx, c.cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("open the throttle's shared state: %w", err)
	}
	if closer, ok := lim.(io.Closer); ok {
		c.closers = append(c.closers, closer.Close)
	}
	c.limiter = lim
	return lim, nil
}
