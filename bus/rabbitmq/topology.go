package rabbitmq

import (
	"errors"
	"fmt"
	"strconv"
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
type topology struct {
	ns            string
	tiers         []time.Duration
	deliveryLimit int
}

func (t topology) exchange() string                { return t.ns }
func (t topology) streamQueue(s bus.Stream) string { return t.ns + "." + string(s) }
func (t topology) parkedQueue() string             { return t.ns + ".parked" }
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

// streamOfQueue maps a stream queue's name back to its stream.
func (t topology) streamOfQueue(queue string) (bus.Stream, bool) {
	for _, s := range bus.Streams {
		if t.streamQueue(s) == queue {
			return s, true
		}
	}
	return "", false
}

// allQueues lists every queue of the namespace, for cleanup.
func (t topology) allQueues() []string {
	qs := []string{t.parkedQueue()}
	for _, s := range bus.Streams {
		qs = append(qs, t.streamQueue(s))
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
		q := t.streamQueue(s)
		args := quorumArgs()
		args["x-delivery-limit"] = int64(t.deliveryLimit)
		args["x-dead-letter-exchange"] = ""
		args["x-dead-letter-routing-key"] = t.parkedQueue()
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			return declareError("queue", q, err)
		}
		if err := ch.QueueBind(q, string(s), t.exchange(), false, nil); err != nil {
			return declareError("binding of queue", q, err)
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
