// Package event defines eventsync's public event contract: the JSON document
// an application publishes for every change of one of its entities.
//
// Events are state-based: each carries the entity's full state and a version
// that strictly increases per (entity, key). The highest version wins; see
// docs/events.md for the contract as other languages see it.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Op is what happened to the entity.
type Op string

const (
	// OpUpsert carries the entity's full current state in Data.
	OpUpsert Op = "upsert"
	// OpDelete is a versioned tombstone: older upserts arriving later do not
	// resurrect the entity.
	OpDelete Op = "delete"
)

// DefaultMaxSize is the largest encoded event accepted unless configured
// otherwise. Larger payloads are parked rather than retried forever.
const DefaultMaxSize = 1 << 20

// Event is one entity change. The JSON field names are the public contract.
type Event struct {
	ID         string          `json:"id"`
	Entity     string          `json:"entity"`
	Key        string          `json:"key"`
	Version    int64           `json:"version"`
	Op         Op              `json:"op"`
	Data       json.RawMessage `json:"data,omitempty"`
	OccurredAt *time.Time      `json:"occurred_at,omitempty"`
}

// ErrInvalid is matched (errors.Is) by every validation error.
var ErrInvalid = errors.New("invalid event")

// ValidationError names the offending field and what is wrong with it.
type ValidationError struct {
	Field   string // JSON field name, empty for document-level problems
	Problem string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid event: " + e.Problem
	}
	return fmt.Sprintf("invalid event: field %q: %s", e.Field, e.Problem)
}

