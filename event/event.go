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
	"regexp"
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

var entityPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

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

// Parse decodes and validates one event. maxSize <= 0 means DefaultMaxSize.
// Unknown fields are rejected so that a publisher's typo (say "verison") is
// reported instead of silently producing an event without a version.
func Parse(body []byte, maxSize int) (Event, error) {
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
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var w wire
	if err := dec.Decode(&w); err != nil {
		return Event{}, invalid("", "not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Event{}, invalid("", "trailing data after the JSON object")
	}
	var ev Event
	var err error
	if ev.ID, err = requiredString("id", w.ID); err != nil {
		return Event{}, err
	}
	if ev.Entity, err = requiredString("entity", w.Entity); err != nil {
		return Event{}, err
	}
	if !entityPattern.MatchString(ev.Entity) {
		return Event{}, invalid("entity", "%q does not match [a-z][a-z0-9_]*", ev.Entity)
	}
	if ev.Key, err = requiredString("key", w.Key); err != nil {
		return Event{}, err
	}
	if ev.Version, err = parseVersion(w.Version); err != nil {
		return Event{}, err
	}
	op, err := requiredString("op", w.Op)
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
		var s string
		if err := json.Unmarshal(w.OccurredAt, &s); err != nil {
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
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid(field, "must be a string")
	}
	if s == "" {
		return "", invalid(field, "must not be empty")
	}
	return s, nil
}

func parseVersion(raw json.RawMessage) (int64, error) {
	if isNull(raw) {
		return 0, invalid("version", "required")
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
	if !entityPattern.MatchString(e.Entity) {
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
