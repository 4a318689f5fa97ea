package natsjs

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/bus"
)

// FuzzParkedFromRaw feeds arbitrary parked-stream messages (any tool can
// publish to the subject) to the decoder: it must never panic, and it keeps
// the sequence as the ID.
func FuzzParkedFromRaw(f *testing.F) {
	f.Add([]byte(`{"entity":"listing"}`), "http 422", "3", "live", "2026-01-02T15:04:05Z")
	f.Add([]byte{}, "", "-1", "nope", "yesterday")
	f.Add([]byte("\xff"), "r", "99999999999999999999", "resync", "")
	f.Fuzz(func(t *testing.T, body []byte, reason, attempt, stream, parkedAt string) {
		h := nats.Header{}
		h.Set(bus.HeaderReason, reason)
		h.Set(bus.HeaderAttempt, attempt)
		h.Set(bus.HeaderStream, stream)
		h.Set(bus.HeaderParkedAt, parkedAt)
		raw := &jetstream.RawStreamMsg{Sequence: 7, Data: body, Header: h, Time: time.Unix(1, 0)}
		e := parkedFromRaw(raw)
		if e.msg.ID != strconv.Itoa(7) || e.seq != 7 {
			t.Fatalf("id %q seq %d", e.msg.ID, e.seq)
		}
		if e.msg.Attempts < 0 {
			t.Fatalf("negative attempts %d", e.msg.Attempts)
		}
		if e.msg.Stream != "" && e.msg.Stream != bus.Live && e.msg.Stream != bus.Resync {
			t.Fatalf("stream %q", e.msg.Stream)
		}
		_ = bus.ParkedFilter{Entity: "listing", ReasonContains: "4"}.Match(e.msg)
		_ = parkedFromRaw(&jetstream.RawStreamMsg{Sequence: 1, Data: body})
	})
}

// FuzzMaxDeliveriesAdvisory: anyone may publish on an advisory subject; the
// decoder never panics and accepts only advisories naming a message.
func FuzzMaxDeliveriesAdvisory(f *testing.F) {
	f.Add([]byte(`{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"ES_LIVE","consumer":"eventsync-workers","stream_seq":42,"deliveries":30}`))
	f.Add([]byte(`{"stream":"","stream_seq":0}`))
	f.Add([]byte(`{"stream_seq":-1}`))
	f.Add([]byte(`nope`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := parseMaxDeliveriesAdvisory(data)
		if err == nil && (a.Stream == "" || a.StreamSeq == 0) {
			t.Fatalf("accepted %+v", a)
		}
	})
}
