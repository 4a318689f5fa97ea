package fakeapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
)

// ExternalIDField is the record field the API can search by
// (GET /v1/{collection}?external_id=X) and the duplicate detector groups by.
const ExternalIDField = "external_id"

// Record is one remote record as the API returns it, decoded with
// encoding/json defaults (numbers are float64). It always has an "id".
type Record map[string]any

// ID returns the record's remote id.
func (r Record) ID() string { s, _ := r["id"].(string); return s }

// ExternalID returns the record's external_id, empty when it has none.
func (r Record) ExternalID() string { s, _ := r[ExternalIDField].(string); return s }

// record is one immutable stored state of a remote record. Replacing a
// record swaps the pointer, so readers may keep a *record without a lock.
type record struct {
	id      string
	extID   string // "" when absent
	version version
	body    []byte // the JSON object served, "id" included
}

// version is a record's numeric version field, when it has one.
type version struct {
	ok    bool
	isInt bool
	i     int64
	f     float64
}

// less reports whether v is a lower version than w; false when either is
// absent, since a record without a version cannot be stale.
func (v version) less(w version) bool {
	if !v.ok || !w.ok {
		return false
	}
	if v.isInt && w.isInt {
		return v.i < w.i
	}
	return v.float() < w.float()
}

func (v version) float() float64 {
	if v.isInt {
		return float64(v.i)
	}
	return v.f
}

// errBadBody is wrapped by every record body validation error (HTTP 400).
var errBadBody = errors.New("invalid record body")

// parseBody validates a record body (a JSON object), sets its "id" and
// returns the stored form. versionField names the numeric field compared by
// the stale-write detector. Values are kept verbatim (numbers are not
// rounded); keys come out sorted.
func parseBody(data []byte, id, versionField string) (*record, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("%w: want a JSON object: %v", errBadBody, err)
	}
	if fields == nil { // the body was null
		return nil, fmt.Errorf("%w: want a JSON object, got null", errBadBody)
	}
	return buildRecord(fields, data, id, versionField)
}

// buildRecord turns decoded fields into a stored record with the given id.
// When the client sent no "id", the stored body is its own bytes, compacted,
// with the id spliced in first: cheaper than re-encoding the map, and the
// client's field order is kept. A body whose "id" already is this id is
// stored compacted as is. raw may be nil (then fields are encoded).
func buildRecord(fields map[string]json.RawMessage, raw []byte, id, versionField string) (*record, error) {
	rec := &record{id: id}
	if v, ok := fields[ExternalIDField]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &rec.extID); err != nil {
			return nil, fmt.Errorf("%w: field %q must be a string, got %s", errBadBody, ExternalIDField, truncate(string(v), 40))
		}
	}
	if v, ok := fields[versionField]; ok {
		rec.version = parseVersion(v)
	}
	quoted, err := json.Marshal(id)
	if err != nil {
		return nil, fmt.Errorf("encode record id: %w", err)
	}
	sentID, hasID := fields["id"]
	if hasID && raw != nil && bytes.Equal(sentID, quoted) && bytes.Count(raw, []byte(`"id"`)) == 1 { // one "id" key: no duplicate to hide
		// Already carries this id (a state file, or a PUT echoing the id).
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadBody, err)
		}
		rec.body = b.Bytes()
		return rec, nil
	}
	if !hasID && raw != nil {
		var b bytes.Buffer
		b.Grow(len(raw) + len(quoted) + 8)
		b.WriteString(`{"id":`)
		b.Write(quoted)
		mark := b.Len()
		if err := json.Compact(&b, raw); err != nil {
			return nil, fmt.Errorf("%w: %v", errBadBody, err)
		}
		// b now holds {"id":"N"{...}; turn the object's "{" into "," (or
		// drop it for an empty object).
		body := b.Bytes()
		if len(body) == mark+2 { // the client's object was {}
			rec.body = append(body[:mark], '}')
		} else {
			body[mark] = ','
			rec.body = body
		}
		return rec, nil
	}
	fields["id"] = quoted
	if rec.body, err = json.Marshal(fields); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadBody, err)
	}
	return rec, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// parseVersion reads a JSON number; anything else (strings, objects) is "no
// version", so only numeric versions take part in stale-write detection.
func parseVersion(raw json.RawMessage) version {
	s := string(bytes.TrimSpace(raw))
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return version{ok: true, isInt: true, i: i}
	}
	if len(s) == 0 || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return version{}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return version{}
	}
	return version{ok: true, f: f}
}

