// Package sink defines the port to the third-party API: create, update,
// delete and lookup-by-external-id of remote records, with errors that say
// whether a call may be retried. The declarative HTTP adapter lives in
// sink/httpsink; users who need code instead of configuration implement Sink.
package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Record is the state to write for one entity.
type Record struct {
	Entity  string
	Key     string // our key, stored remotely as the external id
	Version int64
	Data    json.RawMessage
	// EventID is the id of the event being applied (a repair re-applies
	// the key's newest event with its id); the same on every retry of
	// that event, so it suits an Idempotency-Key header.
	EventID string
}

// Sink writes entities to the third-party API.
type Sink interface {
	// Create makes a new remote record and returns its remote id. Creates
	// are assumed NOT idempotent: the engine records an intent first and
	// looks up by external id before retrying a create that may have landed.
	Create(ctx context.Context, r Record) (remoteID string, err error)
	// Update replaces the remote record. ErrNotFound when it is gone.
	Update(ctx context.Context, remoteID string, r Record) error
	// Delete removes the remote record. ErrNotFound when already gone.
	Delete(ctx context.Context, entity, remoteID string) error
	// Lookup returns the remote ids of records whose external id is key.
	Lookup(ctx context.Context, entity, key string) ([]string, error)
}

// RemoteRecord is one record as listed from the API.
type RemoteRecord struct {
	RemoteID string
	Key      string // external id, empty when the record has none
	Fields   map[string]any
}

// Lister is implemented by sinks that can enumerate remote records; verify
// uses it to compare the API with the source of truth.
type Lister interface {
	List(ctx context.Context, entity string, fn func(RemoteRecord) error) error
}

// ErrNotFound reports that the remote record does not exist.
var ErrNotFound = errors.New("sink: remote record not found")

// Error is a failed sink call with what the engine needs to decide its fate.
type Error struct {
	Op         string        // create, update, delete, lookup, list
	Status     int           // HTTP status, 0 for transport errors
	Retryable  bool          // timeouts, 408, 429, 5xx, connection errors
	RetryAfter time.Duration // from a Retry-After header, 0 if none
	Body       string        // bounded excerpt of the response body
	Err        error         // underlying transport error, if any
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil && e.Status == 0:
		return fmt.Sprintf("sink %s: %v", e.Op, e.Err)
	case e.Body != "":
		return fmt.Sprintf("sink %s: HTTP %d %s: %s", e.Op, e.Status, http.StatusText(e.Status), e.Body)
	default:
		return fmt.Sprintf("sink %s: HTTP %d %s", e.Op, e.Status, http.StatusText(e.Status))
	}
}

func (e *Error) Unwrap() error { return e.Err }

// ClassifyStatus tells whether an HTTP status is retryable per the contract:
// 408, 429 and 5xx are; other 4xx are permanent.
func ClassifyStatus(status int) (retryable bool) {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// Retryable reports whether err may succeed when tried again, and the
// server's requested delay if it gave one. Errors that are not *Error (for
// example a context deadline) are treated as retryable transport failures.
func Retryable(err error) (bool, time.Duration) {
	var se *Error
	if errors.As(err, &se) {
		return se.Retryable, se.RetryAfter
	}
	if errors.Is(err, ErrNotFound) {
		return false, 0
	}
	return true, 0
}

// Op is the kind of one write in a batch call.
type Op string

// The writes a batch call can carry; one call carries one kind.
const (
	OpCreate Op = "create"
	OpUpdate Op = "update"
	OpDelete Op = "delete"
)

// BatchItem is one write of a batch call.
type BatchItem struct {
	// RemoteID is the record to update or delete; empty for a create.
	RemoteID string
	// Record is the state to write (create, update); for a delete only
	// Entity and Key are set.
	Record Record
}

// BatchResult is the API's answer for one item of a batch call.
type BatchResult struct {
	// RemoteID is the id of the record a create made.
	RemoteID string
	// Err is nil when the item was written. Otherwise it is what the
	// single call would have returned: ErrNotFound for an update or delete
	// of a record that is gone, or an *Error with the item's own status
	// (Retryable set by ClassifyStatus).
	Err error
}

// BatchSink is a Sink whose API has bulk endpoints: one request writes up
// to MaxBatch records of one entity, with one result per record. The
// engine groups concurrent writes into such calls (internal/engine's
// batcher); each item keeps its own lease, intent and commit, so a batch
// changes the number of requests, never what a write may do.
type BatchSink interface {
	Sink
	// MaxBatch is the most items one WriteBatch call of op takes for
	// entity; 0 or 1 when the API has no bulk endpoint for it (the single
	// call is used).
	MaxBatch(entity string, op Op) int
	// WriteBatch performs op on every item (all of entity) in one call and
	// returns one result per item, in the items' order. An error for the
	// whole call (a transport failure, a timeout, a 429 or 5xx answer of
	// the whole request, an answer that cannot be read) leaves every
	// item's fate unknown: it is returned as for a single call, and every
	// item's write is in doubt.
	WriteBatch(ctx context.Context, entity string, op Op, items []BatchItem) ([]BatchResult, error)
}
