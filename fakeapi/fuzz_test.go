package fakeapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func FuzzParseFaults(f *testing.F) {
	for _, s := range []string{
		`{"latency":"50ms","jitter":"10ms","error_rate":0.1,"timeout_rate":0.01,"timeout_hold":"30s","rate_limit":100,"burst":10,"max_concurrency":150}`,
		`{"outage_for":"30s"}`, `{}`, `null`, `{"latency":5}`, `{"error_rate":1e400}`, `[`, `{"burst":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseFaults(data, Faults{})
		if err != nil {
			return
		}
		if verr := got.Validate(); verr != nil {
			t.Fatalf("ParseFaults accepted %q but Validate rejects it: %v", data, verr)
		}
		// What is accepted round-trips through its own JSON.
		enc, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("marshal %+v: %v", got, err)
		}
		again, err := ParseFaults(enc, Faults{})
		if err != nil {
			t.Fatalf("re-parse of %s: %v", enc, err)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed %s into %s", enc, enc2)
		}
	})
}

func FuzzParseBody(f *testing.F) {
	for _, s := range []string{
		`{"external_id":"k1","version":3,"name":"x"}`, `{"version":1.5e3}`, `{"version":"3"}`, `{"external_id":null}`,
		`{"external_id":7}`, `[]`, `null`, `{"id":"evil","nested":{"a":[1,{"b":null}]}}`, `{"version":-9223372036854775808}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := parseBody(data, "42", "version")
		if err != nil {
			return
		}
		var back map[string]any
		if err := json.Unmarshal(rec.body, &back); err != nil {
			t.Fatalf("stored body %q is not JSON: %v", rec.body, err)
		}
		if back["id"] != "42" {
			t.Fatalf("stored body %q lost the id", rec.body)
		}
		if ext, _ := back[ExternalIDField].(string); ext != rec.extID {
			t.Fatalf("external_id %q indexed as %q", ext, rec.extID)
		}
		// Storing is idempotent: parsing the stored form gives the same record.
		again, err := parseBody(rec.body, "42", "version")
		if err != nil || again.version != rec.version || again.extID != rec.extID {
			t.Fatalf("re-parse of %q: %v %+v", rec.body, err, again)
		}
		var backAgain map[string]any
		if err := json.Unmarshal(again.body, &backAgain); err != nil || !reflect.DeepEqual(back, backAgain) {
			t.Fatalf("re-parse of %q changed it to %q (%v)", rec.body, again.body, err)
		}
		if bytes.ContainsAny(rec.body, "\n\r") {
			t.Fatalf("stored body %q has a line break: it would break the NDJSON dump and state file", rec.body)
		}
	})
}

func FuzzReadState(f *testing.F) {
	f.Add([]byte(`{"format":"eventsync-fakeapi-state","format_version":1,"next_id":3}
{"collection":"listing","record":{"id":"1","external_id":"k","version":1}}
{"collection":"listing","record":{"id":"1","external_id":"j"}}
{"collection":"host","record":{"id":"2"}}
`))
	f.Add([]byte(`{"format":"eventsync-fakeapi-state","format_version":1}` + "\n" + `{"collection":"a b","record":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := New(Config{Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.readState(bytes.NewReader(data)); err != nil {
			return
		}
		// Whatever loaded is consistent: the counts match the records.
		st := s.Stats()
		for name, n := range st.Records {
			if got := len(s.Records(name)); int64(got) != n {
				t.Fatalf("%s: %d records listed, %d counted", name, got, n)
			}
		}
		var buf strings.Builder
		if err := s.writeState(&buf); err != nil {
			t.Fatal(err)
		}
	})
}
