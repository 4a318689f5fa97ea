package rabbitmq

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
)

// topology names every exchange and queue of one namespace.
//
//	<ns>                         durable direct exchange; routing key = stream
//	<ns>.live, <ns>.resync       quorum queues bound by "live" / "resync"
//	<ns>.retry.<stream>.<tier>   quorum queues with a TTL that dead-letter
//	                             back to <ns> with the stream's routing key
//	<ns>.parked                  quorum queue of parked messages; stream
//	                             messages returned more than deliveryLimit
//	                             times are dead-lettered here by the broker
//
// In ordered mode (partitions > 0) each stream's queue is replaced by
//
//	<ns>.<stream>.partitions     consistent-hash exchange bound to <ns> by
//	                             the stream's routing key; it hashes the
//	                             x-eventsync-partition-key header
//	<ns>.<stream>.p0 … p<N-1>    quorum queues with a single active consumer,
//	                             each bound to it with weight 1
//
// Retry tiers keep dead-lettering to <ns> by the stream's routing key, so a
// retried message hashes to its partition again.
type topology struct {
	ns            string
	tiers         []time.Duration
	deliveryLimit int
	partitions    int // 0: one competing-consumers queue per stream
}

func (t topology) exchange() string                 { return t.ns }
func (t topology) streamQueue(s bus.Stream) string  { return t.ns + "." + string(s) }
func (t topology) parkedQueue() string              { return t.ns + ".parked" }
func (t topology) hashExchange(s bus.Stream) string { return t.ns + "." + string(s) + ".partitions" }

// workersQueue has one consumer per ordered-mode subscription of stream s
// and never a message: its consumer count is the number of workers, which
// the partition queues do not tell (a single-active-consumer queue counts
// only its active consumer).
func (t topology) workersQueue(s bus.Stream) string { return t.ns + "." + string(s) + ".workers" }
func (t topology) partitionQueue(s bus.Stream, i int) string {
	return t.ns + "." + string(s) + ".p" + strconv.Itoa(i)
}

// consumedQueues are the queues a subscription to s consumes: the stream's
// queue, or its partition queues in ordered mode.
func (t topology) consumedQueues(s bus.Stream) []string {
	if t.partitions == 0 {
		return []string{t.streamQueue(s)}
	}
	qs := make([]string, t.partitions)
	for i := range qs {
		qs[i] = t.partitionQueue(s, i)
	}
	return qs
}
func (t topology) tierQueue(s bus.Stream, tier time.Duration) string {
	return t.ns + ".retry." + string(s) + "." + tierName(tier)
}

// tierName writes a delay compactly: 1s, 5s, 2m, 1h, 1500ms.
func tierName(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	default:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
}

// tierFor picks the smallest tier at least as long as delay, or the largest.
func (t topology) tierFor(delay time.Duration) time.Duration {
	for _, tier := range t.tiers {
		if tier >= delay {
			return tier
		}
	}
	return t.tiers[len(t.tiers)-1]
}

// streamOfQueue maps a stream or partition queue's name back to its stream.
func (t topology) streamOfQueue(queue string) (bus.Stream, bool) {
	for _, s := range bus.Streams {
		if t.streamQueue(s) == queue {
			return s, true
		}
		if rest, ok := strings.CutPrefix(queue, t.streamQueue(s)+".p"); ok {
			if _, err := strconv.Atoi(rest); err == nil {
				return s, true
			}
		}
	}
	return "", false
}

// allQueues lists every queue of the namespace, for cleanup.
func (t topology) allQueues() []string {
	qs := []string{t.parkedQueue()}
	for _, s := range bus.Streams {
		qs = append(qs, t.consumedQueues(s)...)
		if t.partitions > 0 {
			qs = append(qs, t.workersQueue(s))
		}
		for _, tier := range t.tiers {
			qs = append(qs, t.tierQueue(s, tier))
		}
	}
	return qs
}

func quorumArgs() amqp.Table { return amqp.Table{"x-queue-type": "quorum"} }

