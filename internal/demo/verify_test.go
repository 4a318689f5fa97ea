package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/sqlite"
)

// TestVerifyAPIFindsDrift proves the demo's verdict can fail: a missing,
// an extra and a differing record, and a leaked secret column are each
// found and counted.
func TestVerifyAPIFindsDrift(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	api, err := fakeapi.Start(ctx, fakeapi.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = api.Close() }()
	path := filepath.Join(t.TempDir(), "app.db")
	app, err := openAppDB(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = app.Close() }()
	src, err := sqlite.Open(ctx, sqlite.Config{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: Table, Entity: Entity, KeyColumn: "id", ExcludeColumns: excludedColumns}); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 4; id++ {
		if _, err := app.ExecContext(ctx, `INSERT INTO listings (id, title, price, city, owner_email) VALUES (?, ?, ?, 'Ghent', ?)`, id, fmt.Sprintf("Flat %d", id), 100+id, ownerEmail(int64(id))); err != nil {
			t.Fatal(err)
		}
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	post := func(body string) {
		t.Helper()
		resp, err := (&http.Client{Transport: tr}).Post(api.URL+"/v1/listings", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %s", body, resp.Status)
		}
	}
	post(`{"external_id":"1","version":1,"title":"Flat 1","price":101,"city":"Ghent"}`)                                   // equal
	post(`{"external_id":"2","version":2,"title":"Flat 2","price":999,"city":"Ghent"}`)                                   // differing price
	post(`{"external_id":"4","version":4,"title":"Flat 4","price":104,"city":"Ghent","owner_email":"host4@example.com"}`) // leaked secret
	post(`{"external_id":"99","version":9,"title":"Gone","price":1,"city":"Ghent"}`)                                      // extra
	// key 3 is missing

	d := &demo{log: quiet, api: api, src: src, spec: source.SnapshotSpec{Table: Table, Entity: Entity, KeyColumn: "id", ExcludeColumns: excludedColumns}}
	v, err := d.verifyAPI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Converged() || v.SourceRows != 4 || v.RemoteRecords != 4 || v.Missing != 1 || v.Extra != 1 || v.Differing != 1 || v.Duplicated != 0 || v.SecretsLeaked != 1 {
		t.Fatalf("verdict %+v: want 4 rows, 4 records, 1 missing, 1 extra, 1 differing, 1 leaked secret", v)
	}
	r := &Report{Verdict: v}
	r.judge()
	var text bytes.Buffer
	r.Write(&text)
	if r.OK() || !strings.Contains(text.String(), "FAILED: not converged") || !strings.Contains(text.String(), "owner_email") {
		t.Errorf("report does not fail clearly:\n%s", text.String())
	}
}

// TestJudge checks each exit condition on its own.
func TestJudge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		r    Report
		want string
	}{
		{"clean", Report{}, ""},
		{"duplicates", Report{API: APIReport{DuplicateRecords: 2}}, "2 duplicate records"},
		{"overlaps", Report{API: APIReport{OverlappingWrites: 1}}, "1 overlapping writes"},
		{"missing", Report{Verdict: Verdict{Missing: 3}}, "3 missing"},
		{"stale writes are reported, not fatal", Report{API: APIReport{StaleWrites: 5}}, ""},
	} {
		r := tc.r
		r.judge()
		got := strings.Join(r.Problems, "; ")
		if (tc.want == "") != r.OK() || !strings.Contains(got, tc.want) {
			t.Errorf("%s: OK=%v problems %q, want %q", tc.name, r.OK(), got, tc.want)
		}
	}
}
