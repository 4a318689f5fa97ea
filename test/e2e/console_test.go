package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/testenv"
	redisstore "github.com/eventsync/eventsync/store/redis"
)

// chromium returns the path of a headless-capable Chromium: skipped with
// a hint when there is none, failed under EVENTSYNC_REQUIRE_SERVICES=1.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "needs Chromium (apt-get install -y chromium) for the browser test"
	if testenv.Required() {
		t.Fatalf("%s; it is required under %s=1", msg, testenv.RequireEnv)
	}
	t.Skip("skipping: " + msg + "; set " + testenv.RequireEnv + "=1 to make this a failure")
	return ""
}

// urlFromLog waits for the first http:// line a process printed.
func urlFromLog(t *testing.T, p *proc) string {
	t.Helper()
	var url string
	waitFor(t, 30*time.Second, p.name+" to print its URL", func() error {
		f, err := os.Open(p.log)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "http://") {
				url = strings.TrimSuffix(l, "/")
				return nil
			}
		}
		return fmt.Errorf("no URL yet:\n%s", tail(p.log, 500))
	})
	return url
}

func getBody(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestConsoleInABrowser drives the console in headless Chromium against
// real eventsync processes (worker, fake API, console): a poison event is
// parked, found on the parked page, edited, replayed and applied; the
// live stream is paused and resumed from the overview, and the worker
// stops and resumes. EVENTSYNC_SCREENSHOT_DIR keeps screenshots of the
// pages there (docs/ holds the ones the README shows).
func TestConsoleInABrowser(t *testing.T) {
	chrome := chromium(t)
	amqpURL := testenv.RabbitMQ(t)
	redisURL := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := testenv.UniqueName("console")
	t.Cleanup(func() { deleteRedisPrefix(t, redisURL, ns) })

	b, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: amqpURL, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer deleteQueues(t, amqpURL, b)
	st, err := redisstore.Open(ctx, redisstore.Config{URL: redisURL, Prefix: ns, PoolSize: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	api := urlFromLog(t, start(t, "fakeapi", "fakeapi", "--listen", "127.0.0.1:0"))
	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	cfg := fmt.Sprintf(`bus: %s
store: %s
namespace: %s
worker:
  concurrency: 4
  shutdown_grace: 5s
log:
  level: info
sink:
  defaults:
    base_url: %s
    timeout: 2s
  entities:
    listing:
      collection: listings
`, amqpURL, redisURL, ns, api)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	const token = "e2e-console-token-0123456789"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "worker", "worker", "--config", cfgPath, "--admin", "off", "--worker-id", "console-w1")
	consoleProc := start(t, "console", "console", "--config", cfgPath, "--listen", "127.0.0.1:0", "--token-file", tokenFile)
	consoleURL := urlFromLog(t, consoleProc)

	// A poison event: "version" is a string, so the worker parks it.
	poison := `{"id":"p-1","entity":"listing","key":"poison-1","version":"1","op":"upsert","data":{"title":"fixed in the console"}}`
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(poison)}); err != nil {
		t.Fatal(err)
	}
	var parkedID string
	waitFor(t, 30*time.Second, "the poison event to be parked", func() error {
		msgs, err := b.ListParked(ctx, bus.ParkedFilter{})
		if err != nil {
			return err
		}
		if len(msgs) != 1 {
			return fmt.Errorf("%d parked", len(msgs))
		}
		parkedID = msgs[0].ID
		return nil
	})

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.WindowSize(1280, 900))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	defer cancelBrowser()
	// Each step is bounded, so that a missing element fails the test with
	// its name instead of hanging until the test's deadline.
	// The first action starts the browser, under the test's context.
	if err := chromedp.Do(browser, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	failed := func(what string, err error) {
		t.Helper()
		html, _ := chromedp.Run(browser, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("browser: %s: %v\npage:\n%.3000s", what, err, html)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			failed(what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			failed("read "+sel, err)
		}
		return s
	}
	shots := os.Getenv("EVENTSYNC_SCREENSHOT_DIR")
	screenshot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
		if err != nil {
			failed("screenshot "+name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	step("sign in",
		chromedp.Navigate(consoleURL+"/login?next=/parked"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.SendKeys(chromedp.CSS("#operator"), "e2e"),
		chromedp.Click(chromedp.CSS("#sign-in")),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+parkedID+`"]`)),
	)
	reason := text(`tr[data-id="` + parkedID + `"] .reason`)
	if !strings.Contains(reason, "version") {
		t.Errorf("parked row's reason %q does not name the field", reason)
	}
	screenshot("console-parked.png")

	// Edit: an invalid body first (the page keeps it and says why), then
	// the fix.
	step("open the parked event",
		chromedp.Click(chromedp.CSS(`tr[data-id="`+parkedID+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#body")),
		chromedp.SetValue(chromedp.CSS("#body"), strings.Replace(poison, `"version":"1"`, `"version":0`, 1)),
		chromedp.Click(chromedp.CSS("#replay-edited")),
		chromedp.WaitVisible(chromedp.CSS("#edit-error")),
	)
	editErr := text("#edit-error")
	if !strings.Contains(editErr, "Not replayed") || !strings.Contains(editErr, "version") {
		t.Errorf("refusal of an invalid edit reads %q", editErr)
	}
	if msgs, err := b.ListParked(ctx, bus.ParkedFilter{}); err != nil || len(msgs) != 1 {
		t.Fatalf("after a refused edit: %d parked, %v; want the message still parked", len(msgs), err)
	}
	fixed := strings.Replace(poison, `"version":"1"`, `"version":1`, 1)
	step("replay the edited event",
		chromedp.SetValue(chromedp.CSS("#body"), fixed),
		chromedp.Click(chromedp.CSS("#replay-edited")),
		chromedp.WaitVisible(chromedp.CSS("#none")),
	)
	flash := text("#flash")
	if !strings.Contains(flash, "Replayed listing poison-1 version 1") {
		t.Errorf("flash after the replay: %q", flash)
	}
	waitFor(t, 30*time.Second, "the edited event applied on the fake API", func() error {
		body, err := getBody(ctx, api+"/_admin/records/listings")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `"external_id":"poison-1"`) || !strings.Contains(body, "fixed in the console") {
			return fmt.Errorf("records: %s", body)
		}
		return nil
	})

	// Pause live from the overview; the worker stops consuming, and an
	// event published meanwhile waits in the queue.
	consuming := func(want bool) func() error {
		return func() error {
			ws, err := control.Workers(ctx, st)
			if err != nil {
				return err
			}
			if len(ws) != 1 || ws[0].Consuming[bus.Live] != want {
				return fmt.Errorf("heartbeats %+v, want live consuming %v", ws, want)
			}
			return nil
		}
	}
	waitFor(t, 20*time.Second, "the worker consuming live", consuming(true))
	step("pause live",
		chromedp.Navigate(consoleURL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#pause-live")),
		chromedp.SendKeys(chromedp.CSS(`#stream-live input[name="reason"]`), "e2e maintenance"),
		chromedp.Click(chromedp.CSS("#pause-live")),
		chromedp.WaitVisible(chromedp.CSS("#resume-live")),
		chromedp.WaitVisible(chromedp.CSS(`#stream-live[data-paused="true"]`)),
	)
	waitFor(t, 20*time.Second, "the worker to stop consuming live", consuming(false))
	later := `{"id":"l-2","entity":"listing","key":"while-paused","version":1,"op":"upsert","data":{"title":"after resume"}}`
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(later)}); err != nil {
		t.Fatal(err)
	}
	// Two heartbeats later (each one 2 s apart) the event still waits.
	ws, err := control.Workers(ctx, st)
	if err != nil || len(ws) != 1 {
		t.Fatalf("heartbeats: %v %v", ws, err)
	}
	seen := ws[0].SeenAt
	waitFor(t, 20*time.Second, "two more heartbeats of the paused worker", func() error {
		ws, err := control.Workers(ctx, st)
		if err != nil || len(ws) != 1 {
			return fmt.Errorf("heartbeats %v: %v", ws, err)
		}
		if ws[0].SeenAt.Sub(seen) < 3*time.Second {
			return fmt.Errorf("last heartbeat %s", ws[0].SeenAt)
		}
		return nil
	})
	if s, err := b.Stats(ctx, bus.Live); err != nil || s.Ready != 1 {
		t.Fatalf("live while paused: %+v, %v; want the new event waiting (ready 1)", s, err)
	}
	if body, _ := getBody(ctx, api+"/_admin/records/listings"); strings.Contains(body, "while-paused") {
		t.Fatal("an event was applied while live was paused")
	}
	step("reload the overview", chromedp.Navigate(consoleURL+"/"), chromedp.WaitVisible(chromedp.CSS("#resume-live")))
	screenshot("console-overview.png")
	if shots != "" { // the same page as a phone shows it
		step("phone viewport", chromedp.EmulateViewport(390, 844), chromedp.Navigate(consoleURL+"/"), chromedp.WaitVisible(chromedp.CSS("#resume-live")))
		screenshot("console-phone.png")
		step("laptop viewport", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(consoleURL+"/"), chromedp.WaitVisible(chromedp.CSS("#resume-live")))
	}
	step("resume live",
		chromedp.Click(chromedp.CSS("#resume-live")),
		chromedp.WaitVisible(chromedp.CSS("#pause-live")),
		chromedp.WaitVisible(chromedp.CSS(`#stream-live[data-paused="false"]`)),
	)
	waitFor(t, 20*time.Second, "the worker to consume live again", consuming(true))
	waitFor(t, 30*time.Second, "the event published while paused to be applied", func() error {
		body, err := getBody(ctx, api+"/_admin/records/listings")
		if err != nil {
			return err
		}
		if !strings.Contains(body, "while-paused") {
			return fmt.Errorf("records: %s", body)
		}
		return nil
	})

	// The console's log has one audit line per change, naming the operator.
	logs := tail(consoleProc.log, 20000)
	for _, action := range []string{"action=edit-and-replay", "action=pause", "action=resume"} {
		if !strings.Contains(logs, action) || !strings.Contains(logs, `who="e2e (session)`) {
			t.Errorf("console log has no audit line with %s by e2e:\n%s", action, logs)
		}
	}
}
