package verify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/source"
)

// Item is one expected final state of an entity.
type Item struct {
	Key     string
	Version int64
	// Deleted means the key must have no remote record.
	Deleted bool
	// Data is the entity's state as a JSON object; nil when Deleted.
	Data json.RawMessage
}

// Expected is the source of truth for one entity. Each may be called
// several times (verify reads it again for sample details and repairs), and
// may yield a key more than once: the highest version wins.
type Expected interface {
	Each(ctx context.Context, fn func(Item) error) error
	// String describes the source for reports, e.g. "table listings".
	String() string
}

// Table reads the expected states from an application table through the
// source port (PostgreSQL or SQLite), in one consistent snapshot per pass.
// Every row is an entity that must exist remotely; the row's
// eventsync_version is its version.
type Table struct {
	Source source.Source
	Spec   source.SnapshotSpec
}

// Each implements Expected.
func (t Table) Each(ctx context.Context, fn func(Item) error) error {
	spec := t.Spec
	spec.AfterKey = ""
	err := t.Source.Snapshot(ctx, spec, func(page []event.Event, _ string) error {
		for _, ev := range page {
			if err := fn(Item{Key: ev.Key, Version: ev.Version, Data: ev.Data}); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, source.ErrTableNotFound) {
		return setting.Wrap("verify.table", err)
	}
	return err
}

func (t Table) String() string {
	s := fmt.Sprintf("table %s (key %s)", t.Spec.Table, t.Spec.KeyColumn)
	if t.Spec.Where != "" {
		s += " where " + t.Spec.Where
	}
	return s
}

// NDJSONFile reads expected final states from a file of events in the
// event contract, one per line. Events of other entities are skipped; an
// upsert means the key must exist with that data, a delete that it must be
// absent, and for each key the highest version wins.
type NDJSONFile struct {
	Path   string
	Entity string
	// MaxLineBytes bounds one line; default event.DefaultMaxSize.
	MaxLineBytes int
}

// Each implements Expected.
func (f NDJSONFile) Each(ctx context.Context, fn func(Item) error) error {
	file, err := os.Open(f.Path)
	if err != nil {
		return setting.Errorf("verify.expected", "open expected states: %w (want an existing NDJSON file)", err)
	}
	defer func() { _ = file.Close() }()
	if err := ReadNDJSON(ctx, file, f.Entity, f.MaxLineBytes, fn); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	return nil
}

func (f NDJSONFile) String() string { return "file " + f.Path }

// ReadNDJSON parses events from r, one per line (blank lines allowed), and
// calls fn with the states of entity. A line that is not a valid event is
// an error naming its line number; nothing after it is read.
func ReadNDJSON(ctx context.Context, r io.Reader, entity string, maxLineBytes int, fn func(Item) error) error {
	if maxLineBytes <= 0 {
		maxLineBytes = event.DefaultMaxSize
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes+1)
	line := 0
	for sc.Scan() {
		line++
		if line%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		raw := sc.Bytes()
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		ev, err := event.Parse(raw, maxLineBytes)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if ev.Entity != entity {
			continue
		}
		it := Item{Key: ev.Key, Version: ev.Version, Deleted: ev.Op == event.OpDelete}
		if !it.Deleted {
			it.Data = append(json.RawMessage(nil), ev.Data...)
		}
		if err := fn(it); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d bytes", line+1, maxLineBytes)
		}
		return fmt.Errorf("read line %d: %w", line+1, err)
	}
	return nil
}
