// Package bustest is the conformance suite every bus adapter passes. An
// adapter's test calls Run with a constructor returning a fresh, isolated bus
// (its own namespace on the broker) that registers its own cleanup:
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, func(t *testing.T) bus.Bus { return openIsolated(t) })
//	}
//
// Honest differences between brokers are declared in Features rather than
// weakening the suite for everyone.
package bustest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
)

// Features declares what an adapter does differently. The zero value is the
// strictest contract.
type Features struct {
	// ReleaseCountsAttempt is set when the broker counts a Release as a
	// redelivery, so Attempt grows by one after it (RabbitMQ quorum queues
	// before 4.0 increment x-delivery-count on every requeue).
	ReleaseCountsAttempt bool
	// RetryDelay is the delay the suite asks Retry for. Adapters with fixed
	// delay tiers configure a tier of exactly this length so the suite runs
	// fast. Zero means one second.
	RetryDelay time.Duration
	// Timeout bounds every wait for a delivery. Zero means ten seconds.
	Timeout time.Duration
	// Partitions is the partition count of a bus in per-key ordered mode.
	// There the order of one publisher is kept per key only, and the
	// prefetch bounds
	// each partition's unsettled deliveries (the suite checks it on one
	// key's messages). Zero: one queue per stream.
	Partitions int
}

func (f Features) withDefaults() Features {
	if f.RetryDelay <= 0 {
		f.RetryDelay = time.Second
	}
	if f.Timeout <= 0 {
		f.Timeout = 10 * time.Second
	}
	return f
}

// quiet is how long the suite waits to conclude that nothing more arrives.
const quiet = 700 * time.Millisecond

// Run runs the conformance suite. newBus must return a bus isolated from
// every other call (fresh queues) and register its cleanup with t.Cleanup.
// features is optional; at most one value is used.
func Run(t *testing.T, newBus func(t *testing.T) bus.Bus, features ...Features) {
	var f Features
	if len(features) > 0 {
		f = features[0]
	}
	f = f.withDefaults()
	s := suite{newBus: newBus, f: f}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"PublishConsume", s.publishConsume},
		{"AckRemoves", s.ackRemoves},
		{"SecondSettleIsErrSettled", s.secondSettle},
		{"RetryDoesNotBlockHead", s.retryDoesNotBlockHead},
		{"Park", s.park},
		{"ParkedFilter", s.parkedFilter},
		{"ReplayParked", s.replayParked},
		{"PurgeParked", s.purgeParked},
		{"ParkedByIDAndStream", s.parkedByIDAndStream},
		{"ReplayParkedAs", s.replayParkedAs},
		{"Release", s.release},
		{"CloseReturnsBuffered", s.closeReturnsBuffered},
		{"StreamsIndependent", s.streamsIndependent},
		{"Prefetch", s.prefetch},
		{"Stats", s.stats},
		{"StatsUnacked", s.statsUnacked},
		{"StatsParked", s.statsParked},
		{"ManyExactlyOnce", s.manyExactlyOnce},
		{"ContextCancelClosesDeliveries", s.contextCancel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	newBus func(t *testing.T) bus.Bus
	f      Features
}

// ctx returns a context bounded well beyond every wait in one test.
func (s suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 6*s.f.Timeout+4*s.f.RetryDelay)
	t.Cleanup(cancel)
	return ctx
}

// EventBody returns a valid encoded event, so filters by entity work.
func EventBody(entity, key string, version int64) []byte {
	b, err := json.Marshal(map[string]any{
		"id": fmt.Sprintf("%s-%s-%d", entity, key, version), "entity": entity, "key": key,
		"version": version, "op": "upsert", "data": map[string]any{"name": key},
	})
	if err != nil {
		panic(err)
	}
	return b
}

func publish(t *testing.T, ctx context.Context, b bus.Bus, stream bus.Stream, msgs ...bus.Message) {
	t.Helper()
	if err := b.Publish(ctx, stream, msgs...); err != nil {
		t.Fatalf("Publish(%s, %d messages): %v", stream, len(msgs), err)
	}
}

