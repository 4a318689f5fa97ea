package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/internal/testenv"
)

// lockedBuffer is the stderr a running command writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWorkerShowsNoSecret runs a real worker at debug level whose bus,
// store and sink URLs and sink header carry secrets in several shapes
// (a NATS token, a PostgreSQL password in the userinfo and a query
// parameter, the sink's userinfo, a header from a _FILE variable; the
// local services accept any credential), and finds none in its log, its
// /status, /metrics, /healthz and /readyz, nor in a failing command's
// error.
func TestWorkerShowsNoSecret(t *testing.T) {
	natsURL, pgURL := testenv.NATS(t), testenv.Postgres(t)
	ns := testenv.UniqueName("secrets")
	secrets := []string{"TOPSECRETNATSTOKEN", "TOPSECRETPGPASS", "TOPSECRETPGQUERY", "TOPSECRETSINKURL", "TOPSECRETSINKTOKEN"}
	busURL := strings.Replace(natsURL, "nats://", "nats://TOPSECRETNATSTOKEN@", 1)
	storeURL := strings.Replace(pgURL, "postgres://postgres@", "postgres://postgres:TOPSECRETPGPASS@", 1) + "&password=TOPSECRETPGQUERY&pool_max_conns=2"
	if !strings.Contains(storeURL, "TOPSECRETPGPASS") {
		t.Skipf("the test PostgreSQL URL %s has no postgres@ user to give a password", pgURL)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("TOPSECRETSINKTOKEN\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EVENTSYNC_TEST_API_TOKEN_FILE", tokenFile)
	cfgPath := filepath.Join(dir, "eventsync.yaml")
	yaml := "namespace: " + ns + "\nlog: {level: debug}\n" +
		"sink:\n  defaults:\n    base_url: http://alice:TOPSECRETSINKURL@127.0.0.1:1\n    headers: {Authorization: \"Bearer ${EVENTSYNC_TEST_API_TOKEN}\"}\n" +
		"  entities:\n    listing: {collection: listings}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EVENTSYNC_BUS", busURL)
	t.Setenv("EVENTSYNC_STORE_FILE", filepath.Join(dir, "store"))
	if err := os.WriteFile(filepath.Join(dir, "store"), []byte(storeURL), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if b, err := natsjs.Open(ctx, natsjs.Config{URL: natsURL, Namespace: ns}); err == nil {
			_ = b.DeleteStreams(ctx)
			_ = b.Close()
		}
		if c, err := pgx.Connect(ctx, pgURL); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA IF EXISTS "+ns+" CASCADE")
			_ = c.Close(ctx)
		}
	})

	ctx, stop := context.WithCancel(context.Background())
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"worker", "--config", cfgPath, "--admin", "127.0.0.1:0"}, strings.NewReader(""), io.Discard, &stderr)
	}()
	addrRE := regexp.MustCompile(`admin HTTP listening"? addr=http://(127\.0\.0\.1:\d+)`)
	var addr string
	for deadline := time.Now().Add(60 * time.Second); addr == ""; {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case code := <-done:
			t.Fatalf("worker exited %d before serving:\n%s", code, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker never served its admin address:\n%s", stderr.String())
		}
	}
	var pages []string
	for _, path := range []string{"/status", "/metrics", "/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
		pages = append(pages, path+":\n"+string(body))
	}
	stop()
	if code := <-done; code != 0 {
		t.Errorf("worker exited %d", code)
	}
	// A command that cannot connect prints its error.
	code, _, errOut := run(t, "", "ctl", "status", "--config", cfgPath, "--bus", strings.Replace(busURL, "4222", "1", 1))
	if code == 0 {
		t.Error("ctl status against a closed port succeeded")
	}
	t.Logf("ctl status against a closed port: exit %d: %s", code, strings.TrimSpace(errOut))
	log := stderr.String()
	if !strings.Contains(log, "worker starting") || !strings.Contains(log, "xxxxx") {
		t.Fatalf("the log does not show the worker starting with masked URLs:\n%s", log)
	}
	for _, text := range append(pages, log, errOut) {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s shows in:\n%s", s, text)
			}
		}
	}
}
