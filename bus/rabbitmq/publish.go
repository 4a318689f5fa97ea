package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// outgoing is one message to publish: where to and what.
type outgoing struct {
	exchange, key string
	msg           amqp.Publishing
}

// confirmChannel is a channel in confirm mode plus the returns it has seen.
// A basic.return always precedes the ack of the same message on the wire and
// amqp091 hands returns to the buffered channel before it processes that
// ack, so once a confirm is in, draining returns tells whether it bounced.
type confirmChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	closed  chan *amqp.Error // the reason the broker closed the channel

	mu       sync.Mutex
	returned map[string]amqp.Return // by MessageId
}

func (c *confirmChannel) drainReturns() {
	for {
		select {
		case r, ok := <-c.returns:
			if !ok { // closed with the channel
				return
			}
			c.returned[r.MessageId] = r
		default:
			return
		}
	}
}

func (c *confirmChannel) takeReturn(id string) (amqp.Return, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainReturns()
	r, ok := c.returned[id]
	delete(c.returned, id)
	return r, ok
}

// publisher publishes with confirms over one shared confirm channel.
// Callers publish under a lock and wait for their confirms outside it, so
// concurrent publishers pipeline instead of queueing behind each other.
type publisher struct {
	m *connManager

	mu  sync.Mutex
	cur *confirmChannel
}

// errConnection marks failures the publisher retries after reconnecting.
var errConnection = errors.New("connection lost")

func newMessageID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// publish stores every message durably or returns an error. Messages
// confirmed before a connection loss are not sent again; the rest are,
// once the connection is back, until ctx ends.
func (p *publisher) publish(ctx context.Context, msgs []outgoing) error {
	pending := msgs
	for {
		failed, err := p.try(ctx, pending)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errConnection) || ctx.Err() != nil {
			return err
		}
		p.m.log.Debug("rabbitmq publish interrupted; retrying after reconnect", "unconfirmed", len(failed), "error", err)
		pending = failed
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish %d messages: %w (connection lost: %v)", len(pending), ctx.Err(), err)
		case <-p.m.done:
			return ErrClosed
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// channel returns the shared confirm channel, opening one if needed.
// Callers hold p.mu.
func (p *publisher) channel(ctx context.Context) (*confirmChannel, error) {
	if p.cur != nil && !p.cur.ch.IsClosed() {
		return p.cur, nil
	}
	ch, err := p.m.channel(ctx)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("put channel in confirm mode: %w: %w", errConnection, err)
	}
	cc := &confirmChannel{
		ch:       ch,
		returns:  ch.NotifyReturn(make(chan amqp.Return, 4096)),
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1)),
		returned: map[string]amqp.Return{},
	}
	p.cur = cc
	return cc, nil
}

// try publishes msgs once. On a connection error it returns the messages
// that were not confirmed, wrapped in errConnection.
func (p *publisher) try(ctx context.Context, msgs []outgoing) ([]outgoing, error) {
	p.mu.Lock()
	cc, err := p.channel(ctx)
	if err != nil {
		p.mu.Unlock()
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return msgs, err
		}
		return msgs, fmt.Errorf("%w: %w", errConnection, err)
	}
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	var pubErr error
	for i := range msgs {
		if msgs[i].msg.MessageId == "" {
			msgs[i].msg.MessageId = newMessageID()
		}
		dc, err := cc.ch.PublishWithDeferredConfirm(msgs[i].exchange, msgs[i].key, true, false, msgs[i].msg)
		if err != nil {
			pubErr = err
			break
		}
		confirms = append(confirms, dc)
		if i%512 == 511 { // keep the returns buffer from filling up
			cc.mu.Lock()
			cc.drainReturns()
			cc.mu.Unlock()
		}
	}
	p.mu.Unlock()

	var unconfirmed []outgoing
	var firstErr error
	for i, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			return nil, fmt.Errorf("publish: waiting for the broker's confirm: %w", err)
		}
		if !acked {
			if cc.ch.IsClosed() {
				unconfirmed = append(unconfirmed, msgs[i])
				continue
			}
			if firstErr == nil {
				firstErr = fmt.Errorf("publish to %q: the broker refused the message (nack); the queue may be full or unavailable", routeOf(msgs[i]))
			}
			continue
		}
		if r, bounced := cc.takeReturn(msgs[i].msg.MessageId); bounced && firstErr == nil {
			firstErr = fmt.Errorf("publish to %q: unroutable (%d %s); the queue is missing: restart eventsync to redeclare the topology or check the namespace", routeOf(msgs[i]), r.ReplyCode, r.ReplyText)
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	unconfirmed = append(unconfirmed, msgs[len(confirms):]...)
	if len(unconfirmed) > 0 {
		cause := pubErr
		if cause == nil {
			cause = amqp.ErrClosed
		}
		// A channel closed by the broker over a soft error (say the
		// exchange was deleted) would fail the same way again: report it.
		select {
		case reason := <-cc.closed:
			if reason != nil && reason.Server && !isConnectionLevel(reason) {
				return nil, fmt.Errorf("publish to %q: the broker closed the channel: %w; restart eventsync to redeclare the topology or check the namespace", routeOf(unconfirmed[0]), reason)
			}
		default:
		}
		return unconfirmed, fmt.Errorf("%w: %d messages unconfirmed: %w", errConnection, len(unconfirmed), cause)
	}
	return nil, nil
}

// isConnectionLevel reports whether the broker's close reason concerns the
// whole connection (which reconnecting fixes) rather than this channel.
func isConnectionLevel(e *amqp.Error) bool {
	switch e.Code {
	case amqp.ConnectionForced, amqp.InvalidPath, amqp.FrameError, amqp.SyntaxError,
		amqp.CommandInvalid, amqp.ChannelError, amqp.UnexpectedFrame, amqp.ResourceError,
		amqp.NotAllowed, amqp.NotImplemented, amqp.InternalError:
		return true
	}
	return false
}

func routeOf(o outgoing) string {
	if o.exchange == "" {
		return o.key
	}
	return o.exchange + "/" + o.key
}

func (p *publisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		_ = p.cur.ch.Close()
		p.cur = nil
	}
}
