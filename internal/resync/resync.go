// Package resync publishes a full resynchronisation: one consistent
// snapshot of an application table, read through the source port in keyset
// pages and published as versioned upsert events to the resync stream with
// broker confirms. Progress is checkpointed in the state store's control
// space after every confirmed page, so a rerun continues after the last
// confirmed key instead of starting over; at most one page is published
// twice across a crash.
//
// Options add the operator workflows of docs/resync.md: pausing the live
// stream for the duration and resuming it only once the resync stream is
// applied (not merely published), and deleting remotely the entities the
// state store knows but the snapshot no longer contains.
//
// The snapshot carries the versions the outbox trigger stamps, so an old
// snapshot row never overwrites newer live data: workers compare versions.
package resync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/store"
)

// DefaultPageSize is the number of rows per snapshot page, per confirmed
// publish and per checkpoint.
const DefaultPageSize = 1000

// Spec says what a run reads and what it does besides publishing.
type Spec struct {
	Table     string // table, schema.table allowed on PostgreSQL
	Entity    string // event entity, [a-z][a-z0-9_]*
	KeyColumn string // column whose value is the event key
	// VersionColumn defaults to eventsync_version, stamped by the outbox
	// trigger, so snapshot and live versions come from one counter.
	VersionColumn string
	// Where is an optional SQL condition (trusted operator configuration).
	Where string
	// Columns and ExcludeColumns filter the event data like the trigger's.
	Columns        []string
	ExcludeColumns []string
	// PageSize is rows per page; default DefaultPageSize.
	PageSize int
	// RunID names the run and its checkpoint; default DefaultRunID(spec),
	// so the same command finds its checkpoint again.
	RunID string
	// Restart ignores an existing checkpoint and starts from the first key.
	Restart bool
	// DryRun counts rows and reports what would happen; it publishes
	// nothing and writes nothing.
	DryRun bool
	// PauseLive pauses the live stream for every worker at the start and
	// resumes it once the resync stream is drained (needs WithDrain).
	PauseLive bool
	// DeleteMissing looks, after a complete run, for entities the state
	// store knows that the table no longer has (needs WithStore). Without
	// ApplyDeletes it only reports them.
	DeleteMissing bool
	ApplyDeletes  bool
}

// WithDefaults fills VersionColumn, PageSize and RunID.
func (s Spec) WithDefaults() Spec {
	if s.VersionColumn == "" {
		s.VersionColumn = source.VersionColumn
	}
	if s.PageSize <= 0 {
		s.PageSize = DefaultPageSize
	}
	if s.RunID == "" {
		s.RunID = DefaultRunID(s)
	}
	return s
}

// Validate checks the spec (after WithDefaults).
func (s Spec) Validate() error {
	var errs []error
	if err := s.snapshotSpec("").Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := validateRunID(s.RunID); err != nil {
		errs = append(errs, err)
	}
	if s.ApplyDeletes && !s.DeleteMissing {
		errs = append(errs, setting.Errorf("resync.delete_missing", "ApplyDeletes without DeleteMissing: it only confirms the deletes DeleteMissing finds"))
	}
	return errors.Join(errs...)
}

func (s Spec) snapshotSpec(after string) source.SnapshotSpec {
	return source.SnapshotSpec{
		Table: s.Table, Entity: s.Entity, KeyColumn: s.KeyColumn, VersionColumn: s.VersionColumn,
		Where: s.Where, AfterKey: after, PageSize: s.PageSize,
		Columns: s.Columns, ExcludeColumns: s.ExcludeColumns,
	}
}

// StatsReader reads a stream's queue statistics; bus.Bus implements it.
type StatsReader interface {
	Stats(ctx context.Context, stream bus.Stream) (bus.StreamStats, error)
}

// Scanner lists the keys the state store knows; store.Store implements it.
type Scanner interface {
	Scan(ctx context.Context, entity string, fn func(store.Key, store.State) error) error
}

// Phase is what a run is doing when it reports progress.
type Phase string

const (
	PhaseSnapshot      Phase = "snapshot"
	PhaseDeleteMissing Phase = "delete-missing"
	PhaseDrain         Phase = "drain"
)