// declare creates the namespace's topology; every step is idempotent.
func (t topology) declare(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(t.exchange(), amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return declareError("exchange", t.exchange(), err)
	}
	parkedArgs := quorumArgs()
	// Listing parked messages returns them to the queue, which RabbitMQ
	// 4.0-4.2 count against a default delivery limit of 20 and then drop.
	// An explicit, practically unreachable limit keeps them (-1 is not
	// understood before 4.0).
	parkedArgs["x-delivery-limit"] = int64(1_000_000_000)
	if _, err := ch.QueueDeclare(t.parkedQueue(), true, false, false, false, parkedArgs); err != nil {
		return declareError("queue", t.parkedQueue(), err)
	}
	for _, s := range bus.Streams {
		if t.partitions > 0 {
			if err := t.declarePartitions(ch, s); err != nil {
				return err
			}
		} else {
			q := t.streamQueue(s)
			if _, err := ch.QueueDeclare(q, true, false, false, false, t.streamArgs()); err != nil {
				return declareError("queue", q, err)
			}
			if err := ch.QueueBind(q, string(s), t.exchange(), false, nil); err != nil {
				return declareError("binding of queue", q, err)
			}
		}
		for _, tier := range t.tiers {
			q := t.tierQueue(s, tier)
			args := quorumArgs()
			args["x-message-ttl"] = tier.Milliseconds()
			args["x-dead-letter-exchange"] = t.exchange()
			args["x-dead-letter-routing-key"] = string(s)
			// At-least-once dead-lettering: the broker keeps an expired
			// message until the stream queue has confirmed it, so a retry
			// is never lost between the tier and the stream.
			args["x-dead-letter-strategy"] = "at-least-once"
			args["x-overflow"] = "reject-publish"
			if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
				return declareError("retry queue", q, err)
			}
		}
	}
	return nil
}

// streamArgs are the arguments of a stream queue and of a partition queue.
func (t topology) streamArgs() amqp.Table {
	args := quorumArgs()
	args["x-delivery-limit"] = int64(t.deliveryLimit)
	args["x-dead-letter-exchange"] = ""
	args["x-dead-letter-routing-key"] = t.parkedQueue()
	args["x-dead-letter-strategy"] = "at-least-once"
	args["x-overflow"] = "reject-publish"
	return args
}

// declarePartitions declares ordered mode's exchange and partition queues
// for stream s and binds them.
func (t topology) declarePartitions(ch *amqp.Channel, s bus.Stream) error {
	hx := t.hashExchange(s)
	if err := ch.ExchangeDeclare(hx, "x-consistent-hash", true, false, false, false, amqp.Table{"hash-header": bus.HeaderPartitionKey}); err != nil {
		return partitionError(declareError("exchange", hx, err))
	}
	for i := range t.partitions {
		q := t.partitionQueue(s, i)
		args := t.streamArgs()
		// One consumer at a time gets the partition: one key's events
		// reach one worker, in order; the next consumer takes over when
		// that one goes away.
		args["x-single-active-consumer"] = true
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			return partitionError(declareError("partition queue", q, err))
		}
		// The weight: every partition gets an equal share of the keys.
		if err := ch.QueueBind(q, "1", hx, false, nil); err != nil {
			return partitionError(declareError("binding of partition queue", q, err))
		}
	}
	if _, err := ch.QueueDeclare(t.workersQueue(s), true, false, false, false, quorumArgs()); err != nil {
		return partitionError(declareError("queue", t.workersQueue(s), err))
	}
	if err := ch.ExchangeBind(hx, string(s), t.exchange(), false, nil); err != nil {
		return partitionError(declareError("binding of exchange", hx, err))
	}
	return nil
}

// partitionError explains the one failure every ordered-mode declaration
// shares: the consistent-hash exchange plugin is not enabled.
func partitionError(err error) error {
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.CommandInvalid && strings.Contains(aerr.Reason, "x-consistent-hash") {
		return fmt.Errorf("%w; ordered mode (bus_partitions > 0) needs RabbitMQ's consistent-hash exchange: run rabbitmq-plugins enable rabbitmq_consistent_hash_exchange, or set bus_partitions: 0", err)
	}
	return err
}

func declareError(kind, name string, err error) error {
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.PreconditionFailed {
		return fmt.Errorf("declare %s %s: it exists with different settings (%s); delete it (rabbitmqctl delete_queue %s) or choose another namespace: %w", kind, name, aerr.Reason, name, err)
	}
	if errors.As(err, &aerr) && aerr.Code == amqp.AccessRefused {
		return fmt.Errorf("declare %s %s: access refused (%s); grant the user configure permission on the vhost or choose another namespace: %w", kind, name, aerr.Reason, err)
	}
	return fmt.Errorf("declare %s %s: %w", kind, name, err)
}

// leftovers are the queues and exchanges another mode (or a larger
// partition count) declared in this namespace, found before declaring.
type leftovers struct {
	queues    []string
	exchanges []string
}