func subscribe(t *testing.T, ctx context.Context, b bus.Bus, stream bus.Stream, prefetch int) bus.Subscription {
	t.Helper()
	sub, err := b.Subscribe(ctx, stream, bus.SubscribeOptions{Prefetch: prefetch})
	if err != nil {
		t.Fatalf("Subscribe(%s): %v", stream, err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

// next waits for one delivery or fails the test.
func (s suite) next(t *testing.T, sub bus.Subscription) bus.Delivery {
	t.Helper()
	select {
	case d, ok := <-sub.Deliveries():
		if !ok {
			t.Fatal("Deliveries closed while waiting for a delivery")
		}
		return d
	case <-time.After(s.f.Timeout):
		t.Fatalf("no delivery within %v", s.f.Timeout)
	}
	return nil
}

// nothing asserts that no delivery arrives for a while.
func nothing(t *testing.T, sub bus.Subscription) {
	t.Helper()
	select {
	case d, ok := <-sub.Deliveries():
		if ok {
			t.Fatalf("unexpected delivery %q (attempt %d)", d.Body(), d.Attempt())
		}
	case <-time.After(quiet):
	}
}

func ack(t *testing.T, ctx context.Context, d bus.Delivery) {
	t.Helper()
	if err := d.Ack(ctx); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

// eventually polls cond until it holds or the timeout passes.
func (s suite) eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(s.f.Timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v: %s", what, s.f.Timeout, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s suite) publishConsume(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	want := []bus.Message{
		{Body: EventBody("listing", "1", 1), Headers: map[string]string{"trace-id": "abc", "source": "test"}},
		{Body: EventBody("listing", "2", 1)},
		{Body: []byte(`{"not":"an event"}`), Headers: map[string]string{"k": "v"}},
	}
	publish(t, ctx, b, bus.Live, want...)
	sub := subscribe(t, ctx, b, bus.Live, 10)
	got := make([]bus.Delivery, len(want))
	for i := range want {
		got[i] = s.next(t, sub)
	}
	if s.f.Partitions > 0 { // order is kept per key only: match by body
		sort.Slice(got, func(i, j int) bool {
			return slices.IndexFunc(want, func(m bus.Message) bool { return string(m.Body) == string(got[i].Body()) }) <
				slices.IndexFunc(want, func(m bus.Message) bool { return string(m.Body) == string(got[j].Body()) })
		})
	}
	for i, w := range want {
		d := got[i]
		if string(d.Body()) != string(w.Body) {
			t.Fatalf("delivery %d body = %q, want %q (order of one publisher must be kept)", i, d.Body(), w.Body)
		}
		for k, v := range w.Headers {
			if got := d.Headers()[k]; got != v {
				t.Errorf("delivery %d header %q = %q, want %q", i, k, got, v)
			}
		}
		if d.Stream() != bus.Live {
			t.Errorf("delivery %d Stream() = %q, want %q", i, d.Stream(), bus.Live)
		}
		if d.Attempt() != 1 {
			t.Errorf("delivery %d Attempt() = %d on first delivery, want 1", i, d.Attempt())
		}
		ack(t, ctx, d)
	}
	nothing(t, sub)
}

func (s suite) ackRemoves(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	publish(t, ctx, b, bus.Live, bus.Message{Body: EventBody("listing", "1", 1)})
	sub := subscribe(t, ctx, b, bus.Live, 1)
	ack(t, ctx, s.next(t, sub))
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s.eventually(t, "Ready is 0 after Ack", func() (bool, string) {
		st, err := b.Stats(ctx, bus.Live)
		return err == nil && st.Ready == 0, fmt.Sprintf("stats %+v err %v", st, err)
	})
	sub2 := subscribe(t, ctx, b, bus.Live, 1)
	nothing(t, sub2)
}

func (s suite) secondSettle(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	outcomes := map[string]func(d bus.Delivery) error{
		"Ack":     func(d bus.Delivery) error { return d.Ack(ctx) },
		"Retry":   func(d bus.Delivery) error { return d.Retry(ctx, s.f.RetryDelay, "again") },
		"Park":    func(d bus.Delivery) error { return d.Park(ctx, "parked") },
		"Release": func(d bus.Delivery) error { return d.Release(ctx) },
	}
	names := []string{"Ack", "Retry", "Park", "Release"}
	var msgs []bus.Message
	for i := range names {
		msgs = append(msgs, bus.Message{Body: EventBody("listing", fmt.Sprint(i), 1)})
	}
	publish(t, ctx, b, bus.Live, msgs...)
	sub := subscribe(t, ctx, b, bus.Live, len(names))
	for range names {
		d := s.next(t, sub)
		// Message i gets outcome i (in the order delivered: partitioned
		// buses keep the order of one key only).
		first := names[slices.IndexFunc(msgs, func(m bus.Message) bool { return string(m.Body) == string(d.Body()) })]
		if err := outcomes[first](d); err != nil {
			t.Fatalf("%s: %v", first, err)
		}
		for _, second := range names {
			if err := outcomes[second](d); !errors.Is(err, bus.ErrSettled) {
				t.Errorf("%s after %s = %v, want bus.ErrSettled", second, first, err)
			}
		}
	}
	// The retried and the released message come back exactly once each.
	got := map[string]bool{}
	for range 2 {
		d := s.next(t, sub)
		got[string(d.Body())] = true
		ack(t, ctx, d)
	}
	if !got[string(msgs[1].Body)] || !got[string(msgs[3].Body)] {
		t.Errorf("after settling, redelivered %v; want the retried and the released message", got)
	}
	nothing(t, sub)
}

func (s suite) retryDoesNotBlockHead(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	a := bus.Message{Body: EventBody("listing", "A", 1), Headers: map[string]string{"trace-id": "a"}}
	bm := bus.Message{Body: EventBody("listing", "B", 1)}
	if s.f.Partitions > 0 {
		// One key, so one partition keeps A before B; B must still
		// pass A's retry.
		bm = bus.Message{Body: EventBody("listing", "A", 2)}
	}
	publish(t, ctx, b, bus.Live, a, bm)
	// Prefetch 1: if the retry blocked the head, B could not arrive.
	sub := subscribe(t, ctx, b, bus.Live, 1)
	d := s.next(t, sub)
	if string(d.Body()) != string(a.Body) {
		t.Fatalf("first delivery %q, want A", d.Body())
	}
	delay := s.f.RetryDelay
	retriedAt := time.Now()
	if err := d.Retry(ctx, delay, "try later"); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	d2 := s.next(t, sub)
	if string(d2.Body()) != string(bm.Body) {
		t.Fatalf("after retrying A got %q, want B (retry must not block the queue head)", d2.Body())
	}
	if time.Since(retriedAt) >= delay {
		t.Logf("B arrived only after the retry delay; cannot prove non-blocking on this run")
	}
	ack(t, ctx, d2)
	s.eventually(t, "Stats.Delayed counts the retried message (or -1)", func() (bool, string) {
		st, err := b.Stats(ctx, bus.Live)
		return err == nil && (st.Delayed == -1 || st.Delayed >= 1) || time.Since(retriedAt) > delay/2,
			fmt.Sprintf("stats %+v err %v", st, err)
	})

	for attempt := 2; attempt <= 3; attempt++ {
		d = s.next(t, sub)
		waited := time.Since(retriedAt)
		if string(d.Body()) != string(a.Body) {
			t.Fatalf("redelivery body %q, want A", d.Body())
		}
		// A little slack for the broker's timer granularity.
		if waited < delay-25*time.Millisecond {
			t.Errorf("retried message came back after %v, want at least %v", waited, delay)
		}
		if d.Attempt() != attempt {
			t.Errorf("Attempt() = %d after %d retries, want %d", d.Attempt(), attempt-1, attempt)
		}
		if d.Headers()["trace-id"] != "a" {
			t.Errorf("header trace-id lost on retry: %v", d.Headers())
		}
		if d.Stream() != bus.Live {
			t.Errorf("retried Stream() = %q, want live", d.Stream())
		}
		if attempt == 3 {
			break
		}
		retriedAt = time.Now()
		if err := d.Retry(ctx, delay, "still failing"); err != nil {
			t.Fatalf("second Retry: %v", err)
		}
	}
	// Parking after two retries records three attempts.
	if err := d.Park(ctx, "gave up"); err != nil {
		t.Fatalf("Park: %v", err)
	}
	parked, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil {
		t.Fatalf("ListParked: %v", err)
	}
	if len(parked) != 1 || parked[0].Attempts != 3 {
		t.Fatalf("parked after two retries = %+v, want one message with Attempts 3", parked)
	}
	nothing(t, sub)
}

func (s suite) park(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	body := EventBody("listing", "7", 3)
	publish(t, ctx, b, bus.Resync, bus.Message{Body: body})
	sub := subscribe(t, ctx, b, bus.Resync, 1)
	d := s.next(t, sub)
	before := time.Now()
	if err := d.Park(ctx, "remote said 422: name too long"); err != nil {
		t.Fatalf("Park: %v", err)
	}
	after := time.Now()
	nothing(t, sub)

	for pass := 0; pass < 2; pass++ { // listing twice proves it is non-destructive
		parked, err := b.ListParked(ctx, bus.ParkedFilter{})
		if err != nil {
			t.Fatalf("ListParked: %v", err)
		}
		if len(parked) != 1 {
			t.Fatalf("pass %d: ListParked returned %d messages, want 1: %+v", pass, len(parked), parked)
		}
		p := parked[0]
		if string(p.Body) != string(body) {
			t.Errorf("parked body %q, want %q", p.Body, body)
		}
		if p.Reason != "remote said 422: name too long" {
			t.Errorf("parked reason %q", p.Reason)
		}
		if p.Attempts != 1 {
			t.Errorf("parked attempts %d, want 1", p.Attempts)
		}
		if p.Stream != bus.Resync {
			t.Errorf("parked stream %q, want resync", p.Stream)
		}
		if p.ID == "" {
			t.Error("parked message has no ID")
		}
		// ParkedAt may be stored with second precision.
		if p.ParkedAt.Before(before.Add(-time.Second)) || p.ParkedAt.After(after.Add(time.Second)) {
			t.Errorf("ParkedAt %v not within [%v, %v]", p.ParkedAt, before, after)
		}
	}
	st, err := b.Stats(ctx, bus.Resync)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Ready != 0 {
		t.Errorf("parked message still counted as ready on its stream: %+v", st)
	}
}

// parkAll publishes msgs to stream and parks each with the reason in its
// "reason" header.
func (s suite) parkAll(t *testing.T, ctx context.Context, b bus.Bus, stream bus.Stream, msgs ...bus.Message) {
	t.Helper()
	publish(t, ctx, b, stream, msgs...)
	sub := subscribe(t, ctx, b, stream, len(msgs))
	for range msgs {
		d := s.next(t, sub)
		if err := d.Park(ctx, d.Headers()["reason"]); err != nil {
			t.Fatalf("Park: %v", err)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func parkedBodies(t *testing.T, ctx context.Context, b bus.Bus, f bus.ParkedFilter) []string {
	t.Helper()
	parked, err := b.ListParked(ctx, f)
	if err != nil {
		t.Fatalf("ListParked(%+v): %v", f, err)
	}
	var out []string
	for _, p := range parked {
		out = append(out, string(p.Body))
	}
	sort.Strings(out)
	return out
}

func msg(body []byte, reason string) bus.Message {
	return bus.Message{Body: body, Headers: map[string]string{"reason": reason}}
}

func (s suite) parkedFilter(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	l1, l2, h1 := EventBody("listing", "1", 1), EventBody("listing", "2", 1), EventBody("host", "1", 1)
	raw := []byte("not json")
	s.parkAll(t, ctx, b, bus.Live, msg(l1, "http 422 invalid"), msg(l2, "http 400 bad"), msg(h1, "http 422 invalid"), msg(raw, "undecodable"))

	check := func(name string, f bus.ParkedFilter, want ...[]byte) {
		t.Helper()
		var ws []string
		for _, w := range want {
			ws = append(ws, string(w))
		}
		sort.Strings(ws)
		got := parkedBodies(t, ctx, b, f)
		if fmt.Sprint(got) != fmt.Sprint(ws) {
			t.Errorf("%s: ListParked(%+v) = %q, want %q", name, f, got, ws)
		}
	}
	check("all", bus.ParkedFilter{}, l1, l2, h1, raw)
	check("entity", bus.ParkedFilter{Entity: "listing"}, l1, l2)
	check("entity matches no non-event", bus.ParkedFilter{Entity: "host"}, h1)
	check("reason", bus.ParkedFilter{ReasonContains: "422"}, l1, h1)
	check("entity and reason", bus.ParkedFilter{Entity: "listing", ReasonContains: "422"}, l1)
	check("since future", bus.ParkedFilter{Since: time.Now().Add(time.Hour)})
	check("until past", bus.ParkedFilter{Until: time.Now().Add(-time.Hour)})
	check("window", bus.ParkedFilter{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour), ReasonContains: "undecodable"}, raw)

	limited, err := b.ListParked(ctx, bus.ParkedFilter{Limit: 2})
	if err != nil {
		t.Fatalf("ListParked with Limit: %v", err)
	}
	if len(limited) != 2 {
		t.Errorf("ListParked(Limit 2) returned %d messages", len(limited))
	}
	check("listing is non-destructive", bus.ParkedFilter{}, l1, l2, h1, raw)
}

func (s suite) replayParked(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	l1, h1 := EventBody("listing", "1", 5), EventBody("host", "1", 5)
	s.parkAll(t, ctx, b, bus.Resync, msg(l1, "bad"), msg(h1, "bad"))
	live := subscribe(t, ctx, b, bus.Live, 10)

	n, err := b.ReplayParked(ctx, bus.ParkedFilter{Entity: "listing"})
	if err != nil || n != 1 {
		t.Fatalf("ReplayParked(listing) = %d, %v; want 1, nil", n, err)
	}
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{}); len(got) != 1 || got[0] != string(h1) {
		t.Fatalf("parked after replay = %q, want only the host message", got)
	}
	resync := subscribe(t, ctx, b, bus.Resync, 10)
	d := s.next(t, resync)
	if string(d.Body()) != string(l1) || d.Stream() != bus.Resync {
		t.Fatalf("replayed delivery %q on %q, want listing on resync", d.Body(), d.Stream())
	}
	if d.Attempt() < 1 {
		t.Errorf("replayed Attempt() = %d", d.Attempt())
	}
	ack(t, ctx, d)
	nothing(t, resync)
	nothing(t, live) // replay goes to the original stream only

	n, err = b.ReplayParked(ctx, bus.ParkedFilter{Limit: 5})
	if err != nil || n != 1 {
		t.Fatalf("ReplayParked(all) = %d, %v; want 1, nil", n, err)
	}
	d = s.next(t, resync)
	if string(d.Body()) != string(h1) {
		t.Fatalf("second replay delivered %q, want host", d.Body())
	}
	ack(t, ctx, d)
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{}); len(got) != 0 {
		t.Fatalf("parked after replaying all = %q, want none", got)
	}
}

func (s suite) purgeParked(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	l1, l2, l3, h1 := EventBody("listing", "1", 1), EventBody("listing", "2", 1), EventBody("listing", "3", 1), EventBody("host", "1", 1)
	s.parkAll(t, ctx, b, bus.Live, msg(l1, "x"), msg(l2, "x"), msg(l3, "x"), msg(h1, "x"))

	n, err := b.PurgeParked(ctx, bus.ParkedFilter{Entity: "listing", Limit: 2})
	if err != nil || n != 2 {
		t.Fatalf("PurgeParked(listing, limit 2) = %d, %v; want 2, nil", n, err)
	}
	left := parkedBodies(t, ctx, b, bus.ParkedFilter{})
	if len(left) != 2 {
		t.Fatalf("after purging 2 of 4, parked = %q", left)
	}
	n, err = b.PurgeParked(ctx, bus.ParkedFilter{Entity: "nothing"})
	if err != nil || n != 0 {
		t.Fatalf("PurgeParked(no match) = %d, %v; want 0, nil", n, err)
	}
	n, err = b.PurgeParked(ctx, bus.ParkedFilter{})
	if err != nil || n != 2 {
		t.Fatalf("PurgeParked(all) = %d, %v; want 2, nil", n, err)
	}
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{}); len(got) != 0 {
		t.Fatalf("parked after purge all = %q", got)
	}
	sub := subscribe(t, ctx, b, bus.Live, 10)
	nothing(t, sub) // purged, not replayed
}

// parkedByIDAndStream checks the filters by id and by original stream, and
// that a listing shows a message's headers.
func (s suite) parkedByIDAndStream(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	l1, l2, r1 := EventBody("listing", "1", 1), EventBody("listing", "2", 1), EventBody("listing", "3", 1)
	s.parkAll(t, ctx, b, bus.Live, msg(l1, "a"), msg(l2, "b"))
	s.parkAll(t, ctx, b, bus.Resync, msg(r1, "c"))
	all, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil || len(all) != 3 {
		t.Fatalf("ListParked = %d messages, %v; want 3", len(all), err)
	}
	byBody := map[string]bus.ParkedMessage{}
	for _, m := range all {
		byBody[string(m.Body)] = m
		if m.Headers["reason"] == "" || m.Headers[bus.HeaderReason] != m.Reason {
			t.Errorf("parked %s: headers %v, want the published header \"reason\" and %s = %q", m.ID, m.Headers, bus.HeaderReason, m.Reason)
		}
	}
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{Stream: bus.Resync}); len(got) != 1 || got[0] != string(r1) {
		t.Errorf("ListParked(stream resync) = %q, want the resync message", got)
	}
	id1, id3 := byBody[string(l1)].ID, byBody[string(r1)].ID
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{IDs: []string{id1, id3}}); len(got) != 2 {
		t.Errorf("ListParked(ids %s %s) = %q, want 2", id1, id3, got)
	}
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{IDs: []string{id1}, Stream: bus.Resync}); len(got) != 0 {
		t.Errorf("ListParked(id of a live message, stream resync) = %q, want none", got)
	}
	n, err := b.PurgeParked(ctx, bus.ParkedFilter{IDs: []string{id1}})
	if err != nil || n != 1 {
		t.Fatalf("PurgeParked(id) = %d, %v; want 1", n, err)
	}
	n, err = b.PurgeParked(ctx, bus.ParkedFilter{IDs: []string{id1}})
	if err != nil || n != 0 {
		t.Fatalf("PurgeParked(same id again) = %d, %v; want 0", n, err)
	}
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{}); len(got) != 2 {
		t.Errorf("parked after purging one id = %q, want 2", got)
	}
	n, err = b.ReplayParked(ctx, bus.ParkedFilter{IDs: []string{id3}})
	if err != nil || n != 1 {
		t.Fatalf("ReplayParked(id) = %d, %v; want 1", n, err)
	}
	sub := subscribe(t, ctx, b, bus.Resync, 10)
	if d := s.next(t, sub); string(d.Body()) != string(r1) {
		t.Fatalf("replayed by id: %q", d.Body())
	} else {
		ack(t, ctx, d)
	}
	nothing(t, sub)
}

