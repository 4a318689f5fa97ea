package httpsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
)

// The README's sink section shows three differently shaped APIs; its YAML
// blocks are these files, verbatim, so what it shows is what the tests below
// sync to convergence.
var shapeFiles = []string{"fakeapi.yaml", "jsonserver.yaml", "crm.yaml"}

func TestDocsQuoteTheShapes(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range shapeFiles {
		doc, err := os.ReadFile(filepath.Join("testdata", "shapes", name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "```yaml\n"+string(doc)+"```\n") {
			t.Errorf("README.md has no ```yaml block holding testdata/shapes/%s verbatim; copy it there (or the file from the README)", name)
		}
	}
	// docs/configuration.md's merge example is a valid create.
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, example, ok := strings.Cut(string(doc), "```yaml\ncreate: ")
	example, _, _ = strings.Cut(example, "\n```")
	if !ok {
		t.Fatal("docs/configuration.md lost its merge example (a ```yaml block starting with create:)")
	}
	if _, err := httpsink.ParseConfig([]byte("defaults: {base_url: \"http://x\"}\nentities:\n  deal:\n    collection: /v2/deals\n    create: " + example + "\n")); err != nil {
		t.Errorf("docs/configuration.md's merge example: %v", err)
	}
}

// loadShape parses testdata/shapes/name as the sink section of
// eventsync.yaml and points its base URL at api, keeping the URL's path.
func loadShape(t *testing.T, name, api string) httpsink.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "shapes", name))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Sink yaml.Node `yaml:"sink"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	section, err := yaml.Marshal(&file.Sink)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := httpsink.ParseConfig(section)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	u, err := url.Parse(cfg.Defaults.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Defaults.BaseURL = api + u.Path
	return cfg
}

// shapeEvents are the events of a sync: per entity 24 keys with 4
// versions each (a fifth of the keys deleted at version 4), shuffled, a
// tenth of them twice. want is each key's newest data, nil when deleted.
func shapeEvents(entities []string) (events []event.Event, want map[string]map[string]json.RawMessage) {
	rng := rand.New(rand.NewPCG(18, 6))
	want = map[string]map[string]json.RawMessage{}
	for _, ent := range entities {
		want[ent] = map[string]json.RawMessage{}
		for i := range 24 {
			key := fmt.Sprintf("%s-%d", ent, i)
			if i%3 == 0 {
				key += "/ ?&é" // must survive paths, queries and bodies
			}
			for v := int64(1); v <= 4; v++ {
				ev := event.Event{ID: fmt.Sprintf("%s/%d", key, v), Entity: ent, Key: key, Version: v, Op: event.OpUpsert,
					Data: json.RawMessage(fmt.Sprintf(`{"title":"%s v%d","price":%d.50,"tags":["a","<b>"],"owner":{"name":"o%d"}}`, key, v, 10*v, i))}
				if v == 4 && i%5 == 0 {
					ev.Op, ev.Data = event.OpDelete, nil
				}
				events = append(events, ev)
				want[ent][key] = ev.Data
			}
		}
	}
	rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
	for i := range len(events) / 10 {
		events = append(events, events[i*7%len(events)])
	}
	return events, want
}

// syncShape runs a worker with cfg on an embedded deployment until every
// event of shapeEvents is settled, and returns the events' newest states.
func syncShape(t *testing.T, cfg httpsink.Config, entities []string) map[string]map[string]json.RawMessage {
	t.Helper()
	return syncInPhases(t, cfg, entities, 1, nil)
}

// checkConverged compares the remote records, by entity and external id,
// with the newest states: one record with the data's members (and no
// other) per live key, none per deleted key.
func checkConverged(t *testing.T, want map[string]map[string]json.RawMessage, remote map[string]map[string][]map[string]any) {
	t.Helper()
	for ent, keys := range want {
		for key, data := range keys {
			recs := remote[ent][key]
			if data == nil {
				if len(recs) != 0 {
					t.Errorf("%s %q was deleted, the API has %v", ent, key, recs)
				}
				continue
			}
			var fields map[string]any
			if err := json.Unmarshal(data, &fields); err != nil {
				t.Fatal(err)
			}
			if len(recs) != 1 || !reflect.DeepEqual(recs[0], fields) {
				t.Errorf("%s %q: the API has %v, want one record %v", ent, key, recs, fields)
			}
		}
		for key := range remote[ent] {
			if _, ok := keys[key]; !ok {
				t.Errorf("%s: the API has records of unknown key %q", ent, key)
			}
		}
	}
}

// byKey groups records by their external id, without the members the API
// or the sink add (bookkeeping).
func byKey(records []map[string]any, externalID string, bookkeeping ...string) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, r := range records {
		key, _ := r[externalID].(string)
		fields := map[string]any{}
		for k, v := range r {
			if k != externalID && !slices.Contains(bookkeeping, k) {
				fields[k] = v
			}
		}
		out[key] = append(out[key], fields)
	}
	return out
}

// The fake API: the one-line collection config, through its faults (5xx,
// and writes that land but time out).
func TestShapeFakeAPI(t *testing.T) {
	t.Parallel()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler), Seed: 18,
		// A fifth of the writes land but time out: with about 40 writes,
		// none timing out has a chance of 1 in 10,000.
		Faults: fakeapi.Faults{ErrorRate: 0.05, TimeoutRate: 0.2, TimeoutHold: fakeapi.Duration(time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	cfg := loadShape(t, "fakeapi.yaml", api.URL)
	cfg.Defaults.Timeout = 300 * time.Millisecond // shorter than the held responses
	want := syncShape(t, cfg, []string{"listing"})
	var records []map[string]any
	for _, r := range api.Records("listings") {
		records = append(records, normalize(t, r))
	}
	checkConverged(t, want, map[string]map[string][]map[string]any{"listing": byKey(records, "external_id", "id", "version")})
	if st := api.Stats(); st.DuplicateRecords != 0 || st.StaleWrites != 0 || st.OverlappingWrites != 0 || st.FaultsInjected["timeout"] == 0 {
		t.Errorf("fake API stats %+v", st)
	}
}

// normalize is v as encoding/json decodes it into any (float64 numbers).
func normalize(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// json-server style: numeric ids, ?external_id= lookups and pages that
// are bare arrays, the version a member of the body.
func TestShapeJSONServer(t *testing.T) {
	t.Parallel()
	api := newShapeAPI(t, shapeSpec{
		collections: map[string]string{"/listings": ""},
		externalID:  "external_id",
		numericIDs:  true,
		version: func(_ *http.Request, body map[string]any) (float64, bool) {
			v, ok := body["version"].(float64)
			return v, ok
		},
		pageParams: [2]string{"_page", "_limit"},
	})
	want := syncShape(t, loadShape(t, "jsonserver.yaml", api.srv.URL), []string{"listing"})
	checkConverged(t, want, map[string]map[string][]map[string]any{"listing": api.byKey("/listings", "version")})
	api.checkHealthy(t)

	// The README's list settings page through the same records.
	s, err := httpsink.New(loadShape(t, "jsonserver.yaml", api.srv.URL), httpsink.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	listed := 0
	if err := s.List(context.Background(), "listing", func(r sink.RemoteRecord) error {
		if _, err := strconv.Atoi(r.RemoteID); err != nil || want["listing"][r.Key] == nil {
			return fmt.Errorf("listed %+v", r)
		}
		listed++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if live := len(api.byKey("/listings")); listed != live {
		t.Errorf("listed %d records, the API has %d", listed, live)
	}
}

// A CRM: nested ids ({"data":{"id":…}}), PATCH updates, bare-array
// lookups by external_ref, the version in a header, and a second entity
// whose bodies are wrapped in an envelope with merge.
func TestShapeCRM(t *testing.T) {
	t.Setenv("CRM_TOKEN", "t0ken")
	api := newShapeAPI(t, shapeSpec{
		collections:  map[string]string{"/api/v2/contacts": "", "/api/v2/deals": "deal"},
		externalID:   "external_ref",
		wrapResponse: true,
		patch:        true,
		token:        "Bearer t0ken",
		version: func(r *http.Request, _ map[string]any) (float64, bool) {
			v, err := strconv.ParseInt(r.Header.Get("X-Source-Version"), 10, 64)
			return float64(v), err == nil
		},
	})
	want := syncShape(t, loadShape(t, "crm.yaml", api.srv.URL), []string{"contact", "deal"})
	checkConverged(t, want, map[string]map[string][]map[string]any{
		"contact": api.byKey("/api/v2/contacts"),
		"deal":    api.byKey("/api/v2/deals"),
	})
	api.checkHealthy(t)
}

// shapeSpec is the shape of a shapeAPI.
type shapeSpec struct {
	// collections maps a collection path to the body member that wraps
	// its records ("" for none).
	collections  map[string]string
	externalID   string
	numericIDs   bool
	wrapResponse bool // a record's responses are {"data": record}
	patch        bool // updates are PATCH (merge), else PUT (replace)
	token        string
	version      func(r *http.Request, body map[string]any) (float64, bool)
	pageParams   [2]string
}

// shapeAPI is a small REST API of configurable shape that keeps records
// in memory, injects failures (a 503 before some writes, a 504 after the
// first write of some records: a create whose outcome the client cannot
// know) and counts what a correct client never causes: duplicate records
// and writes of a lower version.
type shapeAPI struct {
	shapeSpec
	srv      *httptest.Server
	mu       sync.Mutex
	nextID   int
	records  map[string]map[string]map[string]any // collection → id → record
	versions map[string]float64                   // collection/id → version written
	requests int
	stale    int
	faults   int
	lookups  int
	problems []string
}

func newShapeAPI(t *testing.T, spec shapeSpec) *shapeAPI {
	t.Helper()
	api := &shapeAPI{shapeSpec: spec}
	api.records = map[string]map[string]map[string]any{}
	api.versions = map[string]float64{}
	for c := range api.collections {
		api.records[c] = map[string]map[string]any{}
	}
	api.srv = httptest.NewServer(http.HandlerFunc(api.serve))
	t.Cleanup(api.srv.Close)
	return api
}

func (a *shapeAPI) serve(w http.ResponseWriter, r *http.Request) {
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if v != nil {
			_ = json.NewEncoder(w).Encode(v)
		}
	}
	if a.token != "" && r.Header.Get("Authorization") != a.token {
		reply(http.StatusUnauthorized, map[string]string{"error": "bad token"})
		return
	}
	coll, id := r.URL.Path, ""
	if _, ok := a.collections[coll]; !ok {
		coll, id = path2(r.URL.Path)
	}
	envelope, ok := a.collections[coll]
	if !ok {
		reply(http.StatusNotFound, map[string]string{"error": "no such collection " + coll})
		return
	}
	var body map[string]any
	if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &body); err != nil {
			reply(http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if envelope != "" {
			inner, ok := body[envelope].(map[string]any)
			if !ok || len(body) != 1 {
				reply(http.StatusUnprocessableEntity, map[string]string{"error": "want {\"" + envelope + "\": {…}}"})
				return
			}
			body = inner
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests++
	if body != nil && a.requests%11 == 0 {
		a.faults++
		reply(http.StatusServiceUnavailable, map[string]string{"error": "busy"})
		return
	}
	respond := func(status int, rec map[string]any) {
		if a.wrapResponse {
			reply(status, map[string]any{"data": rec})
			return
		}
		reply(status, rec)
	}
	recs := a.records[coll]
	switch {
	case r.Method == http.MethodGet && id == "" && r.URL.Query().Has(a.externalID):
		a.lookups++
		found := []map[string]any{}
		for _, rec := range recs {
			if rec[a.externalID] == r.URL.Query().Get(a.externalID) {
				found = append(found, rec)
			}
		}
		reply(http.StatusOK, found) // a bare array
	case r.Method == http.MethodGet && id == "" && a.pageParams[0] != "":
		page, _ := strconv.Atoi(r.URL.Query().Get(a.pageParams[0]))
		limit, _ := strconv.Atoi(r.URL.Query().Get(a.pageParams[1]))
		ids := sortedIDs(recs)
		out := []map[string]any{}
		for i := (page - 1) * limit; i >= 0 && i < page*limit && i < len(ids); i++ {
			out = append(out, recs[ids[i]])
		}
		reply(http.StatusOK, out) // a bare array
	case r.Method == http.MethodPost && id == "":
		_, ok := body[a.externalID].(string)
		v, vok := a.version(r, body)
		if !ok || !vok {
			reply(http.StatusUnprocessableEntity, map[string]string{"error": "external id or version missing"})
			return
		}
		a.nextID++
		rec := maps.Clone(body)
		newID := "c_" + strconv.Itoa(a.nextID)
		rec["id"] = newID
		if a.numericIDs {
			newID = strconv.Itoa(a.nextID)
			rec["id"] = float64(a.nextID)
		}
		recs[newID] = rec
		a.versions[coll+"/"+newID] = v
		if a.nextID%4 == 0 {
			a.faults++
			reply(http.StatusGatewayTimeout, map[string]string{"error": "upstream timed out"}) // the record exists
			return
		}
		respond(http.StatusCreated, rec)
	case (r.Method == http.MethodPut && !a.patch || r.Method == http.MethodPatch && a.patch) && id != "":
		rec, ok := recs[id]
		if !ok {
			reply(http.StatusNotFound, map[string]string{"error": "no record " + id})
			return
		}
		v, vok := a.version(r, body)
		if !vok {
			reply(http.StatusUnprocessableEntity, map[string]string{"error": "version missing"})
			return
		}
		if v < a.versions[coll+"/"+id] {
			a.stale++
			reply(http.StatusConflict, map[string]string{"error": "older version"})
			return
		}
		if !a.patch {
			rec = map[string]any{"id": rec["id"]}
		}
		for k, val := range body {
			rec[k] = val
		}
		recs[id] = rec
		a.versions[coll+"/"+id] = v
		respond(http.StatusOK, rec)
	case r.Method == http.MethodDelete && id != "":
		if _, ok := recs[id]; !ok {
			reply(http.StatusNotFound, map[string]string{"error": "no record " + id})
			return
		}
		delete(recs, id)
		reply(http.StatusNoContent, nil)
	default:
		a.problems = append(a.problems, r.Method+" "+r.URL.String())
		reply(http.StatusMethodNotAllowed, map[string]string{"error": "not this shape"})
	}
}

// path2 splits /collection/path/id into the collection and the id.
func path2(p string) (string, string) {
	i := strings.LastIndexByte(p, '/')
	return p[:i], p[i+1:]
}

func sortedIDs(recs map[string]map[string]any) []string {
	ids := make([]string, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		x, _ := strconv.Atoi(strings.TrimPrefix(a, "c_"))
		y, _ := strconv.Atoi(strings.TrimPrefix(b, "c_"))
		return x - y
	})
	return ids
}

// byKey is a collection's records grouped by external id, without id and
// the bookkeeping members.
func (a *shapeAPI) byKey(coll string, bookkeeping ...string) map[string][]map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	var recs []map[string]any
	for _, rec := range a.records[coll] {
		recs = append(recs, rec)
	}
	return byKey(recs, a.externalID, append(bookkeeping, "id")...)
}

// checkHealthy fails the test when the API saw a request of another shape
// or a write of an older version, or injected no failure or was never
// asked for a lookup (which resolves the creates it answered with 504).
func (a *shapeAPI) checkHealthy(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.problems) > 0 || a.stale > 0 || a.faults == 0 || a.lookups == 0 {
		t.Errorf("API saw %d stale writes, %d requests of another shape %q, %d lookups, injected %d failures", a.stale, len(a.problems), a.problems, a.lookups, a.faults)
	}
}