// Is makes errors.Is(err, ErrInvalid) true for validation errors.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// validEntity reports whether s matches [a-z][a-z0-9_]*.
func validEntity(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range []byte(s[1:]) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// wire mirrors Event with loosely typed fields so that Parse can say exactly
// which field is wrong instead of surfacing encoding/json's generic errors.
type wire struct {
	ID         json.RawMessage `json:"id"`
	Entity     json.RawMessage `json:"entity"`
	Key        json.RawMessage `json:"key"`
	Version    json.RawMessage `json:"version"`
	Op         json.RawMessage `json:"op"`
	Data       json.RawMessage `json:"data"`
	OccurredAt json.RawMessage `json:"occurred_at"`
}

// decodeWire decodes doc with encoding/json, for the documents the scanner
// leaves to it; its errors are the ones Parse reports for invalid JSON.
func decodeWire(doc []byte) (wire, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	var w wire
	if err := dec.Decode(&w); err != nil {
		return wire{}, invalid("", "not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return wire{}, invalid("", "trailing data after the JSON object")
	}
	return w, nil
}

// Parse decodes and validates one event. maxSize <= 0 means DefaultMaxSize.
// Unknown fields are rejected so that a publisher's typo (say "verison") is
// reported instead of silently producing an event without a version.
//
// The returned Data shares memory with body; copy it to keep it past a
// change to body (a reused read buffer, for example).
func Parse(body []byte, maxSize int) (Event, error) {
	return parse(body, maxSize, true)
}

// parse is Parse; without scan it leaves every document to encoding/json,
// which the fuzz targets compare the scanner against.
func parse(body []byte, maxSize int, scan bool) (Event, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if len(body) > maxSize {
		return Event{}, invalid("", "payload is %d bytes, over the %d-byte limit (raise max_event_bytes if this is expected)", len(body), maxSize)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return Event{}, invalid("", "empty payload; expected a JSON object")
	}
	if trimmed[0] != '{' {
		return Event{}, invalid("", "payload is not a JSON object")
	}
	var w wire
	if !scan || !w.scan(trimmed) {
		var err error
		if w, err = decodeWire(trimmed); err != nil {
			return Event{}, err
		}
	}
	var ev Event
	var err error
	if ev.ID, err = requiredString("id", w.ID); err != nil {
		return Event{}, err
	}
	if ev.Entity, err = requiredString("entity", w.Entity); err != nil {
		return Event{}, err
	}
	if !validEntity(ev.Entity) {
		return Event{}, invalid("entity", "%q does not match [a-z][a-z0-9_]*", ev.Entity)
	}
	if ev.Key, err = requiredString("key", w.Key); err != nil {
		return Event{}, err
	}
	if ev.Version, err = parseVersion(w.Version); err != nil {
		return Event{}, err
	}
	op, err := parseOp(w.Op)
	if err != nil {
		return Event{}, err
	}
	ev.Op = Op(op)
	switch ev.Op {
	case OpUpsert:
		if isNull(w.Data) {
			return Event{}, invalid("data", "required for op \"upsert\"")
		}
		if w.Data[0] != '{' {
			return Event{}, invalid("data", "must be a JSON object")
		}
		ev.Data = w.Data
	case OpDelete:
		if !isNull(w.Data) {
			if w.Data[0] != '{' {
				return Event{}, invalid("data", "must be a JSON object when present")
			}
			ev.Data = w.Data
		}
	default:
		return Event{}, invalid("op", "%q is not one of \"upsert\", \"delete\"", op)
	}
	if !isNull(w.OccurredAt) {
		s, ok := decodeString(w.OccurredAt)
		if !ok {
			return Event{}, invalid("occurred_at", "must be an RFC 3339 string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Event{}, invalid("occurred_at", "%q is not RFC 3339 (e.g. 2026-01-02T15:04:05Z)", s)
		}
		ev.OccurredAt = &t
	}
	return ev, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func requiredString(field string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", invalid(field, "required")
	}
	s, ok := decodeString(raw)
	if !ok {
		return "", invalid(field, "must be a string")
	}
	if s == "" {
		return "", invalid(field, "must not be empty")
	}
	return s, nil
}

// parseOp is requiredString("op", raw) without a copy for the two ops.
func parseOp(raw json.RawMessage) (string, error) {
	switch string(raw) {
	case `"upsert"`:
		return string(OpUpsert), nil
	case `"delete"`:
		return string(OpDelete), nil
	}
	return requiredString("op", raw)
}

func parseVersion(raw json.RawMessage) (int64, error) {
	if isNull(raw) {
		return 0, invalid("version", "required")
	}
	if v, ok := smallPositive(raw); ok {
		return v, nil
	}
	s := string(raw)
	if s[0] == '"' {
		return 0, invalid("version", "must be a JSON integer, not a string")
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, invalid("version", "%s is not an integer in the int64 range", truncate(s, 40))
	}
	if v < 1 {
		return 0, invalid("version", "%d is below the minimum of 1", v)
	}
	return v, nil
}

// smallPositive reads raw as a decimal of 1 to 18 digits without a leading
// zero, which is a valid version, without the string strconv would need.
func smallPositive(raw []byte) (int64, bool) {
	if len(raw) == 0 || len(raw) > 18 || raw[0] == '0' {
		return 0, false
	}
	var v int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Validate checks an Event built in Go (for example by a producer or the
// relay) against the rules Parse applies to its JSON encoding, field by
// field: it accepts exactly the events whose encoding Parse accepts
// (FuzzValidateAgreesWithParse), at a fraction of an encode and a parse.
func (e Event) Validate() error {
	if e.ID == "" {
		return invalid("id", "must not be empty")
	}
	if e.Entity == "" {
		return invalid("entity", "must not be empty")
	}
	if !validEntity(e.Entity) {
		return invalid("entity", "%q does not match [a-z][a-z0-9_]*", e.Entity)
	}
	if e.Key == "" {
		return invalid("key", "must not be empty")
	}
	if e.Version < 1 {
		return invalid("version", "%d is below the minimum of 1", e.Version)
	}
	if len(e.Data) > 0 && !json.Valid(e.Data) {
		return invalid("data", "not valid JSON")
	}
	data := bytes.TrimSpace(e.Data)
	switch e.Op {
	case OpUpsert:
		if isNull(data) {
			return invalid("data", "required for op \"upsert\"")
		}
		if data[0] != '{' {
			return invalid("data", "must be a JSON object")
		}
	case OpDelete:
		if !isNull(data) && data[0] != '{' {
			return invalid("data", "must be a JSON object when present")
		}
	default:
		return invalid("op", "%q is not one of \"upsert\", \"delete\"", e.Op)
	}
	if e.OccurredAt != nil {
		if _, err := e.OccurredAt.MarshalJSON(); err != nil {
			return invalid("occurred_at", "cannot be written as RFC 3339: %v", err)
		}
	}
	return nil
}

// Marshal encodes the event after validating it.
func (e Event) Marshal() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}
