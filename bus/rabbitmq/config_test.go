package rabbitmq

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	c := Config{URL: "amqp://u:p@h:5672/", RetryTiers: []time.Duration{5 * time.Second, time.Second, 5 * time.Second}}.WithDefaults()
	if c.Namespace != "eventsync" || c.ConnectTimeout != 10*time.Second || c.ReconnectMaxBackoff != 5*time.Second || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if len(c.RetryTiers) != 2 || c.RetryTiers[0] != time.Second {
		t.Fatalf("tiers not sorted and deduplicated: %v", c.RetryTiers)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	bad := map[string]Config{
		"no URL":        {Namespace: "x", RetryTiers: DefaultRetryTiers},
		"bad scheme":    {URL: "http://u:secret@h/", Namespace: "x", RetryTiers: DefaultRetryTiers},
		"bad namespace": {URL: "amqp://h/", Namespace: "a b", RetryTiers: DefaultRetryTiers},
		"tiny tier":     {URL: "amqp://h/", Namespace: "x", RetryTiers: []time.Duration{time.Microsecond}},
	}
	for name, c := range bad {
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error leaks the password: %v", name, err)
		}
	}
	if err := bad["bad scheme"].Validate(); !strings.Contains(err.Error(), "want amqp://") || setting.Key(err) != "bus" {
		t.Errorf("bad URL error does not say how to fix it, or names setting %q: %v", setting.Key(err), err)
	}
}

func TestOpenUnreachableNamesHostAndFix(t *testing.T) {
	_, err := Open(context.Background(), Config{URL: "amqp://guest:topsecret@127.0.0.1:1/", ConnectTimeout: time.Second})
	if err == nil {
		t.Fatal("Open of an unreachable broker succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"127.0.0.1:1", "is it running"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if setting.Key(err) != "bus" {
		t.Errorf("error names setting %q, want bus", setting.Key(err))
	}
	if strings.Contains(msg, "topsecret") {
		t.Errorf("error leaks the password: %q", msg)
	}
}

func TestTierFor(t *testing.T) {
	topo := topology{ns: "ns", tiers: []time.Duration{time.Second, 5 * time.Second, 2 * time.Minute}}
	cases := map[time.Duration]time.Duration{
		0: time.Second, 300 * time.Millisecond: time.Second, time.Second: time.Second,
		1001 * time.Millisecond: 5 * time.Second, time.Minute: 2 * time.Minute, time.Hour: 2 * time.Minute,
	}
	for delay, want := range cases {
		if got := topo.tierFor(delay); got != want {
			t.Errorf("tierFor(%v) = %v, want %v", delay, got, want)
		}
	}
	if q := topo.tierQueue(bus.Resync, 2*time.Minute); q != "ns.retry.resync.2m" {
		t.Errorf("tierQueue = %q", q)
	}
	if n := tierName(1500 * time.Millisecond); n != "1500ms" {
		t.Errorf("tierName = %q", n)
	}
}

func TestAttemptOf(t *testing.T) {
	cases := []struct {
		h    amqp.Table
		want int
	}{
		{nil, 1},
		{amqp.Table{bus.HeaderAttempt: "3"}, 3},
		{amqp.Table{bus.HeaderAttempt: "3", "x-delivery-count": int64(2)}, 5},
		{amqp.Table{"x-delivery-count": int32(1)}, 2},
		{amqp.Table{bus.HeaderAttempt: "garbage"}, 1},
		{amqp.Table{bus.HeaderAttempt: "-4"}, 1},
	}
	for _, c := range cases {
		if got := attemptOf(c.h); got != c.want {
			t.Errorf("attemptOf(%v) = %d, want %d", c.h, got, c.want)
		}
	}
}

// FuzzHeaders feeds broker-supplied headers (outside input) to the decoders
// of attempts and parked diagnoses: they must never panic.
func FuzzHeaders(f *testing.F) {
	f.Add("2", int64(1), "live", "2026-01-02T15:04:05Z", "bad", []byte("{}"))
	f.Add("", int64(-7), "", "yesterday", "", []byte(nil))
	f.Fuzz(func(t *testing.T, attempt string, count int64, stream, parkedAt, reason string, body []byte) {
		h := amqp.Table{bus.HeaderAttempt: attempt, "x-delivery-count": count, bus.HeaderStream: stream, bus.HeaderParkedAt: parkedAt, bus.HeaderReason: reason}
		if count%2 == 0 { // as the broker dead-lettered it: x-death instead of our headers
			h = amqp.Table{"x-death": []any{amqp.Table{"queue": stream, "reason": reason, "time": parkedAt}, reason}, "x-delivery-count": attempt}
		}
		if a := attemptOf(h); a < 1 && count >= 0 {
			t.Fatalf("attemptOf = %d", a)
		}
		pm := topology{ns: "ns", deliveryLimit: 3}.parkedMessage(amqp.Delivery{Headers: h, Body: body})
		_ = bus.ParkedFilter{Entity: "listing"}.Match(pm)
		_ = stringHeaders(h)
	})
}

// FuzzRedact: whatever URL is configured, messages never carry the
// password as the AMQP driver reads it (internal/redact agrees with
// amqp.ParseURI), nor does the broker address.
func FuzzRedact(f *testing.F) {
	f.Add("amqp://user:pw@host:5672/vhost")
	f.Add("amqps://u:p@[::1]:5671/%2F")
	f.Add("amqp://u:p%40ss@host/")
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := amqp.ParseURI(raw)
		if pu, perr := url.Parse(raw); perr != nil || pu.User == nil {
			return // no password in the URL: the driver's default guest
		} else if _, given := pu.User.Password(); !given {
			return
		}
		if err != nil || len(u.Password) < 4 || strings.Contains(u.Host+u.Vhost+u.Scheme+u.Username+redact.Mask, u.Password) {
			return
		}
		for _, out := range []string{redact.URL(raw), hostPort(raw), redact.Error(errors.New("dial "+raw+" as "+u.Password), raw).Error()} {
			if strings.Contains(out, u.Password) {
				t.Fatalf("%q shows the password of %q", out, raw)
			}
		}
	})
}
