// Package verify compares the source of truth with the third-party API and
// reports whether they converged: every key of an entity has exactly one
// remote record iff it exists in the source, and that record carries every
// field of the source's data with an equal value. It reports missing,
// extra, differing and duplicated records with counts and samples, and can
// repair the drift by publishing corrective events through the bus, so the
// normal worker pipeline (leases, versions, intents) fixes it.
//
// Memory is bounded by what a million keys need: the expected side is held
// as one small entry per key (a 64-bit hash of its canonical data, its
// version and the id of the remote record seen for it), the remote side is
// streamed, and sample details are fetched again from the source at the end.
package verify

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/sink"
)

// DefaultIgnoreFields are never compared: on the remote side they are the
// API's own id and the sink's bookkeeping, so a source column of the same
// name (a table's "id") cannot match them.
var DefaultIgnoreFields = []string{"id", "external_id", "version"}

// DefaultSamples is how many keys each category of the report lists.
const DefaultSamples = 10

// Config says what to compare.
type Config struct {
	// Entity is the event entity compared, e.g. "listing".
	Entity string
	// Expected is the source of truth.
	Expected Expected
	// Remote lists the API's records (the HTTP sink, or FakeAPIDump).
	Remote sink.Lister
	// SinkEntities are the entities the sink configuration knows; when
	// any are given, an Entity outside them is refused before anything is
	// read. nil takes them from Remote when it names them (an
	// Entities() []string method, as httpsink.Sink has).
	SinkEntities []string
	// RemoteName describes the remote side in reports.
	RemoteName string
	// IgnoreFields are left out of the comparison; nil means
	// DefaultIgnoreFields, an empty non-nil slice compares every field.
	IgnoreFields []string
	// Samples is how many keys each report category lists; 0 means
	// DefaultSamples, a negative number lists none.
	Samples int
	// Logger receives progress; nil discards.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.IgnoreFields == nil {
		c.IgnoreFields = DefaultIgnoreFields
	}
	if c.Samples == 0 {
		c.Samples = DefaultSamples
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RemoteName == "" {
		c.RemoteName = "remote API"
	}
	if r, ok := c.Remote.(interface{ Entities() []string }); ok && c.SinkEntities == nil {
		c.SinkEntities = r.Entities()
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Entity == "":
		errs = append(errs, setting.Errorf("verify.entity", "verify: no entity (e.g. listing)"))
	case len(c.SinkEntities) > 0 && !slices.Contains(c.SinkEntities, c.Entity):
		known := slices.Sorted(slices.Values(c.SinkEntities))
		msg := fmt.Sprintf("entity %s is not in the sink configuration (known: %s)", c.Entity, strings.Join(known, ", "))
		if near := setting.Closest(c.Entity, known); near != "" {
			msg += "; did you mean " + near + "?"
		}
		errs = append(errs, setting.Errorf("verify.entity", "verify: %s", msg))
	}
	if c.Expected == nil {
		errs = append(errs, setting.Errorf("verify.expected", "verify: no expected side: a source table or a file of expected states (Config.Expected)"))
	}
	if c.Remote == nil {
		errs = append(errs, setting.Errorf("verify.remote", "verify: no remote side: a sink that lists records or a fake API dump (Config.Remote)"))
	}
	return errors.Join(errs...)
}

// Counts are the report's numbers.
type Counts struct {
	// Expected is the number of keys that must have a remote record.
	Expected int64 `json:"expected"`
	// ExpectedAbsent is the number of keys that must have none (deletes
	// in an NDJSON file of expected states).
	ExpectedAbsent int64 `json:"expected_absent"`
	// Remote is the number of remote records listed.
	Remote int64 `json:"remote"`
	// Matching keys have exactly one remote record with equal fields.
	Matching   int64 `json:"matching"`
	Missing    int64 `json:"missing"`
	Extra      int64 `json:"extra"`
	Differing  int64 `json:"differing"`
	Duplicated int64 `json:"duplicated"`
	// Unkeyed remote records have no external id, so no key to match.
	Unkeyed int64 `json:"unkeyed"`
}

