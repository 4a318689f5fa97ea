package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	ev, err := Parse([]byte(`{"id":"e1","entity":"listing","key":"42","version":3,"op":"upsert","data":{"title":"Loft"},"occurred_at":"2026-01-02T15:04:05Z"}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Entity != "listing" || ev.Key != "42" || ev.Version != 3 || ev.Op != OpUpsert || string(ev.Data) != `{"title":"Loft"}` || ev.OccurredAt == nil {
		t.Fatalf("unexpected %+v", ev)
	}
	del, err := Parse([]byte(`{"id":"e2","entity":"listing","key":"42","version":4,"op":"delete"}`), 0)
	if err != nil || del.Op != OpDelete {
		t.Fatalf("delete: %+v %v", del, err)
	}
}

func TestParseRejects(t *testing.T) {
	cases := []struct{ body, want string }{
		{``, "empty payload"},
		{`not json`, "not a JSON object"},
		{`[1]`, "not a JSON object"},
		{`{"id":"a"`, "not valid JSON"},
		{`{"id":"a","entity":"x","key":"k","version":1,"op":"delete"} {}`, "trailing data"},
		{`{"entity":"x","key":"k","version":1,"op":"delete"}`, `"id": required`},
		{`{"id":1,"entity":"x","key":"k","version":1,"op":"delete"}`, `"id": must be a string`},
		{`{"id":"a","entity":"Listing","key":"k","version":1,"op":"delete"}`, `"entity"`},
		{`{"id":"a","entity":"x","key":"","version":1,"op":"delete"}`, `"key": must not be empty`},
		{`{"id":"a","entity":"x","key":"k","op":"delete"}`, `"version": required`},
		{`{"id":"a","entity":"x","key":"k","version":"1","op":"delete"}`, `not a string`},
		{`{"id":"a","entity":"x","key":"k","version":1.5,"op":"delete"}`, `"version"`},
		{`{"id":"a","entity":"x","key":"k","version":0,"op":"delete"}`, `below the minimum`},
		{`{"id":"a","entity":"x","key":"k","version":99999999999999999999,"op":"delete"}`, `int64`},
		{`{"id":"a","entity":"x","key":"k","version":1,"op":"create"}`, `"op"`},
		{`{"id":"a","entity":"x","key":"k","version":1,"op":"upsert"}`, `"data": required`},
		{`{"id":"a","entity":"x","key":"k","version":1,"op":"upsert","data":[1]}`, `"data": must be a JSON object`},
		{`{"id":"a","entity":"x","key":"k","version":1,"op":"delete","verison":2}`, `unknown field`},
		{`{"id":"a","entity":"x","key":"k","version":1,"op":"delete","occurred_at":"yesterday"}`, `RFC 3339`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.body), 0)
		if err == nil {
			t.Errorf("%s: accepted", c.body)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v is not ErrInvalid", c.body, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.body, err, c.want)
		}
	}
}

func TestParseSizeLimit(t *testing.T) {
	body := `{"id":"a","entity":"x","key":"k","version":1,"op":"upsert","data":{"s":"` + strings.Repeat("x", 100) + `"}}`
	if _, err := Parse([]byte(body), 50); err == nil || !strings.Contains(err.Error(), "over the 50-byte limit") {
		t.Fatalf("got %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	in := Event{ID: "a", Entity: "user", Key: "7", Version: 2, Op: OpUpsert, Data: []byte(`{"n":1}`)}
	b, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Parse(b, 0)
	if err != nil || out.Key != "7" || out.Version != 2 {
		t.Fatalf("%+v %v", out, err)
	}
	if _, err := (Event{ID: "a", Entity: "user", Key: "7", Version: 0, Op: OpDelete}).Marshal(); err == nil {
		t.Fatal("version 0 accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"id":"e1","entity":"listing","key":"42","version":3,"op":"upsert","data":{"title":"Loft"}}`))
	f.Add([]byte(`{"id":"e2","entity":"listing","key":"42","version":4,"op":"delete"}`))
	f.Add([]byte(`{"version":-1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Parse(body, 4096)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if ev.Version < 1 || ev.Key == "" || ev.ID == "" {
			t.Fatalf("accepted invalid event %+v", ev)
		}
		if ev.Op == OpUpsert && len(ev.Data) == 0 {
			t.Fatalf("upsert without data accepted")
		}
	})
}

// Validate checks fields instead of encoding and parsing; it must accept
// exactly the events whose encoding Parse accepts.
func FuzzValidateAgreesWithParse(f *testing.F) {
	f.Add("e1", "listing", "42", int64(3), "upsert", []byte(`{"title":"Loft"}`), true, int64(1767366245))
	f.Add("e2", "listing", "42", int64(4), "delete", []byte(nil), false, int64(0))
	f.Add("e3", "Listing", "", int64(0), "upsert", []byte(`[1]`), false, int64(0))
	f.Add("e4", "user", "7", int64(1), "delete", []byte(` null `), true, int64(-70000000000))
	f.Add("e5", "user", "7", int64(1), "upsert", []byte(` {"a":`), true, int64(300000000000))
	f.Fuzz(func(t *testing.T, id, entity, key string, version int64, op string, data []byte, withTime bool, unix int64) {
		e := Event{ID: id, Entity: entity, Key: key, Version: version, Op: Op(op), Data: data}
		if withTime {
			at := time.Unix(unix, 0).UTC()
			e.OccurredAt = &at
		}
		verr := e.Validate()
		if verr != nil && !errors.Is(verr, ErrInvalid) {
			t.Fatalf("Validate error not ErrInvalid: %v", verr)
		}
		body, merr := json.Marshal(e)
		if merr != nil {
			if verr == nil {
				t.Fatalf("Validate accepted %+v, which cannot be encoded: %v", e, merr)
			}
			return
		}
		_, perr := Parse(body, len(body)+1)
		if (verr == nil) != (perr == nil) {
			t.Fatalf("Validate says %v, Parse of %s says %v", verr, body, perr)
		}
	})
}

// FuzzScanAgreesWithDecoder: the one-pass scanner Parse uses must accept
// only what encoding/json accepts, slice out the same field values, and
// leave Parse's result (event or error text) exactly as with encoding/json
// alone; its string and version shortcuts must agree with encoding/json
// and strconv.
func FuzzScanAgreesWithDecoder(f *testing.F) {
	for _, s := range []string{
		`{"id":"e1","entity":"listing","key":"42","version":3,"op":"upsert","data":{"title":"Loft","n":[1,-2.5e3,true,null,{}]},"occurred_at":"2026-01-02T15:04:05Z"}`,
		` {"id":"e2","entity":"listing","key":"42","version":4,"op":"delete"} `,
		`{"ID":"e1","Entity":"listing","KEY":"42","version":3,"op":"delete"}`,
		`{"i\u0064":"e1","entity":"listing","key":"k\u00e9\n","version":3,"op":"delete"}`,
		`{"id":"e1","id":"e2","entity":"x","key":"\ud800","version":1,"op":"delete","data":null}`,
		"{\"id\":\"\xff\xfe\",\"entity\":\"x\",\"key\":\"k\",\"version\":1,\"op\":\"upsert\",\"data\":{\"a\":\"\xc3\"}}",
		`{"id":"a","entity":"x","key":"k","version":01,"op":"delete"}`,
		`{"id":"a","entity":"x","key":"k","version":1.0,"op":"delete"}`,
		`{"id":"a","entity":"x","key":"k","version":123456789012345678901,"op":"delete"}`,
		`{"id":"a","entity":"x","key":"k","version":1,"op":"upsert","data":{"a":[[[[[[[[[[1]]]]]]]]]]}}`,
		`{"id":"a","entity":"x","key":"k","version":1,"op":"upsert","data":{"a":1,}}`,
		`{"id":"a","entity":"x","key":"k","version":1,"op":"upsert","data":{"a":-}}`,
		`{"id":"a","entity":"x","key":"k","version":1,"op":"upsert","data":{"a":"\x"}}`,
		`{"id":"a","entity":"x","key":"k","version":1,"op":"delete"}{}`,
		`{"id":"a","entity":"x","key":"k","version":1,"op":"delete","extra":1}`,
		`{}`, `{ }`, `{"id":}`, `{"id" "a"}`, "{\"id\":\"a\"\t,\r\n\"op\":\"upsert\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ferr := parse(body, 4096, true)
		slow, serr := parse(body, 4096, false)
		if (ferr == nil) != (serr == nil) || ferr != nil && ferr.Error() != serr.Error() {
			t.Fatalf("scanner: %v\nencoding/json: %v", ferr, serr)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("scanner: %+v\nencoding/json: %+v", fast, slow)
		}
		trimmed := bytes.TrimSpace(body)
		var w wire
		if len(trimmed) == 0 || trimmed[0] != '{' || !w.scan(trimmed) {
			return
		}
		d, err := decodeWire(trimmed)
		if err != nil {
			t.Fatalf("scanner accepted what encoding/json refuses: %v", err)
		}
		if !reflect.DeepEqual(w, d) {
			t.Fatalf("scanner: %+v\nencoding/json: %+v", w, d)
		}
		for _, raw := range [][]byte{w.ID, w.Entity, w.Key, w.Op, w.OccurredAt} {
			if len(raw) == 0 || raw[0] != '"' {
				continue
			}
			var want string
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatalf("unmarshal %s: %v", raw, err)
			}
			if got, ok := decodeString(raw); !ok || got != want {
				t.Fatalf("decodeString(%s) = %q, %v; encoding/json says %q", raw, got, ok, want)
			}
		}
		if v, ok := smallPositive(w.Version); ok {
			if want, err := strconv.ParseInt(string(w.Version), 10, 64); err != nil || want != v || v < 1 {
				t.Fatalf("smallPositive(%s) = %d; strconv says %d, %v", w.Version, v, want, err)
			}
		}
	})
}

// TestParseDataSharesBody documents that Data is a slice of the body, not
// a copy, and that documents the scanner leaves to encoding/json parse the
// same.
func TestParseDataSharesBody(t *testing.T) {
	body := []byte(`{"id":"e1","entity":"listing","key":"42","version":3,"op":"upsert","data":{"title":"Loft"}}`)
	ev, err := Parse(body, 0)
	if err != nil {
		t.Fatal(err)
	}
	copy(body[bytes.Index(body, []byte("Loft")):], "Barn")
	if string(ev.Data) != `{"title":"Barn"}` {
		t.Fatalf("Data = %s; want it to share memory with the body", ev.Data)
	}
	folded, err := Parse([]byte(`{"ID":"e1","Entity":"listing","key":"4\u0032","VERSION":3,"op":"upsert","data":{"title":"Loft"}}`), 0)
	if err != nil || folded.ID != "e1" || folded.Entity != "listing" || folded.Key != "42" || folded.Version != 3 {
		t.Fatalf("case-folded names: %+v, %v", folded, err)
	}
}

// Data nested deeper than the scanner follows is left to encoding/json,
// which accepts it up to its own limit.
func TestParseDeepData(t *testing.T) {
	for _, c := range []struct {
		depth int
		ok    bool
	}{{scanMaxDepth - 2, true}, {scanMaxDepth + 10, true}, {10001, false}} {
		data := strings.Repeat(`{"a":`, c.depth) + "1" + strings.Repeat("}", c.depth)
		body := []byte(`{"id":"e1","entity":"listing","key":"42","version":3,"op":"upsert","data":` + data + `}`)
		ev, err := Parse(body, len(body))
		if (err == nil) != c.ok {
			t.Fatalf("depth %d: %v", c.depth, err)
		}
		if err == nil && len(ev.Data) != len(data) {
			t.Fatalf("depth %d: data has %d bytes, want %d", c.depth, len(ev.Data), len(data))
		}
	}
}
