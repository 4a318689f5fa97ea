package fakeapi

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseBatch feeds the batch body parser arbitrary bodies for each
// operation. It never panics; a refusal is a 400 naming the expected shape
// or a 413 naming the limit; an accepted body has 1 to max items, each with
// the parts its operation needs, and re-encoded in the documented shape it
// parses back to the same items.
func FuzzParseBatch(f *testing.F) {
	for _, s := range []struct {
		op   uint8
		body string
	}{
		{opCreate, `{"items":[{"external_id":"k","version":1},{}]}`},
		{opCreate, `{"items":[[1],null,"x",{"external_id":7}]}`},
		{opCreate, `{"items":[]}`},
		{opCreate, `{"items":[{},{},{},{}]}`},
		{opCreate, `{"records":[{}]}`},
		{opUpdate, `{"items":[{"id":"1","record":{"version":2}},{"id":"2","record":null}]}`},
		{opUpdate, `{"items":[{"id":1,"record":{}}]}`},
		{opUpdate, `{"items":[{"record":{}}],"items":[{"id":"x","record":1}]}`},
		{opDelete, `{"ids":["1","2","1"]}`},
		{opDelete, `{"ids":["",1,null]}`},
		{opDelete, `null`},
		{opDelete, `{"ids":"1"} trailing`},
	} {
		f.Add(s.op, []byte(s.body))
	}
	const maxItems = 3
	f.Fuzz(func(t *testing.T, opByte uint8, data []byte) {
		op := int(opByte) % numBatchOps
		items, err := parseBatch(op, data, maxItems)
		if err != nil {
			be, ok := err.(*batchError)
			switch {
			case !ok:
				t.Fatalf("error %T %v, want a *batchError", err, err)
			case be.status == http.StatusBadRequest && !strings.HasSuffix(be.msg, "; expected "+batchShapes[op]):
				t.Fatalf("400 %q does not end with the expected shape", be.msg)
			case be.status == http.StatusRequestEntityTooLarge && !strings.Contains(be.msg, "limit of 3 items"):
				t.Fatalf("413 %q does not name the limit", be.msg)
			case be.status != http.StatusBadRequest && be.status != http.StatusRequestEntityTooLarge:
				t.Fatalf("status %d for %q", be.status, be.msg)
			}
			return
		}
		if len(items) < 1 || len(items) > maxItems {
			t.Fatalf("accepted %d items, want 1 to %d", len(items), maxItems)
		}
		var canon any
		switch op {
		case opCreate:
			recs := make([]json.RawMessage, len(items))
			for i, it := range items {
				if it.id != "" || !json.Valid(it.record) {
					t.Fatalf("create item %d = %+v", i, it)
				}
				recs[i] = it.record
			}
			canon = map[string]any{"items": recs}
		case opUpdate:
			ups := make([]map[string]any, len(items))
			for i, it := range items {
				if it.id == "" || !json.Valid(it.record) {
					t.Fatalf("update item %d = %+v", i, it)
				}
				ups[i] = map[string]any{"id": it.id, "record": it.record}
			}
			canon = map[string]any{"items": ups}
		case opDelete:
			ids := make([]string, len(items))
			for i, it := range items {
				if it.id == "" || it.record != nil {
					t.Fatalf("delete item %d = %+v", i, it)
				}
				ids[i] = it.id
			}
			canon = map[string]any{"ids": ids}
		}
		enc, err := json.Marshal(canon)
		if err != nil {
			t.Fatalf("encode %+v: %v", canon, err)
		}
		again, err := parseBatch(op, enc, maxItems)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", enc, err)
		}
		for i := range items { // compare compacted records: Marshal compacts them
			if items[i].id != again[i].id || !jsonSame(items[i].record, again[i].record) {
				t.Fatalf("round trip changed item %d: %+v into %+v", i, items[i], again[i])
			}
		}
	})
}

func jsonSame(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