// Progress is reported after every confirmed page and while waiting.
type Progress struct {
	RunID string
	Phase Phase
	// Rows and Total count the whole run, over all its segments.
	Rows, Total int64
	// SegmentRows are the rows this process published.
	SegmentRows int64
	// Rate is SegmentRows per second of this process's snapshot phase.
	Rate float64
	// ETA is the expected time to the end of the snapshot; -1 if unknown.
	ETA     time.Duration
	Elapsed time.Duration
	// Drain describes the resync stream while Phase is PhaseDrain.
	Drain DrainStatus
}

// DrainStatus is one observation of the resync stream and its workers.
type DrainStatus struct {
	Ready     int64 // waiting in the queue
	Delayed   int64 // waiting for a retry, -1 if the bus cannot tell
	InFlight  int64 // being applied, summed over worker heartbeats
	Consumers int   // consumers on the queue
	Workers   int   // workers whose heartbeat covers the resync stream
}

// Result is what a run did.
type Result struct {
	RunID  string `json:"run_id"`
	DryRun bool   `json:"dry_run"`
	// Resumed is true when the run continued after ResumedAfter.
	Resumed      bool   `json:"resumed"`
	ResumedAfter string `json:"resumed_after,omitempty"`
	// PreviousDone is true when the run id's previous run had completed,
	// so this one started again from the first key.
	PreviousDone bool `json:"previous_done"`
	// SegmentRows are rows published by this call; Rows and Total count
	// the whole run.
	SegmentRows int64 `json:"segment_rows"`
	Rows        int64 `json:"rows"`
	Total       int64 `json:"total"`
	// Remaining is, for a dry run, how many rows a real run would publish.
	Remaining int64         `json:"remaining"`
	Pages     int           `json:"pages"`
	Done      bool          `json:"done"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	// LivePaused is true when this run paused the live stream (and
	// resumed it on return).
	LivePaused bool `json:"live_paused"`
	// DrainWait is how long the resync stream took to drain.
	DrainWait time.Duration  `json:"drain_wait_ns"`
	Missing   *MissingReport `json:"delete_missing,omitempty"`
}

// Option configures Run.
type Option func(*runner) error

// WithLogger sets the logger; nil discards.
func WithLogger(l *slog.Logger) Option {
	return func(r *runner) error {
		if l != nil {
			r.log = l
		}
		return nil
	}
}

// WithProgress calls fn after every confirmed page and while waiting for
// the drain, from one goroutine at a time.
func WithProgress(fn func(Progress)) Option {
	return func(r *runner) error {
		r.progress = fn
		return nil
	}
}

// WithDrain gives the bus statistics that Spec.PauseLive waits on; poll is
// the interval between observations and stable how long the stream must
// stay drained (at least one worker heartbeat period, 2 s) before live
// resumes. Zero durations keep the defaults of 1 s and 3 s.
func WithDrain(stats StatsReader, poll, stable time.Duration) Option {
	return func(r *runner) error {
		if stats == nil {
			return errors.New("resync: WithDrain needs the bus statistics")
		}
		if poll < 0 || stable < 0 {
			return errors.New("resync: drain poll and stable durations must not be negative")
		}
		r.stats = stats
		if poll > 0 {
			r.drainPoll = poll
		}
		if stable > 0 {
			r.drainStable = stable
		}
		return nil
	}
}

// WithStore gives the state store that Spec.DeleteMissing scans.
func WithStore(sc Scanner) Option {
	return func(r *runner) error {
		if sc == nil {
			return errors.New("resync: WithStore needs a state store")
		}
		r.scanner = sc
		return nil
	}
}

// WithOwner names this process in checkpoints and the pause record;
// default host-pid.
func WithOwner(owner string) Option {
	return func(r *runner) error {
		if owner == "" {
			return errors.New("resync: owner must not be empty")
		}
		r.owner = owner
		return nil
	}
}

type runner struct {
	src      source.Source
	pub      bus.Publisher
	ctl      store.Control
	spec     Spec
	log      *slog.Logger
	progress func(Progress)
	stats    StatsReader
	scanner  Scanner
	owner    string
	tracer   trace.Tracer // nil: tracing off

	drainPoll, drainStable time.Duration

	cp      Checkpoint
	started time.Time // this segment's snapshot start
	segRows int64
	pages   int
}

// Run performs one resync run (or one segment of it, when it resumes a
// checkpoint) and returns what it did. ctl holds the checkpoint and the
// pause flag; it is usually the state store. A run that fails before it
// starts (an invalid spec, a table the source does not have, a run id
// taken by other settings) returns a Result whose empty RunID tells it
// from an interrupted run.
func Run(ctx context.Context, src source.Source, pub bus.Publisher, ctl store.Control, spec Spec, opts ...Option) (Result, error) {
	host, _ := os.Hostname()
	r := &runner{
		src: src, pub: pub, ctl: ctl, spec: spec.WithDefaults(),
		log:       slog.New(slog.DiscardHandler),
		owner:     fmt.Sprintf("%s-%d", host, os.Getpid()),
		drainPoll: time.Second, drainStable: 3 * time.Second,
	}
	for _, o := range opts {
		if err := o(r); err != nil {
			return Result{}, err
		}
	}
	if src == nil || ctl == nil || (pub == nil && !r.spec.DryRun) {
		return Result{}, errors.New("resync: a source, a publisher and a control store are required")
	}
	if err := r.spec.Validate(); err != nil {
		return Result{}, fmt.Errorf("resync: %w", err)
	}
	if err := r.checkTable(ctx); err != nil {
		return Result{}, err
	}
	if r.spec.PauseLive && r.stats == nil {
		return Result{}, errors.New("resync: pausing live needs the bus statistics to know when the resync stream is drained (WithDrain)")
	}
	if r.spec.DeleteMissing && r.scanner == nil {
		return Result{}, errors.New("resync: DeleteMissing needs the state store (WithStore)")
	}
	return r.run(ctx)
}

// checkTable fails a run whose table, columns or where condition the
// source rejects before anything else happens: no checkpoint read, no
// pause, nothing published. A condition that is constant false lets the
// database check the whole query without reading a row.
func (r *runner) checkTable(ctx context.Context) error {
	spec := r.spec.snapshotSpec("")
	spec.Where = "1=0"
	if strings.TrimSpace(r.spec.Where) != "" {
		spec.Where += " AND (" + r.spec.Where + ")"
	}
	_, err := r.src.Count(ctx, spec)
	switch {
	case errors.Is(err, source.ErrTableNotFound):
		return setting.Errorf("resync.table", "resync: %w", err)
	case err != nil:
		return fmt.Errorf("resync %s: %w", r.spec.Table, err)
	}
	return nil
}

func (r *runner) run(ctx context.Context) (res Result, err error) {
	begin := time.Now()
	res.RunID, res.DryRun = r.spec.RunID, r.spec.DryRun
	defer func() { res.Elapsed = time.Since(begin) }()

	if err := r.loadOrStart(ctx, &res); err != nil {
		return Result{}, err // not started: no run id, see Run
	}
	remaining, err := r.src.Count(ctx, r.spec.snapshotSpec(r.cp.LastKey))
	if err != nil {
		return res, r.explain(fmt.Errorf("count rows of %s: %w", r.spec.Table, err))
	}
	r.cp.Total = r.cp.Rows + remaining
	res.Total, res.Rows, res.Remaining = r.cp.Total, r.cp.Rows, remaining

	if r.spec.DryRun {
		r.log.Info("dry run: nothing published", "run", r.spec.RunID, "rows", remaining, "resume_after", r.cp.LastKey)
		if r.spec.DeleteMissing {
			rep, err := r.findMissing(ctx, false)
			res.Missing = rep
			if err != nil {
				return res, err
			}
		}
		return res, nil
	}

	if r.spec.PauseLive {
		resume, err := r.pauseLive(ctx)
		if err != nil {
			return res, err
		}
		res.LivePaused = resume != nil
		if resume != nil {
			defer resume()
		}
	}

	if err := r.publishSnapshot(ctx); err != nil {
		res.Rows, res.SegmentRows, res.Pages = r.cp.Rows, r.segRows, r.pages
		return res, err
	}
	res.Rows, res.SegmentRows, res.Pages, res.Total = r.cp.Rows, r.segRows, r.pages, r.cp.Total
	res.Done = true
	r.log.Info("resync snapshot published", "run", r.spec.RunID, "rows", r.cp.Rows, "this_process", r.segRows, "elapsed", time.Since(r.started).Round(time.Millisecond))

	if r.spec.DeleteMissing {
		rep, err := r.findMissing(ctx, r.spec.ApplyDeletes)
		res.Missing = rep
		if err != nil {
			return res, err
		}
	}
	if r.spec.PauseLive {
		waited, err := r.waitDrained(ctx)
		res.DrainWait = waited
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// loadOrStart reads the run's checkpoint and decides where to start.
func (r *runner) loadOrStart(ctx context.Context, res *Result) error {
	hash := specHash(r.spec)
	fresh := Checkpoint{
		RunID: r.spec.RunID, SpecHash: hash, Table: r.spec.Table, Entity: r.spec.Entity,
		Segments: 1, Started: time.Now().UTC(), Owner: r.owner,
	}
	r.cp = fresh
	if r.spec.Restart {
		return nil
	}
	cp, ok, err := LoadCheckpoint(ctx, r.ctl, r.spec.RunID)
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	if cp.SpecHash != hash {
		// Either setting fixes it: another run id, or restarting this one.
		return &setting.Error{Key: "resync.run_id", Err: setting.Errorf("resync.restart",
			"resync: run %q was started for table %s (entity %s) with other settings (key, version column, where or columns); choose another run id, or restart that run over with these settings",
			cp.RunID, cp.Table, cp.Entity)}
	}
	if cp.Done {
		res.PreviousDone = true
		finished := "earlier"
		if cp.Finished != nil {
			finished = cp.Finished.Format(time.RFC3339)
		}
		r.log.Info("the previous run with this id completed; starting a new run from the first key", "run", cp.RunID, "finished", finished, "rows", cp.Rows)
		return nil
	}
	cp.Segments++
	cp.Owner = r.owner
	r.cp = cp
	res.Resumed, res.ResumedAfter = cp.LastKey != "", cp.LastKey
	r.log.Info("resuming resync from its checkpoint", "run", cp.RunID, "after_key", cp.LastKey, "rows_done", cp.Rows, "segment", cp.Segments)
	return nil
}

// publishSnapshot reads the snapshot and publishes it page by page. The
// next page is read while the previous one is being published, but a page
// is only published once the previous one is confirmed and checkpointed:
// at most one page is unconfirmed at any time, which bounds what a crash
// publishes twice.
func (r *runner) publishSnapshot(ctx context.Context) error {
	r.started = time.Now()
	r.cp.Updated = time.Now().UTC()
	if err := saveCheckpoint(ctx, r.ctl, r.cp); err != nil {
		return err
	}
	r.report(PhaseSnapshot, DrainStatus{})

	var pending chan error
	wait := func() error {
		if pending == nil {
			return nil
		}
		err := <-pending
		pending = nil
		return err
	}
	snapErr := r.src.Snapshot(ctx, r.spec.snapshotSpec(r.cp.LastKey), func(page []event.Event, lastKey string) error {
		msgs, err := r.encode(page)
		if err != nil {
			return err
		}
		if err := wait(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err // interrupted: publish nothing that would not be checkpointed
		}
		done := make(chan error, 1)
		pending = done
		go func() { done <- r.publishPage(ctx, msgs, lastKey) }()
		return nil
	})
	if err := wait(); err != nil && snapErr == nil {
		snapErr = err
	}
	if snapErr != nil {
		return r.explain(snapErr)
	}
	now := time.Now().UTC()
	r.cp.Done, r.cp.Finished, r.cp.Updated = true, &now, now
	if r.cp.Rows > r.cp.Total {
		r.cp.Total = r.cp.Rows // rows inserted between Count and the snapshot
	}
	return saveCheckpoint(context.WithoutCancel(ctx), r.ctl, r.cp)
}

// publishPage publishes one page with confirms, then checkpoints it. The
// checkpoint is written even when ctx ended after the confirm, so an
// interrupted run does not publish a confirmed page again.
func (r *runner) publishPage(ctx context.Context, msgs []bus.Message, lastKey string) (err error) {
	if r.tracer != nil {
		var span trace.Span
		ctx, span = r.tracePage(ctx, msgs, lastKey)
		defer func() { endPage(span, err) }()
	}
	if err := r.pub.Publish(ctx, bus.Resync, msgs...); err != nil {
		return fmt.Errorf("publish %d resync events after key %q: %w", len(msgs), r.cp.LastKey, err)
	}
	r.cp.LastKey = lastKey
	r.cp.Rows += int64(len(msgs))
	r.cp.Updated = time.Now().UTC()
	r.segRows += int64(len(msgs))
	r.pages++
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := saveCheckpoint(saveCtx, r.ctl, r.cp); err != nil {
		return err
	}
	r.report(PhaseSnapshot, DrainStatus{})
	return nil
}

// encode turns a snapshot page into resync events with stable ids.
func (r *runner) encode(page []event.Event) ([]bus.Message, error) {
	msgs := make([]bus.Message, len(page))
	for i, ev := range page {
		ev.ID = "resync-" + r.spec.RunID + "-" + ev.Key
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encode %s key %q: %w", r.spec.Table, ev.Key, err)
		}
		msgs[i] = bus.Message{Body: b}
	}
	return msgs, nil
}

func (r *runner) report(phase Phase, drain DrainStatus) {
	if r.progress == nil {
		return
	}
	elapsed := time.Since(r.started)
	p := Progress{
		RunID: r.spec.RunID, Phase: phase, Rows: r.cp.Rows, Total: r.cp.Total,
		SegmentRows: r.segRows, Elapsed: elapsed, ETA: -1, Drain: drain,
	}
	if phase == PhaseSnapshot && elapsed > 0 {
		p.Rate = float64(r.segRows) / elapsed.Seconds()
		if p.Rate > 0 && p.Total >= p.Rows {
			p.ETA = time.Duration(float64(p.Total-p.Rows) / p.Rate * float64(time.Second))
		}
	}
	r.progress(p)
}

// ErrNullVersion is matched (errors.Is) when a snapshot row has no version.
var ErrNullVersion = errors.New("a snapshot row has a NULL version")

// explain adds the fix to errors an operator can cause.
func (r *runner) explain(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// Both adapters scan the version into an int64; a NULL fails the scan
	// with a driver message that mentions NULL.
	if strings.Contains(err.Error(), "NULL") && !strings.Contains(err.Error(), "not-null") {
		return setting.Errorf("resync.version_col", "resync %s: %w (column %s): every row needs a version; run \"eventsync outbox install-trigger\" for the table (it adds and stamps %s on every row), or take as version column a NOT NULL column that increases with every change (%v)",
			r.spec.Table, ErrNullVersion, r.spec.VersionColumn, source.VersionColumn, err)
	}
	return fmt.Errorf("resync %s: %w", r.spec.Table, err)
}

// pauseLive sets the live pause flag unless an operator already paused
// live, and returns the function that resumes it (nil when the pause is
// not ours to lift).
func (r *runner) pauseLive(ctx context.Context) (func(), error) {
	existing, err := control.Paused(ctx, r.ctl, bus.Live)
	if err != nil {
		return nil, err
	}
	reason := "resync " + r.spec.RunID
	by := reason + " (" + r.owner + ")" // what "ctl status" shows
	switch {
	case existing != nil && existing.Reason == reason:
		// This run paused live and its process died before resuming it:
		// the run that picks up its checkpoint finishes the job.
		by = existing.By
		r.log.Info("live is still paused by an earlier process of this run; resuming it when this one ends", "by", existing.By)
	case existing != nil:
		r.log.Warn("live is already paused; leaving it paused after the resync (resume it with \"eventsync ctl resume --stream live\")", "by", existing.By, "reason", existing.Reason)
		return nil, nil
	default:
		if err := control.SetPaused(ctx, r.ctl, bus.Live, true, by, reason); err != nil {
			return nil, err
		}
		r.log.Info("paused the live stream for every worker", "reason", reason)
	}
	return func() {
		// Always resume, also after an error or an interrupt.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		// Only lift our own pause: an operator may have taken over.
		if p, err := control.Paused(rctx, r.ctl, bus.Live); err == nil && p != nil && (p.By != by || p.Reason != reason) {
			r.log.Warn("live was re-paused by someone else; leaving it paused", "by", p.By, "reason", p.Reason)
			return
		}
		if err := control.SetPaused(rctx, r.ctl, bus.Live, false, by, ""); err != nil {
			r.log.Error("could not resume the live stream; run \"eventsync ctl resume --stream live\"", "err", err)
			return
		}
		r.log.Info("resumed the live stream")
	}, nil
}

// sortedSample returns up to n keys, sorted.
func sortedSample(keys []string, n int) []string {
	slices.Sort(keys)
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}
