package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemoConverges runs the whole demo, small, with realistic faults and
// chaos, and checks its report: converged, no duplicate record, no
// overlapping write, events applied, the resync covered the table and was
// applied, and the chaos layer really injected duplicates and reorders.
func TestDemoConverges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var progress bytes.Buffer
	dir := filepath.Join(t.TempDir(), "demo")
	r, err := Run(ctx, Config{
		Entities:      300,
		Duration:      3 * time.Second,
		Rate:          60,
		Workers:       3,
		Concurrency:   16,
		Faults:        FaultsRealistic,
		DataDir:       dir,
		Seed:          42,
		Progress:      &progress,
		ProgressEvery: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	r.Write(&text)
	t.Logf("report:\n%s", text.String())
	if !r.OK() {
		t.Fatalf("demo failed: %v", r.Problems)
	}
	if !r.Verdict.Converged() || r.API.DuplicateRecords != 0 || r.API.OverlappingWrites != 0 {
		t.Errorf("verdict %+v, duplicates %d, overlaps %d", r.Verdict, r.API.DuplicateRecords, r.API.OverlappingWrites)
	}
	if r.Applied() < 300 {
		t.Errorf("applied %d events, want at least the 300 initial creates", r.Applied())
	}
	if r.Published < 300 {
		t.Errorf("relay published %d events, want at least 300", r.Published)
	}
	if !r.Resync.Done() || r.Resync.Published < 200 {
		t.Errorf("resync %+v: want it done over the whole table", r.Resync)
	}
	if r.Chaos.Duplicates == 0 || r.Chaos.Reordered == 0 {
		t.Errorf("chaos injected %+v, want duplicates and reorders", r.Chaos)
	}
	if r.Results["duplicate"]+r.Results["stale"] == 0 {
		t.Errorf("no duplicate or stale deliveries recognised: %v", r.Results)
	}
	if r.Workload.Committed == 0 || r.Workload.RolledBack == 0 && r.Workload.Transactions > 100 {
		t.Errorf("workload %+v", r.Workload)
	}
	if r.Verdict.SourceRows == 0 || r.Verdict.SourceRows != r.Verdict.RemoteRecords {
		t.Errorf("verify compared %d rows with %d records", r.Verdict.SourceRows, r.Verdict.RemoteRecords)
	}
	if !strings.Contains(progress.String(), PhaseResync) || !strings.Contains(progress.String(), "applied") {
		t.Errorf("progress never showed the resync phase:\n%s", progress.String())
	}
	for _, f := range []string{"app.db", "fakeapi.json", "demo.log", "nats", markerFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("data dir lacks %s: %v", f, err)
		}
	}
	if !strings.Contains(text.String(), "CONVERGED") {
		t.Errorf("report text lacks the verdict")
	}
}
