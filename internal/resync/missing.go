package resync

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/store"
)

// MissingSamples is how many keys a delete-missing report lists.
const MissingSamples = 10

// MissingReport is the outcome of Spec.DeleteMissing.
type MissingReport struct {
	// Known is the number of keys the state store holds for the entity
	// that are not already tombstones.
	Known int64 `json:"known"`
	// Missing keys are known to the store but absent from the table.
	Missing int64 `json:"missing"`
	// Published delete events (0 unless Spec.ApplyDeletes confirmed them).
	Published int64 `json:"published"`
	// Changed keys were missing but applied a newer version while the
	// check ran; they are left to the live stream.
	Changed int64 `json:"changed"`
	// Ambiguous keys share a 64-bit hash with another known key; they are
	// skipped rather than risk deleting the wrong one (vanishingly rare).
	Ambiguous int64    `json:"ambiguous"`
	Sample    []string `json:"sample"`
	Applied   bool     `json:"applied"`
}

// candidate is what the missing-key check keeps per known key: 16 bytes of
// payload in a map, whatever the key's length.
type candidate struct {
	version   int64
	ambiguous bool
}

// findMissing finds entities the state store knows but the table does not
// have, and publishes a delete for each when apply is set.
//
// The order is what makes a delete safe: the store is scanned FIRST and a
// fresh snapshot is read AFTER. A key whose applied version v was in the
// store before that snapshot began, yet is absent from it, was deleted at
// the source after v was written; the trigger stamped that delete with a
// version above v, and a later re-insert gets a higher one still. So a
// delete at v+1 never outranks a real later change of the source. (A scan
// after the run's own long snapshot would be wrong: a row inserted after
// that snapshot began is known to the store but absent from it.)
func (r *runner) findMissing(ctx context.Context, apply bool) (*MissingReport, error) {
	rep := &MissingReport{Applied: apply}
	seed := maphash.MakeSeed()
	known := map[uint64]candidate{}
	err := r.scanner.Scan(ctx, r.spec.Entity, func(k store.Key, s store.State) error {
		if s.Deleted || s.AppliedVersion <= 0 {
			return nil
		}
		h := maphash.String(seed, k.Key)
		if c, dup := known[h]; dup {
			c.ambiguous = true
			known[h] = c
			return nil
		}
		known[h] = candidate{version: s.AppliedVersion}
		rep.Known++
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("delete-missing: scan the state store for %s keys: %w", r.spec.Entity, err)
	}
	r.log.Info("delete-missing: reading a fresh snapshot of the keys", "known", rep.Known)
	err = r.src.Snapshot(ctx, r.spec.snapshotSpec(""), func(page []event.Event, _ string) error {
		for _, ev := range page {
			delete(known, maphash.String(seed, ev.Key))
		}
		return nil
	})
	if err != nil {
		return rep, r.explain(fmt.Errorf("delete-missing: snapshot: %w", err))
	}
	if len(known) == 0 {
		r.log.Info("delete-missing: no entity is missing from the table")
		return rep, nil
	}
	// Hashes cannot be turned back into keys: scan again for the names,
	// and publish as we go.
	var batch []bus.Message
	var sample []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := r.pub.Publish(ctx, bus.Resync, batch...); err != nil {
			return fmt.Errorf("delete-missing: publish %d deletes: %w", len(batch), err)
		}
		rep.Published += int64(len(batch))
		r.cp.Deletes += int64(len(batch))
		batch = batch[:0]
		return nil
	}
	err = r.scanner.Scan(ctx, r.spec.Entity, func(k store.Key, s store.State) error {
		c, ok := known[maphash.String(seed, k.Key)]
		if !ok {
			return nil
		}
		if c.ambiguous {
			rep.Ambiguous++
			return nil
		}
		if s.Deleted || s.AppliedVersion != c.version {
			rep.Changed++ // a newer event arrived meanwhile: the stream decides
			return nil
		}
		rep.Missing++
		if len(sample) < 1000 {
			sample = append(sample, k.Key)
		}
		if !apply {
			return nil
		}
		body, err := json.Marshal(event.Event{
			ID: "resync-" + r.spec.RunID + "-delete-" + k.Key, Entity: r.spec.Entity, Key: k.Key,
			Version: c.version + 1, Op: event.OpDelete,
		})
		if err != nil {
			return err
		}
		batch = append(batch, bus.Message{Body: body})
		if len(batch) >= r.spec.PageSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	rep.Sample = sortedSample(sample, MissingSamples)
	if apply && rep.Published > 0 {
		r.cp.Updated = time.Now().UTC()
		if serr := saveCheckpoint(context.WithoutCancel(ctx), r.ctl, r.cp); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return rep, fmt.Errorf("delete-missing: %w", err)
	}
	r.log.Info("delete-missing done", "missing", rep.Missing, "published", rep.Published, "changed_meanwhile", rep.Changed, "ambiguous", rep.Ambiguous)
	return rep, nil
}
