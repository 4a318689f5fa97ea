// Package embedded runs a NATS server with JetStream inside the eventsync
// process, for one-machine use without installing anything. The server keeps
// its streams and key-value buckets in files under a data directory, so a
// restart with the same directory keeps every message and every state record.
// It listens on 127.0.0.1 so that child processes (workers started by demo,
// for example) can connect to it by URL.
package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/eventsync/eventsync/internal/setting"
)

// Config configures an embedded server.
type Config struct {
	// DataDir holds the JetStream files. Required: an embedded bus that
	// forgets its messages on restart would lose events.
	DataDir string
	// Port to listen on at 127.0.0.1; 0 picks a free port.
	Port int
	// ReadyTimeout bounds how long Start waits for the server to accept
	// connections. Default 10s.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines; nil means slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports configuration errors with the fix.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return setting.Errorf("data_dir", "embedded NATS: no data directory given (e.g. ./eventsync-data); queued events live there and survive a restart")
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("embedded NATS: port %d out of range; use 1-65535, or 0 for a free port", c.Port)
	}
	return nil
}

// Server is a running embedded NATS server.
type Server struct {
	ns       *server.Server
	log      *slog.Logger
	lock     *os.File // flock on the data dir, held until Shutdown
	shutdown sync.Once
}

// Start launches the server and waits until it accepts connections. The
// context bounds only the start-up; stop the server with Shutdown.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: resolve data dir %q: %w", cfg.DataDir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded NATS: create data dir %q: %w; choose a writable directory", dir, err)
	}
	// Two servers on one data dir would corrupt each other's JetStream
	// files; nats-server does not prevent it, so hold an exclusive lock.
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "eventsync-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		// The process owns signals and the HTTP monitor; the server must
		// not install handlers of its own.
		NoSigs: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("embedded NATS: configure server: %w", err)
	}
	logger := &slogAdapter{log: cfg.Logger.With("component", "nats-server")}
	ns.SetLoggerV2(logger, false, false, false)
	// Start blocks only briefly; readiness is polled below so that ctx can
	// cancel a slow start.
	ns.Start()
	s := &Server{ns: ns, log: cfg.Logger, lock: lock}
	deadline := time.Now().Add(cfg.ReadyTimeout)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("embedded NATS: start interrupted: %w", err)
		}
		if msg := logger.fatal.Load(); msg != nil {
			s.Shutdown()
			return nil, fmt.Errorf("embedded NATS: %s; is another process using port %d? pick another port, or 0 for a free one", *msg, cfg.Port)
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, fmt.Errorf("embedded NATS: not ready after %s; is port %d in use or data dir %q locked by another eventsync? pick another port or data dir", cfg.ReadyTimeout, cfg.Port, dir)
		}
	}
	if !ns.JetStreamEnabled() {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS: JetStream did not start with data dir %q; check the log above and the directory's permissions", dir)
	}
	return s, nil
}

// ClientURL is the nats:// URL clients (also other processes) connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Connect opens an in-process client connection, which skips TCP. Extra
// options (a name, handlers) are applied after eventsync's defaults.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("eventsync-embedded")}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: connect in-process: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server, flushing JetStream to disk, and waits until
// its goroutines have ended. It is safe to call more than once.
func (s *Server) Shutdown() {
	s.shutdown.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		_ = s.lock.Close() // closing the descriptor releases the flock
	})
}

// lockDir takes an exclusive, non-blocking flock on dir/eventsync.lock.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "eventsync.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, setting.Errorf("data_dir", "embedded NATS: data dir %s is in use by another eventsync process (%v); stop it, use another data dir, or connect to its server as bus and store at nats://127.0.0.1:<its port>", dir, err)
	}
	return f, nil
}

// slogAdapter routes nats-server log lines into slog. The server's notices
// are chatty start-up details, so they go to debug. A fatal line (the server
// could not listen, say) is remembered so Start can fail at once instead of
// waiting for its timeout; the server's own loggers would exit the process.
type slogAdapter struct {
	log   *slog.Logger
	fatal atomic.Pointer[string]
}

func (a *slogAdapter) Noticef(format string, v ...any) { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	a.fatal.CompareAndSwap(nil, &msg)
	a.log.Error(msg)
}
