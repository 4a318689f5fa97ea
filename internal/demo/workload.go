package demo

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"

	"golang.org/x/time/rate"

	// The application's own driver: the demo app writes its table with
	// plain SQL, as any application would.
	_ "modernc.org/sqlite"
)

// The application's table. owner_email is a secret the trigger excludes:
// it never leaves the database.
const createListings = `CREATE TABLE IF NOT EXISTS listings (
	id          INTEGER PRIMARY KEY,
	title       TEXT NOT NULL,
	price       INTEGER NOT NULL,
	city        TEXT NOT NULL,
	owner_email TEXT NOT NULL
)`

// rolledBackTitle marks rows written by transactions that roll back; verify
// would report any that reached the API as extra or differing.
const rolledBackTitle = "ROLLED BACK: must never reach the API"

// WorkloadCounts describes what the application wrote.
type WorkloadCounts struct {
	Transactions int64 `json:"transactions"`
	Committed    int64 `json:"committed"`
	RolledBack   int64 `json:"rolled_back"`
	// Rows changed by committed transactions, by kind.
	Inserts int64 `json:"inserts"`
	Updates int64 `json:"updates"`
	Deletes int64 `json:"deletes"`
	// Errors are transactions that failed (for example a lock wait over
	// the busy timeout); they changed nothing.
	Errors int64 `json:"errors"`
}

// openAppDB opens the application's own connection pool on the database
// the source adapter also uses, with the same settings: WAL so the relay
// and snapshots read while it writes, a busy timeout so writers queue
// instead of failing, and write transactions that lock at BEGIN.
func openAppDB(ctx context.Context, path string) (*sql.DB, error) {
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate", path)
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open the demo application database %s: %w", path, err)
	}
	db.SetMaxOpenConns(2)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open the demo application database %s: %w; is the data dir writable?", path, err)
	}
	if _, err := db.ExecContext(ctx, createListings); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("create table listings in %s: %w", path, err)
	}
	return db, nil
}

var (
	adjectives = []string{"Sunny", "Quiet", "Cosy", "Bright", "Spacious", "Charming", "Modern", "Rustic", "Airy", "Hidden"}
	nouns      = []string{"loft", "studio", "cottage", "flat", "villa", "cabin", "room", "townhouse", "penthouse", "bungalow"}
	cities     = []string{"Lisbon", "Porto", "Seville", "Lyon", "Naples", "Ghent", "Krakow", "Bergen", "Split", "Tallinn"}
)

func randomListing(rng *rand.Rand) (title string, price int, city string) {
	city = cities[rng.IntN(len(cities))]
	title = fmt.Sprintf("%s %s in %s", adjectives[rng.IntN(len(adjectives))], nouns[rng.IntN(len(nouns))], city)
	return title, 40 + rng.IntN(560), city
}

func ownerEmail(id int64) string { return fmt.Sprintf("host%d@example.com", id) }

// seedListings inserts ids 1..n in transactions of 1000 rows; the trigger
// turns every row into an outbox event, which is the initial sync.
func seedListings(ctx context.Context, db *sql.DB, n int, rng *rand.Rand) error {
	for start := 1; start <= n; start += 1000 {
		err := func() error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			stmt, err := tx.PrepareContext(ctx, `INSERT INTO listings (id, title, price, city, owner_email) VALUES (?, ?, ?, ?, ?)`)
			if err != nil {
				return err
			}
			defer func() { _ = stmt.Close() }()
			for id := start; id < start+1000 && id <= n; id++ {
				title, price, city := randomListing(rng)
				if _, err := stmt.ExecContext(ctx, id, title, price, city, ownerEmail(int64(id))); err != nil {
					return err
				}
			}
			return tx.Commit()
		}()
		if err != nil {
			return fmt.Errorf("insert the initial listings: %w", err)
		}
	}
	return nil
}

// workload is the application: random transactions of inserts, updates
// and deletes, about 5% of them rolled back.
type workload struct {
	db     *sql.DB
	rng    *rand.Rand // used only by run
	nextID int64
	log    *slog.Logger
	// Statements prepared once: SQLite parsing every statement again costs
	// more CPU than running it.
	insert, update, remove *sql.Stmt

	transactions, committed, rolledBack atomic.Int64
	inserts, updates, deletes, errors   atomic.Int64
}

func newWorkload(ctx context.Context, db *sql.DB, entities int, seed uint64, log *slog.Logger) (*workload, error) {
	w := &workload{db: db, rng: rand.New(rand.NewPCG(seed, 2)), nextID: int64(entities) + 1, log: log}
	var err error
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&w.insert, `INSERT INTO listings (id, title, price, city, owner_email) VALUES (?, ?, ?, ?, ?)`},
		{&w.update, `UPDATE listings SET title = ?, price = ?, city = ? WHERE id = ?`},
		{&w.remove, `DELETE FROM listings WHERE id = ?`},
	} {
		if *p.dst, err = db.PrepareContext(ctx, p.sql); err != nil {
			w.close()
			return nil, fmt.Errorf("prepare the workload's statements: %w", err)
		}
	}
	return w, nil
}

func (w *workload) close() {
	for _, st := range []*sql.Stmt{w.insert, w.update, w.remove} {
		if st != nil {
			_ = st.Close()
		}
	}
}

func (w *workload) counts() WorkloadCounts {
	return WorkloadCounts{
		Transactions: w.transactions.Load(), Committed: w.committed.Load(), RolledBack: w.rolledBack.Load(),
		Inserts: w.inserts.Load(), Updates: w.updates.Load(), Deletes: w.deletes.Load(), Errors: w.errors.Load(),
	}
}

// run writes about perSecond transactions per second until ctx ends.
func (w *workload) run(ctx context.Context, perSecond int) {
	lim := rate.NewLimiter(rate.Limit(perSecond), max(1, perSecond/10))
	for lim.Wait(ctx) == nil {
		w.transactions.Add(1)
		if err := w.transaction(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.errors.Add(1)
			w.log.Warn("workload transaction failed; it changed nothing", "err", err)
		}
	}
}

// transaction runs one to five random changes and commits or rolls back.
func (w *workload) transaction(ctx context.Context) error {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	rollback := w.rng.Float64() < 0.05
	var ins, upd, del int64
	for range 1 + w.rng.IntN(5) {
		title, price, city := randomListing(w.rng)
		if rollback {
			title = rolledBackTitle
		}
		var res sql.Result
		switch p := w.rng.Float64(); {
		case p < 0.25:
			id := w.nextID
			w.nextID++
			res, err = tx.StmtContext(ctx, w.insert).ExecContext(ctx, id, title, price, city, ownerEmail(id))
			ins++
		case p < 0.85:
			res, err = tx.StmtContext(ctx, w.update).ExecContext(ctx, title, price, city, 1+w.rng.Int64N(w.nextID-1))
			if err == nil {
				upd += affected(res)
			}
		default:
			res, err = tx.StmtContext(ctx, w.remove).ExecContext(ctx, 1+w.rng.Int64N(w.nextID-1))
			if err == nil {
				del += affected(res)
			}
		}
		if err != nil {
			return err
		}
	}
	if rollback {
		w.rolledBack.Add(1)
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.committed.Add(1)
	w.inserts.Add(ins)
	w.updates.Add(upd)
	w.deletes.Add(del)
	return nil
}

func affected(res sql.Result) int64 {
	n, _ := res.RowsAffected()
	return n
}
