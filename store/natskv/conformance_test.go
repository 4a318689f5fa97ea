package natskv

import (
	"testing"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/storetest"
)

func TestConformanceEmbedded(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return embeddedStore(t, nil) })
}

func TestConformanceExternal(t *testing.T) {
	t.Parallel()
	testenv.NATS(t)
	storetest.Run(t, func(t *testing.T) store.Store { return externalStore(t, nil) })
}

func BenchmarkAcquireCommit(b *testing.B) {
	nc, err := shared.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close) // after the store's cleanup, which needs the connection
	storetest.BenchmarkAcquireCommit(b, openOn(b, Config{Conn: nc}))
}
