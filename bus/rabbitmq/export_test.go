package rabbitmq

import "context"

// CloseConnection closes b's current connection from the client side, as
// a Close elsewhere in the process would: amqp091-go then closes the
// close-notification channels without an error.
func CloseConnection(ctx context.Context, b *Bus) error {
	conn, err := b.conn.current(ctx)
	if err != nil {
		return err
	}
	return conn.Close()
}