// replayParkedAs checks the replay of one parked message with an edited
// body, and that a second replay of it finds it gone.
func (s suite) replayParkedAs(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	orig, other := EventBody("listing", "1", 4), EventBody("listing", "2", 4)
	s.parkAll(t, ctx, b, bus.Resync,
		bus.Message{Body: orig, Headers: map[string]string{"reason": "422 name too long", "trace-id": "t1"}},
		msg(other, "x"))
	parked, err := b.ListParked(ctx, bus.ParkedFilter{ReasonContains: "422"})
	if err != nil || len(parked) != 1 {
		t.Fatalf("ListParked = %d, %v", len(parked), err)
	}
	id := parked[0].ID
	edited := EventBody("listing", "1", 5)
	if err := b.ReplayParkedAs(ctx, id, edited); err != nil {
		t.Fatalf("ReplayParkedAs: %v", err)
	}
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{}); len(got) != 1 || got[0] != string(other) {
		t.Fatalf("parked after ReplayParkedAs = %q, want only the other message", got)
	}
	sub := subscribe(t, ctx, b, bus.Resync, 10)
	d := s.next(t, sub)
	if string(d.Body()) != string(edited) || d.Stream() != bus.Resync {
		t.Fatalf("replayed %q on %s, want the edited body on resync", d.Body(), d.Stream())
	}
	if h := d.Headers(); h["trace-id"] != "t1" || h[bus.HeaderReason] != "" {
		t.Errorf("replayed headers %v: want trace-id kept and no parking reason", h)
	}
	ack(t, ctx, d)
	for _, again := range []string{id, "no-such-id", "999999"} {
		if err := b.ReplayParkedAs(ctx, again, orig); !errors.Is(err, bus.ErrNotParked) {
			t.Errorf("ReplayParkedAs(%q) after it was replayed = %v, want ErrNotParked", again, err)
		}
	}
	nothing(t, sub)
	if got := parkedBodies(t, ctx, b, bus.ParkedFilter{}); len(got) != 1 {
		t.Errorf("a refused ReplayParkedAs changed the parked queue: %q", got)
	}
}

