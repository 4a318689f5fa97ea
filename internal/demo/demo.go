// Package demo runs the whole of eventsync in one process on a machine that
// has only Go: an embedded NATS JetStream bus and state store, a SQLite
// "application database" whose listings table a workload keeps changing,
// the outbox relay, several workers, and the fake third-party API with
// realistic faults. Between the bus and the workers a chaos layer duplicates
// and reorders deliveries; half way through, live is paused and the whole
// table is resynced. At the end the system drains, the table is compared
// with the API's records, and Report says whether everything converged
// without a duplicate record or an overlapping write.
package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store/natskv"
	"github.com/eventsync/eventsync/throttle"
)

// Names the demo uses; Namespace is eventsync's default, so the other
// subcommands find the demo's streams and state given just its data directory.
const (
	Namespace  = "eventsync"
	Table      = "listings"
	Entity     = "listing"
	Collection = "listings"
	markerFile = ".eventsync-demo"
)

// Columns the trigger leaves out of events: the key travels as the event
// key (stored remotely as external_id, since the API owns the field "id"),
// and owner_email is a secret that must never leave the database.
var (
	excludedColumns = []string{"id", "owner_email"}
	secretColumns   = []string{"owner_email"}
)

// Phases shown in the progress line.
const (
	PhaseStarting    = "starting"
	PhaseInitialSync = "initial sync"
	PhaseLive        = "live"
	PhaseResync      = "live paused: resync"
	PhaseDraining    = "draining"
	PhaseVerifying   = "verifying"
	PhaseDone        = "done"
)

// demo is one run's wiring. Every goroutine it starts is owned by Run and
// stopped before Run returns.
type demo struct {
	cfg     Config
	plan    FaultPlan
	log     *slog.Logger
	dataDir string
	logFile string
	started time.Time

	srv       *embedded.Server
	ctrlBus   *natsjs.Bus
	ctrlStore *natskv.Store
	api       *fakeapi.Running
	src       *sqlite.Source
	app       *sql.DB
	relay     *eventsync.Relay
	workers   []*eventsync.Worker
	chaos     *chaos
	workload  *workload
	spec      source.SnapshotSpec
	closers   []func()

	phase           atomic.Pointer[string]
	resyncTotal     atomic.Int64
	resyncPublished atomic.Int64
	resyncDone      atomic.Bool
}

func (d *demo) setPhase(p string) { d.phase.Store(&p) }

func (d *demo) currentPhase() string {
	if p := d.phase.Load(); p != nil {
		return *p
	}
	return PhaseStarting
}

func (d *demo) onClose(f func()) { d.closers = append(d.closers, f) }

func (d *demo) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// Run runs the demo and returns its report. An error means the demo could
// not run at all (a bad data dir, an interrupt); a run whose system did not
// converge returns a report whose OK is false.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	plan, _ := Plan(cfg.Faults)
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	d := &demo{cfg: cfg, plan: plan, started: time.Now()}
	d.setPhase(PhaseStarting)
	defer d.close()
	if err := d.prepareDataDir(); err != nil {
		return nil, err
	}
	if err := d.setup(ctx); err != nil {
		return nil, err
	}
	report, err := d.run(ctx)
	if err != nil {
		return nil, err
	}
	return report, nil
}

