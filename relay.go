package eventsync

import (
	"context"
	"fmt"

	"github.com/eventsync/eventsync/internal/relay"
	"github.com/eventsync/eventsync/source/sqlite"
)

// RelayConfig tunes a relay; zero values take the defaults its fields
// name. Registerer, Logger and TracerProvider default to the Client's,
// MaxEventBytes to Config.Worker.MaxEventBytes (the relay rejects what
// workers would park as too large), and Concurrency to 1 on SQLite, which
// has one writer.
type RelayConfig = relay.Config

// Relay publishes the source's outbox rows to the live stream, in commit
// order per entity, with publisher confirms before rows are marked sent.
type Relay struct {
	r *relay.Relay
}

// NewRelay builds a relay from the Client's source to its bus. It checks
// that the outbox is installed, so a missing one fails here and not in a
// retry loop.
func (c *Client) NewRelay(ctx context.Context, rc RelayConfig) (*Relay, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.busLocked(ctx)
	if err != nil {
		return nil, err
	}
	src, err := c.sourceLocked(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := src.Backlog(ctx); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if rc.Registerer == nil {
		rc.Registerer = c.opts.registerer
	}
	if rc.Logger == nil {
		rc.Logger = c.log
	}
	if rc.TracerProvider == nil {
		rc.TracerProvider = c.opts.tracer
	}
	if rc.MaxEventBytes == 0 {
		rc.MaxEventBytes = c.cfg.Worker.MaxEventBytes
	}
	if _, isSQLite := src.(*sqlite.Source); isSQLite && rc.Concurrency == 0 {
		rc.Concurrency = 1
	}
	r, err := relay.New(src, b, rc)
	if err != nil {
		return nil, err
	}
	c.queueMetricsLocked(b, nil)
	return &Relay{r: r}, nil
}

// Run relays until ctx ends; a batch in flight may finish within the
// config's ShutdownGrace so a clean stop does not publish it twice.
func (r *Relay) Run(ctx context.Context) error { return r.r.Run(ctx) }

// RelayStats are a relay's counters since it started.
type RelayStats = relay.Stats

// Stats returns the relay's current counters.
func (r *Relay) Stats() RelayStats { return r.r.Stats() }
