package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/bus"
)

// parkHeaders copies a message's headers (without the server's own, see
// copyHeaders, and without a retry's not-before: a parked message waits for
// nobody) and adds the diagnosis every parked message carries: reason,
// attempts, source stream, time.
func parkHeaders(src nats.Header, reason string, attempt int, stream bus.Stream) nats.Header {
	h := copyHeaders(src)
	h.Del(HeaderNotBefore)
	h.Set(bus.HeaderReason, reason)
	h.Set(bus.HeaderAttempt, strconv.Itoa(attempt))
	h.Set(bus.HeaderStream, string(stream))
	h.Set(bus.HeaderParkedAt, time.Now().UTC().Format(time.RFC3339Nano))
	return h
}

// parkedEntry is one parked message with its stream sequence and headers.
type parkedEntry struct {
	msg    bus.ParkedMessage
	seq    uint64
	header nats.Header
}

// parkedFromRaw decodes a parked stream message. Headers written by other
// tools may be missing or malformed: the message is still listed, with
// zero values where the diagnosis is unreadable.
func parkedFromRaw(raw *jetstream.RawStreamMsg) parkedEntry {
	m := bus.ParkedMessage{
		ID:       strconv.FormatUint(raw.Sequence, 10),
		Body:     raw.Data,
		ParkedAt: raw.Time,
	}
	if raw.Header != nil {
		m.Headers = make(map[string]string, len(raw.Header))
		for k := range raw.Header {
			m.Headers[k] = raw.Header.Get(k)
		}
		m.Reason = raw.Header.Get(bus.HeaderReason)
		if s, err := bus.ParseStream(raw.Header.Get(bus.HeaderStream)); err == nil {
			m.Stream = s
		}
		if n, err := strconv.Atoi(raw.Header.Get(bus.HeaderAttempt)); err == nil && n >= 0 {
			m.Attempts = n
		}
		if t, err := time.Parse(time.RFC3339Nano, raw.Header.Get(bus.HeaderParkedAt)); err == nil {
			m.ParkedAt = t
		}
	}
	return parkedEntry{msg: m, seq: raw.Sequence, header: raw.Header}
}

// eachParked walks the parked stream in sequence order without consuming
// it, calling fn for every message matching f until fn returns false or
// f.Limit matches were seen.
func (b *Bus) eachParked(ctx context.Context, f bus.ParkedFilter, fn func(parkedEntry) (bool, error)) error {
	matched := 0
	for seq := uint64(1); ; {
		// "Next message with seq >= n on the subject" skips deleted ones.
		raw, err := b.parked.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(b.parkedSubject()))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("natsjs: read parked message at %d: %w", seq, err)
		}
		seq = raw.Sequence + 1
		e := parkedFromRaw(raw)
		if !f.Match(e.msg) {
			continue
		}
		more, err := fn(e)
		if err != nil {
			return err
		}
		matched++
		if !more || (f.Limit > 0 && matched >= f.Limit) {
			return nil
		}
	}
}

// ListParked returns the parked messages matching f, oldest first.
func (b *Bus) ListParked(ctx context.Context, f bus.ParkedFilter) ([]bus.ParkedMessage, error) {
	var out []bus.ParkedMessage
	err := b.eachParked(ctx, f, func(e parkedEntry) (bool, error) {
		out = append(out, e.msg)
		return true, nil
	})
	return out, err
}

// ReplayParked republishes matching messages to their original stream with
// their original headers, and deletes each parked copy only after the
// republish was confirmed. Messages without a readable original stream are
// skipped (and stay parked).
func (b *Bus) ReplayParked(ctx context.Context, f bus.ParkedFilter) (int, error) {
	n := 0
	err := b.eachParked(ctx, f, func(e parkedEntry) (bool, error) {
		if e.msg.Stream == "" {
			b.log.Warn("natsjs: parked message has no original stream; not replayed", "id", e.msg.ID)
			return true, nil
		}
		if err := b.replayEntry(ctx, e, e.msg.Body); err != nil {
			return false, fmt.Errorf("%w (%d replayed so far)", err, n)
		}
		n++
		return true, nil
	})
	return n, err
}

// replayEntry publishes the parked e with body to its original stream,
// its headers without the diagnosis, and deletes the parked copy once the
// publish was confirmed.
func (b *Bus) replayEntry(ctx context.Context, e parkedEntry, body []byte) error {
	h := nats.Header{}
	for k, v := range e.header {
		switch k {
		case bus.HeaderReason, bus.HeaderAttempt, bus.HeaderStream, bus.HeaderParkedAt:
			continue // the replayed message starts afresh
		}
		h[k] = v
	}
	if bus.PartitionKey(bus.Message{Body: body}) != "" {
		h.Del(bus.HeaderPartitionKey) // taken from the (maybe edited) body
	}
	subject, h := b.publishSubject(e.msg.Stream, body, h)
	m := &nats.Msg{Subject: subject, Data: body, Header: h}
	if _, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(b.streamName(e.msg.Stream))); err != nil {
		return fmt.Errorf("natsjs: replay parked message %s to %s: %w", e.msg.ID, e.msg.Stream, err)
	}
	if err := b.deleteParked(ctx, e.seq); err != nil {
		return fmt.Errorf("%w; message %s was replayed but is still parked, purge it by id", err, e.msg.ID)
	}
	return nil
}

// ReplayParkedAs republishes the parked message id (its stream sequence)
// with body to its original stream, and deletes the parked copy once the
// publish was confirmed.
func (b *Bus) ReplayParkedAs(ctx context.Context, id string, body []byte) error {
	seq, err := strconv.ParseUint(id, 10, 64)
	if err != nil || seq == 0 {
		return fmt.Errorf("natsjs: replay parked message %q: %w", id, bus.ErrNotParked)
	}
	raw, err := b.parked.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && raw.Subject != b.parkedSubject()) {
		return fmt.Errorf("natsjs: replay parked message %s: %w", id, bus.ErrNotParked)
	}
	if err != nil {
		return fmt.Errorf("natsjs: read parked message %s: %w", id, err)
	}
	e := parkedFromRaw(raw)
	if e.msg.Stream == "" {
		return fmt.Errorf("natsjs: replay parked message %s: it names no original stream, so it stays parked", id)
	}
	return b.replayEntry(ctx, e, body)
}

// PurgeParked deletes matching parked messages.
func (b *Bus) PurgeParked(ctx context.Context, f bus.ParkedFilter) (int, error) {
	n := 0
	err := b.eachParked(ctx, f, func(e parkedEntry) (bool, error) {
		if err := b.deleteParked(ctx, e.seq); err != nil {
			return false, fmt.Errorf("%w (%d purged so far)", err, n)
		}
		n++
		return true, nil
	})
	return n, err
}

func (b *Bus) deleteParked(ctx context.Context, seq uint64) error {
	err := b.parked.DeleteMsg(ctx, seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("natsjs: delete parked message %d: %w", seq, err)
	}
	return nil
}