// prepareDataDir creates a temporary directory or clears the given one,
// refusing to clear a directory the demo did not make.
func (d *demo) prepareDataDir() error {
	dir := d.cfg.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "eventsync-demo-")
		if err != nil {
			return setting.Errorf("data_dir", "create a temporary data dir: %w; give a writable data directory", err)
		}
		dir = tmp
	} else {
		entries, err := os.ReadDir(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return setting.Errorf("data_dir", "create the data dir %s: %w; choose a writable directory", dir, err)
			}
		case err != nil:
			return setting.Errorf("data_dir", "read the data dir %s: %w", dir, err)
		case len(entries) > 0:
			if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
				return setting.Errorf("data_dir", "data dir %s is not empty and was not made by \"eventsync demo\"; refusing to clear it: choose a new or empty directory", dir)
			}
			for _, e := range entries {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					return setting.Errorf("data_dir", "clear the data dir %s: %w", dir, err)
				}
			}
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return setting.Errorf("data_dir", "resolve the data dir %s: %w", dir, err)
	}
	d.dataDir = abs
	if err := os.WriteFile(filepath.Join(abs, markerFile), []byte("made by eventsync demo; the next demo run with this data directory clears it\n"), 0o640); err != nil {
		return setting.Errorf("data_dir", "write to the data dir %s: %w; choose a writable directory", abs, err)
	}
	d.log = d.cfg.Logger
	if d.log == nil {
		d.logFile = filepath.Join(abs, "demo.log")
		f, err := os.Create(d.logFile)
		if err != nil {
			return fmt.Errorf("create the log file: %w", err)
		}
		d.onClose(func() { _ = f.Close() })
		d.log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return nil
}

