package fakeapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// DefaultMaxBatch is the most items a batch request carries unless
// Config.MaxBatch says otherwise.
const DefaultMaxBatch = 100

// MaxBatchBodyBytes caps a batch request's body whatever Config.MaxBatch
// is: the limit is MaxBatch × MaxBodyBytes up to this, so a batch holds
// bounded memory (its body, then its items' parsed copies).
const MaxBatchBodyBytes = 16 << 20

// batchSegment is the path segment that turns /v1/{collection}/batch/{op}
// into a batch route.
const batchSegment = "batch"

// Batch operations, the {op} of /v1/{collection}/batch/{op}.
const (
	opCreate = iota
	opUpdate
	opDelete
	numBatchOps
)

var batchOpNames = [numBatchOps]string{"create", "update", "delete"}

// batchShapes is the body each operation takes, quoted in 400 answers.
var batchShapes = [numBatchOps]string{
	`{"items":[{...record...}, ...]}`,
	`{"items":[{"id":"<remote id>","record":{...record...}}, ...]}`,
	`{"ids":["<remote id>", ...]}`,
}

func batchOpIndex(name string) int {
	for i, n := range batchOpNames {
		if n == name {
			return i
		}
	}
	return -1
}

// batchItem is one item of a batch body: the remote id (update, delete)
// and the record body (create, update) as sent, not yet validated: a bad
// record is that item's 400, as it would be the single call's.
type batchItem struct {
	id     string
	record json.RawMessage
}

// batchError refuses a whole batch body: 400 for its shape, 413 for its
// size.
type batchError struct {
	status int
	msg    string
}

func (e *batchError) Error() string { return e.msg }

// parseBatch reads the body of a batch request for op (an index into
// batchOpNames): its envelope ({"items":[…]} or {"ids":[…]}, nothing else),
// at least one and at most maxItems items, and each item's shape; a
// record's own validity is left to the item.
func parseBatch(op int, data []byte, maxItems int) ([]batchItem, error) {
	member := "items"
	if op == opDelete {
		member = "ids"
	}
	shape := func(format string, args ...any) error {
		return &batchError{http.StatusBadRequest, "invalid batch " + batchOpNames[op] + " body: " + fmt.Sprintf(format, args...) + "; expected " + batchShapes[op]}
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, shape("want a JSON object: %v", err)
	}
	if env == nil {
		return nil, shape("want a JSON object, got null")
	}
	for k := range env {
		if k != member {
			return nil, shape("unknown field %q", truncate(k, 40))
		}
	}
	raw, ok := env[member]
	if !ok {
		return nil, shape("missing %q", member)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, shape("%q must be an array, got %s", member, truncate(string(raw), 40))
	}
	if len(list) == 0 {
		return nil, shape("%q is empty; send 1 to %d items", member, maxItems)
	}
	if len(list) > maxItems {
		return nil, &batchError{http.StatusRequestEntityTooLarge, fmt.Sprintf("batch of %d items is larger than the limit of %d items (max batch); split it", len(list), maxItems)}
	}
	items := make([]batchItem, len(list))
	for i, v := range list {
		switch op {
		case opCreate:
			items[i].record = v
		case opUpdate:
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(v, &fields); err != nil || fields == nil {
				return nil, shape("item %d must be an object {\"id\":…,\"record\":…}, got %s", i, truncate(string(v), 40))
			}
			for k := range fields {
				if k != "id" && k != "record" {
					return nil, shape("item %d: unknown field %q", i, truncate(k, 40))
				}
			}
			id, err := remoteID(fields["id"])
			if err != nil {
				return nil, shape("item %d: \"id\" %v", i, err)
			}
			rec, ok := fields["record"]
			if !ok {
				return nil, shape("item %d: missing \"record\"", i)
			}
			items[i] = batchItem{id: id, record: rec}
		case opDelete:
			id, err := remoteID(v)
			if err != nil {
				return nil, shape("item %d %v", i, err)
			}
			items[i].id = id
		}
	}
	return items, nil
}

// remoteID decodes a non-empty JSON string.
func remoteID(raw json.RawMessage) (string, error) {
	var id string
	if raw == nil {
		return "", errors.New("is missing")
	}
	if err := json.Unmarshal(raw, &id); err != nil || id == "" {
		return "", fmt.Errorf("must be a non-empty string, got %s", truncate(string(raw), 40))
	}
	return id, nil
}

// batchResult is one item's answer: what the single call would have
// answered, its body reduced to the remote id or the error.
type batchResult struct {
	Status int    `json:"status"`
	ID     string `json:"id,omitempty"`
	Error  string `json:"error,omitempty"`
}

// batchWrite is one item being applied.
type batchWrite struct {
	rec    *record  // create, update: the validated record
	keys   []string // what the overlap detector sees it touch
	result batchResult
}

// batchBodyLimit is the largest batch body read: MaxBatch records of the
// single-record limit, capped at MaxBatchBodyBytes.
func (s *Server) batchBodyLimit() int64 {
	return min(int64(s.cfg.MaxBatch)*MaxBodyBytes, MaxBatchBodyBytes)
}

