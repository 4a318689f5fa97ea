package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/store"
)

// batchFlushers is how many batches may be on their way to PostgreSQL at
// once; each holds one pooled connection for one round trip.
const batchFlushers = 4

// maxBatch bounds one batch, so a burst does not hold row locks for long.
const maxBatch = 256

// batchTimeout bounds one batch, so a connection that hangs cannot keep a
// flusher (and the calls queued behind it) forever.
const batchTimeout = 30 * time.Second

// errClosed is returned by calls made after Close.
var errClosed = errors.New("postgres store: closed")

// batcher sends the lease statements of concurrent calls as one pipelined
// batch: one round trip and one commit (one WAL flush) for many events
// instead of one each. A batch is one implicit transaction, so its
// statements run in key order: two batches (in this process or another)
// then take their row locks in the same order and never deadlock. If any
// statement of a batch fails, PostgreSQL rolls the whole batch back (see
// flush for what happens then).
type batcher struct {
	pool   *pgxpool.Pool
	calls  chan *call
	ctx    context.Context // ends on close; bounds the batch in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// call is one statement. read takes its result from the batch, setting
// every output (it may run again after a rolled-back batch), and returns an
// error only for a failure of the statement itself (no rows is a result).
type call struct {
	key  store.Key
	sql  string
	args []any
	read func(pgx.BatchResults) error
	done chan error
}

func newBatcher(pool *pgxpool.Pool) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	b := &batcher{pool: pool, calls: make(chan *call), ctx: ctx, cancel: cancel}
	b.wg.Add(batchFlushers)
	for range batchFlushers {
		go b.run()
	}
	return b
}

// close aborts the batches in flight and stops the flushers; later calls
// fail.
func (b *batcher) close() {
	b.cancel()
	b.wg.Wait()
}

// do runs one statement in the next batch and waits for its outcome. When
// ctx ends first the statement may still run, as one whose reply was lost
// would: fencing tokens and versions keep that safe, and at worst a lease
// nobody uses blocks its key until its TTL.
func (b *batcher) do(ctx context.Context, c *call) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.done = make(chan error, 1)
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return errClosed
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher) run() {
	defer b.wg.Done()
	for {
		var batch []*call
		select {
		case c := <-b.calls:
			batch = append(batch, c)
		case <-b.ctx.Done():
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break more
			}
		}
		b.flush(batch)
	}
}

// flush sends one batch and hands every call its outcome. When PostgreSQL
// refuses a statement (bad input such as a key text cannot store, or a
// deadlock with something outside eventsync), it rolled the whole batch
// back, so nothing in it took effect: each call then runs on its own, and
// only the culprit fails.
func (b *batcher) flush(batch []*call) {
	ctx, cancel := context.WithTimeout(b.ctx, batchTimeout)
	defer cancel()
	err := sendBatch(ctx, b.pool, batch)
	var pgErr *pgconn.PgError
	if err != nil && len(batch) > 1 && errors.As(err, &pgErr) {
		for _, c := range batch {
			c.done <- sendBatch(ctx, b.pool, []*call{c})
		}
		return
	}
	for _, c := range batch {
		c.done <- err
	}
}

// sendBatch runs calls as one pipelined batch, in key order.
func sendBatch(ctx context.Context, pool *pgxpool.Pool, calls []*call) error {
	slices.SortStableFunc(calls, func(x, y *call) int {
		return cmp.Or(strings.Compare(x.key.Entity, y.key.Entity), strings.Compare(x.key.Key, y.key.Key))
	})
	batch := &pgx.Batch{}
	for _, c := range calls {
		batch.Queue(c.sql, c.args...)
	}
	br := pool.SendBatch(ctx, batch)
	var first error
	for _, c := range calls {
		if err := c.read(br); err != nil && first == nil {
			first = err
		}
	}
	if err := br.Close(); err != nil && first == nil {
		first = err
	}
	if first != nil && len(calls) > 1 {
		return fmt.Errorf("batch of %d statements rolled back: %w", len(calls), first)
	}
	return first
}
