package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/source"
)

func goodRow() source.Row {
	return source.Row{ID: 17, Entity: "listing", Key: "42", Version: 5, Op: event.OpUpsert,
		Data: []byte(`{"id":42,"name":"Loft"}`), Occurred: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Every kind of bad row is published as a body the worker's parse refuses
// with a reason that names the row, says what is wrong and how to fix it.
func TestEncodeRejectsBadRows(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		edit func(*source.Row)
		want []string // in the reason
	}{
		{"occurred_at infinity", func(r *source.Row) {
			r.Occurred = time.Time{}
			r.Faults = []source.ColumnFault{{Column: "occurred_at", Value: "infinity", Problem: "is not a finite time"}}
		}, []string{"occurred_at 'infinity' is not a finite time", "when the change happened"}},
		{"occurred_at year 10000", func(r *source.Row) { r.Occurred = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
			[]string{"occurred_at 10000-01-01T00:00:00Z is outside the years 0000 to 9999"}},
		{"occurred_at before year 0", func(r *source.Row) { r.Occurred = time.Date(-44, 3, 15, 0, 0, 0, 0, time.UTC) },
			[]string{"outside the years 0000 to 9999"}},
		{"data not JSON", func(r *source.Row) { r.Data = []byte(`{"name": Loft}`) },
			[]string{`data '{"name": Loft}' is not JSON`, "JSON object"}},
		{"data not an object", func(r *source.Row) { r.Data = []byte(`[1,2]`) }, []string{"data must be a JSON object"}},
		{"data not UTF-8", func(r *source.Row) { r.Data = []byte("{\"name\":\"\xff\"}") }, []string{"data is not UTF-8 text"}},
		{"key not UTF-8", func(r *source.Row) { r.Key = "4\xff2" }, []string{"key x'34FF32' is not UTF-8 text"}},
		{"version text", func(r *source.Row) {
			r.Version = 0
			r.Faults = []source.ColumnFault{{Column: "version", Value: "abc", Problem: "is text, not an integer"}}
		}, []string{"version 'abc' is text, not an integer", "eventsync_version_seq"}},
		{"version zero", func(r *source.Row) { r.Version = 0 }, []string{"version 0 is below the minimum of 1"}},
		{"entity and version", func(r *source.Row) { r.Entity, r.Version = "Bad Entity", -3 },
			[]string{"entity 'Bad Entity' does not match", "version -3 is below"}},
		{"op", func(r *source.Row) { r.Op = "create" }, []string{"op 'create' is not one of", "upsert or delete"}},
		{"upsert without data", func(r *source.Row) { r.Data = nil }, []string{"data required for op 'upsert'"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			row := goodRow()
			c.edit(&row)
			body, reason := encode(row, event.DefaultMaxSize)
			if reason == "" {
				t.Fatalf("row %+v encoded as a valid event: %s", row, body)
			}
			for _, w := range append(c.want, "outbox row 17 (entity ", "key ", "set its sent_at to NULL") {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q does not contain %q", reason, w)
				}
			}
			_, err := event.Parse(body, 0)
			if err == nil || !strings.Contains(err.Error(), "outbox row 17 (entity ") {
				t.Fatalf("parse of %s: %v; want the reason", body, err)
			}
			var doc map[string]any
			if err := json.Unmarshal(body, &doc); err != nil || doc["id"] != "outbox-17" {
				t.Fatalf("rejection %s does not keep the row's id: %v", body, err)
			}
		})
	}
}

// An event over the size limit is rejected without its data, small enough
// for any broker, and the reason says so.
func TestEncodeRejectsOversizeEvents(t *testing.T) {
	t.Parallel()
	row := goodRow()
	row.Data = []byte(`{"blob":"` + strings.Repeat("x", 20_000) + `"}`)
	body, reason := encode(row, 8192)
	if !strings.Contains(reason, "over the 8192-byte limit") {
		t.Fatalf("reason %q", reason)
	}
	if len(body) > 8192 {
		t.Fatalf("rejection is %d bytes, over the limit", len(body))
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil || doc["data"] != nil || doc["data_bytes"] != float64(len(row.Data)) {
		t.Fatalf("rejection %s: want data left out and its size kept (%v)", body, err)
	}
	if body, reason := encode(goodRow(), 8192); reason != "" {
		t.Fatalf("a small valid row was rejected: %s", body)
	}
}

// FuzzEncode feeds outbox rows as an application may have written them:
// the body is always one JSON object; it parses as exactly the row's event
// when encode reports no reason, and otherwise the worker's parse refuses
// it with the reason, which names the row.
func FuzzEncode(f *testing.F) {
	f.Add(int64(17), "listing", "42", int64(5), "upsert", []byte(`{"a":1}`), int64(1767366245), "", "")
	f.Add(int64(1), "listing", "k", int64(1), "delete", []byte(nil), int64(0), "occurred_at", "infinity")
	f.Add(int64(2), "Listing", "", int64(0), "upsert", []byte(`{"a":`), int64(253402300800), "", "")
	f.Add(int64(3), "user", "\xff", int64(-1), "create", []byte("\"\xfe\""), int64(-62167219201), "version", "1.5")
	f.Fuzz(func(t *testing.T, id int64, entity, key string, version int64, op string, data []byte, unix int64, faultCol, faultVal string) {
		row := source.Row{ID: id, Entity: entity, Key: key, Version: version, Op: event.Op(op), Data: data}
		if unix != 0 {
			row.Occurred = time.Unix(unix, 0)
		}
		if faultCol != "" {
			row.Faults = []source.ColumnFault{{Column: faultCol, Value: faultVal, Problem: "is unreadable"}}
		}
		const limit = 1 << 16
		body, reason := encode(row, limit)
		if !json.Valid(body) || body[0] != '{' {
			t.Fatalf("body is not a JSON object: %q", body)
		}
		ev, err := event.Parse(body, limit)
		if reason == "" {
			if err != nil {
				t.Fatalf("no reason given, but the worker parks %s: %v", body, err)
			}
			want := row.Event()
			if ev.ID != want.ID || ev.Entity != want.Entity || ev.Key != want.Key || ev.Version != want.Version || ev.Op != want.Op ||
				(want.OccurredAt == nil) != (ev.OccurredAt == nil) || (ev.OccurredAt != nil && !ev.OccurredAt.Equal(*want.OccurredAt)) {
				t.Fatalf("row %+v published as %+v", row, ev)
			}
			if len(row.Faults) > 0 || !utf8.ValidString(key) {
				t.Fatalf("row %+v published as an event", row)
			}
			return
		}
		if err == nil {
			t.Fatalf("reason %q given, but the worker accepts %s as %+v", reason, body, ev)
		}
		if !errors.Is(err, event.ErrInvalid) {
			t.Fatalf("parse error is not ErrInvalid: %v", err)
		}
		if len(body) <= limit && !strings.Contains(err.Error(), fmt.Sprintf("outbox row %d (entity ", id)) {
			t.Fatalf("the worker would park %s with %q, which does not name the row", body, err)
		}
	})
}

// BenchmarkEncode compares encode on a valid row with what the relay did
// per row before it checked rows (Validate and Marshal), in the same run:
// the checks add a UTF-8 scan of the key and data.
//
//	go test -run '^$' -bench BenchmarkEncode ./internal/relay/
func BenchmarkEncode(b *testing.B) {
	row := goodRow()
	row.Data = []byte(`{"id": 12345, "name": "listing 12345", "price": 12345, "city": "Lisbon", "description": "` + strings.Repeat("sea view ", 40) + `"}`)
	b.Run("validate+marshal", func(b *testing.B) {
		for b.Loop() {
			ev := row.Event()
			if ev.Validate() != nil {
				b.Fatal("invalid")
			}
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, reason := encode(row, event.DefaultMaxSize); reason != "" {
				b.Fatal(reason)
			}
		}
	})
}
