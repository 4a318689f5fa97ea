package eventsync_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
	pgsource "github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/store/natskv"
	pgstore "github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/store/redis"
)

// closedPort returns a port on 127.0.0.1 nothing listens on: connections
// to it are refused at once.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	return port
}

// syncBuffer is a log destination several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secretShapes returns URLs of scheme to 127.0.0.1:port carrying the
// secret marker in every shape a connection string can carry one, and the
// marker. Each marker is unique so a leak names its shape.
func secretShapes(scheme, port, path string) (urls []string, markers []string) {
	hp := "127.0.0.1:" + port
	add := func(marker, raw string) {
		urls, markers = append(urls, raw), append(markers, marker)
	}
	m := func(shape string) string { return "TOPSECRET" + strings.ToUpper(scheme) + shape }
	add(m("PW"), scheme+"://alice:"+m("PW")+"@"+hp+path)
	add(m("AT"), scheme+"://alice:p@"+m("AT")+"@"+hp+path)                                       // '@' in the password, unescaped
	add(m("ESC"), scheme+"://"+url.UserPassword("alice", "p@ss/"+m("ESC")).String()+"@"+hp+path) // escaped
	add(m("HALFESC"), scheme+"://alice:"+url.PathEscape("p@ss/"+m("HALFESC"))+"@"+hp+path)       // '/' escaped, '@' not
	add(m("SLASH"), scheme+"://alice:pa/"+m("SLASH")+"@"+hp+path)                                // '/' in the password, unescaped
	if scheme != "postgres" && scheme != "amqp" {                                                // where a user name alone is a user name
		add(m("TOKEN"), scheme+"://"+m("TOKEN")+"@"+hp+path) // a token (nats), or a password mistaken for a user (redis)
	}
	add(m("EMPTYUSER"), scheme+"://:"+m("EMPTYUSER")+"@"+hp+path) // password without user (redis)
	add(m("QUERY"), scheme+"://"+hp+path+"?password="+m("QUERY")+"&token="+m("QUERY")+"&sslpassword="+m("QUERY"))
	return urls, markers
}

// assertNoSecret fails when any marker, in any form, shows in text.
func assertNoSecret(t *testing.T, where, text string, markers []string) {
	t.Helper()
	for _, m := range markers {
		for _, form := range []string{m, strings.ToLower(m), url.QueryEscape(m)} {
			if strings.Contains(text, form) {
				t.Errorf("%s shows the secret %s:\n%s", where, m, text)
			}
		}
	}
}

// metricsText renders every metric family of reg with its labels.
func metricsText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		for _, m := range f.GetMetric() {
			fmt.Fprintf(&b, "%s", f.GetName())
			for _, l := range m.GetLabel() {
				fmt.Fprintf(&b, " %s=%q", l.GetName(), l.GetValue())
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// TestNoSecretInFailedConnections feeds every adapter's open path, through
// the Client (the registry every command uses) and each adapter's own
// Open, connection strings carrying secrets in every shape, makes each
// connection fail (a closed port) and checks that no secret shows in the
// error, the logs (debug level), Describe or a metric label.
func TestNoSecretInFailedConnections(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	type opener struct {
		kind, scheme, path string
		open               func(ctx context.Context, raw string, log *slog.Logger) error
	}
	openers := []opener{
		{"bus", "amqp", "/", func(ctx context.Context, raw string, log *slog.Logger) error {
			_, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: raw, Logger: log, ConnectTimeout: 5 * time.Second})
			return err
		}},
		{"bus", "nats", "", func(ctx context.Context, raw string, log *slog.Logger) error {
			_, err := natsjs.Open(ctx, natsjs.Config{URL: raw, Logger: log})
			return err
		}},
		{"store", "redis", "/0", func(ctx context.Context, raw string, log *slog.Logger) error {
			_, err := redis.Open(ctx, redis.Config{URL: raw, Logger: log})
			return err
		}},
		{"store", "postgres", "/app", func(ctx context.Context, raw string, log *slog.Logger) error {
			_, err := pgstore.Open(ctx, pgstore.Config{DSN: raw, Logger: log})
			return err
		}},
		{"store", "nats", "", func(ctx context.Context, raw string, log *slog.Logger) error {
			_, err := natskv.Open(ctx, natskv.Config{URL: raw, Logger: log})
			return err
		}},
		{"source", "postgres", "/app", func(ctx context.Context, raw string, log *slog.Logger) error {
			_, err := pgsource.Open(ctx, pgsource.Config{DSN: raw, Logger: log})
			return err
		}},
	}
	for _, o := range openers {
		urls, markers := secretShapes(o.scheme, port, o.path)
		if o.scheme == "postgres" { // the key=value form too, adapters only (the registry wants a scheme)
			urls = append(urls, "host=127.0.0.1 port="+port+" user=alice password=TOPSECRETKV1 sslpassword='TOPSECRET KV2' dbname=app")
			markers = append(markers, "TOPSECRETKV1", "TOPSECRET KV2")
		}
		for i, raw := range urls {
			t.Run(o.kind+"/"+o.scheme+"/"+markers[i], func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				var logs syncBuffer
				log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				var msgs []string
				if err := o.open(ctx, raw, log); err == nil {
					t.Fatalf("opening %s on a closed port succeeded", o.scheme)
				} else {
					msgs = append(msgs, err.Error(), fmt.Sprintf("%+v", err))
				}
				if strings.Contains(raw, "://") {
					reg := prometheus.NewRegistry()
					cfg := eventsync.Config{}
					switch o.kind {
					case "bus":
						cfg.Bus = raw
					case "store":
						cfg.Store = raw
					case "source":
						cfg.Source = raw
					}
					// Validation errors name the URL too.
					if err := cfg.Validate(); err != nil {
						msgs = append(msgs, err.Error())
					}
					client, err := eventsync.Open(cfg, eventsync.WithLogger(log), eventsync.WithRegisterer(reg))
					if err != nil {
						t.Fatal(err)
					}
					defer client.Close()
					switch o.kind {
					case "bus":
						_, err = client.Bus(ctx)
					case "store":
						_, err = client.Store(ctx)
					case "source":
						_, err = client.Source(ctx)
					}
					if err == nil {
						t.Fatalf("the Client opened %s on a closed port", o.scheme)
					}
					busName, storeName := client.Describe()
					msgs = append(msgs, err.Error(), busName, storeName, eventsync.RedactURL(raw), metricsText(t, reg))
				}
				for _, m := range msgs {
					assertNoSecret(t, "message", m, markers[i:i+1])
				}
				assertNoSecret(t, "log", logs.String(), markers[i:i+1])
				if testing.Verbose() {
					t.Logf("error: %s", msgs[0])
				}
			})
		}
	}
}

