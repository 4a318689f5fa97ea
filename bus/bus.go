// Package bus defines the message-bus port: publishing events with broker
// confirms, consuming them with explicit per-message outcomes, delayed retries
// that never block a queue, and a parked queue for messages that cannot be
// applied. Adapters live in sub-packages (rabbitmq, natsjs) and all pass the
// conformance suite in bus/bustest.
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Stream names one of the two event streams. They are separate queues with
// separately controlled consumers, so one can be paused while the other runs.
type Stream string

const (
	// Live carries the application's changes.
	Live Stream = "live"
	// Resync carries snapshot events of a full resynchronisation.
	Resync Stream = "resync"
)

// Streams lists every stream in priority order.
var Streams = []Stream{Live, Resync}

// ParseStream validates a stream name given by a user.
func ParseStream(s string) (Stream, error) {
	switch Stream(s) {
	case Live, Resync:
		return Stream(s), nil
	}
	return "", fmt.Errorf("unknown stream %q: use \"live\" or \"resync\"", s)
}

// ParseStreams parses a comma-separated list such as "live,resync".
func ParseStreams(list string) ([]Stream, error) {
	var out []Stream
	seen := map[Stream]bool{}
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		s, err := ParseStream(part)
		if err != nil {
			return nil, err
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no stream given: use \"live\", \"resync\" or \"live,resync\"")
	}
	return out, nil
}

// Message is what travels on the bus: an encoded event plus optional headers.
type Message struct {
	Body    []byte
	Headers map[string]string
}

// Publisher publishes messages durably.
type Publisher interface {
	// Publish returns nil only once the broker has confirmed every message
	// as durably stored. On error any subset may have been stored; callers
	// publish again and rely on event versions to absorb the duplicates.
	Publish(ctx context.Context, stream Stream, msgs ...Message) error
}

// Delivery is one message handed to a consumer. Exactly one outcome method
// must be called; later calls return ErrSettled.
type Delivery interface {
	Body() []byte
	Headers() map[string]string
	Stream() Stream
	// Attempt is 1 on the first delivery and increases with every Retry and
	// every redelivery after a consumer crash, as far as the broker tells.
	Attempt() int
	// Ack removes the message: applied, superseded or otherwise done.
	Ack(ctx context.Context) error
	// Retry schedules the message for redelivery after at least delay
	// without blocking the messages behind it. Attempt increases by one.
	Retry(ctx context.Context, delay time.Duration, reason string) error
	// Park moves the message to the parked queue with a reason, its attempt
	// count and its original stream. It is never redelivered automatically.
	Park(ctx context.Context, reason string) error
	// Release hands the message back for immediate redelivery without
	// counting an attempt (used on shutdown and when pausing).
	Release(ctx context.Context) error
}

// ErrSettled is returned by a Delivery outcome method after the first one.
var ErrSettled = errors.New("bus: delivery already settled")

// SubscribeOptions tune a subscription.
type SubscribeOptions struct {
	// Prefetch bounds how many unsettled deliveries the broker hands this
	// subscription at once. It bounds memory and the worker's concurrency.
	Prefetch int
}

// Subscription streams deliveries of one stream. It survives broker
// reconnects: the adapter resubscribes and keeps feeding Deliveries.
type Subscription interface {
	// Deliveries is closed after Close or when the subscribing context ends.
	Deliveries() <-chan Delivery
	// Close stops pulling. Deliveries already handed out stay valid and must
	// still be settled; any the adapter buffered are returned to the queue.
	Close() error
}

// StreamStats describes one stream's queue as the broker sees it.
type StreamStats struct {
	Stream    Stream `json:"stream"`
	Ready     int64  `json:"ready"`     // waiting to be delivered
	Delayed   int64  `json:"delayed"`   // waiting in retry tiers, -1 if unknown
	Consumers int    `json:"consumers"` // active consumers on the queue
	// Unacked counts messages delivered to consumers and not yet settled,
	// prefetched ones a consumer has not started on included; -1 when the
	// broker does not tell its clients (RabbitMQ over AMQP: subscriptions
	// then count their own, see UnackedCounter).
	Unacked int64 `json:"unacked"`
	// Parked counts the parked queue, which every stream shares: each
	// stream's stats carry the same number. -1 if unknown.
	Parked int64 `json:"parked"`
}