func (s suite) release(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	body := EventBody("listing", "1", 1)
	publish(t, ctx, b, bus.Live, bus.Message{Body: body, Headers: map[string]string{"trace-id": "r"}})
	sub := subscribe(t, ctx, b, bus.Live, 1)
	d := s.next(t, sub)
	released := time.Now()
	if err := d.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	d = s.next(t, sub)
	if wait := time.Since(released); wait > 5*time.Second {
		t.Errorf("released message came back after %v; Release must redeliver promptly", wait)
	}
	if string(d.Body()) != string(body) || d.Headers()["trace-id"] != "r" {
		t.Errorf("released message changed: %q %v", d.Body(), d.Headers())
	}
	want := 1
	if s.f.ReleaseCountsAttempt {
		want = 2
	}
	if d.Attempt() != want {
		t.Errorf("Attempt() after Release = %d, want %d", d.Attempt(), want)
	}
	ack(t, ctx, d)
	nothing(t, sub)
}

func (s suite) closeReturnsBuffered(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	const n = 10
	var msgs []bus.Message
	for i := range n {
		msgs = append(msgs, bus.Message{Body: EventBody("listing", fmt.Sprint(i), 1)})
	}
	publish(t, ctx, b, bus.Live, msgs...)
	sub := subscribe(t, ctx, b, bus.Live, n)
	held := s.next(t, sub)
	time.Sleep(300 * time.Millisecond) // let the adapter buffer the rest
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Anything still in the channel after Close is handed back explicitly.
	closed := time.After(s.f.Timeout)
drain:
	for {
		select {
		case d, ok := <-sub.Deliveries():
			if !ok {
				break drain
			}
			if err := d.Release(ctx); err != nil {
				t.Fatalf("Release after Close: %v", err)
			}
		case <-closed:
			t.Fatal("Deliveries not closed after Close")
		}
	}
	// A delivery handed out before Close stays valid.
	ack(t, ctx, held)

	sub2 := subscribe(t, ctx, b, bus.Live, n)
	seen := map[string]int{}
	for range n - 1 {
		d := s.next(t, sub2)
		seen[string(d.Body())]++
		ack(t, ctx, d)
	}
	nothing(t, sub2)
	if seen[string(held.Body())] != 0 {
		t.Errorf("the acked message came back")
	}
	for body, c := range seen {
		if c != 1 {
			t.Errorf("%s delivered %d times after Close", body, c)
		}
	}
}

