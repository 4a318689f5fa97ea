package cli

import (
	"context"
	"log/slog"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/store"
)

type need int

const (
	needBus need = 1 << iota
	needStore
	needSource
)

// resources are a command's eventsync.Client (the one composition root,
// which picks adapters by URL scheme) and what the command opened through
// it.
type resources struct {
	Client    *eventsync.Client
	Bus       bus.Bus
	Store     store.Store
	Source    source.Source
	BusName   string // redacted URL or "embedded …"
	StoreName string
}

// Close closes everything the Client opened.
func (r *resources) Close() {
	if r != nil && r.Client != nil {
		_ = r.Client.Close()
	}
}

// openResources builds the command's Client from cfg and opens what it
// needs. An empty bus or store URL means the embedded deployment under
// cfg.DataDir, and only when a data directory was given: a forgotten
// --config must be an error, not a fresh deployment no worker uses.
func openResources(ctx context.Context, cfg *config.Config, log *slog.Logger, what need, opts ...eventsync.Option) (_ *resources, err error) {
	if what&needBus != 0 && cfg.Bus == "" && cfg.DataDir == "" {
		return nil, errNoDeployment("bus")
	}
	if what&needStore != 0 && cfg.Store == "" && cfg.DataDir == "" {
		return nil, errNoDeployment("state store")
	}
	if what&needSource != 0 && cfg.Source == "" {
		return nil, usage(setting.Errorf("source", "no source database: give postgres://user@host:5432/db or sqlite:///path/app.db"))
	}
	client, err := eventsync.Open(*cfg, append([]eventsync.Option{eventsync.WithLogger(log)}, opts...)...)
	if err != nil {
		return nil, usage(err)
	}
	res := &resources{Client: client}
	defer func() {
		if err != nil {
			res.Close()
		}
	}()
	if what&needBus != 0 {
		if res.Bus, err = client.Bus(ctx); err != nil {
			return nil, err
		}
	}
	if what&needStore != 0 {
		if res.Store, err = client.Store(ctx); err != nil {
			return nil, err
		}
	}
	if what&needSource != 0 {
		if res.Source, err = client.Source(ctx); err != nil {
			return nil, err
		}
	}
	res.BusName, res.StoreName = client.Describe()
	return res, nil
}
