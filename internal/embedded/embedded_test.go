package embedded

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/setting"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "data directory") || setting.Key(err) != "data_dir" {
		t.Fatalf("missing data dir: got %v, want an error naming the data dir", err)
	}
	if err := (Config{DataDir: "x", Port: 70000}).Validate(); err == nil {
		t.Fatal("port 70000 accepted")
	}
	if err := (Config{DataDir: "x"}).Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
}

// TestRestartKeepsMessages proves the server is file-backed: a message
// stored before a shutdown is still there after a restart on the same dir,
// and a TCP client (as a child process would) can reach it by URL.
func TestRestartKeepsMessages(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()

	srv, err := Start(ctx, Config{DataDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(srv.ClientURL(), "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<port>", srv.ClientURL())
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	srv.Shutdown()
	srv.Shutdown() // idempotent

	srv2, err := Start(ctx, Config{DataDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown()
	nc2, err := srv2.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js2.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream lost across restart: %v", err)
	}
	msg, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("message lost across restart: %v", err)
	}
	if string(msg.Data) != "kept" {
		t.Fatalf("message = %q, want %q", msg.Data, "kept")
	}
}

func TestStartOnBusyPortFails(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, Config{DataDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	port := srv.ns.Addr().(*net.TCPAddr).Port
	_, err = Start(ctx, Config{DataDir: t.TempDir(), Port: port, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "pick another port") {
		t.Fatalf("second server on port %d: got %v, want an error suggesting another port", port, err)
	}
}

func TestSecondServerOnSameDataDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := Start(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), Config{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use by another eventsync process") {
		t.Fatalf("second server on the same data dir: %v", err)
	}
	first.Shutdown()
	again, err := Start(context.Background(), Config{DataDir: dir})
	if err != nil {
		t.Fatalf("after shutdown the data dir must be free: %v", err)
	}
	again.Shutdown()
}
