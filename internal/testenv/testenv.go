// Package testenv lets integration tests find the real services on this
// machine (PostgreSQL, Redis, RabbitMQ, NATS). A test that needs one calls the
// matching helper: when the service is unreachable the test is skipped with a
// hint naming it, unless EVENTSYNC_REQUIRE_SERVICES=1 (as in CI), where it fails.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireEnv is the variable that turns a missing service into a failure.
const RequireEnv = "EVENTSYNC_REQUIRE_SERVICES"

// Defaults for this machine; each can be overridden by an environment variable.
var defaults = map[string][2]string{
	"postgres": {"EVENTSYNC_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
	"redis":    {"EVENTSYNC_TEST_REDIS", "redis://127.0.0.1:6379/0"},
	"rabbitmq": {"EVENTSYNC_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/"},
	"nats":     {"EVENTSYNC_TEST_NATS", "nats://127.0.0.1:4222"},
}

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// URL returns the service's URL after checking it accepts TCP connections.
// name is one of postgres, redis, rabbitmq, nats.
func URL(t testing.TB, name string) string {
	t.Helper()
	d, ok := defaults[name]
	if !ok {
		t.Fatalf("testenv: unknown service %q", name)
	}
	raw := os.Getenv(d[0])
	if raw == "" {
		raw = d[1]
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("testenv: %s=%q is not a URL: %v", d[0], raw, err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		msg := "needs " + name + " at " + u.Host + " (" + err.Error() + "); start it or set " + d[0]
		if Required() {
			t.Fatalf("%s is unreachable under %s=1: %s", name, RequireEnv, msg)
		}
		t.Skip("skipping: " + msg + "; set " + RequireEnv + "=1 to make this a failure")
	}
	_ = conn.Close()
	return raw
}

// Postgres returns a DSN of the test PostgreSQL.
func Postgres(t testing.TB) string {
	t.Helper()
	return URL(t, "postgres")
}

// PostgresPoolSize is the size of the PostgreSQL pools tests open. One
// server (max_connections 100 here and in CI) serves the whole suite: go
// test runs two packages at once, each with its parallel tests, and an e2e
// test starts several eventsync processes with a pool each. Four
// connections are plenty for a test; a bigger pool only makes "sorry, too
// many clients already" likelier.
const PostgresPoolSize = 4

// PostgresPool returns a DSN of the test PostgreSQL whose pool_max_conns is
// conns, for whatever builds a pgxpool from a DSN: pgxpool.New, the state
// store, an eventsync process given it as --store. Not for pgx.Connect,
// which would send pool_max_conns to the server as a setting and fail.
func PostgresPool(t testing.TB, conns int) string {
	t.Helper()
	return WithParam(Postgres(t), "pool_max_conns", strconv.Itoa(conns))
}

// WithParam returns the PostgreSQL DSN with the connection parameter key
// set to value: a query parameter of a postgres:// URL, or a key=value
// pair appended to a keyword/value DSN.
func WithParam(dsn, key, value string) string {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " " + key + "=" + value
	}
	u, err := url.Parse(dsn)
	if err != nil { // opening the DSN reports what is wrong with it
		return dsn
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// Redis returns the URL of the test Redis.
func Redis(t testing.TB) string {
	t.Helper()
	return URL(t, "redis")
}

// RabbitMQ returns the AMQP URL of the test RabbitMQ.
func RabbitMQ(t testing.TB) string {
	t.Helper()
	return URL(t, "rabbitmq")
}

// NATS returns the URL of the test NATS server with JetStream.
func NATS(t testing.TB) string {
	t.Helper()
	return URL(t, "nats")
}

// UniqueName returns prefix plus a random suffix safe for queue, schema and
// key names, so parallel tests never share state on a shared service.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(prefix) + "_" + hex.EncodeToString(b[:])
}