// TestNoSecretFromTheHTTPSink: the sink's base URL credentials, its
// headers (literal or from ${VAR}), a secret query parameter in a request
// path and the event data (the request body) never show in its errors or
// its debug logs when the API cannot be reached.
func TestNoSecretFromTheHTTPSink(t *testing.T) {
	port := closedPort(t)
	t.Setenv("EVENTSYNC_TEST_SINK_TOKEN", "TOPSECRETSINKENV")
	markers := []string{"TOPSECRETSINKURL", "TOPSECRETSINKENV", "TOPSECRETSINKHDR", "TOPSECRETSINKCOOKIE", "TOPSECRETSINKQUERY", "TOPSECRETSINKBODY"}
	cfg := httpsink.Config{
		Defaults: httpsink.Defaults{
			BaseURL: "http://alice:TOPSECRETSINKURL@127.0.0.1:" + port,
			Timeout: 5 * time.Second,
			Headers: map[string]string{
				"Authorization": "Bearer ${EVENTSYNC_TEST_SINK_TOKEN}",
				"X-Api-Key":     "TOPSECRETSINKHDR",
				"Cookie":        "session=TOPSECRETSINKCOOKIE",
			},
		},
		EntityConfigs: map[string]httpsink.EntityConfig{
			"listing": {
				Collection: "listings",
				Create:     &httpsink.Request{Method: "POST", Path: "/v1/listings?api_key=TOPSECRETSINKQUERY"},
			},
		},
	}
	var logs syncBuffer
	s, err := httpsink.New(cfg, httpsink.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var msgs []string
	data := []byte(`{"name":"TOPSECRETSINKBODY"}`)
	if _, err := s.Create(ctx, sink.Record{Entity: "listing", Key: "k1", Version: 1, Data: data}); err == nil {
		t.Fatal("create against a closed port succeeded")
	} else {
		msgs = append(msgs, err.Error(), fmt.Sprintf("%+v", err))
	}
	if err := s.Update(ctx, "r1", sink.Record{Entity: "listing", Key: "k1", Version: 2, Data: data}); err != nil {
		msgs = append(msgs, err.Error())
	}
	var se *sink.Error
	if err := s.Delete(ctx, "listing", "r1"); !errors.As(err, &se) {
		t.Fatalf("delete: %v", err)
	} else {
		msgs = append(msgs, err.Error())
	}
	// An API that echoes what it refused: the token, the key, the cookie
	// and the URL come back in a 401's body, which the sink keeps as the
	// error's excerpt.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":"invalid credentials %q %q %q for %s"}`,
			r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("Cookie"), r.URL)
	}))
	defer echo.Close()
	echoCfg := cfg
	echoCfg.Defaults.BaseURL = echo.URL
	echoCfg.Defaults.MaxBodyExcerpt = 4096
	es, err := httpsink.New(echoCfg, httpsink.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer es.Close()
	_, err = es.Create(ctx, sink.Record{Entity: "listing", Key: "k1", Version: 1, Data: data})
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized || !strings.Contains(se.Body, "invalid credentials") {
		t.Fatalf("create against the echoing API: %v", err)
	}
	msgs = append(msgs, err.Error(), se.Body)
	for _, m := range msgs {
		assertNoSecret(t, "sink error", m, markers[1:4]) // the headers'
	}
	for _, m := range msgs[:len(msgs)-2] { // the API did not see the URL's credentials
		assertNoSecret(t, "sink error", m, markers)
	}
	if logs.String() == "" {
		t.Fatal("the sink logged nothing at debug level; the test would prove nothing")
	}
	assertNoSecret(t, "sink debug log", logs.String(), markers)
}
