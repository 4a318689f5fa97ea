package natsjs

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/eventsync/bus"
)

func TestAttemptOf(t *testing.T) {
	t.Parallel()
	nb := time.Date(2026, 1, 2, 15, 4, 5, 6, time.UTC)
	retried := func(attempt int) nats.Header {
		return retryHeaders(nats.Header{"trace-id": {"t"}}, attempt, "locked", nb)
	}
	for _, c := range []struct {
		name      string
		h         nats.Header
		delivered uint64
		want      int
	}{
		{"first delivery", nil, 1, 1},
		{"released twice", nil, 3, 3},
		{"no metadata", nil, 0, 1},
		{"copy handed out after its early delivery", retried(5), 2, 5},
		{"copy released twice after that", retried(5), 4, 7},
		{"copy without metadata", retried(5), 0, 5},
		{"malformed not-before: no copy of ours", nats.Header{bus.HeaderAttempt: {"5"}, HeaderNotBefore: {"soon"}}, 2, 6},
		{"garbage attempt", nats.Header{bus.HeaderAttempt: {"-3"}}, 2, 2},
		{"attempt beyond bounds", nats.Header{bus.HeaderAttempt: {"99999999999"}}, 1, 1},
		{"count beyond bounds", nil, 1 << 62, 1 << 30},
	} {
		if got := attemptOf(c.h, c.delivered); got != c.want {
			t.Errorf("%s: attemptOf = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestDeferral(t *testing.T) {
	t.Parallel()
	now := time.Now()
	h := retryHeaders(nil, 2, "locked", now.Add(3*time.Second))
	if wait, early := deferral(h, 1, now); !early || wait != 3*time.Second {
		t.Errorf("first delivery 3s early: deferral = %v, %v", wait, early)
	}
	if wait, early := deferral(h, 1, now.Add(time.Hour)); !early || wait != 0 {
		t.Errorf("first delivery, already due: deferral = %v, %v; want handed back at once (the count relies on it)", wait, early)
	}
	if _, early := deferral(h, 2, now); early {
		t.Error("a later delivery was deferred again")
	}
	if _, early := deferral(nats.Header{}, 1, now); early {
		t.Error("a message that is no retried copy was deferred")
	}
	far := retryHeaders(nil, 2, "x", now.AddDate(100, 0, 0))
	if wait, _ := deferral(far, 1, now); wait != maxDeferral {
		t.Errorf("far-future not-before: deferral %v, want the bound %v", wait, maxDeferral)
	}
}

func TestRetryHeadersDropTheServersOwn(t *testing.T) {
	t.Parallel()
	src := nats.Header{
		nats.MsgIdHdr:           {"m1"},
		nats.ExpectedLastSeqHdr: {"4"},
		"nats-ttl":              {"1s"},
		"trace-id":              {"t"},
		bus.HeaderAttempt:       {"1"},
	}
	h := retryHeaders(src, 2, "locked", time.Unix(1, 0))
	for _, k := range []string{nats.MsgIdHdr, nats.ExpectedLastSeqHdr, "nats-ttl"} {
		if _, ok := h[k]; ok {
			t.Errorf("copy keeps %s", k)
		}
	}
	if h.Get("trace-id") != "t" || h.Get(bus.HeaderAttempt) != "2" || h.Get(bus.HeaderRetryReason) != "locked" {
		t.Errorf("copy headers %v", h)
	}
	if src.Get(bus.HeaderAttempt) != "1" {
		t.Error("retryHeaders changed the original's headers")
	}
	p := parkHeaders(h, "gave up", 2, bus.Live)
	if _, ok := p[HeaderNotBefore]; ok {
		t.Error("a parked message keeps a not-before")
	}
}

// A message published with a Nats-Msg-Id (producers may set it) is retried
// every time: a copy carrying the same id would be taken for a duplicate,
// not stored, and the original acked, so the message would be lost.
func TestRetryOfAMessageWithAMsgID(t *testing.T) {
	t.Parallel()
	b := embeddedBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"n":1}`), Headers: map[string]string{nats.MsgIdHdr: "m1"}}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for attempt := 1; attempt <= 3; attempt++ {
		select {
		case d := <-sub.Deliveries():
			if d.Attempt() != attempt {
				t.Fatalf("Attempt() = %d, want %d", d.Attempt(), attempt)
			}
			if attempt == 3 {
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err := d.Retry(ctx, 10*time.Millisecond, "again"); err != nil {
				t.Fatalf("retry %d: %v", attempt, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d never came: the retried copy was lost", attempt)
		}
	}
}

// A Retry whose copy cannot be published leaves the delivery unsettled
// (and its prefetch slot taken), so the caller can release it.
func TestRetryWhosePublishFailsStaysUnsettled(t *testing.T) {
	t.Parallel()
	b := embeddedBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"n":1}`)}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	d := <-sub.Deliveries()
	gone, stop := context.WithCancel(ctx)
	stop()
	if err := d.Retry(gone, time.Millisecond, "x"); err == nil {
		t.Fatal("Retry with a cancelled context succeeded")
	}
	if err := d.Release(ctx); errors.Is(err, bus.ErrSettled) || err != nil {
		t.Fatalf("Release after a failed Retry: %v", err)
	}
	select {
	case d := <-sub.Deliveries():
		if d.Attempt() != 2 || d.Headers()[bus.HeaderRetryReason] != "" {
			t.Fatalf("after the failed retry and a release: Attempt() = %d, headers %v", d.Attempt(), d.Headers())
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the released message never came back")
	}
	if n, err := b.Unsettled(ctx, bus.Live); err != nil || n != 0 {
		t.Fatalf("Unsettled = %d, %v after acking the only message; a copy was stored after all", n, err)
	}
}

// FuzzAttemptHeaders: anyone may publish to a stream subject with any
// headers; reading the attempt and the not-before never panics, never
// gives an attempt below 1, defers only a first delivery and never longer
// than maxDeferral, and what Retry writes reads back.
func FuzzAttemptHeaders(f *testing.F) {
	f.Add("3", "2026-01-02T15:04:05.000000006Z", uint64(2))
	f.Add("", "", uint64(1))
	f.Add("-1", "yesterday", uint64(0))
	f.Add("99999999999999999999", "9999-12-31T23:59:59Z", uint64(1<<63))
	f.Add("1", "0001-01-01T00:00:00Z", uint64(1))
	f.Fuzz(func(t *testing.T, attempt, notBeforeText string, delivered uint64) {
		h := nats.Header{bus.HeaderAttempt: {attempt}, HeaderNotBefore: {notBeforeText}}
		if a := attemptOf(h, delivered); a < 1 || a > 2<<30 {
			t.Fatalf("attemptOf = %d", a)
		}
		now := time.Unix(1_700_000_000, 0)
		wait, early := deferral(h, delivered, now)
		if early && delivered != 1 || wait < 0 || wait > maxDeferral {
			t.Fatalf("deferral = %v, %v for delivery %d", wait, early, delivered)
		}
		nb, ok := notBefore(h)
		if !ok {
			return
		}
		n, err := strconv.Atoi(attempt)
		if err != nil || n < 1 || n > maxCount {
			n = 1
		}
		back, ok := notBefore(retryHeaders(h, n, "r", nb))
		if !ok || !back.Equal(nb) {
			t.Fatalf("not-before %v read back as %v, %v", nb, back, ok)
		}
	})
}