// batch serves POST /v1/{collection}/batch/{op}. The request was admitted
// once (FailNext, outage, ceiling, rate limit) and now meets latency and
// the random errors once, like any request; its items are then applied in
// order, each with the single call's validation, answer and detectors; the
// timeout-after-write fault holds the answer after every item was written.
func (q *v1Request) batch() {
	s, op := q.s, batchOpIndex(q.batchOp)
	limit := s.batchBodyLimit()
	body, err := io.ReadAll(http.MaxBytesReader(q.w, q.r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			q.fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("batch body larger than %d bytes (max batch %d × %d bytes per record, at most %d); split it", limit, s.cfg.MaxBatch, MaxBodyBytes, MaxBatchBodyBytes))
			return
		}
		q.gone()
		return
	}
	items, err := parseBatch(op, body, s.cfg.MaxBatch)
	if err != nil {
		var be *batchError
		errors.As(err, &be)
		q.fail(be.status, be.msg)
		return
	}
	writes := q.prepareBatch(op, items)
	held := make(map[string]int) // keys this batch holds, so its own items do not overlap each other
	var acquired []string
	for i := range writes {
		if s.writes.acquireHeld(writes[i].keys, held) {
			s.counters.overlaps.Add(1)
		}
		acquired = append(acquired, writes[i].keys...)
	}
	released := false
	release := func() {
		if !released {
			released = true
			s.writes.release(acquired)
		}
	}
	defer release()
	if !q.delayAndMaybeFail() {
		return
	}
	for i := range writes {
		q.applyBatchItem(op, items[i], &writes[i])
	}
	release()
	if !q.maybeHold() {
		return
	}
	results := make([]batchResult, len(writes))
	for i := range writes {
		results[i] = writes[i].result
	}
	q.reply(http.StatusOK, marshalNoEscape(struct {
		Results []batchResult `json:"results"`
	}{results}))
}

// prepareBatch validates each item as its single call would before any
// write (a record body too large or invalid is that item's 413 or 400) and
// names the keys each valid item writes.
func (q *v1Request) prepareBatch(op int, items []batchItem) []batchWrite {
	s := q.s
	writes := make([]batchWrite, len(items))
	c := s.collection(q.collection, false)
	prevExt := func(id string) string {
		if c != nil {
			if prev := c.get(id); prev != nil {
				return prev.extID
			}
		}
		return ""
	}
	for i, it := range items {
		w := &writes[i]
		id := it.id
		if op == opCreate {
			id = strconv.FormatUint(s.nextID.Add(1), 10)
		}
		if op == opCreate || op == opUpdate {
			if len(it.record) > MaxBodyBytes {
				w.result = batchResult{Status: http.StatusRequestEntityTooLarge, Error: recordTooLarge}
				continue
			}
			rec, err := parseBody(it.record, id, s.cfg.VersionField)
			if err != nil {
				w.result = batchResult{Status: http.StatusBadRequest, Error: err.Error()}
				continue
			}
			w.rec = rec
		}
		switch op {
		case opCreate:
			w.keys = writeKeys(q.collection, "", w.rec.extID)
		case opUpdate:
			w.keys = writeKeys(q.collection, id, w.rec.extID, prevExt(id))
		case opDelete:
			w.keys = writeKeys(q.collection, id, prevExt(id))
		}
	}
	return writes
}

// applyBatchItem writes one prepared item, as its single call would, and
// counts its result.
func (q *v1Request) applyBatchItem(op int, it batchItem, w *batchWrite) {
	s := q.s
	if w.result.Status == 0 { // validated: write it
		switch op {
		case opCreate:
			s.collection(q.collection, true).insert(w.rec)
			w.result = batchResult{Status: http.StatusCreated, ID: w.rec.id}
		case opUpdate:
			var old *record
			if c := s.collection(q.collection, false); c != nil {
				old = c.replace(w.rec)
			}
			switch {
			case old == nil:
				w.result = batchResult{Status: http.StatusNotFound, ID: it.id, Error: notFoundMsg(q.collection, it.id)}
			default:
				if w.rec.version.less(old.version) {
					s.counters.stale.Add(1)
				}
				w.result = batchResult{Status: http.StatusOK, ID: it.id}
			}
		case opDelete:
			var old *record
			if c := s.collection(q.collection, false); c != nil {
				old = c.remove(it.id)
			}
			if old == nil {
				w.result = batchResult{Status: http.StatusNotFound, ID: it.id, Error: notFoundMsg(q.collection, it.id)}
			} else {
				w.result = batchResult{Status: http.StatusNoContent, ID: it.id}
			}
		}
	} else if op != opCreate {
		w.result.ID = it.id
	}
	if st := w.result.Status; st >= 200 && st < 300 {
		s.counters.batchItems.Add(1)
	}
	s.counters.batchResults[op][w.result.Status].Add(1)
}

// acquireHeld is acquire for one item of a batch: held counts the keys the
// batch already holds (and is updated), so only another request's write
// on a key is an overlap, as for single calls.
func (w *writeRegistry) acquireHeld(keys []string, held map[string]int) (overlap bool) {
	for _, k := range keys {
		sh := w.shard(k)
		sh.mu.Lock()
		if sh.n[k] > held[k] {
			overlap = true
		}
		sh.n[k]++
		sh.mu.Unlock()
		held[k]++
	}
	return overlap
}

// marshalNoEscape encodes v as compact JSON without HTML escaping, so
// messages say ">=", not "\u003e=".
func marshalNoEscape(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("fakeapi: encode an answer: " + err.Error()) // only strings, ints and slices of them
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