// setup starts the servers and opens every connection.
func (d *demo) setup(ctx context.Context) error {
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: filepath.Join(d.dataDir, "nats"), Logger: d.log})
	if err != nil {
		return err
	}
	d.srv = srv
	d.onClose(srv.Shutdown)
	conn := func(name string) (*nats.Conn, error) {
		nc, err := srv.Connect(nats.Name(name))
		if err != nil {
			return nil, fmt.Errorf("connect to the embedded NATS server: %w", err)
		}
		d.onClose(nc.Close)
		return nc, nil
	}
	openBus := func(name string) (*natsjs.Bus, error) {
		nc, err := conn(name)
		if err != nil {
			return nil, err
		}
		b, err := natsjs.Open(ctx, natsjs.Config{Conn: nc, Namespace: Namespace, Logger: d.log})
		if err != nil {
			return nil, err
		}
		d.onClose(func() { _ = b.Close() })
		return b, nil
	}
	openStore := func(name string) (*natskv.Store, error) {
		nc, err := conn(name)
		if err != nil {
			return nil, err
		}
		st, err := natskv.Open(ctx, natskv.Config{Conn: nc, Bucket: Namespace, Logger: d.log})
		if err != nil {
			return nil, err
		}
		d.onClose(func() { _ = st.Close() })
		return st, nil
	}
	if d.ctrlBus, err = openBus("demo-control-bus"); err != nil {
		return err
	}
	if d.ctrlStore, err = openStore("demo-control-store"); err != nil {
		return err
	}

	d.api, err = fakeapi.Start(ctx, fakeapi.Config{
		Listen:    "127.0.0.1:0",
		Faults:    d.plan.API,
		StateFile: filepath.Join(d.dataDir, "fakeapi.json"),
		Seed:      d.cfg.Seed,
		Logger:    d.log,
	})
	if err != nil {
		return fmt.Errorf("start the fake API: %w", err)
	}
	d.onClose(func() {
		if err := d.api.Close(); err != nil {
			d.log.Warn("closing the fake API", "err", err)
		}
	})

	dbPath := filepath.Join(d.dataDir, "app.db")
	if d.app, err = openAppDB(ctx, dbPath); err != nil {
		return err
	}
	d.onClose(func() { _ = d.app.Close() })
	if d.src, err = sqlite.Open(ctx, sqlite.Config{Path: dbPath, Logger: d.log}); err != nil {
		return err
	}
	d.onClose(func() { _ = d.src.Close() })
	if err := d.src.Install(ctx); err != nil {
		return fmt.Errorf("install the outbox: %w", err)
	}
	if err := d.src.InstallTrigger(ctx, source.TriggerSpec{Table: Table, Entity: Entity, KeyColumn: "id", ExcludeColumns: excludedColumns}); err != nil {
		return fmt.Errorf("install the listings trigger: %w", err)
	}
	d.spec = source.SnapshotSpec{Table: Table, Entity: Entity, KeyColumn: "id", ExcludeColumns: excludedColumns, PageSize: 1000}

	relayBus, err := openBus("demo-relay")
	if err != nil {
		return err
	}
	relayClient, err := eventsync.Open(eventsync.Config{Namespace: Namespace}, eventsync.WithBus(relayBus), eventsync.WithSource(d.src), eventsync.WithLogger(d.log))
	if err != nil {
		return err
	}
	d.onClose(func() { _ = relayClient.Close() })
	d.relay, err = relayClient.NewRelay(ctx, eventsync.RelayConfig{
		BatchSize:       500,
		Concurrency:     1, // SQLite has one writer at a time
		PollInterval:    100 * time.Millisecond,
		BacklogInterval: time.Second,
	})
	if err != nil {
		return err
	}

	d.chaos = &chaos{plan: d.plan, seed: d.cfg.Seed}
	// The demo's workers share one process, so one in-memory limiter is
	// their cluster-wide budget, as the state store's is for a fleet.
	budget := throttle.NewMemoryLimiter(nil)
	cfg := eventsync.Config{
		Namespace: Namespace,
		Sink: httpsink.Config{
			Defaults:      httpsink.Defaults{BaseURL: d.api.URL, Timeout: d.plan.SinkTimeout},
			EntityConfigs: map[string]httpsink.EntityConfig{Entity: {Collection: Collection}},
		},
		// Short probe interval: the demo's outages last seconds.
		Throttle: eventsync.ThrottleConfig{Config: throttle.Config{ProbeInterval: time.Second}},
		Worker: eventsync.WorkerConfig{
			Streams:     []string{string(bus.Live), string(bus.Resync)},
			Concurrency: d.cfg.Concurrency,
			// Three sink calls of at most SinkTimeout each, with room.
			LeaseTTL: max(10*time.Second, 4*d.plan.SinkTimeout),
			// Short backoffs and breaker pauses: the demo's faults are brief
			// and its audience is waiting. Production keeps the defaults.
			BackoffBase:       200 * time.Millisecond,
			BackoffMax:        5 * time.Second,
			LockedRetryDelay:  250 * time.Millisecond,
			ControlPoll:       200 * time.Millisecond,
			ShutdownGrace:     5 * time.Second,
			BreakerFails:      10,
			BreakerOpenFor:    500 * time.Millisecond,
			BreakerMaxOpenFor: 4 * time.Second,
		},
	}
	for i := range d.cfg.Workers {
		id := fmt.Sprintf("demo-worker-%d", i+1)
		b, err := openBus(id + "-bus")
		if err != nil {
			return err
		}
		st, err := openStore(id + "-store")
		if err != nil {
			return err
		}
		// One client per worker: each has its own connections, chaos and
		// throttle, as a process of a fleet would, sharing the budget.
		client, err := eventsync.Open(cfg, eventsync.WithBus(d.chaos.wrap(b)), eventsync.WithStore(st),
			eventsync.WithLimiter(budget), eventsync.WithLogger(d.log))
		if err != nil {
			return err
		}
		d.onClose(func() { _ = client.Close() })
		w, err := client.NewWorker(ctx, eventsync.WithWorkerID(id))
		if err != nil {
			return err
		}
		d.workers = append(d.workers, w)
	}
	return nil
}