func (s suite) streamsIndependent(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	lb, rb := EventBody("listing", "live", 1), EventBody("listing", "resync", 1)
	publish(t, ctx, b, bus.Live, bus.Message{Body: lb})
	publish(t, ctx, b, bus.Resync, bus.Message{Body: rb})
	live := subscribe(t, ctx, b, bus.Live, 5)
	d := s.next(t, live)
	if string(d.Body()) != string(lb) || d.Stream() != bus.Live {
		t.Fatalf("live got %q on %q", d.Body(), d.Stream())
	}
	ack(t, ctx, d)
	nothing(t, live)
	st, err := b.Stats(ctx, bus.Resync)
	if err != nil || st.Ready != 1 {
		t.Fatalf("resync Stats = %+v, %v; want Ready 1 while only live is consumed", st, err)
	}
	resync := subscribe(t, ctx, b, bus.Resync, 5)
	d = s.next(t, resync)
	if string(d.Body()) != string(rb) || d.Stream() != bus.Resync {
		t.Fatalf("resync got %q on %q", d.Body(), d.Stream())
	}
	ack(t, ctx, d)
	nothing(t, resync)
}

func (s suite) prefetch(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	var msgs []bus.Message
	for i := range 10 {
		if s.f.Partitions > 0 { // one key: one partition
			msgs = append(msgs, bus.Message{Body: EventBody("listing", "1", int64(i+1))})
			continue
		}
		msgs = append(msgs, bus.Message{Body: EventBody("listing", fmt.Sprint(i), 1)})
	}
	publish(t, ctx, b, bus.Live, msgs...)
	sub := subscribe(t, ctx, b, bus.Live, 3)
	var held []bus.Delivery
	for range 3 {
		held = append(held, s.next(t, sub))
	}
	nothing(t, sub) // a fourth unsettled delivery would break the bound
	ack(t, ctx, held[0])
	held = append(held[1:], s.next(t, sub))
	nothing(t, sub)
	for _, d := range held {
		ack(t, ctx, d)
	}
	for range 6 {
		ack(t, ctx, s.next(t, sub))
	}
	nothing(t, sub)
}