// Sample is one key in a report category.
type Sample struct {
	Key       string   `json:"key,omitempty"`
	Version   int64    `json:"version,omitempty"`
	RemoteIDs []string `json:"remote_ids,omitempty"`
	// Field, Expected and Remote describe the first differing field (in
	// sorted order) of a differing record; values are JSON, or "absent".
	Field    string `json:"field,omitempty"`
	Expected string `json:"expected,omitempty"`
	Remote   string `json:"remote,omitempty"`
}

// Samples are the first keys of each category, sorted by key.
type Samples struct {
	Missing    []Sample `json:"missing"`
	Extra      []Sample `json:"extra"`
	Differing  []Sample `json:"differing"`
	Duplicated []Sample `json:"duplicated"`
	Unkeyed    []Sample `json:"unkeyed"`
}

// Report is the outcome of a check.
type Report struct {
	Entity    string        `json:"entity"`
	Source    string        `json:"source"`
	Target    string        `json:"target"`
	Converged bool          `json:"converged"`
	Counts    Counts        `json:"counts"`
	Samples   Samples       `json:"samples"`
	Ignored   []string      `json:"ignored_fields"`
	Elapsed   time.Duration `json:"-"`
	ElapsedMS int64         `json:"elapsed_ms"`
}

// entry is what verify keeps per expected key.
type entry struct {
	hash     uint64
	version  int64
	remoteID string // first remote record seen for the key
	shape    uint32 // index of the key's sorted field names
	remotes  uint32 // remote records seen (saturating)
	flags    uint8
}

const (
	flagDeleted  uint8 = 1 << iota // must be absent
	flagDiffers                    // some remote record differs
	flagRepaired                   // repair already published for it
)

// extra is a remote key the source does not have.
type extra struct {
	remoteID string
	remotes  uint32
}

// Result is a finished check: its Report, plus what Repair and
// DeleteDuplicates need to act on every divergent key.
type Result struct {
	Report Report

	cfg      Config
	seed     maphash.Seed
	shapes   [][]string
	entries  map[string]*entry
	extras   map[string]*extra
	dups     map[string][]string // every remote id of a duplicated key, in listing order
	unkeyed  []string            // remote ids without an external id (bounded by Samples)
	diffRecs map[string]map[string]any
}

// Check compares the expected side with the remote side.
func Check(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := cfg.Now()
	res := &Result{
		cfg:      cfg,
		seed:     maphash.MakeSeed(),
		entries:  make(map[string]*entry),
		extras:   make(map[string]*extra),
		dups:     make(map[string][]string),
		diffRecs: make(map[string]map[string]any),
	}
	ignore := make(map[string]bool, len(cfg.IgnoreFields))
	for _, f := range cfg.IgnoreFields {
		ignore[f] = true
	}
	if err := res.loadExpected(ctx, ignore); err != nil {
		return nil, fmt.Errorf("read expected states from %s: %w", cfg.Expected, err)
	}
	cfg.Logger.Info("verify: expected side loaded", "entity", cfg.Entity, "keys", len(res.entries), "elapsed", cfg.Now().Sub(start).Round(time.Millisecond))
	var diffHeap sampleHeap
	if err := res.streamRemote(ctx, &diffHeap); err != nil {
		return nil, fmt.Errorf("list %s records from %s: %w", cfg.Entity, cfg.RemoteName, err)
	}
	res.summarize(diffHeap)
	if err := res.explainDiffs(ctx, ignore); err != nil {
		return nil, fmt.Errorf("read differing samples from %s: %w", cfg.Expected, err)
	}
	res.diffRecs = nil
	res.Report.Elapsed = cfg.Now().Sub(start)
	res.Report.ElapsedMS = res.Report.Elapsed.Milliseconds()
	return res, nil
}

