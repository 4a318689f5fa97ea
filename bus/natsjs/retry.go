package natsjs

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/eventsync/bus"
)

// HeaderNotBefore carries the earliest time (RFC 3339, UTC) a retried copy
// may be handed to a worker. Retry writes it; only this adapter reads it
// (RabbitMQ delays in TTL tiers instead).
const HeaderNotBefore = "x-eventsync-not-before"

// maxDeferral bounds how long a copy is held back for its not-before time,
// so a far-future header (anyone may publish to the subject) cannot hold a
// message for good. It is far above any retry delay the engine asks for.
const maxDeferral = 24 * time.Hour

// maxCount keeps corrupt headers and counts from overflowing a sum.
const maxCount = 1 << 30

// A retry on JetStream must not be a NakWithDelay: the server counts every
// redelivery towards the consumer's MaxDeliver, so an event that merely
// waits (its key locked by a slow write, its stream paused) would reach the
// delivery limit and be parked as if it crashed every worker. Retry instead
// publishes a copy to the stream with the next attempt and a not-before
// time, and acks the original, as the RabbitMQ adapter does with its TTL
// tiers; the delivery count restarts with the copy.
//
// JetStream has no per-message delay on servers before 2.12, so the copy is
// delivered at once: its first delivery is handed back with NakWithDelay for
// the time left, without reaching a worker, and it comes back when due. That
// first delivery is always handed back (with no delay if already due), so
// a delivery's attempt follows from its headers and the server's count
// alone (attemptOf), and a copy spends exactly one of MaxDeliver on it.
// The not-before is written by the retrying process's clock and judged by
// the receiving one's, so clock skew between workers lengthens or shortens
// a retry's delay by the skew; nothing else depends on it.

// retryHeaders returns the headers of the copy a Retry publishes.
func retryHeaders(src nats.Header, attempt int, reason string, notBefore time.Time) nats.Header {
	h := copyHeaders(src)
	h.Set(bus.HeaderAttempt, strconv.Itoa(attempt))
	h.Set(bus.HeaderRetryReason, reason)
	h.Set(HeaderNotBefore, notBefore.UTC().Format(time.RFC3339Nano))
	return h
}

// copyHeaders copies a stored message's headers for a new publish, without
// the server's own (Nats-*): they direct the original publish, and a copy
// carrying the original's Nats-Msg-Id would be dropped as a duplicate (the
// PubAck says so, but the copy is not stored) within the dedupe window.
func copyHeaders(src nats.Header) nats.Header {
	h := make(nats.Header, len(src)+4)
	for k, v := range src {
		if len(k) >= 5 && strings.EqualFold(k[:5], "nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	return h
}

// notBefore reads a copy's not-before time. A missing or malformed header
// (not written by Retry) means the message is no retried copy.
func notBefore(h nats.Header) (time.Time, bool) {
	v := h.Get(HeaderNotBefore)
	if v == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// deferral says whether a delivery is the first of a retried copy, which
// is handed back instead of handed out, and for how long (0: already due).
func deferral(h nats.Header, numDelivered uint64, now time.Time) (time.Duration, bool) {
	if numDelivered != 1 {
		return 0, false
	}
	nb, ok := notBefore(h)
	if !ok {
		return 0, false
	}
	return min(max(nb.Sub(now), 0), maxDeferral), true
}

// attemptOf is a delivery's attempt: the attempt header (1 when absent,
// written by Retry) plus the server's count of earlier deliveries of this
// copy, less the early first delivery of a retried copy that deferral
// handed back. A Release or a crash counts, as the server counts it.
func attemptOf(h nats.Header, numDelivered uint64) int {
	attempt := 1
	if n, err := strconv.Atoi(h.Get(bus.HeaderAttempt)); err == nil && n >= 1 && n <= maxCount {
		attempt = n
	}
	earlier := int64(min(numDelivered, maxCount)) - 1
	if _, ok := notBefore(h); ok && numDelivered >= 2 {
		earlier--
	}
	if earlier > 0 {
		attempt += int(earlier)
	}
	return attempt
}