func (s suite) stats(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	var msgs []bus.Message
	for i := range 5 {
		msgs = append(msgs, bus.Message{Body: EventBody("listing", fmt.Sprint(i), 1)})
	}
	publish(t, ctx, b, bus.Live, msgs...)
	s.eventually(t, "Stats after publishing 5", func() (bool, string) {
		st, err := b.Stats(ctx, bus.Live)
		return err == nil && st.Ready == 5 && st.Consumers == 0 && st.Stream == bus.Live,
			fmt.Sprintf("stats %+v err %v", st, err)
	})
	sub := subscribe(t, ctx, b, bus.Live, 1)
	s.eventually(t, "Stats counts the consumer", func() (bool, string) {
		st, err := b.Stats(ctx, bus.Live)
		return err == nil && st.Consumers == 1, fmt.Sprintf("stats %+v err %v", st, err)
	})
	st, err := b.Stats(ctx, bus.Resync)
	if err != nil || st.Ready != 0 || st.Consumers != 0 || st.Stream != bus.Resync {
		t.Errorf("resync Stats = %+v, %v; want an idle empty resync", st, err)
	}
	for range 5 {
		ack(t, ctx, s.next(t, sub))
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s.eventually(t, "Stats after consuming all and closing", func() (bool, string) {
		st, err := b.Stats(ctx, bus.Live)
		return err == nil && st.Ready == 0 && st.Consumers == 0, fmt.Sprintf("stats %+v err %v", st, err)
	})
}

// unacked is the stream's unacked count: Stats' where the broker tells,
// else what sub counts (bus.UnackedCounter), which is then every
// subscription of the stream.
func unacked(ctx context.Context, b bus.Bus, sub bus.Subscription, stream bus.Stream) (bus.StreamStats, error) {
	st, err := b.Stats(ctx, stream)
	if err != nil || st.Unacked >= 0 {
		return st, err
	}
	c, ok := sub.(bus.UnackedCounter)
	if !ok {
		return st, fmt.Errorf("Stats.Unacked is %d and the subscription is no bus.UnackedCounter: nothing counts unacked messages", st.Unacked)
	}
	st.Unacked = int64(c.Unacked())
	return st, nil
}

// statsUnacked checks that messages a consumer was handed (prefetched ones
// it has not taken included) count as unacked and no longer as ready, so
// ready + unacked is every message not yet settled.
func (s suite) statsUnacked(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	const n, prefetch = 6, 4
	var msgs []bus.Message
	for i := range n {
		msgs = append(msgs, bus.Message{Body: EventBody("listing", fmt.Sprint(i), 1)})
	}
	publish(t, ctx, b, bus.Live, msgs...)
	sub := subscribe(t, ctx, b, bus.Live, prefetch)
	held := s.next(t, sub) // taken; the rest of the prefetch is not
	s.eventually(t, "one taken and one prefetched count as unacked", func() (bool, string) {
		st, err := unacked(ctx, b, sub, bus.Live)
		return err == nil && st.Unacked >= 2 && st.Ready+st.Unacked == n,
			fmt.Sprintf("stats %+v err %v; want unacked >= 2 and ready + unacked = %d", st, err, n)
	})
	ack(t, ctx, held)
	s.eventually(t, "an acked message counts nowhere", func() (bool, string) {
		st, err := unacked(ctx, b, sub, bus.Live)
		return err == nil && st.Unacked >= 1 && st.Ready+st.Unacked == n-1,
			fmt.Sprintf("stats %+v err %v; want ready + unacked = %d", st, err, n-1)
	})
	for range n - 1 {
		ack(t, ctx, s.next(t, sub))
	}
	s.eventually(t, "all acked", func() (bool, string) {
		st, err := unacked(ctx, b, sub, bus.Live)
		return err == nil && st.Unacked == 0 && st.Ready == 0, fmt.Sprintf("stats %+v err %v", st, err)
	})
}

// statsParked checks that Stats counts the parked queue, which the streams
// share.
func (s suite) statsParked(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	st, err := b.Stats(ctx, bus.Live)
	if err != nil || st.Parked != 0 {
		t.Fatalf("Stats = %+v, %v; want nothing parked", st, err)
	}
	s.parkAll(t, ctx, b, bus.Live, msg(EventBody("listing", "1", 1), "a"), msg(EventBody("listing", "2", 1), "b"))
	s.parkAll(t, ctx, b, bus.Resync, msg(EventBody("listing", "3", 1), "c"))
	for _, stream := range bus.Streams {
		s.eventually(t, "Stats counts the parked queue", func() (bool, string) {
			st, err := b.Stats(ctx, stream)
			return err == nil && st.Parked == 3, fmt.Sprintf("%s stats %+v err %v; want parked 3", stream, st, err)
		})
	}
	if _, err := b.PurgeParked(ctx, bus.ParkedFilter{ReasonContains: "a"}); err != nil {
		t.Fatalf("PurgeParked: %v", err)
	}
	s.eventually(t, "Stats counts the parked queue after a purge", func() (bool, string) {
		st, err := b.Stats(ctx, bus.Live)
		return err == nil && st.Parked == 2, fmt.Sprintf("stats %+v err %v; want parked 2", st, err)
	})
}

func (s suite) manyExactlyOnce(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	const n = 2000
	msgs := make([]bus.Message, n)
	for i := range msgs {
		msgs[i] = bus.Message{Body: EventBody("listing", fmt.Sprint(i), 1)}
	}
	publish(t, ctx, b, bus.Live, msgs...)
	sub := subscribe(t, ctx, b, bus.Live, 200)
	seen := make(map[string]int, n)
	for range n {
		d := s.next(t, sub)
		seen[string(d.Body())]++
		ack(t, ctx, d)
	}
	nothing(t, sub)
	if len(seen) != n {
		t.Fatalf("received %d distinct messages, want %d", len(seen), n)
	}
	for body, c := range seen {
		if c != 1 {
			t.Fatalf("%s delivered %d times", body, c)
		}
	}
}

func (s suite) contextCancel(t *testing.T) {
	ctx := s.ctx(t)
	b := s.newBus(t)
	subCtx, cancel := context.WithCancel(ctx)
	sub := subscribe(t, subCtx, b, bus.Live, 5)
	publish(t, ctx, b, bus.Live, bus.Message{Body: EventBody("listing", "1", 1)})
	ack(t, ctx, s.next(t, sub))
	cancel()
	deadline := time.After(s.f.Timeout)
	for {
		select {
		case d, ok := <-sub.Deliveries():
			if !ok {
				return
			}
			_ = d.Release(ctx)
		case <-deadline:
			t.Fatal("Deliveries not closed after the Subscribe context was cancelled")
		}
	}
}
