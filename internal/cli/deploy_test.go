package cli

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/sink"
)

// recordingRegisterer passes collectors on to a registry and keeps the
// names of every metric they describe.
type recordingRegisterer struct {
	prometheus.Registerer
	mu    sync.Mutex
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recordingRegisterer) note(c prometheus.Collector) {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.note(c)
	return r.Registerer.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.note(c)
	}
	r.Registerer.MustRegister(cs...)
}

// nopSink is a Go sink that is never called: the test only builds workers.
type nopSink struct{ sink.Sink }

// registeredMetricNames builds what the binary's worker and relay register
// (engine, throttle, queue metrics, relay, Go and process collectors) on
// an embedded deployment, and returns every metric name a query may use:
// each described name, and a histogram's series (a name and its _bucket,
// _sum and _count: which names are histograms the descriptions do not say,
// so any name may take those suffixes).
func registeredMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	rec := &recordingRegisterer{Registerer: prometheus.NewRegistry(), names: map[string]bool{}}
	rec.MustRegister(runtimeCollectors()...)                                       // as newRegistry does
	if err := os.WriteFile(filepath.Join(dir, "app.db"), nil, 0o600); err != nil { // an empty SQLite database
		t.Fatal(err)
	}
	client, err := eventsync.Open(eventsync.Config{DataDir: filepath.Join(dir, "deployment"), Source: "sqlite://" + filepath.Join(dir, "app.db")},
		eventsync.WithSink(nopSink{}), eventsync.WithRegisterer(rec), eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	src, err := client.Source(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewRelay(ctx, eventsync.RelayConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewWorker(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Sink(ctx); err != nil { // the throttle's metrics
		t.Fatal(err)
	}
	names := map[string]bool{}
	for n := range rec.names {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			names[n+suffix] = true
		}
	}
	return names
}

// metricName finds the metric names in a PromQL expression: a name is an
// identifier that starts with one of our prefixes (no label of ours does).
var metricName = regexp.MustCompile(`\b(?:eventsync|go|process)_[A-Za-z0-9_:]*`)

// selector finds identifiers followed by a label matcher, which are metric
// names whatever they are called, so a metric of another exporter cannot
// slip past metricName.
var selector = regexp.MustCompile(`\b([A-Za-z_:][A-Za-z0-9_:]*)\s*\{`)

func metricNames(expr string) []string {
	out := metricName.FindAllString(expr, -1)
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestDashboardAndAlertsUseRegisteredMetrics: every metric the Grafana
// dashboard and the Prometheus alerting rules in deploy/ query is one the
// eventsync binary really registers, so a renamed metric cannot leave a
// panel blank or an alert silent.
func TestDashboardAndAlertsUseRegisteredMetrics(t *testing.T) {
	names := registeredMetricNames(t)
	for _, want := range []string{"eventsync_events_total", "eventsync_breaker_state", "eventsync_queue_ready", "eventsync_parked_messages", "eventsync_throttle_rate", "eventsync_relay_published_total", "go_goroutines"} {
		if !names[want] {
			t.Fatalf("the registries lack %s: the test does not build what the binary registers (got %d names)", want, len(names))
		}
	}
	exprs := map[string][]string{} // where -> expressions

	raw, err := os.ReadFile("../../deploy/grafana/eventsync.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("eventsync.json: %v", err)
	}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs["dashboard panel "+p.Title] = append(exprs["dashboard panel "+p.Title], tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v.Query.(string); ok && strings.Contains(q, "(") {
			exprs["dashboard variable "+v.Name] = append(exprs["dashboard variable "+v.Name], q)
		}
	}

	raw, err = os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert rule %q: want alert, expr, labels.severity and annotations.summary", r.Alert)
			}
			exprs["alert "+r.Alert] = append(exprs["alert "+r.Alert], r.Expr)
		}
	}
	if alerts == 0 || len(dash.Panels) == 0 {
		t.Fatalf("%d alert rules and %d panels read; want some of each", alerts, len(dash.Panels))
	}

	used := 0
	where := make([]string, 0, len(exprs))
	for w := range exprs {
		where = append(where, w)
	}
	sort.Strings(where)
	for _, w := range where {
		for _, e := range exprs[w] {
			found := metricNames(e)
			if len(found) == 0 {
				t.Errorf("%s: no metric in %q", w, e)
			}
			for _, n := range found {
				used++
				if !names[n] {
					t.Errorf("%s uses %s, which eventsync does not register (query %q)", w, n, e)
				}
			}
		}
	}
	t.Logf("%d metric uses in %d queries checked against %d registered names", used, len(where), len(names))
}