// collection holds one collection's records behind one RWMutex: reads share
// it, and writes are short map updates, so it is not a bottleneck at the
// request rates a fake needs (see docs/benchmarks.md).
type collection struct {
	mu    sync.RWMutex
	byID  map[string]*slot
	byExt map[string][]string // external_id → ids in creation order
	order []string            // ids in creation order; "" marks a deleted one
	holes int                 // number of "" in order
	dups  int64               // Σ over external_id groups of (n-1)
}

type slot struct {
	rec *record
	pos int // index in collection.order
}

func newCollection() *collection {
	return &collection{byID: make(map[string]*slot), byExt: make(map[string][]string)}
}

func (c *collection) insert(rec *record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.byID[rec.id]; ok { // only when loading a state file with repeated ids
		c.unindexExt(old.rec)
		old.rec = rec
		c.indexExt(rec)
		return
	}
	c.byID[rec.id] = &slot{rec: rec, pos: len(c.order)}
	c.order = append(c.order, rec.id)
	c.indexExt(rec)
}

func (c *collection) get(id string) *record {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s, ok := c.byID[id]; ok {
		return s.rec
	}
	return nil
}

// replace swaps the record's state and returns the previous one, or nil
// (and stores nothing) when the id does not exist.
func (c *collection) replace(rec *record) (old *record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.byID[rec.id]
	if !ok {
		return nil
	}
	old = s.rec
	if old.extID != rec.extID {
		c.unindexExt(old)
		c.indexExt(rec)
	}
	s.rec = rec
	return old
}

// remove deletes the record and returns it, or nil when absent.
func (c *collection) remove(id string) *record {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.byID[id]
	if !ok {
		return nil
	}
	delete(c.byID, id)
	c.order[s.pos] = ""
	c.holes++
	c.unindexExt(s.rec)
	return s.rec
}

func (c *collection) indexExt(rec *record) {
	if rec.extID == "" {
		return
	}
	ids := c.byExt[rec.extID]
	if len(ids) > 0 {
		c.dups++
	}
	c.byExt[rec.extID] = append(ids, rec.id)
}

func (c *collection) unindexExt(rec *record) {
	if rec.extID == "" {
		return
	}
	ids := c.byExt[rec.extID]
	for i, id := range ids {
		if id == rec.id {
			ids = append(ids[:i:i], ids[i+1:]...) // copy: never mutate a slice a reader may hold
			break
		}
	}
	if len(ids) == 0 {
		delete(c.byExt, rec.extID)
		return
	}
	c.dups--
	c.byExt[rec.extID] = ids
}

func (c *collection) findByExt(ext string) []*record {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ids := c.byExt[ext]
	out := make([]*record, 0, len(ids))
	for _, id := range ids {
		out = append(out, c.byID[id].rec)
	}
	return out
}

func (c *collection) counts() (records, dups int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return int64(len(c.byID)), c.dups
}

// page returns records [offset, offset+limit) in creation order and the
// total. Deleted entries are compacted away first so paging is O(limit).
func (c *collection) page(offset, limit int) ([]*record, int) {
	c.mu.RLock()
	if c.holes > 0 {
		c.mu.RUnlock()
		c.compact()
		c.mu.RLock()
	}
	defer c.mu.RUnlock()
	total := len(c.byID)
	if offset >= len(c.order) {
		return nil, total
	}
	end := min(len(c.order), offset+limit)
	out := make([]*record, 0, end-offset)
	for _, id := range c.order[offset:end] {
		if s, ok := c.byID[id]; ok { // a hole that appeared after compact
			out = append(out, s.rec)
		}
	}
	return out, total
}

// compact rebuilds order without holes into a new array, so that a dump
// walking the old array (under RLock per chunk) stays race-free.
func (c *collection) compact() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holes == 0 {
		return
	}
	order := make([]string, 0, len(c.byID))
	for _, id := range c.order {
		if id != "" {
			c.byID[id].pos = len(order)
			order = append(order, id)
		}
	}
	c.order, c.holes = order, 0
}

// each calls fn for every record present when it started, in creation
// order, holding the read lock only while copying a chunk, so a dump of a
// million records neither blocks writers nor buffers everything.
func (c *collection) each(fn func(*record) error) error {
	const chunk = 512
	c.mu.RLock()
	order := c.order
	c.mu.RUnlock()
	buf := make([]*record, 0, chunk)
	for start := 0; start < len(order); start += chunk {
		buf = buf[:0]
		c.mu.RLock()
		for _, id := range order[start:min(start+chunk, len(order))] {
			if id == "" {
				continue
			}
			if s, ok := c.byID[id]; ok {
				buf = append(buf, s.rec)
			}
		}
		c.mu.RUnlock()
		for _, rec := range buf {
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	return nil
}
