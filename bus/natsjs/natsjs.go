// Package natsjs implements the bus port (bus.Bus) on NATS JetStream: the
// embedded default for one-machine use (see internal/embedded) and usable
// against an external NATS server or cluster.
//
// Layout per namespace ns (stream names upper-cased):
//
//	NS_LIVE     subject ns.live     work-queue retention, one durable pull consumer
//	NS_RESYNC   subject ns.resync   work-queue retention, one durable pull consumer
//	NS_PARKED   subject ns.parked   limits retention, read by sequence
//	NS_PRESENCE subject ns.presence.<stream>.<id>  memory, one message per live subscription
//
// Every worker process shares the stream's durable consumer, so the server
// spreads messages over all of them. Outcomes map to JetStream acks: Ack is
// a confirmed (double) ack; Retry publishes a copy to the stream with the
// next attempt and a not-before time and acks the original only after the
// copy is confirmed (the copy's first, early delivery is handed back with
// NakWithDelay until due, so it waits in the consumer, not at the head of
// the stream, and the wait never counts towards MaxDeliver; see retry.go);
// Release is Nak; Park publishes to the parked stream with the diagnosis
// headers and acks only after that publish is confirmed. Attempt is the
// attempt header plus the server's count of earlier deliveries of the copy,
// so a Release counts as an attempt (declared to the conformance suite).
//
// JetStream cannot count subscribers of a pull consumer (outstanding pull
// requests come and go with the prefetch window), so each subscription keeps
// a presence message alive in NS_PRESENCE while it runs; Stats counts them.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/natsconn"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
)

// Config configures the bus. Exactly one of URL and Conn is needed.
type Config struct {
	// URL of the NATS server, e.g. nats://127.0.0.1:4222. Ignored when Conn
	// is set.
	URL string
	// TLS verifies a TLS connection (tls://, or nats:// upgraded when
	// set) with a custom certificate authority and presents a client
	// certificate (eventsync.TLSConfig, YAML key bus_tls).
	TLS tlsconf.Config
	// CredentialsFile (a .creds file: user JWT and NKey seed) or NKeyFile
	// (a user's NKey seed) authenticates the connection (YAML key
	// bus_nats).
	CredentialsFile, NKeyFile string
	// Conn is an existing connection (for example the embedded server's
	// in-process one, embedded.Server.Connect). The bus does not close it.
	Conn *nats.Conn
	// Namespace prefixes every stream and subject; default "eventsync".
	Namespace string
	// Replicas of each stream in a NATS cluster; default 1.
	Replicas int
	// AckWait is how long a delivery may stay unsettled before the server
	// redelivers it to another worker. It must exceed the slowest API call
	// including its retries inside one attempt. Default 60s.
	AckWait time.Duration
	// MaxDeliver makes the server stop delivering a message after this many
	// deliveries; the bus then moves it to the parked stream with reason
	// "delivery_limit" (see maxdeliver.go). A Retry publishes a fresh copy
	// whose count starts again (see retry.go), so only deliveries no worker
	// settled count: those handed back by Release or by a crash of the
	// worker process. A retried copy spends one of them on its early first
	// delivery. Default 30; at least 2; -1 means unlimited.
	MaxDeliver int
	// Partitions turns on per-key ordered mode when above 0: each stream's
	// messages go to one of this many subjects by the event's entity and
	// key, each with its own durable consumer that the server hands to one
	// subscription at a time (a pinned priority group: nats-server 2.11 or
	// later). 0 (the default): one consumer shared by every worker. Every
	// process of a deployment must use the same value.
	Partitions int
	// RebalanceInterval is how often an ordered-mode subscription checks
	// that it holds no more than its share of the partitions. Default 5s.
	RebalanceInterval time.Duration
	// PublishBatch bounds how many asynchronous publishes wait for their
	// acks at once inside one Publish call. Default 1000.
	PublishBatch int
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	// withoutParker leaves stored advisories alone (tests: a process that
	// is not there).
	withoutParker bool
}

var namespacePattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = "eventsync"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.AckWait == 0 {
		c.AckWait = 60 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.PublishBatch == 0 {
		c.PublishBatch = 1000
	}
	if c.RebalanceInterval <= 0 {
		c.RebalanceInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports configuration errors with the fix.
func (c Config) Validate() error {
	if c.URL == "" && c.Conn == nil {
		return setting.Errorf("bus", "natsjs: no NATS URL or connection given; want nats://host:4222")
	}
	if !namespacePattern.MatchString(c.Namespace) {
		return fmt.Errorf("natsjs: namespace %q may only contain letters, digits, '_' and '-'; choose another", c.Namespace)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("natsjs: replicas %d out of range; use 1 to 5", c.Replicas)
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("natsjs: ack wait %s is too short; use at least 1s, above the slowest API call", c.AckWait)
	}
	if c.MaxDeliver < -1 || c.MaxDeliver == 1 {
		// A retried copy's first delivery is handed back until due (see
		// retry.go): with one delivery it would be parked unseen.
		return fmt.Errorf("natsjs: max deliver %d is invalid; use at least 2 deliveries, or -1 for unlimited", c.MaxDeliver)
	}
	if c.Partitions < 0 || c.Partitions > maxPartitions {
		return setting.Errorf("bus_partitions", "natsjs: bus_partitions %d must be 0 (one shared consumer) to %d", c.Partitions, maxPartitions)
	}
	if c.PublishBatch < 1 {
		return fmt.Errorf("natsjs: publish batch %d must be at least 1", c.PublishBatch)
	}
	return nil
}

const (
	consumerName = "eventsync-workers"
	// presenceTTL is how long a crashed subscriber stays counted in Stats.
	presenceTTL      = 15 * time.Second
	presenceInterval = 5 * time.Second
)

// Bus is a bus.Bus on NATS JetStream.
type Bus struct {
	cfg     Config
	nc      *nats.Conn
	ownConn bool
	js      jetstream.JetStream
	log     *slog.Logger

	parked   jetstream.Stream
	presence jetstream.Stream

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool

	parker jetstream.ConsumeContext // max-deliveries advisories, see maxdeliver.go
}

var _ bus.Bus = (*Bus)(nil)

// Open connects (unless cfg.Conn is given) and creates or updates the
// streams and consumers idempotently.
func Open(ctx context.Context, cfg Config) (_ *Bus, err error) {
	secrets := redact.NewScrubber(cfg.URL) // no error or log line shows them
	defer func() { err = secrets.Error(err) }()
	cfg = cfg.WithDefaults()
	cfg.Logger = secrets.Logger(cfg.Logger)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{cfg: cfg, nc: cfg.Conn, log: cfg.Logger, subs: map[*subscription]struct{}{}}
	if b.nc == nil {
		nc, err := connect(cfg)
		if err != nil {
			return nil, err
		}
		b.nc, b.ownConn = nc, true
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		b.closeConn()
		return nil, fmt.Errorf("natsjs: JetStream context: %w", err)
	}
	b.js = js
	if err := b.checkPinnedSupport(); err != nil {
		b.closeConn()
		return nil, err
	}
	if err := b.declare(ctx); err != nil {
		b.closeConn()
		return nil, err
	}
	if err := b.watchMaxDeliveries(ctx); err != nil {
		b.closeConn()
		return nil, err
	}
	return b, nil
}

func connect(cfg Config) (*nats.Conn, error) {
	nc, err := natsconn.ConnectWith(cfg.URL, "bus", natsconn.Options{TLS: cfg.TLS, CredentialsFile: cfg.CredentialsFile, NKeyFile: cfg.NKeyFile}, cfg.Logger)
	return nc, setting.Wrap("bus", err)
}

func (b *Bus) closeConn() {
	if b.ownConn {
		b.nc.Close()
	}
}

func (b *Bus) streamName(s bus.Stream) string {
	return strings.ToUpper(b.cfg.Namespace) + "_" + strings.ToUpper(string(s))
}

func (b *Bus) subject(s bus.Stream) string { return b.cfg.Namespace + "." + string(s) }

func (b *Bus) parkedStream() string   { return strings.ToUpper(b.cfg.Namespace) + "_PARKED" }
func (b *Bus) parkedSubject() string  { return b.cfg.Namespace + ".parked" }
func (b *Bus) presenceStream() string { return strings.ToUpper(b.cfg.Namespace) + "_PRESENCE" }
func (b *Bus) presencePrefix(s bus.Stream) string {
	return b.cfg.Namespace + ".presence." + string(s)
}

func (b *Bus) declare(ctx context.Context) error {
	maxDeliver := b.cfg.MaxDeliver
	for _, s := range bus.Streams {
		if err := b.retireOtherMode(ctx, s); err != nil {
			return err
		}
		subjects := []string{b.subject(s)}
		if b.cfg.Partitions > 0 {
			// The plain subject stays, so a process still publishing
			// without partitions is stored and found, not refused.
			subjects = append(subjects, b.subject(s)+".*")
		}
		_, err := createStream(ctx, b.js, jetstream.StreamConfig{
			Name:        b.streamName(s),
			Description: "eventsync " + string(s) + " events",
			Subjects:    subjects,
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
		})
		if err != nil {
			return fmt.Errorf("natsjs: create stream %s: %w; is JetStream enabled on the server (nats-server -js)?", b.streamName(s), err)
		}
		for _, ref := range b.consumersOf(s) {
			cfg := jetstream.ConsumerConfig{
				Durable:       ref.name,
				Description:   "all eventsync workers share this consumer",
				FilterSubject: ref.filter,
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       b.cfg.AckWait,
				MaxDeliver:    maxDeliver,
				// Messages waiting for a delayed retry count as ack-pending; a
				// limit would stop new deliveries while the API is down, which
				// is exactly the head-of-line blocking retries must avoid.
				MaxAckPending: -1,
				Replicas:      b.cfg.Replicas,
			}
			if ref.filter != "" {
				cfg.Description = "one partition of " + string(s) + ", pulled by one eventsync worker at a time"
				cfg.PriorityPolicy = jetstream.PriorityPolicyPinned
				cfg.PriorityGroups = []string{priorityGroup}
				cfg.PinnedTTL = pinnedTTL
			}
			if _, err := b.js.CreateOrUpdateConsumer(ctx, b.streamName(s), cfg); err != nil {
				return fmt.Errorf("natsjs: create consumer %s on %s: %w", ref.name, b.streamName(s), err)
			}
		}
	}
	if maxDeliver >= 0 {
		if err := b.declareAdvisories(ctx); err != nil {
			return err
		}
	}
	var err error
	b.parked, err = createStream(ctx, b.js, jetstream.StreamConfig{
		Name:        b.parkedStream(),
		Description: "eventsync parked messages, kept until replayed or purged",
		Subjects:    []string{b.parkedSubject()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("natsjs: create stream %s: %w", b.parkedStream(), err)
	}
	b.presence, err = createStream(ctx, b.js, jetstream.StreamConfig{
		Name:              b.presenceStream(),
		Description:       "one message per running eventsync subscription, for Stats",
		Subjects:          []string{b.cfg.Namespace + ".presence.>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.MemoryStorage,
		MaxMsgsPerSubject: 1,
		MaxAge:            presenceTTL,
		Replicas:          b.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("natsjs: create stream %s: %w", b.presenceStream(), err)
	}
	return nil
}

// createStream creates or updates a stream, retrying the transient "error
// creating store for stream" (10049) that servers before 2.10 return when a
// create races the removal of the account's last stream directory.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	for attempt := 1; ; attempt++ {
		st, err := js.CreateOrUpdateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if err == nil || attempt == 5 || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10049 {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
}

// Publish stores msgs on stream and returns once the server confirmed every
// one. Publishes are pipelined and their acks awaited in batches.
func (b *Bus) Publish(ctx context.Context, stream bus.Stream, msgs ...bus.Message) error {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return fmt.Errorf("natsjs: publish: %w", err)
	}
	streamName := b.streamName(stream)
	for start := 0; start < len(msgs); start += b.cfg.PublishBatch {
		end := min(start+b.cfg.PublishBatch, len(msgs))
		futures := make([]jetstream.PubAckFuture, 0, end-start)
		for _, m := range msgs[start:end] {
			subject, h := b.publishSubject(stream, m.Body, toHeader(m.Headers))
			nm := &nats.Msg{Subject: subject, Data: m.Body, Header: h}
			f, err := b.js.PublishMsgAsync(nm, jetstream.WithExpectStream(streamName))
			if err != nil {
				return fmt.Errorf("natsjs: publish to %s: %w", streamName, err)
			}
			futures = append(futures, f)
		}
		for i, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("natsjs: publish to %s: message %d not confirmed: %w", streamName, start+i, err)
			case <-ctx.Done():
				return fmt.Errorf("natsjs: publish to %s: %d of %d messages confirmed: %w", streamName, start+i, len(msgs), ctx.Err())
			}
		}
	}
	return nil
}

func toHeader(h map[string]string) nats.Header {
	if len(h) == 0 {
		return nil
	}
	out := make(nats.Header, len(h))
	for k, v := range h {
		out[k] = []string{v}
	}
	return out
}

func fromHeader(h nats.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}

// Stats reports the stream's undelivered messages and running subscribers.
// Delayed is -1: JetStream counts messages waiting for a delayed retry
// together with in-flight ones as ack-pending. Ready includes a retried copy
// until a subscription first pulls it and hands it back until due; Unacked
// (the consumer's ack-pending count) includes it from then until it is due
// and settled. Parked is the parked stream's message count.
func (b *Bus) Stats(ctx context.Context, stream bus.Stream) (bus.StreamStats, error) {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return bus.StreamStats{}, fmt.Errorf("natsjs: stats: %w", err)
	}
	var pending, ackPending uint64
	for _, ref := range b.consumersOf(stream) {
		cons, err := b.js.Consumer(ctx, b.streamName(stream), ref.name)
		if err != nil {
			return bus.StreamStats{}, fmt.Errorf("natsjs: stats of %s: %w", b.streamName(stream), err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return bus.StreamStats{}, fmt.Errorf("natsjs: stats of %s: %w", b.streamName(stream), err)
		}
		pending += info.NumPending
		ackPending += uint64(max(info.NumAckPending, 0))
	}
	pinfo, err := b.presence.Info(ctx, jetstream.WithSubjectFilter(b.presencePrefix(stream)+".*"))
	if err != nil {
		return bus.StreamStats{}, fmt.Errorf("natsjs: count subscribers of %s: %w", stream, err)
	}
	parked, err := b.parked.Info(ctx)
	if err != nil {
		return bus.StreamStats{}, fmt.Errorf("natsjs: count parked messages in %s: %w", b.parkedStream(), err)
	}
	return bus.StreamStats{
		Stream:    stream,
		Ready:     int64(pending),
		Delayed:   -1,
		Consumers: len(pinfo.State.Subjects),
		Unacked:   int64(ackPending),
		Parked:    int64(parked.State.Msgs),
	}, nil
}

// Unsettled counts the stream's messages that are not yet acknowledged:
// ready, in flight, and waiting for a delayed retry. Streams use work-queue
// retention, so an acked (or parked) message leaves the stream and this is
// the stream's message count. Zero means every event published so far was
// applied, superseded or parked; Stats' Ready alone misses delayed retries.
func (b *Bus) Unsettled(ctx context.Context, stream bus.Stream) (int64, error) {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return 0, fmt.Errorf("natsjs: unsettled: %w", err)
	}
	st, err := b.js.Stream(ctx, b.streamName(stream))
	if err != nil {
		return 0, fmt.Errorf("natsjs: unsettled in %s: %w", b.streamName(stream), err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natsjs: unsettled in %s: %w", b.streamName(stream), err)
	}
	return int64(info.State.Msgs), nil
}

// Close stops every subscription and closes the connection if the bus
// opened it. Deliveries already handed out can no longer be settled.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	if b.parker != nil {
		b.parker.Stop()
		<-b.parker.Closed()
	}
	for _, s := range subs {
		_ = s.Close()
	}
	b.closeConn()
	return nil
}

// DeleteStreams removes the namespace's streams and everything in them.
// Meant for tests and "start over" tooling; the bus is unusable afterwards.
func (b *Bus) DeleteStreams(ctx context.Context) error {
	var errs []error
	names := []string{b.parkedStream(), b.presenceStream(), b.advisoryStream()}
	for _, s := range bus.Streams {
		names = append(names, b.streamName(s))
	}
	for _, name := range names {
		if err := b.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("natsjs: delete stream %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
