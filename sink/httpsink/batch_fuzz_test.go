package httpsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"unicode/utf8"

	"github.com/eventsync/eventsync/sink"
)

// FuzzBatchAnswer: whatever a bulk route answers, WriteBatch returns
// either an error for the whole call (a *sink.Error of the operation) and
// no results, or exactly one result per item, each nil, ErrNotFound (only
// for an update or delete answered 404 or 410) or a *sink.Error whose
// status is the item's and whose body is a bounded excerpt; a created item
// that succeeded has an id. An answer that encoding/json reads as the
// default format with one valid status per item is never refused whole.
func FuzzBatchAnswer(f *testing.F) {
	for _, seed := range []struct {
		status int
		body   string
		n      uint8
		op     uint8
	}{
		{200, `{"results":[{"status":201,"id":"r1"},{"status":404,"error":"gone"}]}`, 2, 0},
		{200, `{"results":[{"status":200,"id":"r1"},{"status":"410","error":{"msg":"gone"}}]}`, 2, 1},
		{200, `{"results":[{"status":204}]}`, 1, 2},
		{200, `{"results":[{"status":201}]}`, 1, 0},
		{200, `{"results":[{"status":201,"id":12345678901234567890}]}`, 1, 0},
		{200, `{"results":[{"status":429,"error":"slow \u00e9"}],"results":[]}`, 1, 1},
		{200, `{"results":[{"status":503.0}]}`, 1, 1},
		{207, `{"results":[{"status":500,"error":"` + string(make([]byte, 600)) + `"}]}`, 1, 2},
		{503, `busy`, 3, 0},
		{200, `{"results":[`, 1, 0},
		{200, `[{"status":201,"id":"x"}]`, 1, 0},
	} {
		f.Add(seed.status, seed.body, seed.n, seed.op)
	}
	const excerpt = 64
	cfg := Config{
		Defaults:      Defaults{BaseURL: "http://api.test", MaxBodyExcerpt: excerpt},
		EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings", Batch: &BatchConfig{MaxItems: 16}}},
	}
	ops := []sink.Op{sink.OpCreate, sink.OpUpdate, sink.OpDelete}
	f.Fuzz(func(t *testing.T, status int, body string, n, opIndex uint8) {
		if status < 100 || status > 599 {
			status = 200
		}
		n = n%16 + 1
		op := ops[int(opIndex)%len(ops)]
		s, _ := newMemSink(t, cfg, func(*http.Request) (int, string) { return status, body })
		items := make([]sink.BatchItem, n)
		for i := range items {
			items[i] = sink.BatchItem{RemoteID: fmt.Sprint("r", i), Record: sink.Record{Entity: "listing", Key: fmt.Sprint("k", i), Version: 1, Data: json.RawMessage(`{"a":1}`)}}
		}
		results, err := s.WriteBatch(context.Background(), "listing", op, items)
		if err != nil {
			var se *sink.Error
			if results != nil || !errors.As(err, &se) || se.Op != string(op) {
				t.Fatalf("whole-call error %v (%+v) with results %v", err, se, results)
			}
			if defaultAnswerReadable(status, body, int(n)) {
				t.Fatalf("answer %q refused: %v", body, err)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("HTTP %d accepted", status)
		}
		if len(results) != int(n) {
			t.Fatalf("%d results for %d items", len(results), n)
		}
		for i, r := range results {
			if r.Err == nil {
				if op == sink.OpCreate && r.RemoteID == "" {
					t.Fatalf("result %d: created without id", i)
				}
				continue
			}
			var se *sink.Error
			if !errors.As(r.Err, &se) || se.Status < 100 || se.Status > 599 || se.Op != string(op) {
				t.Fatalf("result %d: %v (%+v)", i, r.Err, se)
			}
			if len(se.Body) > excerpt || !utf8.ValidString(se.Body) {
				t.Fatalf("result %d: body %q not a valid excerpt of at most %d bytes", i, se.Body, excerpt)
			}
			gone := se.Status == 404 || se.Status == 410
			if errors.Is(r.Err, sink.ErrNotFound) != (gone && op != sink.OpCreate) {
				t.Fatalf("result %d: status %d of %s, ErrNotFound %v", i, se.Status, op, errors.Is(r.Err, sink.ErrNotFound))
			}
			ok := se.Status >= 200 && se.Status <= 299
			if ok && (op != sink.OpCreate || !se.Retryable) || !ok && se.Retryable != sink.ClassifyStatus(se.Status) {
				t.Fatalf("result %d: status %d of %s, retryable %v", i, se.Status, op, se.Retryable)
			}
		}
	})
}

// defaultAnswerReadable is the oracle: a 2xx whose body encoding/json
// reads as {"results": [...]} with n results, each an object with an
// integral status of 100..599.
func defaultAnswerReadable(status int, body string, n int) bool {
	if status < 200 || status > 299 {
		return false
	}
	var doc map[string]json.RawMessage // member names match exactly, as paths do
	var results []map[string]json.RawMessage
	if json.Unmarshal([]byte(body), &doc) != nil || json.Unmarshal(doc["results"], &results) != nil || len(results) != n {
		return false
	}
	for _, r := range results {
		var st int
		if json.Unmarshal(r["status"], &st) != nil {
			var s string
			if json.Unmarshal(r["status"], &s) != nil || len(s) != 3 {
				return false
			}
			if _, err := fmt.Sscanf(s, "%d", &st); err != nil || fmt.Sprint(st) != s {
				return false
			}
		}
		if st < 100 || st > 599 {
			return false
		}
	}
	return true
}
