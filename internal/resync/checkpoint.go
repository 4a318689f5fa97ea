package resync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/store"
)

// checkpointPrefix names resync records in the store's control space.
const checkpointPrefix = "resync/"

// Checkpoint is a run's progress as stored in the state store after every
// confirmed page, under "resync/<run id>". A rerun of the same command reads
// it and continues after LastKey.
type Checkpoint struct {
	RunID    string `json:"run_id"`
	SpecHash string `json:"spec_hash"`
	Table    string `json:"table"`
	Entity   string `json:"entity"`
	// LastKey is the key of the last row whose page the broker confirmed;
	// empty before the first page.
	LastKey string `json:"last_key"`
	// Rows counts rows published and confirmed over all segments of the
	// run (a page republished after a crash is counted once).
	Rows int64 `json:"rows"`
	// Total is the number of rows the run expects: Rows at the start of the
	// current segment plus the rows after LastKey counted then.
	Total int64 `json:"total"`
	// Segments counts the processes that worked on the run: 1 plus one per
	// resume after a crash or an interruption.
	Segments int       `json:"segments"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	// Done is set once the snapshot's last page was confirmed.
	Done     bool       `json:"done"`
	Finished *time.Time `json:"finished,omitempty"`
	// Deletes counts delete events published by Spec.DeleteMissing.
	Deletes int64 `json:"deletes,omitempty"`
	// Owner is the process that wrote the record last (host-pid).
	Owner string `json:"owner,omitempty"`
}

// CheckpointName is the control-space name of a run's checkpoint.
func CheckpointName(runID string) string { return checkpointPrefix + runID }

// ParseCheckpoint decodes a stored checkpoint. It never panics; a record
// that is not a checkpoint is an error naming the fix.
func ParseCheckpoint(name string, b []byte) (Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, setting.Errorf("resync.restart", "resync checkpoint %s is unreadable (%v); restart the run from the first row", name, err)
	}
	if c.RunID == "" || c.SpecHash == "" || c.Rows < 0 || c.Total < 0 || c.Segments < 0 {
		return Checkpoint{}, setting.Errorf("resync.restart", "resync checkpoint %s is incomplete or inconsistent; restart the run from the first row", name)
	}
	return c, nil
}

// LoadCheckpoint returns the run's checkpoint and whether one exists.
func LoadCheckpoint(ctx context.Context, c store.Control, runID string) (Checkpoint, bool, error) {
	name := CheckpointName(runID)
	b, ok, err := c.GetControl(ctx, name)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("read resync checkpoint %s: %w", name, err)
	}
	if !ok {
		return Checkpoint{}, false, nil
	}
	cp, err := ParseCheckpoint(name, b)
	return cp, err == nil, err
}

// ListCheckpoints returns every stored run's checkpoint, skipping records
// that cannot be read.
func ListCheckpoints(ctx context.Context, c store.Control) ([]Checkpoint, error) {
	recs, err := c.ListControl(ctx, checkpointPrefix)
	if err != nil {
		return nil, fmt.Errorf("list resync checkpoints: %w", err)
	}
	out := make([]Checkpoint, 0, len(recs))
	for name, b := range recs {
		if cp, err := ParseCheckpoint(name, b); err == nil {
			out = append(out, cp)
		}
	}
	return out, nil
}

func saveCheckpoint(ctx context.Context, c store.Control, cp Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	// No expiry: a checkpoint must outlive any outage of the resync.
	if err := c.SetControl(ctx, CheckpointName(cp.RunID), b, 0); err != nil {
		return fmt.Errorf("write resync checkpoint %s: %w", CheckpointName(cp.RunID), err)
	}
	return nil
}

// specHash identifies what a run reads, so a checkpoint is never applied
// to a different table, filter or column list.
func specHash(s Spec) string {
	if s.VersionColumn == "" {
		s.VersionColumn = source.VersionColumn
	}
	b, _ := json.Marshal(struct {
		Table, Entity, Key, Version, Where string
		Columns, Exclude                   []string
	}{s.Table, s.Entity, s.KeyColumn, s.VersionColumn, s.Where, s.Columns, s.ExcludeColumns})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// DefaultRunID derives the run id from what the run reads, so running the
// same command again finds the same checkpoint.
func DefaultRunID(s Spec) string {
	return s.Entity + "-" + specHash(s)[:12]
}

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func validateRunID(id string) error {
	if !runIDPattern.MatchString(id) {
		return setting.Errorf("resync.run_id", "run id %q must be 1-64 letters, digits, '_', '.' or '-'", id)
	}
	return nil
}
