// Package relay moves outbox rows from the source database to the bus:
// claim a batch of unsent rows, publish them to the live stream with broker
// confirms, then mark them sent. Rows are marked only after every confirm,
// so a crash or a broker outage re-publishes at most the claimed batch and
// never loses a row; event versions absorb the duplicates downstream.
//
// A row that is not a valid event (a column the source could not read, such
// as a PostgreSQL occurred_at of 'infinity'; a time outside the years
// 0000-9999; data that is not a JSON object; text that is not UTF-8; a
// version below 1; an event over Config.MaxEventBytes) never fails its
// batch: the relay publishes in its place a rejection, a JSON document
// whose first member's name is the reason (the outbox id, entity and key,
// what is wrong, how to fix it) and whose other members keep the row's
// values; the header bus.HeaderRejected carries the reason too. The worker
// parks such a message at once with that reason (and the body alone fails
// event.Parse, for a worker that predates the header); the row is marked sent
// like the others, counted in eventsync_relay_invalid_total and logged,
// and every row behind it is relayed in order. Fixing the row and setting
// its sent_at to NULL publishes it again. See docs/outbox.md.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tracing"
	"github.com/eventsync/eventsync/source"
)

// Config tunes the relay.
type Config struct {
	// BatchSize is how many rows one claim takes and one Publish sends.
	// Default 500.
	BatchSize int
	// PollInterval bounds how long the relay waits for a notification
	// before looking for rows anyway. Default 1s.
	PollInterval time.Duration
	// Retention is how long sent rows stay in the outbox (for debugging and
	// replays by hand) before cleanup deletes them. Default 24h.
	Retention time.Duration
	// CleanupInterval is how often sent rows past Retention are deleted.
	// Default 1m.
	CleanupInterval time.Duration
	// CleanupBatch is how many rows one cleanup statement deletes. Default 1000.
	CleanupBatch int
	// Concurrency is how many claim-publish loops run at once. Claims never
	// overlap (SKIP LOCKED / leases), so more loops overlap database and
	// broker round trips. Default 4 (see docs/benchmarks.md).
	Concurrency int
	// PublishTimeout bounds one batch's publish and mark-sent. Default 30s.
	PublishTimeout time.Duration
	// ShutdownGrace is how long an in-flight batch may still finish after
	// the context is cancelled, so a clean stop does not re-publish it.
	// Default 5s.
	ShutdownGrace time.Duration
	// MaxBackoff caps the pause after a failed batch. Default 10s.
	MaxBackoff time.Duration
	// BacklogInterval is how often the unsent backlog and lag are measured.
	// Default 5s.
	BacklogInterval time.Duration
	// MaxEventBytes is the largest event published as such; a larger one is
	// published as a rejection the worker parks (a broker refuses messages
	// over its own limit, NATS at 1 MiB by default, which would fail the
	// whole batch again and again). Set it to the worker's max event bytes.
	// Default event.DefaultMaxSize. Below about 1 KiB a rejection itself
	// can be larger; the worker then parks it for its size, and only the
	// relay's log names the row.
	MaxEventBytes int
	// Registerer, when set, receives the relay's Prometheus collectors.
	Registerer prometheus.Registerer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider, when set, traces every published row: a span per
	// row that starts the change's trace, its context in the message's
	// traceparent header, and a span per batch publish linked from them.
	// nil turns tracing off.
	TracerProvider trace.TracerProvider
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	if c.CleanupInterval <= 0 {
		c.CleanupInterval = time.Minute
	}
	if c.CleanupBatch <= 0 {
		c.CleanupBatch = 1000
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 30 * time.Second
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.BacklogInterval <= 0 {
		c.BacklogInterval = 5 * time.Second
	}
	if c.MaxEventBytes <= 0 {
		c.MaxEventBytes = event.DefaultMaxSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration (after WithDefaults).
func (c Config) Validate() error {
	if c.BatchSize > 10000 {
		return setting.Errorf("relay.batch_size", "relay: batch size %d is above 10000; smaller batches re-publish less after a crash", c.BatchSize)
	}
	if c.Concurrency > 64 {
		return setting.Errorf("relay.concurrency", "relay: concurrency %d is above 64; each loop holds a database connection", c.Concurrency)
	}
	if c.MaxEventBytes < 64 {
		return fmt.Errorf("relay: max event bytes %d is too small; use the worker's max event bytes", c.MaxEventBytes)
	}
	if c.PollInterval < 10*time.Millisecond {
		return setting.Errorf("relay.poll_interval", "relay: poll interval %s is below 10ms", c.PollInterval)
	}
	return nil
}

// Stats is a snapshot of the relay's counters.
type Stats struct {
	Published uint64 // events confirmed by the bus and marked sent
	Batches   uint64 // non-empty batches marked sent
	Errors    uint64 // failed claims, publishes and marks
	Invalid   uint64 // rows that are no valid event, published as rejections the worker parks
	Cleaned   uint64 // sent rows deleted by retention cleanup
	Backlog   int64  // unsent rows at the last measurement
	// Lag is the age of the oldest unsent row, 0 when none.
	Lag time.Duration
}

// Relay is one relay process's engine. Several relays may run against the
// same outbox at once.
type Relay struct {
	src    source.Source
	pub    bus.Publisher
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer // nil: tracing off

	published, batches, errs, invalid, cleaned atomic.Uint64
	backlog                                    atomic.Int64
	oldest                                     atomic.Int64 // unix nanos of the oldest unsent row, 0 when none

	wakeMu sync.Mutex
	wakeCh chan struct{} // closed and replaced on every wake-up
}

// New builds a relay; Run starts it.
func New(src source.Source, pub bus.Publisher, cfg Config) (*Relay, error) {
	if src == nil || pub == nil {
		return nil, errors.New("relay: source and publisher are required")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{src: src, pub: pub, cfg: cfg, log: cfg.Logger, wakeCh: make(chan struct{})}
	if cfg.TracerProvider != nil {
		r.tracer = cfg.TracerProvider.Tracer(tracing.InstrumentationName + "/relay")
	}
	if cfg.Registerer != nil {
		if err := r.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *Relay) register(reg prometheus.Registerer) error {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "eventsync", Subsystem: "relay", Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		counter("published_total", "Outbox events confirmed by the bus and marked sent.", &r.published),
		counter("batches_total", "Non-empty outbox batches published and marked sent.", &r.batches),
		counter("errors_total", "Failed claims, publishes and mark-sent updates (rows stay unsent and are retried).", &r.errs),
		counter("invalid_total", "Outbox rows that are no valid event (unreadable, unencodable, violating the contract or too large); published as rejections the worker parks with the reason.", &r.invalid),
		counter("cleaned_rows_total", "Sent outbox rows deleted after the retention period.", &r.cleaned),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "eventsync", Subsystem: "relay", Name: "backlog_rows",
			Help: "Unsent outbox rows at the last measurement."}, func() float64 { return float64(r.backlog.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "eventsync", Subsystem: "relay", Name: "lag_seconds",
			Help: "Age of the oldest unsent outbox row (0 when none)."}, func() float64 { return r.lag().Seconds() }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("relay: register metrics: %w", err)
		}
	}
	return nil
}

func (r *Relay) lag() time.Duration {
	o := r.oldest.Load()
	if o == 0 {
		return 0
	}
	return max(0, time.Since(time.Unix(0, o)))
}

// Stats returns the current counters.
func (r *Relay) Stats() Stats {
	return Stats{
		Published: r.published.Load(),
		Batches:   r.batches.Load(),
		Errors:    r.errs.Load(),
		Invalid:   r.invalid.Load(),
		Cleaned:   r.cleaned.Load(),
		Backlog:   r.backlog.Load(),
		Lag:       r.lag(),
	}
}

// Run relays until ctx is cancelled, then lets in-flight batches finish
// (within ShutdownGrace) and returns nil. Failures are retried forever with
// backoff: a broker or database outage makes rows accumulate, never vanish.
func (r *Relay) Run(ctx context.Context) error {
	r.log.Info("relay started", "batch_size", r.cfg.BatchSize, "concurrency", r.cfg.Concurrency,
		"poll_interval", r.cfg.PollInterval, "retention", r.cfg.Retention)
	var wg sync.WaitGroup
	wg.Go(func() { r.waker(ctx) })
	wg.Go(func() { r.maintain(ctx) })
	for range r.cfg.Concurrency {
		wg.Go(func() { r.loop(ctx) })
	}
	wg.Wait()
	s := r.Stats()
	r.log.Info("relay stopped", "published", s.Published, "batches", s.Batches, "errors", s.Errors, "backlog", s.Backlog)
	return nil
}

// waker turns the source's notifications into a broadcast to every loop,
// so only one goroutine holds the LISTEN connection.
func (r *Relay) waker(ctx context.Context) {
	for ctx.Err() == nil {
		if err := r.src.Wait(ctx, r.cfg.PollInterval); err != nil {
			return
		}
		r.wakeMu.Lock()
		close(r.wakeCh)
		r.wakeCh = make(chan struct{})
		r.wakeMu.Unlock()
	}
}

func (r *Relay) wakeup() <-chan struct{} {
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	return r.wakeCh
}

func (r *Relay) loop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		// Subscribe to the next wake-up before claiming, so a row inserted
		// between an empty claim and the wait is not slept through.
		wake := r.wakeup()
		n, err := r.relayBatch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.errs.Add(1)
			failures++
			d := backoff(failures, r.cfg.MaxBackoff)
			r.log.Warn("relay batch failed; rows stay unsent and are retried", "err", err, "retry_in", d.Round(time.Millisecond), "failures", failures)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		if failures > 0 {
			r.log.Info("relay recovered", "after_failures", failures)
			failures = 0
		}
		if n == r.cfg.BatchSize {
			continue // probably more waiting
		}
		timer := time.NewTimer(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// relayBatch claims, publishes and marks one batch; it returns the number
// of rows relayed.
func (r *Relay) relayBatch(ctx context.Context) (_ int, err error) {
	b, err := r.src.Claim(ctx, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("claim: %w", err)
	}
	// The batch outlives a cancelled ctx by ShutdownGrace so a clean stop
	// finishes it instead of leaving it to be published twice.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.ShutdownGrace, cancel)
		context.AfterFunc(bctx, func() { t.Stop() })
	})
	defer stop()

	rows := b.Rows()
	if len(rows) == 0 {
		return 0, b.Release(bctx)
	}
	msgs := make([]bus.Message, len(rows))
	for i, row := range rows {
		// A bad row must not fail the batch: the next claim would take it
		// again, first in id order, and every row behind it would wait for
		// good. It is published as a rejection the worker parks instead.
		body, reason := encode(row, r.cfg.MaxEventBytes)
		msgs[i] = bus.Message{Body: body}
		if reason != "" {
			r.invalid.Add(1)
			r.log.Warn("outbox row is no valid event; publishing it for the worker to park with the reason",
				"outbox_id", row.ID, "entity", row.Entity, "key", row.Key, "reason", reason)
			// The header gives the worker the reason as it is; the body
			// alone fails event.Parse too (for a worker that predates it).
			msgs[i].Headers = map[string]string{bus.HeaderRejected: reason}
		}
	}
	pctx := bctx // the publish's, in the batch's span when tracing
	if r.tracer != nil {
		var bt *batchTrace
		pctx, bt = r.traceBatch(bctx, rows, msgs)
		defer func() { bt.end(err) }()
	}
	if err := r.pub.Publish(pctx, bus.Live, msgs...); err != nil {
		if rerr := b.Release(bctx); rerr != nil {
			r.log.Warn("release claim after failed publish", "err", rerr)
		}
		return 0, fmt.Errorf("publish %d events: %w", len(msgs), err)
	}
	if err := b.MarkSent(bctx); err != nil {
		// Published but not marked: the rows go out again later, which is
		// a duplicate the versions absorb, never a loss.
		return 0, fmt.Errorf("mark %d published rows sent (they will be published again): %w", len(rows), err)
	}
	r.published.Add(uint64(len(rows)))
	r.batches.Add(1)
	return len(rows), nil
}

// maintain measures the backlog and deletes sent rows past retention.
func (r *Relay) maintain(ctx context.Context) {
	r.measure(ctx)
	r.cleanup(ctx)
	backlogTick := time.NewTicker(r.cfg.BacklogInterval)
	defer backlogTick.Stop()
	cleanupTick := time.NewTicker(r.cfg.CleanupInterval)
	defer cleanupTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-backlogTick.C:
			r.measure(ctx)
		case <-cleanupTick.C:
			r.cleanup(ctx)
		}
	}
}

func (r *Relay) measure(ctx context.Context) {
	bl, err := r.src.Backlog(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("measure outbox backlog", "err", err)
		}
		return
	}
	r.backlog.Store(bl.Rows)
	if bl.Oldest.IsZero() {
		r.oldest.Store(0)
	} else {
		r.oldest.Store(bl.Oldest.UnixNano())
	}
}

func (r *Relay) cleanup(ctx context.Context) {
	n, err := r.src.Cleanup(ctx, r.cfg.Retention, r.cfg.CleanupBatch)
	r.cleaned.Add(uint64(n))
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("clean up sent outbox rows", "err", err)
		}
		return
	}
	if n > 0 {
		r.log.Info("cleaned up sent outbox rows", "deleted", n, "retention", r.cfg.Retention)
	}
}

// backoff is exponential from 100ms with full jitter, capped at maxDelay.
func backoff(failures int, maxDelay time.Duration) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < failures && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
