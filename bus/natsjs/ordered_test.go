package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
)

// openOrdered opens an ordered-mode bus on the embedded server (nats-server
// 2.11+: pinned priority groups), in namespace ns (empty: a fresh one).
func openOrdered(t testing.TB, ns string, partitions int) *Bus {
	t.Helper()
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if ns == "" {
		return openIsolated(t, Config{Conn: nc, Partitions: partitions, RebalanceInterval: 200 * time.Millisecond})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{Conn: nc, Namespace: ns, Partitions: partitions, RebalanceInterval: 200 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformanceOrdered(t *testing.T) {
	t.Parallel()
	f := features
	f.Partitions = 3
	bustest.Run(t, func(t *testing.T) bus.Bus { return openOrdered(t, "", 3) }, f)
}

type seenEvent struct {
	key     string
	version int64
}

func decodeEvent(t testing.TB, body []byte) seenEvent {
	var e struct {
		Entity  string `json:"entity"`
		Key     string `json:"key"`
		Version int64  `json:"version"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return seenEvent{e.Entity + ":" + e.Key, e.Version}
}

func publishInterleaved(t testing.TB, ctx context.Context, b bus.Publisher, keys, from, to int) {
	t.Helper()
	var msgs []bus.Message
	for v := from; v <= to; v++ {
		for k := range keys {
			msgs = append(msgs, bus.Message{Body: bustest.EventBody("listing", fmt.Sprintf("k%d", k), int64(v))})
		}
	}
	if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
		t.Fatal(err)
	}
}

// One key's versions arrive in publish order although acks come out of
// order, and a retried event returns through its own partition.
func TestOrderedOneKeyInOrder(t *testing.T) {
	t.Parallel()
	b := openOrdered(t, "", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const keys, versions = 12, 10
	publishInterleaved(t, ctx, b, keys, 1, versions)
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	last := map[string]int64{}
	retried := false
	var acks []bus.Delivery
	for got := 0; got < keys*versions; {
		select {
		case d := <-sub.Deliveries():
			e := decodeEvent(t, d.Body())
			if e.key == "listing:k3" && e.version == 5 && !retried {
				retried = true
				if err := d.Retry(ctx, 100*time.Millisecond, "test"); err != nil {
					t.Fatal(err)
				}
				continue
			}
			switch {
			case e.key == "listing:k3" && e.version == 5:
				if d.Headers()[bus.HeaderPartitionKey] != "listing:k3" {
					t.Errorf("retried copy has partition key %q", d.Headers()[bus.HeaderPartitionKey])
				}
			case e.key == "listing:k3" && e.version == 6 && last[e.key] == 4:
			case e.version != last[e.key]+1:
				t.Errorf("%s: version %d after %d", e.key, e.version, last[e.key])
			}
			last[e.key] = max(last[e.key], e.version)
			got++
			acks = append(acks, d)
			if len(acks) == 4 { // settle out of order
				for i := len(acks) - 1; i >= 0; i-- {
					if err := acks[i].Ack(ctx); err != nil {
						t.Fatal(err)
					}
				}
				acks = acks[:0]
			}
		case <-ctx.Done():
			t.Fatalf("timed out; last versions %v", last)
		}
	}
	for _, d := range acks {
		_ = d.Ack(ctx)
	}
}

// A second subscription gets a share of the partitions; when the first
// one's connection dies, its partitions go to the second one.
func TestOrderedSplitAndFailover(t *testing.T) {
	t.Parallel()
	ns := testenv.UniqueName("es")
	a := openOrdered(t, ns, 4)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.DeleteStreams(ctx)
	})
	b := openOrdered(t, ns, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	subA, err := a.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = subA.Close() }()
	subB, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = subB.Close() }()
	const keys = 16
	round := 0
	fromA := subA.Deliveries()
	consume := func() map[string]int {
		round++
		publishInterleaved(t, ctx, b, keys, round, round)
		counts := map[string]int{}
		for counts["a"]+counts["b"] < keys {
			var d bus.Delivery
			var ok bool
			select {
			case d, ok = <-fromA:
				if !ok { // its connection died
					fromA = nil
					continue
				}
				counts["a"]++
			case d = <-subB.Deliveries():
				counts["b"]++
			case <-ctx.Done():
				t.Fatalf("round %d: timed out (%v)", round, counts)
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return counts
	}
	for {
		if c := consume(); c["a"] > 0 && c["b"] > 0 {
			t.Logf("round %d: split %v", round, c)
			break
		}
	}
	// A's connection dies (as with a killed process): no unpin, no
	// close; the server moves its partitions once their pin expires.
	a.nc.Close()
	for {
		if c := consume(); c["b"] == keys {
			t.Logf("round %d: all on b", round)
			return
		}
	}
}

func TestOrderedRefusedBeforePinnedGroups(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{"2.9.10": false, "2.10.22": false, "2.11.0": true, "2.12.1": true, "2.11.0-RC.1": true, "3.0.0": true} {
		if got := versionAtLeast(v, pinnedSince); got != want {
			t.Errorf("versionAtLeast(%s, %s) = %v", v, pinnedSince, got)
		}
	}
	url := testenv.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{URL: url, Namespace: testenv.UniqueName("es"), Partitions: 2, Logger: quiet()})
	if err == nil {
		// This server has pinned groups: nothing to refuse.
		_ = b.DeleteStreams(ctx)
		_ = b.Close()
		t.Skip("the external server supports pinned priority groups")
	}
	if setting.Key(err) != "bus_partitions" || !strings.Contains(err.Error(), pinnedSince) {
		t.Fatalf("Open on an old server = %v, want a bus_partitions error naming %s", err, pinnedSince)
	}
}

// Switching modes refuses while the other mode's consumer has messages.
func TestOrderedSwitchNeedsSettledConsumers(t *testing.T) {
	t.Parallel()
	plain := embeddedBus(t)
	ns := plain.cfg.Namespace
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := plain.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "1", 1)}); err != nil {
		t.Fatal(err)
	}
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = Open(ctx, Config{Conn: nc, Namespace: ns, Partitions: 2, Logger: quiet()})
	if err == nil || setting.Key(err) != "bus_partitions" {
		t.Fatalf("ordered Open over a busy shared consumer = %v, want a bus_partitions error", err)
	}
	sub, err := plain.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-sub.Deliveries():
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	_ = sub.Close()
	ordered := openOrdered(t, ns, 2)
	if err := ordered.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "1", 2)}); err != nil {
		t.Fatal(err)
	}
	st, err := ordered.Stats(ctx, bus.Live)
	if err != nil || st.Ready != 1 {
		t.Fatalf("ordered stats = %+v, %v; want one message", st, err)
	}
	if _, err := Open(ctx, Config{Conn: nc, Namespace: ns, Logger: quiet()}); err == nil || setting.Key(err) != "bus_partitions" {
		t.Fatalf("plain Open over a busy partition = %v, want a bus_partitions error", err)
	}
}
