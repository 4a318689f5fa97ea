// Package e2e runs real eventsync processes against the real services on
// this machine and the fake third-party API, kills them with real signals,
// and checks the invariants of DESIGN.md §6.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/store"
)

var binary string

// quiet discards the logs of the adapters a test opens itself.
var quiet = slog.New(slog.DiscardHandler)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eventsync-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "eventsync")
	build := exec.Command("go", "build", "-o", binary, "github.com/eventsync/eventsync/cmd/eventsync")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build eventsync:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running eventsync process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(logDir(t), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		_ = f.Close()
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("--- log of %s (last 3000 bytes):\n%s", name, tail(logPath, 3000))
		}
	})
	return p
}

var logDirs sync.Map // *testing.T → its log directory

// logDir is where a test's processes log: a temporary directory, or with
// EVENTSYNC_E2E_LOG_DIR set one that outlives the test for a post-mortem,
// named after the test and when it started.
func logDir(t *testing.T) string {
	if dir, ok := logDirs.Load(t); ok {
		return dir.(string)
	}
	dir := t.TempDir()
	if keep := os.Getenv("EVENTSYNC_E2E_LOG_DIR"); keep != "" {
		dir = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+time.Now().Format("-150405.000"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logDirs.Store(t, dir)
	t.Cleanup(func() { logDirs.Delete(t) })
	return dir
}

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // let Cleanup's receive return
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM; log:\n%s", p.name, err, tail(p.log, 2000))
		}
	case <-time.After(within):
		t.Errorf("%s did not stop within %s of SIGTERM", p.name, within)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	err := <-p.done
	p.done <- err
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if last = cond(); last == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", within, what, last)
}

// run executes an eventsync command to completion and returns its output.
func run(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// waitQuiet waits until nothing is left to do on stream: no message ready
// or in a retry tier, and every one of the workers idle, with its breaker
// closed, for longer than a heartbeat's interval. Ready and Delayed alone do
// not say that: a delivery a worker holds is counted in neither (the broker
// counts unacknowledged messages apart), and that delivery may still end
// in a retry tier (its key leased by a duplicate's holder, or the API
// failing the write once more) after the queues read empty.
//
// Quiet means: every poll read both counts 0, and no poll ended more than
// minTier after the previous one began, so no retry can have sat in a tier
// unseen (none waits less than minTier); and each worker's heartbeats, from
// before the quiet began to one sent a heartbeat interval after it began,
// show the same count of settled deliveries and none in flight, so no
// worker held or took a delivery meanwhile.
func waitQuiet(t *testing.T, ctx context.Context, within time.Duration, b bus.Bus, c store.Control, stream bus.Stream, workers int, minTier time.Duration) {
	t.Helper()
	const beat = 3 * time.Second // workers send a heartbeat every 2 s
	var (
		since, prev time.Time
		settled     map[string]int64
		why         string
		// What happened after the queues first read empty (all an earlier
		// version of this wait looked at), to log: how often they filled
		// again, and what the workers settled, counted from each one's first
		// heartbeat after that.
		empty         time.Time
		refills       int
		lastRefill    = "none"
		wasEmpty      bool
		before, after = map[string]map[string]int64{}, map[string]map[string]int64{}
	)
	defer func() {
		if empty.IsZero() {
			return
		}
		late := map[string]int64{}
		for id, res := range after {
			for k, n := range res {
				if d := n - before[id][k]; d != 0 {
					late[k] += d
				}
			}
		}
		t.Logf("%s quiet %s after its queues first read empty; since then they filled again %d times (%s) and the workers settled %v",
			stream, time.Since(empty).Round(time.Millisecond), refills, lastRefill, late)
	}()
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s to be quiet: %s", within, stream, why)
		}
		poll := time.Now()
		st, err := b.Stats(ctx, stream)
		gap := time.Since(prev) // from the previous poll's first read to this one's last
		prev = poll
		if err != nil {
			why, since = err.Error(), time.Time{}
			continue
		}
		hb, err := control.Workers(ctx, c)
		if err != nil {
			why, since = err.Error(), time.Time{}
			continue
		}
		why = ""
		isEmpty := st.Ready == 0 && st.Delayed == 0
		if isEmpty && empty.IsZero() {
			empty = poll
		}
		refilled := wasEmpty && !isEmpty
		wasEmpty = isEmpty
		for _, w := range hb {
			if !empty.IsZero() && !w.SeenAt.Before(empty) {
				if before[w.ID] == nil {
					before[w.ID] = w.Results
				}
				after[w.ID] = w.Results
			}
		}
		switch {
		case st.Ready != 0 || st.Delayed != 0:
			why = fmt.Sprintf("ready=%d delayed=%d", st.Ready, st.Delayed)
			if refilled {
				refills++
				lastRefill = "last " + why
			}
		case len(hb) != workers:
			why = fmt.Sprintf("%d worker heartbeats, want %d", len(hb), workers)
		case gap > minTier:
			why = fmt.Sprintf("%s between two reads, more than a retry's shortest wait (%s)", gap.Round(time.Millisecond), minTier)
		}
		done := map[string]int64{}
		for _, w := range hb {
			done[w.ID] = w.PerStream[stream]
			if why == "" && (w.InFlight[stream] != 0 || w.Breaker != "closed") {
				why = fmt.Sprintf("worker %s: %d in flight, breaker %s", w.ID, w.InFlight[stream], w.Breaker)
			}
		}
		if why != "" {
			since = time.Time{}
			continue
		}
		if since.IsZero() || !maps.Equal(done, settled) {
			since, settled = poll, done
			why = "workers settled deliveries since the last poll"
			continue
		}
		waiting := ""
		for _, w := range hb {
			if w.SeenAt.Before(since.Add(beat)) {
				waiting = w.ID
			}
		}
		if waiting == "" {
			return
		}
		why = "waiting for a heartbeat of worker " + waiting
	}
}

// leftovers describes the messages left in the queues of stream (the
// stream's queue and its retry tiers), with the attempt and the reason of
// their last retry; they stay where they are.
func leftovers(url string, b *rabbitmq.Bus, stream bus.Stream) string {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err.Error()
	}
	defer ch.Close() // unacknowledged gets go back to their queues
	var out []string
	for _, q := range b.Queues() {
		if q != b.Namespace()+"."+string(stream) && !strings.HasPrefix(q, b.Namespace()+"."+string(stream)+".p") &&
			!strings.HasPrefix(q, b.Namespace()+".retry."+string(stream)+".") {
			continue
		}
		for range 20 {
			m, ok, err := ch.Get(q, false)
			if err != nil || !ok {
				break
			}
			out = append(out, fmt.Sprintf("%s: attempt %v, retried for %q: %.160s", q, m.Headers[bus.HeaderAttempt], m.Headers[bus.HeaderRetryReason], m.Body))
		}
	}
	return strings.Join(out, "\n")
}