// findLeftovers looks for what another mode left behind: the stream queues
// of the competing-consumers mode in ordered mode, partition queues beyond
// the partition count, ordered mode's exchanges and partition queues in
// the competing-consumers mode. They may go only when empty and unused:
// otherwise switching would strand their messages, so it fails naming the
// setting and the way out.
func (t topology) findLeftovers(conn *amqp.Connection) (leftovers, error) {
	var l leftovers
	for _, s := range bus.Streams {
		if t.partitions > 0 {
			found, err := t.leftoverQueue(conn, t.streamQueue(s), fmt.Sprintf(
				"bus_partitions is %d, but %%s, the %s queue of the competing-consumers mode (bus_partitions: 0), %%s; run workers with bus_partitions: 0 until it is empty and every process uses bus_partitions: %d, then restart this one (or drop its messages: rabbitmqctl delete_queue %%[1]s)",
				t.partitions, s, t.partitions))
			if err != nil {
				return l, err
			}
			if found {
				l.queues = append(l.queues, t.streamQueue(s))
			}
		} else {
			exists, err := exchangeExists(conn, t.hashExchange(s))
			if err != nil {
				return l, err
			}
			if !exists {
				continue
			}
			l.exchanges = append(l.exchanges, t.hashExchange(s))
			found, err := t.leftoverQueue(conn, t.workersQueue(s), fmt.Sprintf(
				"bus_partitions is 0, but %%s %%s: workers in ordered mode still consume the %s stream; stop them or give this process their bus_partitions", s))
			if err != nil {
				return l, err
			}
			if found {
				l.queues = append(l.queues, t.workersQueue(s))
			}
		}
		first := t.partitions
		for i := first; i < first+maxPartitions; i++ {
			q := t.partitionQueue(s, i)
			found, err := t.leftoverQueue(conn, q, fmt.Sprintf(
				"bus_partitions is %d, but %%s, a partition queue of the %s stream in ordered mode, %%s; run workers with the bus_partitions that declared it until it is empty, then restart this one (or drop its messages: rabbitmqctl delete_queue %%[1]s)",
				t.partitions, s))
			if err != nil {
				return l, err
			}
			if !found {
				break
			}
			l.queues = append(l.queues, q)
		}
	}
	return l, nil
}

// maxPartitions bounds bus_partitions.
const maxPartitions = 1024

// leftoverQueue reports whether queue exists, failing with the message
// format msg (the queue's name, then what holds it) when it holds messages
// or has consumers.
func (t topology) leftoverQueue(conn *amqp.Connection, queue, msg string) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel to inspect queue %s: %w", queue, err)
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect queue %s: %w", queue, err)
	}
	if q.Messages > 0 || q.Consumers > 0 {
		return true, fmt.Errorf(msg, queue, fmt.Sprintf("still holds %d ready messages and has %d consumers", q.Messages, q.Consumers))
	}
	return true, nil
}

func exchangeExists(conn *amqp.Connection, name string) (bool, error) {
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel to inspect exchange %s: %w", name, err)
	}
	defer func() { _ = ch.Close() }()
	err = ch.ExchangeDeclarePassive(name, "x-consistent-hash", true, false, false, false, nil)
	var aerr *amqp.Error
	if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect exchange %s: %w", name, err)
	}
	return true, nil
}

// retire deletes the leftovers once the new topology is declared. Each
// leftover queue is cut off first (its exchange deleted, or its binding
// removed) and checked empty again, since quorum queues cannot be deleted
// "if empty": a message that reached it meanwhile keeps it, and the error
// says so.
func (t topology) retire(conn *amqp.Connection, l leftovers) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel to remove the old topology: %w", err)
	}
	defer func() { _ = ch.Close() }()
	for _, x := range l.exchanges {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			return fmt.Errorf("delete exchange %s of ordered mode (bus_partitions is now %d): %w", x, t.partitions, err)
		}
	}
	for _, q := range l.queues {
		for _, s := range bus.Streams {
			switch {
			case q == t.streamQueue(s):
				err = ch.QueueUnbind(q, string(s), t.exchange(), nil)
			case t.partitions > 0 && strings.HasPrefix(q, t.streamQueue(s)+".p"):
				err = ch.QueueUnbind(q, "1", t.hashExchange(s), nil)
			}
			if err != nil {
				return fmt.Errorf("unbind queue %s left by another bus_partitions (now %d): %w", q, t.partitions, err)
			}
		}
		found, err := t.leftoverQueue(conn, q, fmt.Sprintf(
			"bus_partitions is %d, but %%s, left by another bus_partitions, took messages while switching and %%s; run workers with the old bus_partitions until it is empty, then restart this one", t.partitions))
		if err != nil || !found {
			return err
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s left by another bus_partitions (now %d): %w", q, t.partitions, err)
		}
	}
	return nil
}