// UnackedCounter is implemented by subscriptions that count the messages
// the broker has handed them and that are not yet settled, whether the
// consumer has taken them from Deliveries or they still wait in a buffer.
// Where Stats cannot count Unacked, the sum over every process's
// subscriptions is the stream's unacked count.
type UnackedCounter interface {
	Unacked() int
}

// ParkedMessage is a message in the parked queue with its diagnosis.
type ParkedMessage struct {
	ID       string    `json:"id"`
	Stream   Stream    `json:"stream"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	ParkedAt time.Time `json:"parked_at"`
	Body     []byte    `json:"body"`
	// Headers are the message's headers as parked, the diagnosis headers
	// included, with non-string values written as text.
	Headers map[string]string `json:"headers,omitempty"`
}

// ParkedFilter selects parked messages; the zero value selects all.
type ParkedFilter struct {
	Entity         string    // the event's entity; messages that are not events never match a non-empty Entity
	ReasonContains string    // substring of the reason
	Stream         Stream    // the original stream, empty means any
	IDs            []string  // only these message ids, empty means any
	Since, Until   time.Time // ParkedAt bounds, zero means open
	Limit          int       // 0 means no limit
}

// Match reports whether m satisfies the filter (Limit is the caller's job).
func (f ParkedFilter) Match(m ParkedMessage) bool {
	if f.Stream != "" && m.Stream != f.Stream {
		return false
	}
	if len(f.IDs) > 0 && !slices.Contains(f.IDs, m.ID) {
		return false
	}
	if f.ReasonContains != "" && !strings.Contains(m.Reason, f.ReasonContains) {
		return false
	}
	if !f.Since.IsZero() && m.ParkedAt.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && m.ParkedAt.After(f.Until) {
		return false
	}
	if f.Entity != "" {
		var probe struct {
			Entity string `json:"entity"`
		}
		if json.Unmarshal(m.Body, &probe) != nil || probe.Entity != f.Entity {
			return false
		}
	}
	return true
}

// Parked manages the parked queue.
type Parked interface {
	ListParked(ctx context.Context, f ParkedFilter) ([]ParkedMessage, error)
	// ReplayParked republishes matching messages to their original stream
	// (with confirms) and only then removes them from the parked queue.
	ReplayParked(ctx context.Context, f ParkedFilter) (int, error)
	PurgeParked(ctx context.Context, f ParkedFilter) (int, error)
	// ReplayParkedAs republishes the parked message id to its original
	// stream with body in place of its own (headers kept, the diagnosis
	// dropped, as ReplayParked does) and only then removes it from the
	// parked queue. ErrNotParked: no parked message has that id (replayed or
	// purged already); nothing was published. The body is published as
	// given: validating it is the caller's job.
	ReplayParkedAs(ctx context.Context, id string, body []byte) error
}

// ErrNotParked is returned for a parked message id that is not (or no
// longer) in the parked queue.
var ErrNotParked = errors.New("bus: no parked message with this id (replayed or purged already?)")

// Bus is the port the engine and the commands use.
type Bus interface {
	Publisher
	Parked
	Subscribe(ctx context.Context, stream Stream, opts SubscribeOptions) (Subscription, error)
	Stats(ctx context.Context, stream Stream) (StreamStats, error)
	Close() error
}

// Header names shared by adapters, so parked messages look the same on
// every broker.
const (
	HeaderAttempt     = "x-eventsync-attempt"
	HeaderStream      = "x-eventsync-stream"
	HeaderReason      = "x-eventsync-reason"
	HeaderParkedAt    = "x-eventsync-parked-at"
	HeaderRetryReason = "x-eventsync-retry-reason"
	// HeaderRejected marks a message a producer knows is no valid event
	// (the relay, for an outbox row it cannot encode); its value is the
	// reason, and a worker parks the message with it without parsing.
	HeaderRejected = "x-eventsync-rejected"
)

type streamKey struct{}

// WithStream returns ctx marked with the stream a delivery came from, so
// components further down (a throttled sink giving live events priority
// over a resync) can tell without depending on the engine.
func WithStream(ctx context.Context, s Stream) context.Context {
	return context.WithValue(ctx, streamKey{}, s)
}

// StreamFrom returns the stream set by WithStream.
func StreamFrom(ctx context.Context) (Stream, bool) {
	s, ok := ctx.Value(streamKey{}).(Stream)
	return s, ok
}
