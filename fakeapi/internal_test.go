package fakeapi

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestVersionLess(t *testing.T) {
	t.Parallel()
	v := func(raw string) version { return parseVersion([]byte(raw)) }
	cases := []struct {
		a, b string
		less bool
	}{
		{"2", "3", true}, {"3", "2", false}, {"3", "3", false},
		{"2.5", "3", true}, {"3", "2.5", false}, {"-1", "0", true},
		{"9007199254740992", "9007199254740993", true},
		{`"1"`, "2", false}, {"1", `null`, false}, {`{}`, "1", false},
	}
	for _, c := range cases {
		if got := v(c.a).less(v(c.b)); got != c.less {
			t.Errorf("%s < %s = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}

// TestNDJSONDumpOfManyRecords streams a large collection while records are
// deleted and created, proving the dump is chunked, complete for records
// that stay, and race-free (run with -race).
func TestNDJSONDumpOfManyRecords(t *testing.T) {
	t.Parallel()
	s, err := New(Config{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 50_000
	c := s.collection("listing", true)
	for i := range n {
		id := strconv.FormatUint(s.nextID.Add(1), 10)
		rec, err := parseBody([]byte(`{"external_id":"k`+strconv.Itoa(i)+`","version":1}`), id, "version")
		if err != nil {
			t.Fatal(err)
		}
		c.insert(rec)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	defer hs.Client().CloseIdleConnections()

	// Churn while the dump runs: delete every 10th of the first half (with
	// compaction via paging) and create new records.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= n/2; i += 10 {
			c.remove(strconv.Itoa(i))
			if i%5001 == 0 {
				c.page(0, 10)
			}
		}
		for range 1000 {
			rec, _ := parseBody([]byte(`{"external_id":"new"}`), strconv.FormatUint(s.nextID.Add(1), 10), "version")
			c.insert(rec)
		}
	})
	res, err := hs.Client().Get(hs.URL + "/_admin/records/listing")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ContentLength != -1 || res.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("dump is not streamed NDJSON: length %d, type %q", res.ContentLength, res.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(res.Body)
	seen := make(map[string]bool, n)
	last := 0
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %d %q: %v", len(seen)+1, sc.Bytes(), err)
		}
		id, _ := strconv.Atoi(r.ID())
		if id <= last {
			t.Fatalf("record %d after %d: not in creation order or dumped twice", id, last)
		}
		last = id
		seen[r.ID()] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// Every record that was never deleted is in the dump.
	for i := n/2 + 1; i <= n; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("record %d missing from the dump (%d lines)", i, len(seen))
		}
	}
	if len(seen) > n {
		t.Fatalf("dumped %d lines for at most %d records present at the start", len(seen), n)
	}
}