// run drives the phases and builds the report.
func (d *demo) run(ctx context.Context) (*Report, error) {
	r := &Report{
		Seed: d.cfg.Seed, Faults: d.cfg.Faults, Entities: d.cfg.Entities, Duration: d.cfg.Duration,
		Rate: d.cfg.Rate, Workers: d.cfg.Workers, Concurrency: d.cfg.Concurrency,
		DataDir: d.dataDir, LogFile: d.logFile, APIURL: d.api.URL,
	}
	// Components run until stop; they outlive ctx only as long as it takes
	// to stop them below.
	runCtx, stop := context.WithCancel(ctx)
	var components sync.WaitGroup
	defer func() {
		stop()
		components.Wait()
	}()
	components.Add(1 + len(d.workers))
	go func() {
		defer components.Done()
		if err := d.relay.Run(runCtx); err != nil {
			d.log.Error("relay stopped", "err", err)
		}
	}()
	for _, w := range d.workers {
		go func() {
			defer components.Done()
			if err := w.Run(runCtx); err != nil {
				d.log.Error("worker stopped", "err", err)
			}
		}()
	}
	progress := newProgress(d)
	progress.start(runCtx)
	defer progress.stop()

	// Initial sync: the existing rows, inserted now, reach the API.
	d.setPhase(PhaseInitialSync)
	syncStart := time.Now()
	if err := seedListings(ctx, d.app, d.cfg.Entities, rand.New(rand.NewPCG(d.cfg.Seed, 1))); err != nil {
		return nil, err
	}
	if err := d.waitQuiet(ctx, d.cfg.DrainTimeout, bus.Live); err != nil {
		if ctx.Err() != nil {
			return nil, interrupted(ctx)
		}
		r.problem("initial sync did not finish: %v", err)
	}
	r.InitialSync = Timing{Events: int64(d.cfg.Entities), Took: time.Since(syncStart)}

	// Live: the application writes; outages and, half way, the resync.
	d.setPhase(PhaseLive)
	wl, err := newWorkload(ctx, d.app, d.cfg.Entities, d.cfg.Seed, d.log)
	if err != nil {
		return nil, err
	}
	defer wl.close()
	d.workload = wl
	workCtx, stopWork := context.WithTimeout(ctx, d.cfg.Duration)
	defer stopWork()
	var background sync.WaitGroup
	background.Add(2)
	go func() {
		defer background.Done()
		d.workload.run(workCtx, d.cfg.Rate)
	}()
	go func() {
		defer background.Done()
		d.runOutages(workCtx)
	}()
	workStart := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(d.cfg.Duration / 2):
	}
	if ctx.Err() == nil {
		r.Resync = d.resync(ctx)
		if r.Resync.Problem != "" {
			r.problem("resync: %s", r.Resync.Problem)
		}
	}
	<-workCtx.Done()
	background.Wait()
	if ctx.Err() != nil {
		return nil, interrupted(ctx)
	}
	r.WorkloadTook = time.Since(workStart)

	// Drain: every outbox row published, every event applied.
	d.setPhase(PhaseDraining)
	drainStart := time.Now()
	if err := d.waitQuiet(ctx, d.cfg.DrainTimeout, bus.Live, bus.Resync); err != nil {
		if ctx.Err() != nil {
			return nil, interrupted(ctx)
		}
		r.problem("the system did not drain within %s: %v (see %s)", d.cfg.DrainTimeout, err, d.logName())
	}
	r.DrainTook = time.Since(drainStart)
	r.ActiveTook = time.Since(syncStart)
	stop()
	components.Wait()
	progress.stop()

	d.setPhase(PhaseVerifying)
	d.fill(ctx, r)
	verdict, err := d.verifyAPI(ctx)
	if err != nil {
		return nil, err
	}
	r.Verdict = verdict
	parked, err := d.ctrlBus.ListParked(ctx, bus.ParkedFilter{})
	if err != nil {
		r.problem("listing parked events: %v", err)
	}
	r.Parked = len(parked)
	for _, p := range parked[:min(3, len(parked))] {
		r.ParkedReasons = append(r.ParkedReasons, p.Reason)
	}
	d.setPhase(PhaseDone)
	r.Elapsed = time.Since(d.started)
	r.judge()
	return r, nil
}

func interrupted(ctx context.Context) error {
	return fmt.Errorf("demo interrupted: %w", context.Cause(ctx))
}

func (d *demo) logName() string {
	if d.logFile == "" {
		return "the logs"
	}
	return d.logFile
}

// runOutages starts the plan's API outages at their times.
func (d *demo) runOutages(ctx context.Context) {
	start := time.Now()
	for _, o := range d.plan.Outages {
		at := time.Duration(float64(d.cfg.Duration) * o.At)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		d.log.Info("demo: starting an API outage", "for", o.For)
		d.api.StartOutage(o.For)
	}
}

