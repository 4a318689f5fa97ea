package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/throttle"
)

// newBatchHarness is the worker stack as eventsync worker builds it
// against an API with bulk endpoints: the HTTP sink with a batch block
// (the fake API's default routes, 50 items a call) behind a throttle, on a
// real store; runWorker puts the batcher in front of it.
func newBatchHarness(t *testing.T, sf storeFactory, sinkTimeout time.Duration) *harness {
	t.Helper()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	sinkCfg, err := httpsink.ParseConfig(fmt.Appendf(nil, "defaults:\n  base_url: %s\n  timeout: %s\nentities:\n  listing: {collection: listings, batch: {max_items: 50}}\n", api.URL, sinkTimeout))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := httpsink.New(sinkCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hs.Close)
	ts, err := throttle.New(hs, throttle.Config{ProbeInterval: 300 * time.Millisecond}, throttle.Options{Name: "batch/sink", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st := sf.open(t)
	a, err := NewApplier(st, ts, Config{WorkerID: "batch", LeaseTTL: 2 * time.Second, Entities: []string{"listing"}, MaxEventBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{api: api, store: st, applier: a}
}

func runBatchWorker(t *testing.T, h *harness, b bus.Bus) *Worker {
	t.Helper()
	w, _ := runWorker(t, h, b, func(c *Config) {
		c.Streams = []bus.Stream{bus.Live}
		c.Concurrency = 128
		c.LockedRetryDelay = 50 * time.Millisecond
	})
	return w
}

// apiRequests is every /v1 request the fake API answered.
func apiRequests(st fakeapi.Stats) int64 {
	var n int64
	for _, byStatus := range st.Requests {
		for _, c := range byStatus {
			n += c
		}
	}
	return n
}

// waitSettled waits until w settled n deliveries for good (applied, found
// duplicate, stale or superseded, or parked).
func waitSettled(t *testing.T, w *Worker, n int64) {
	t.Helper()
	waitUntil(t, 60*time.Second, fmt.Sprintf("%d events settled", n), func() bool {
		var done int64
		for _, r := range []Result{ResultApplied, ResultDuplicate, ResultStale, ResultSuperseded, ResultRepaired, ResultParked} {
			done += w.Status().Results[string(r)]
		}
		return done >= n
	})
}

// waitTitles waits until the API holds exactly one record per key of want,
// with its title, and none of other keys.
func waitTitles(t *testing.T, h *harness, b bus.Bus, within time.Duration, want map[string]string) {
	t.Helper()
	var diff []string
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		got := map[string]string{}
		diff = diff[:0]
		for _, r := range h.api.Records("listings") {
			k := r.ExternalID()
			if _, dup := got[k]; dup {
				diff = append(diff, k+" twice")
			}
			got[k], _ = r["title"].(string)
		}
		for k, title := range want {
			if got[k] != title {
				diff = append(diff, fmt.Sprintf("%s=%q want %q", k, got[k], title))
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				diff = append(diff, k+" should not exist")
			}
		}
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("API not converged after %s: %d differences, e.g. %v; %s", within, len(diff), diff[:min(len(diff), 10)], parkedSummary(context.Background(), b))
		}
	}
}

// Creates, updates and deletes of many keys converge through the bulk
// endpoints with far fewer requests than events, and no write the API
// could tell apart from the single calls' (no duplicate, no stale write,
// no overlap on a record).
func TestWorkerBatchesWritesOfManyKeys(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			h := newBatchHarness(t, sf, 2*time.Second)
			b := rabbitmqtest.Open(t, rabbitmq.Config{})
			const keys, deleted = 300, 60
			var first, rest []bus.Message
			want := map[string]string{}
			for k := range keys {
				key := fmt.Sprintf("b%d", k)
				first = append(first, bus.Message{Body: upsert(key, 1, "v1")})
				if k < deleted {
					rest = append(rest, bus.Message{Body: del(key, 2)})
					continue
				}
				rest = append(rest, bus.Message{Body: upsert(key, 2, "v2")})
				want[key] = "v2"
			}
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 18))
			rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
			events := len(first) + len(rest)
			w := runBatchWorker(t, h, b)
			ctx := context.Background()
			if err := b.Publish(ctx, bus.Live, first...); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, bus.Live, rest...); err != nil {
				t.Fatal(err)
			}
			waitSettled(t, w, int64(events))
			waitTitles(t, h, b, 10*time.Second, want)
			st := h.api.Stats()
			requests := apiRequests(st)
			t.Logf("%d events: %d API requests, %d of them batches writing %d items; results %v", events, requests, st.BatchRequests, st.BatchItems, st.BatchResults)
			if requests > int64(events)/5 {
				t.Errorf("%d API requests for %d events, want at most a fifth", requests, events)
			}
			if st.DuplicateRecords != 0 || st.StaleWrites != 0 || st.OverlappingWrites != 0 {
				t.Errorf("duplicates %d, stale writes %d, overlapping writes %d; want none", st.DuplicateRecords, st.StaleWrites, st.OverlappingWrites)
			}
			if p := parkedSummary(ctx, b); p != "nothing parked" {
				t.Errorf("%s, want nothing parked", p)
			}
		})
	}
}

