package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store/redis"
)

// run executes one command line and returns exit code, stdout and stderr.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func statusOf(t *testing.T, conn []string) ClusterStatus {
	t.Helper()
	code, out, errOut := run(t, "", append([]string{"ctl", "status", "--json"}, conn...)...)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	var st ClusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return st
}

func liveOf(st ClusterStatus) StreamStatus {
	for _, s := range st.Streams {
		if s.Stream == bus.Live {
			return s
		}
	}
	return StreamStatus{}
}

func TestCtlAndPublishAgainstRealServices(t *testing.T) {
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	redisURL := testenv.Redis(t)
	conn := []string{"--bus", testenv.RabbitMQ(t), "--store", redisURL, "--namespace", b.Namespace()}
	busOnly := []string{"--bus", testenv.RabbitMQ(t), "--namespace", b.Namespace()}
	ctx := context.Background()

	code, out, errOut := run(t, "", append([]string{"ctl", "pause", "--stream", "live", "--reason", "maintenance"}, conn[2:]...)...)
	if code != 0 || !strings.Contains(out, "paused") {
		t.Fatalf("pause: %d %q %q", code, out, errOut)
	}
	st, err := redis.Open(ctx, redis.Config{URL: redisURL, Prefix: b.Namespace()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p, err := control.Paused(ctx, st, bus.Live); err != nil || p == nil || p.Reason != "maintenance" {
		t.Fatalf("pause flag not in the store: %+v %v", p, err)
	}
	if s := liveOf(statusOf(t, conn)); !s.Paused {
		t.Fatalf("status does not show the pause: %+v", s)
	}

	// publish: a bad line stops it after the good lines before it.
	events := `{"id":"1","entity":"listing","key":"1","version":1,"op":"delete"}

{"id":"2","entity":"listing","key":"2","version":1,"op":"delete"}
{"id":"3","entity":"listing","key":"3","version":"1","op":"delete"}
{"id":"4","entity":"listing","key":"4","version":1,"op":"delete"}
`
	code, out, errOut = run(t, events, append([]string{"publish", "--stream", "live"}, busOnly...)...)
	if code != 1 || !strings.Contains(errOut, "line 4") || !strings.Contains(errOut, `"version"`) || !strings.Contains(out, "published 2 events") {
		t.Fatalf("publish with a bad line: code %d out %q err %q", code, out, errOut)
	}
	waitReady := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			s := liveOf(statusOf(t, conn))
			if s.Ready == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("live ready %d, want %d", s.Ready, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitReady(2)

	code, _, errOut = run(t, "", append([]string{"ctl", "resume", "--stream", "live"}, conn[2:]...)...)
	if p, _ := control.Paused(ctx, st, bus.Live); code != 0 || p != nil {
		t.Fatalf("resume: %d %s %+v", code, errOut, p)
	}

	// Park one message through the bus, then list, filter, replay.
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	d := <-sub.Deliveries()
	if err := d.Park(ctx, "test: HTTP 422 from the API"); err != nil {
		t.Fatal(err)
	}
	_ = sub.Close()
	code, out, errOut = run(t, "", append([]string{"ctl", "parked", "list", "--json", "--reason", "422"}, busOnly...)...)
	var parked []bus.ParkedMessage
	if code != 0 || json.Unmarshal([]byte(out), &parked) != nil || len(parked) != 1 || parked[0].Stream != bus.Live {
		t.Fatalf("parked list: %d %q %q", code, out, errOut)
	}
	if s := liveOf(statusOf(t, conn)); s.Parked != 1 || s.Unacked != 0 {
		t.Errorf("status after parking one message: parked %d, unacked %d; want 1, 0", s.Parked, s.Unacked)
	}
	code, out, _ = run(t, "", append([]string{"ctl", "parked", "list", "--entity", "user"}, busOnly...)...)
	if code != 0 || !strings.Contains(out, "0 parked message(s)") {
		t.Fatalf("entity filter: %q", out)
	}
	code, out, _ = run(t, "", append([]string{"ctl", "parked", "show", "--id", parked[0].ID}, busOnly...)...)
	if code != 0 || !strings.Contains(out, `"entity":"listing"`) {
		t.Fatalf("show: %q", out)
	}
	if code, _, errOut = run(t, "", append([]string{"ctl", "parked", "purge"}, busOnly...)...); code == 0 || !strings.Contains(errOut, "--yes") {
		t.Fatalf("purge without --yes must refuse: %d %q", code, errOut)
	}
	code, out, errOut = run(t, "", append([]string{"ctl", "parked", "replay"}, busOnly...)...)
	if code != 0 || !strings.Contains(out, "replayed 1") {
		t.Fatalf("replay: %d %q %q", code, out, errOut)
	}
	waitReady(2)
}

func TestBadFlagsAndURLsAreClear(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"nonsense"}, `unknown command "nonsense"`},
		{[]string{"publish", "--stream", "bulk"}, `unknown stream "bulk"`},
		{[]string{"worker", "--bus", "kafka://x"}, "bus: \"kafka://x\" has an unsupported scheme"},
		{[]string{"worker", "--config", "/does/not/exist.yaml"}, "an existing YAML file"},
		{[]string{"ctl", "pause"}, `missing --stream`},
		{[]string{"ctl", "pause", "--stream", "lve", "--store", "redis://127.0.0.1:1"}, `--stream: unknown stream "lve"`},
		{[]string{"ctl", "frobnicate"}, `unknown command "frobnicate" for "eventsync ctl"`},
		{[]string{"ctl", "parked", "list", "--since", "last tuesday"}, "neither an RFC 3339 time nor a duration"},
		{[]string{"worker", "extra-arg"}, `unexpected argument(s) "extra-arg"`},
		{[]string{"ctl", "status", "--store", "postgres://nobody@127.0.0.1:1/x", "--bus", "amqp://guest:guest@127.0.0.1:1/"}, "127.0.0.1:1"},
	}
	for _, c := range cases {
		code, _, errOut := run(t, "", c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d, stderr %q, want it to mention %q", c.args, code, errOut, c.want)
		}
	}
}