// resync runs eventsync's resync (the same code as `eventsync resync
// --pause-live`): pause live for every worker, publish one consistent
// snapshot of the whole table to the resync stream with confirms, wait
// until every resync event was applied (not merely published), resume live.
// Live events pile up meanwhile and are applied afterwards; versions keep
// old snapshot data from winning.
func (d *demo) resync(ctx context.Context) ResyncReport {
	d.setPhase(PhaseResync)
	defer d.setPhase(PhaseLive)
	start := time.Now()
	rep := ResyncReport{Started: start.Sub(d.started)}
	client, err := eventsync.Open(eventsync.Config{Namespace: Namespace}, eventsync.WithBus(d.ctrlBus),
		eventsync.WithStore(d.ctrlStore), eventsync.WithSource(d.src), eventsync.WithLogger(d.log))
	if err != nil {
		rep.Problem = err.Error()
		return rep
	}
	defer func() { _ = client.Close() }()
	run, err := client.NewResync(eventsync.ResyncSpec{
		Table: Table, Entity: Entity, KeyColumn: "id", ExcludeColumns: excludedColumns,
		PageSize:  1000,
		PauseLive: true,
	}, eventsync.ResyncOptions{
		Owner: "demo",
		// Drained means: nothing unacknowledged on the stream (delayed
		// retries included) and every worker's heartbeat, renewed every 2s,
		// showing nothing in flight and nothing settled since.
		DrainPoll: 250 * time.Millisecond, DrainStable: 2 * time.Second,
		Progress: func(p eventsync.ResyncProgress) {
			d.resyncTotal.Store(p.Total)
			d.resyncPublished.Store(p.Rows)
		},
	})
	if err == nil {
		err = run.Run(ctx)
	}
	var res eventsync.ResyncResult
	if run != nil {
		res = run.Result()
	}
	rep.Counted, rep.Published = res.Total, res.Rows
	if err != nil {
		rep.Problem = err.Error()
		return rep
	}
	if !res.Done || !res.LivePaused {
		rep.Problem = fmt.Sprintf("resync ended without finishing (done %v, live paused %v)", res.Done, res.LivePaused)
		return rep
	}
	rep.Complete = true
	rep.Took = time.Since(start)
	// Live resumed a moment ago; what waits now piled up during the resync.
	if n, err := d.ctrlBus.Unsettled(ctx, bus.Live); err == nil {
		rep.LivePiledUp = n
	}
	d.resyncDone.Store(true)
	return rep
}

// waitQuiet waits until the outbox has no unsent rows (when live is among
// streams) and every stream holds no unsettled message, with nothing in
// flight in any worker, seen twice in a row so a message between two
// places is not missed.
func (d *demo) waitQuiet(ctx context.Context, timeout time.Duration, streams ...bus.Stream) error {
	quiet := 0
	return d.waitFor(ctx, timeout, func() error {
		err := d.quiet(ctx, streams)
		if err != nil {
			quiet = 0
			return err
		}
		if quiet++; quiet < 2 {
			return errors.New("settling")
		}
		return nil
	})
}

func (d *demo) quiet(ctx context.Context, streams []bus.Stream) error {
	for _, s := range streams {
		if s == bus.Live {
			bl, err := d.src.Backlog(ctx)
			if err != nil {
				return err
			}
			if bl.Rows > 0 {
				return fmt.Errorf("%d outbox rows not yet published", bl.Rows)
			}
		}
		n, err := d.ctrlBus.Unsettled(ctx, s)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d %s events not yet applied", n, s)
		}
		for _, w := range d.workers {
			if in := w.Status().InFlight[s]; in > 0 {
				return fmt.Errorf("%d %s events in flight", in, s)
			}
		}
	}
	return nil
}

// waitFor polls cond until it returns nil, ctx ends or timeout passes;
// the error is cond's last.
func (d *demo) waitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
