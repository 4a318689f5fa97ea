package outbox_test

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/outbox"
)

// Write an event in the same transaction as the change it describes: both
// commit or neither does.
func ExampleWrite() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_ = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var version int64
		// Lock the row, then take the next version from the shared sequence.
		if err := tx.QueryRow(ctx, `UPDATE listings SET price = 120 WHERE id = 42 RETURNING nextval('eventsync_version_seq')`).Scan(&version); err != nil {
			return err
		}
		return outbox.Write(ctx, outbox.Pgx(tx), event.Event{
			Entity: "listing", Key: "42", Version: version, Op: event.OpUpsert,
			Data: json.RawMessage(`{"id": 42, "price": 120}`),
		})
	})
}