// A record the API refuses inside a batch is parked with its own answer;
// the other items of its call are applied.
func TestWorkerBatchItemRefused(t *testing.T) {
	h := newBatchHarness(t, stores()[0], 2*time.Second)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	want := map[string]string{}
	var msgs []bus.Message
	for k := range 20 {
		key := fmt.Sprintf("r%d", k)
		if k == 7 {
			// Over the fake API's 1 MiB per record: that item's 413.
			msgs = append(msgs, bus.Message{Body: upsert(key, 1, strings.Repeat("x", fakeapi.MaxBodyBytes))})
			continue
		}
		msgs = append(msgs, bus.Message{Body: upsert(key, 1, "ok")})
		want[key] = "ok"
	}
	w := runBatchWorker(t, h, b)
	ctx := context.Background()
	if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, w, 20)
	waitTitles(t, h, b, 10*time.Second, want)
	parked, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil || len(parked) != 1 {
		t.Fatalf("parked %d (%v), want the refused record", len(parked), err)
	}
	if !strings.Contains(parked[0].Reason, "413") || !strings.Contains(string(parked[0].Body), `"key":"r7"`) {
		t.Fatalf("parked %.80s with reason %q, want r7 with its 413", parked[0].Body, parked[0].Reason)
	}
	st := h.api.Stats()
	// Every write went in a batch call, the refused one too.
	if st.BatchResults["create"]["413"] != 1 || st.BatchResults["create"]["201"] != 19 || apiRequests(st) != st.BatchRequests {
		t.Errorf("batch results %v in %d batch requests of %d, want 19 created and one 413, batches only", st.BatchResults, st.BatchRequests, apiRequests(st))
	}
}

// Batches that land but answer after the sink's deadline leave every item
// in doubt: their retries look the records up, adopt them and converge
// with no duplicate create.
func TestWorkerBatchTimeoutAfterWriteConverges(t *testing.T) {
	const sinkTimeout = 300 * time.Millisecond
	h := newBatchHarness(t, stores()[0], sinkTimeout)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	if err := h.api.SetFaults(fakeapi.Faults{TimeoutRate: 1, TimeoutHold: fakeapi.Duration(sinkTimeout + 500*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	var msgs []bus.Message
	for k := range 100 {
		key := fmt.Sprintf("t%d", k)
		msgs = append(msgs, bus.Message{Body: upsert(key, 1, "v1")})
		want[key] = "v1"
	}
	w := runBatchWorker(t, h, b)
	ctx := context.Background()
	if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "every record created by a batch that timed out", func() bool {
		return len(h.api.Records("listings")) >= 100 && h.api.Stats().FaultsInjected["timeout"] >= 2
	})
	if err := h.api.SetFaults(fakeapi.Faults{}); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, w, 100)
	waitTitles(t, h, b, 10*time.Second, want)
	st := h.api.Stats()
	t.Logf("%d API requests %v, %d batches, timeouts %d, results %v", apiRequests(st), st.Requests, st.BatchRequests, st.FaultsInjected["timeout"], st.BatchResults)
	// Each record was created once; the retries of the writes in doubt
	// looked them up (GET) and adopted them.
	if st.BatchResults["create"]["201"] != 100 || st.Requests["GET"]["200"] < 100 {
		t.Errorf("creates %v, lookups %v: want 100 creates and a lookup per write in doubt", st.BatchResults["create"], st.Requests["GET"])
	}
	if st.DuplicateRecords != 0 || st.StaleWrites != 0 || st.OverlappingWrites != 0 {
		t.Errorf("duplicates %d, stale writes %d, overlapping writes %d; want none", st.DuplicateRecords, st.StaleWrites, st.OverlappingWrites)
	}
	if p := parkedSummary(ctx, b); p != "nothing parked" {
		t.Errorf("%s, want nothing parked", p)
	}
}
