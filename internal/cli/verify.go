package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/throttle"
)

// Exit codes of "eventsync verify".
const (
	verifyConverged = 0
	verifyDiverged  = 1
	verifyCannot    = 2
)

type verifyFlags struct {
	conn       connFlags
	entity     string
	table      string
	key        string
	columns    string
	exclude    string
	where      string
	expected   string
	fakeAPI    string
	collection string
	ignore     string
	jsonOut    bool
	samples    int
	repair     bool
	dryRun     bool
	stream     string
	deleteDups bool
	yes        bool
}

// verifyOutput is the --json document: the report, plus what --repair and
// --delete-duplicates did when given.
type verifyOutput struct {
	verify.Report
	Repair     *verifyRepairOutput `json:"repair,omitempty"`
	Duplicates *verifyDedupOutput  `json:"delete_duplicates,omitempty"`
}

type verifyRepairOutput struct {
	verify.RepairSummary
	Actions []verify.Action `json:"actions"`
}

type verifyDedupOutput struct {
	verify.DedupSummary
	Actions []verify.DedupAction `json:"actions"`
}

func newVerifyCmd(env Env) *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify --entity E (--source URL --table T --key COL | --expected FILE.ndjson) (--fakeapi URL | --config FILE)",
		Short: "compare the source of truth with the API; report and repair drift",
		Long: `Compare the source of truth (a table, or an NDJSON file of expected states)
with the API's records of one entity, and report what is missing, extra,
differing or duplicated; --repair publishes corrective events and
--delete-duplicates removes surplus records (docs/verify.md).

Exit status, like diff(1): 0 converged, 1 diverged, 2 could not check (bad
flags or configuration included).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd.Context(), env, f) },
	}
	fs := cmd.Flags()
	f.conn.register(fs, flagConfig, flagSource, flagBus, flagStore, flagNamespace, flagDataDir, flagLogLevel)
	fs.StringVar(&f.entity, "entity", "", "entity to compare, e.g. listing")
	fs.StringVar(&f.table, "table", "", "source table holding the entity (with --source)")
	fs.StringVar(&f.key, "key", "", "key column of --table")
	fs.StringVar(&f.columns, "columns", "", "comma-separated columns compared (default: those of the table's outbox trigger, else all; another list is refused)")
	fs.StringVar(&f.exclude, "exclude-columns", "", "comma-separated columns never compared (default: those the table's outbox trigger excludes; another list is refused)")
	fs.StringVar(&f.where, "where", "", "SQL condition selecting the rows that must exist remotely, e.g. \"archived = false\"")
	fs.StringVar(&f.expected, "expected", "", "NDJSON file of expected final states (events; highest version per key wins, a delete means absent) instead of --table")
	fs.StringVar(&f.fakeAPI, "fakeapi", "", "compare with an \"eventsync fakeapi\" at this URL through its record dump, e.g. http://127.0.0.1:8081")
	fs.StringVar(&f.collection, "collection", "", "fake API collection of the entity (default: the sink config's collection, else the entity name plus \"s\")")
	fs.StringVar(&f.ignore, "ignore-fields", strings.Join(verify.DefaultIgnoreFields, ","), "comma-separated fields left out of the comparison (\"\" compares all)")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.IntVar(&f.samples, "sample", verify.DefaultSamples, "keys listed per category")
	fs.BoolVar(&f.repair, "repair", false, "publish a corrective event per missing, differing or extra key to the bus (needs --bus and --store of the workers)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "with --repair or --delete-duplicates: print what would be done, change nothing")
	fs.StringVar(&f.stream, "stream", "live", "stream --repair publishes to: live or resync")
	fs.BoolVar(&f.deleteDups, "delete-duplicates", false, "delete surplus remote records of duplicated keys through the sink (prints the plan; add --yes to act)")
	fs.BoolVar(&f.yes, "yes", false, "with --delete-duplicates: really delete")
	_ = cmd.MarkFlagFilename("expected", "ndjson", "jsonl", "json")
	markRequired(cmd, "entity")
	return cmd
}

// runVerify maps the check's outcome to verify's exit codes. Usage errors
// (flags, configuration) already exit 2 like every command's; verify's 2
// also covers a check that could not be made.
func runVerify(ctx context.Context, env Env, f *verifyFlags) error {
	code, err := f.run(ctx, env)
	if err != nil {
		return &ExitError{Code: verifyCannot, Err: err}
	}
	if code != verifyConverged {
		return &ExitError{Code: code}
	}
	return nil
}

func (f *verifyFlags) validate() error {
	var errs []error
	if f.entity == "" {
		errs = append(errs, errors.New("missing --entity (e.g. --entity listing)"))
	}
	switch {
	case f.expected != "" && f.table != "":
		errs = append(errs, errors.New("--expected and --table both given; compare with either a table (--source, --table, --key) or a file (--expected)"))
	case f.expected == "" && f.table == "":
		errs = append(errs, errors.New("nothing to compare with: set --source URL --table T --key COL, or --expected FILE.ndjson"))
	case f.table != "" && f.key == "":
		errs = append(errs, errors.New("--table needs --key, the column holding the entity's key"))
	case f.expected != "" && (f.key != "" || f.columns != "" || f.exclude != "" || f.where != ""):
		errs = append(errs, errors.New("--key, --columns, --exclude-columns and --where apply to --table, not to --expected"))
	}
	if f.samples < 0 {
		errs = append(errs, fmt.Errorf("--sample %d must not be negative", f.samples))
	}
	if f.dryRun && !f.repair && !f.deleteDups {
		errs = append(errs, errors.New("--dry-run applies to --repair or --delete-duplicates; add one of them"))
	}
	if f.yes && !f.deleteDups {
		errs = append(errs, errors.New("--yes only confirms --delete-duplicates"))
	}
	if f.yes && f.dryRun {
		errs = append(errs, errors.New("--yes and --dry-run contradict each other; drop one"))
	}
	if f.fakeAPI != "" {
		u, err := url.Parse(f.fakeAPI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--fakeapi %q: want the fake API's base URL, e.g. http://127.0.0.1:8081", f.fakeAPI))
		}
	}
	if _, err := bus.ParseStream(f.stream); err != nil {
		errs = append(errs, fmt.Errorf("--stream: %w", err))
	}
	return errors.Join(errs...)
}

// run checks, prints, and repairs when asked; it returns the exit code, or
// an error when the check could not be made.
func (f *verifyFlags) run(ctx context.Context, env Env) (int, error) {
	if err := f.validate(); err != nil {
		return verifyCannot, err
	}
	cfg, err := f.conn.load(env)
	if err != nil {
		return verifyCannot, err
	}
	log := newLogger(env.Stderr, cfg.Log)

	vcfg := verify.Config{Entity: f.entity, Samples: f.samples, IgnoreFields: splitList(f.ignore), Logger: log}
	if vcfg.IgnoreFields == nil {
		vcfg.IgnoreFields = []string{}
	}
	if f.samples == 0 {
		vcfg.Samples = -1 // --sample 0 lists none; the library's 0 means its default
	}
	if f.expected != "" {
		vcfg.Expected = verify.NDJSONFile{Path: f.expected, Entity: f.entity, MaxLineBytes: cfg.Worker.MaxEventBytes}
	} else {
		res, err := openResources(ctx, cfg, log, needSource)
		if err != nil {
			return verifyCannot, err
		}
		defer res.Close()
		vcfg.Expected = verify.Table{Source: res.Source, Spec: source.SnapshotSpec{
			Table: f.table, Entity: f.entity, KeyColumn: f.key, Where: f.where,
			Columns: splitList(f.columns), ExcludeColumns: splitList(f.exclude),
		}}
	}
	remote, sk, err := f.remote(cfg, log)
	if err != nil {
		return verifyCannot, err
	}
	if sk != nil {
		defer sk.Close()
	}
	vcfg.Remote = remote
	vcfg.RemoteName = f.remoteName(cfg)
	if f.fakeAPI != "" && cfg.HasSink() {
		// The fake API serves any collection; the config says which
		// entities exist, so a mistyped --entity is caught.
		vcfg.SinkEntities = cfg.Sink.Entities()
	}

	res, err := verify.Check(ctx, vcfg)
	if err != nil {
		return verifyCannot, err
	}
	f.recordLast(ctx, cfg, log, res.Report)
	out := verifyOutput{Report: res.Report}
	if !f.jsonOut {
		if err := verify.WriteText(env.Stdout, res.Report); err != nil {
			return verifyCannot, err
		}
	}
	if res.Report.Converged {
		return verifyConverged, f.printJSON(env.Stdout, out)
	}
	var actErr error
	if f.repair || f.deleteDups {
		actErr = f.act(ctx, env, cfg, log, res, sk, &out)
	} else if !f.jsonOut {
		fmt.Fprintln(env.Stdout, "Repair: eventsync verify ... --repair --dry-run to preview corrective events, then without --dry-run to publish them.")
	}
	if err := f.printJSON(env.Stdout, out); err != nil {
		return verifyCannot, err
	}
	if actErr != nil {
		return verifyCannot, actErr
	}
	return verifyDiverged, nil
}

// recordLast writes the report to the state store's control space, where
// every console shows it (GET /api/v1/verify), when a store is given. The
// check stands whether or not it is recorded: a failure is a warning.
func (f *verifyFlags) recordLast(ctx context.Context, cfg *config.Config, log *slog.Logger, rep verify.Report) {
	if cfg.Store == "" && cfg.DataDir == "" {
		log.Debug("verify: no --store given; the report is not recorded for the console")
		return
	}
	rs, err := openResources(ctx, cfg, log, needStore)
	if err != nil {
		log.Warn("verify: could not record the report for the console", "err", err)
		return
	}
	defer rs.Close()
	host, _ := os.Hostname()
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	last := verify.Last(rep, time.Now(), fmt.Sprintf("%s@%s pid %d", name, host, os.Getpid()), host)
	if err := verify.SaveLast(ctx, rs.Store, last); err != nil {
		log.Warn("verify: could not record the report for the console", "err", err)
	}
}

func (f *verifyFlags) printJSON(w io.Writer, out verifyOutput) error {
	if !f.jsonOut {
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// remote returns the lister of the remote side, and the HTTP sink when one
// was built (it also deletes duplicates).
func (f *verifyFlags) remote(cfg *config.Config, log *slog.Logger) (sink.Lister, *httpsink.Sink, error) {
	if f.fakeAPI != "" {
		coll := f.fakeAPICollection(cfg)
		sk, err := httpsink.New(httpsink.Config{
			Defaults:      httpsink.Defaults{BaseURL: strings.TrimRight(f.fakeAPI, "/")},
			EntityConfigs: map[string]httpsink.EntityConfig{f.entity: {Collection: coll}},
		}, httpsink.WithLogger(log))
		if err != nil {
			return nil, nil, fmt.Errorf("--fakeapi %s --collection %s: %w", f.fakeAPI, coll, err)
		}
		return verify.FakeAPIDump{BaseURL: f.fakeAPI, Collections: map[string]string{f.entity: coll}}, sk, nil
	}
	if !cfg.HasSink() {
		return nil, nil, errors.New("no remote side: set --fakeapi URL, or --config FILE whose sink section lists the entity's records")
	}
	ent, ok := cfg.Sink.WithDefaults().EntityConfigs[f.entity]
	if !ok {
		known := cfg.Sink.Entities()
		guess := ""
		if c := setting.Closest(f.entity, known); c != "" {
			guess = "; did you mean " + c + "?"
		}
		return nil, nil, fmt.Errorf("entity %s is not in the sink configuration (known: %s)%s; fix --entity or add sink.entities.%s", f.entity, strings.Join(known, ", "), guess, f.entity)
	}
	if ent.List == nil {
		return nil, nil, fmt.Errorf("sink.entities.%s has no list endpoint; verify needs one (set collection: or list:)", f.entity)
	}
	sk, err := httpsink.New(cfg.Sink, httpsink.WithLogger(log))
	if err != nil {
		return nil, nil, fmt.Errorf("config key sink: %w", err)
	}
	return sk, sk, nil
}

func (f *verifyFlags) fakeAPICollection(cfg *config.Config) string {
	if f.collection != "" {
		return f.collection
	}
	if ent, ok := cfg.Sink.EntityConfigs[f.entity]; ok && ent.Collection != "" {
		return strings.TrimPrefix(strings.TrimPrefix(ent.Collection, httpsink.DefaultPathPrefix), "/")
	}
	return verify.FakeAPIDump{}.Collection(f.entity)
}

func (f *verifyFlags) remoteName(cfg *config.Config) string {
	if f.fakeAPI != "" {
		return fmt.Sprintf("fake API %s collection %s", f.fakeAPI, f.fakeAPICollection(cfg))
	}
	ent := cfg.Sink.WithDefaults().EntityConfigs[f.entity]
	base := ent.BaseURL
	if base == "" {
		base = cfg.Sink.Defaults.BaseURL
	}
	return fmt.Sprintf("API %s (sink list of %s)", redact.URL(base), f.entity)
}

// act runs --repair and --delete-duplicates.
func (f *verifyFlags) act(ctx context.Context, env Env, cfg *config.Config, log *slog.Logger, res *verify.Result, sk *httpsink.Sink, out *verifyOutput) error {
	needs := need(0)
	if f.repair {
		needs |= needStore
		if !f.dryRun {
			needs |= needBus
		}
	}
	if f.deleteDups && cfg.Store != "" {
		needs |= needStore
	}
	// Deletes go through the Client's sink, so the throttle paces them
	// like the workers' calls: on the fleet's shared budget when a store
	// is given, on this process's own otherwise.
	opts := []eventsync.Option{eventsync.WithSink(sk)}
	if needs&needStore == 0 {
		opts = append(opts, eventsync.WithLimiter(throttle.NewMemoryLimiter(nil)))
	}
	rs, err := openResources(ctx, cfg, log, needs, opts...)
	if err != nil {
		return err
	}
	defer rs.Close()
	text := !f.jsonOut
	if f.deleteDups && res.Report.Counts.Duplicated > 0 {
		dry := f.dryRun || !f.yes
		d := &verifyDedupOutput{Actions: []verify.DedupAction{}}
		deleter, err := rs.Client.Sink(ctx)
		if err != nil {
			return err
		}
		opts := verify.DedupOptions{Sink: deleter, DryRun: dry, OnAction: func(a verify.DedupAction) {
			if text {
				fmt.Fprintln(env.Stdout, verify.FormatDedup(a, dry))
			} else {
				d.Actions = append(d.Actions, a)
			}
		}}
		if rs.Store != nil {
			opts.Store = rs.Store
		} else if text {
			fmt.Fprintln(env.Stdout, "no --store given: keeping the first listed record of each key")
		}
		sum, err := res.DeleteDuplicates(ctx, opts)
		d.DedupSummary = sum
		out.Duplicates = d
		if err != nil {
			return err
		}
		if text {
			if dry {
				fmt.Fprintf(env.Stdout, "duplicates: would delete %d records of %d keys; run again with --delete-duplicates --yes to delete them\n", sum.Deleted, sum.Keys)
			} else {
				fmt.Fprintf(env.Stdout, "duplicates: deleted %d records of %d keys (%d failed)\n", sum.Deleted, sum.Keys, sum.Failed)
			}
		}
		if sum.Failed > 0 {
			return fmt.Errorf("%d duplicate records could not be deleted; see above", sum.Failed)
		}
	}
	if f.repair {
		r := &verifyRepairOutput{Actions: []verify.Action{}}
		opts := verify.RepairOptions{Store: rs.Store, Stream: bus.Stream(f.stream), DryRun: f.dryRun, OnAction: func(a verify.Action) {
			if text {
				fmt.Fprintln(env.Stdout, verify.FormatAction(a, f.dryRun))
			} else {
				r.Actions = append(r.Actions, a)
			}
		}}
		if rs.Bus != nil {
			opts.Publisher = rs.Bus
		}
		sum, err := res.Repair(ctx, opts)
		r.RepairSummary = sum
		out.Repair = r
		if err != nil {
			return err
		}
		if text {
			verb := "published"
			if f.dryRun {
				verb = "would publish"
			}
			fmt.Fprintf(env.Stdout, "repair: %s %d upserts and %d deletes to %s (%d keys flagged for repair, %d skipped)", verb, sum.Upserts, sum.Deletes, f.stream, sum.MarkRepair, sum.Skipped)
			if !f.dryRun {
				fmt.Fprint(env.Stdout, "; run verify again once the workers have applied them")
			}
			fmt.Fprintln(env.Stdout)
		}
	}
	return nil
}