func (r *Result) loadExpected(ctx context.Context, ignore map[string]bool) error {
	shapeIndex := map[string]uint32{}
	var lastShape []string
	var lastIndex uint32
	return r.cfg.Expected.Each(ctx, func(it Item) error {
		if it.Key == "" {
			return errors.New("an expected state has an empty key")
		}
		e := &entry{version: it.Version}
		if it.Deleted {
			e.flags = flagDeleted
		} else {
			data, err := decodeObject(it.Data)
			if err != nil {
				return fmt.Errorf("key %q: data is not a JSON object: %w", it.Key, err)
			}
			names := fieldNames(data, ignore)
			// Rows of one table share their columns: reuse the last shape
			// without building its lookup key.
			if !slices.Equal(names, lastShape) {
				joined := strings.Join(names, "\x00")
				idx, ok := shapeIndex[joined]
				if !ok {
					idx = uint32(len(r.shapes))
					r.shapes = append(r.shapes, names)
					shapeIndex[joined] = idx
				}
				lastShape, lastIndex = r.shapes[idx], idx
			}
			e.shape = lastIndex
			e.hash = hashFields(r.seed, lastShape, data)
		}
		old, ok := r.entries[it.Key]
		if ok {
			switch {
			case it.Version < old.version:
				return nil
			case it.Version == old.version && (old.flags != e.flags || old.hash != e.hash):
				return fmt.Errorf("key %q: two different states with version %d; versions must identify one state", it.Key, it.Version)
			}
		}
		r.entries[it.Key] = e
		return nil
	})
}

func (r *Result) streamRemote(ctx context.Context, diffHeap *sampleHeap) error {
	n := int64(0)
	return r.cfg.Remote.List(ctx, r.cfg.Entity, func(rec sink.RemoteRecord) error {
		n++
		r.Report.Counts.Remote++
		if n%100000 == 0 {
			r.cfg.Logger.Info("verify: remote records listed", "entity", r.cfg.Entity, "records", n)
		}
		if rec.Key == "" {
			r.Report.Counts.Unkeyed++
			if len(r.unkeyed) < max(r.cfg.Samples, 0) {
				r.unkeyed = append(r.unkeyed, rec.RemoteID)
			}
			return nil
		}
		e, ok := r.entries[rec.Key]
		if !ok {
			x := r.extras[rec.Key]
			if x == nil {
				r.extras[rec.Key] = &extra{remoteID: rec.RemoteID, remotes: 1}
				return nil
			}
			r.noteDuplicate(rec.Key, x.remoteID, rec.RemoteID)
			x.remotes = saturatingInc(x.remotes)
			return nil
		}
		if e.remotes == 0 {
			e.remoteID = rec.RemoteID
		} else {
			r.noteDuplicate(rec.Key, e.remoteID, rec.RemoteID)
		}
		e.remotes = saturatingInc(e.remotes)
		if e.flags&flagDeleted != 0 {
			return nil
		}
		if hashFields(r.seed, r.shapes[e.shape], rec.Fields) != e.hash {
			if e.flags&flagDiffers == 0 {
				e.flags |= flagDiffers
				// Keep the fields of the first differing record of the
				// smallest keys only, for the report's explanation.
				if diffHeap.offer(r.cfg.Samples, Sample{Key: rec.Key, Version: e.version, RemoteIDs: []string{rec.RemoteID}}) {
					r.diffRecs[rec.Key] = rec.Fields
				}
				if len(r.diffRecs) > 2*r.cfg.Samples+16 {
					r.pruneDiffRecs(*diffHeap)
				}
			}
		}
		return nil
	})
}

func (r *Result) pruneDiffRecs(h sampleHeap) {
	keep := make(map[string]bool, len(h))
	for _, s := range h {
		keep[s.Key] = true
	}
	for k := range r.diffRecs {
		if !keep[k] {
			delete(r.diffRecs, k)
		}
	}
}

func (r *Result) noteDuplicate(key, first, next string) {
	ids := r.dups[key]
	if ids == nil {
		ids = []string{first}
	}
	r.dups[key] = append(ids, next)
}

func saturatingInc(n uint32) uint32 {
	if n == ^uint32(0) {
		return n
	}
	return n + 1
}

// summarize fills the counts and samples from the entries.
func (r *Result) summarize(diffHeap sampleHeap) {
	rep := &r.Report
	rep.Entity = r.cfg.Entity
	rep.Source = r.cfg.Expected.String()
	rep.Target = r.cfg.RemoteName
	rep.Ignored = slices.Clone(r.cfg.IgnoreFields)
	c := &rep.Counts
	var missing, extras, dups sampleHeap
	n := r.cfg.Samples
	for key, e := range r.entries {
		if e.flags&flagDeleted != 0 {
			c.ExpectedAbsent++
			if e.remotes > 0 {
				c.Extra++
				extras.offer(n, Sample{Key: key, Version: e.version})
			}
		} else {
			c.Expected++
			switch {
			case e.remotes == 0:
				c.Missing++
				missing.offer(n, Sample{Key: key, Version: e.version})
			case e.flags&flagDiffers != 0:
				c.Differing++
			case e.remotes == 1:
				c.Matching++
			}
		}
		if e.remotes > 1 {
			c.Duplicated++
			dups.offer(n, Sample{Key: key, Version: e.version})
		}
	}
	for key, x := range r.extras {
		c.Extra++
		extras.offer(n, Sample{Key: key})
		if x.remotes > 1 {
			c.Duplicated++
			dups.offer(n, Sample{Key: key})
		}
	}
	rep.Converged = c.Missing == 0 && c.Extra == 0 && c.Differing == 0 && c.Duplicated == 0 && c.Unkeyed == 0
	rep.Samples = Samples{
		Missing:    missing.sorted(),
		Extra:      extras.sorted(),
		Differing:  diffHeap.sorted(),
		Duplicated: dups.sorted(),
		Unkeyed:    []Sample{},
	}
	for i := range rep.Samples.Extra {
		rep.Samples.Extra[i].RemoteIDs = r.remoteIDs(rep.Samples.Extra[i].Key)
	}
	for i := range rep.Samples.Duplicated {
		rep.Samples.Duplicated[i].RemoteIDs = r.remoteIDs(rep.Samples.Duplicated[i].Key)
	}
	for _, id := range r.unkeyed {
		rep.Samples.Unkeyed = append(rep.Samples.Unkeyed, Sample{RemoteIDs: []string{id}})
	}
}

// remoteIDs returns every known remote id of key.
func (r *Result) remoteIDs(key string) []string {
	if ids, ok := r.dups[key]; ok {
		return slices.Clone(ids)
	}
	if e, ok := r.entries[key]; ok && e.remotes > 0 {
		return []string{e.remoteID}
	}
	if x, ok := r.extras[key]; ok {
		return []string{x.remoteID}
	}
	return nil
}

// explainDiffs reads the expected data of the differing samples again and
// names each one's first differing field.
func (r *Result) explainDiffs(ctx context.Context, ignore map[string]bool) error {
	samples := r.Report.Samples.Differing
	if len(samples) == 0 {
		return nil
	}
	want := make(map[string]int, len(samples))
	for i, s := range samples {
		want[s.Key] = i
	}
	errDone := errors.New("done")
	err := r.cfg.Expected.Each(ctx, func(it Item) error {
		i, ok := want[it.Key]
		if !ok || it.Deleted || it.Version != samples[i].Version {
			return nil
		}
		delete(want, it.Key)
		data, err := decodeObject(it.Data)
		if err != nil {
			return fmt.Errorf("key %q: %w", it.Key, err)
		}
		if f, exp, got, ok := firstDifference(r.seed, data, fieldNames(data, ignore), r.diffRecs[it.Key]); ok {
			samples[i].Field, samples[i].Expected, samples[i].Remote = f, exp, got
		}
		if len(want) == 0 {
			return errDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDone) {
		return err
	}
	for _, i := range want {
		// The row changed (or vanished) since the first read.
		samples[i].Field = "(source changed during verify; run it again)"
	}
	return nil
}

// sampleHeap keeps the n smallest keys offered (a max-heap on Key).
type sampleHeap []Sample

// offer adds s if it is among the n smallest keys so far and reports
// whether it was kept.
func (h *sampleHeap) offer(n int, s Sample) bool {
	if n <= 0 {
		return false
	}
	if len(*h) < n {
		*h = append(*h, s)
		h.up(len(*h) - 1)
		return true
	}
	if s.Key >= (*h)[0].Key {
		return false
	}
	(*h)[0] = s
	h.down(0)
	return true
}

func (h sampleHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h[p].Key >= h[i].Key {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func (h sampleHeap) down(i int) {
	for {
		l, big := 2*i+1, i
		if l < len(h) && h[l].Key > h[big].Key {
			big = l
		}
		if r := l + 1; r < len(h) && h[r].Key > h[big].Key {
			big = r
		}
		if big == i {
			return
		}
		h[i], h[big] = h[big], h[i]
		i = big
	}
}

func (h sampleHeap) sorted() []Sample {
	out := slices.Clone([]Sample(h))
	if out == nil {
		out = []Sample{}
	}
	slices.SortFunc(out, func(a, b Sample) int { return strings.Compare(a.Key, b.Key) })
	return out
}
