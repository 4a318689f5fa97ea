package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/maphash"
	"math/big"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/sink"
)

func TestNormalizeNumber(t *testing.T) {
	same := [][]string{
		{"12.50", "12.5", "1.25e1", "125e-1", "1250E-2", "0.0125e+3"},
		{"0", "-0", "0.000", "0e10", "-0.0e-5"},
		{"100", "1e2", "1.0e2", "100.0"},
		{"-3", "-3.0", "-0.3e1"},
		{"9007199254740993", "9007199254740993.0"},
	}
	for _, group := range same {
		for _, n := range group[1:] {
			if normalizeNumber(n) != normalizeNumber(group[0]) {
				t.Errorf("%s and %s must be equal: %s vs %s", group[0], n, normalizeNumber(group[0]), normalizeNumber(n))
			}
		}
	}
	differ := [][2]string{
		{"9007199254740993", "9007199254740992"}, // equal as float64, not as numbers
		{"0.1", "0.10000000000000001"},
		{"1", "-1"},
		{"1e2", "1e3"},
	}
	for _, d := range differ {
		if normalizeNumber(d[0]) == normalizeNumber(d[1]) {
			t.Errorf("%s and %s must differ", d[0], d[1])
		}
	}
}

// FuzzNormalizeNumber checks normalizeNumber against exact rational
// arithmetic: two JSON numbers normalize alike iff their values are equal.
func FuzzNormalizeNumber(f *testing.F) {
	for _, s := range [][2]string{{"12.50", "12.5"}, {"1e2", "100"}, {"-0", "0"}, {"0.1", "0.10000000000000001"}, {"1E+3", "1000.000"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ra, okA := jsonNumber(a)
		rb, okB := jsonNumber(b)
		na, nb := normalizeNumber(a), normalizeNumber(b)
		if !okA || !okB {
			return
		}
		if (ra.Cmp(rb) == 0) != (na == nb) {
			t.Fatalf("%q (%s) vs %q (%s): rational equal=%v, normalized equal=%v", a, na, b, nb, ra.Cmp(rb) == 0, na == nb)
		}
	})
}

// jsonNumber parses s if it is a JSON number of moderate exponent.
func jsonNumber(s string) (*big.Rat, bool) {
	var n json.Number
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil || dec.More() || !json.Valid([]byte(s)) || strings.TrimSpace(s) != s {
		return nil, false
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 && len(strings.TrimLeft(s[i+1:], "+-0")) > 3 {
		return nil, false // keep big.Rat fast
	}
	r, ok := new(big.Rat).SetString(s)
	return r, ok
}

func TestCanonicalHash(t *testing.T) {
	seed := maphash.MakeSeed()
	dec := func(s string) map[string]any {
		m, err := decodeObject([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	fields := []string{"a", "b"}
	base := hashFields(seed, fields, dec(`{"a":{"x":1,"y":[1,"2",null,true]},"b":12.50}`))
	for _, same := range []string{
		`{"b":12.5,"a":{"y":[1,"2",null,true],"x":1.0},"extra":1}`,
	} {
		if hashFields(seed, fields, dec(same)) != base {
			t.Errorf("%s must hash like the base", same)
		}
	}
	for _, other := range []string{
		`{"a":{"x":1,"y":[1,2,null,true]},"b":12.5}`,   // "2" vs 2
		`{"a":{"x":1,"y":[1,"2",true,null]},"b":12.5}`, // order in arrays matters
		`{"a":{"x":1,"y":[1,"2",null,true]}}`,          // b absent
		`{"a":{"x":1,"y":[1,"2",null,true]},"b":null}`, // b null
		`{"a":{"x":1,"y":[1,"2",null,true],"z":0},"b":12.5}`,
		`{"a":{"x":1,"y":[1,"2",null,true]},"b":"12.5"}`, // string vs number
	} {
		if hashFields(seed, fields, dec(other)) == base {
			t.Errorf("%s must not hash like the base", other)
		}
	}
}

// FuzzReadNDJSON feeds arbitrary input to the expected-state parser: it
// never panics, and every item it yields is a valid state.
func FuzzReadNDJSON(f *testing.F) {
	f.Add([]byte(`{"id":"1","entity":"listing","key":"a","version":1,"op":"upsert","data":{"t":1}}` + "\n\n" +
		`{"id":"2","entity":"listing","key":"a","version":2,"op":"delete"}`))
	f.Add([]byte("{\"entity\":\"listing\"}\nnope\n"))
	f.Add([]byte(`{"id":"1","entity":"host","key":"h","version":1,"op":"upsert","data":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = ReadNDJSON(context.Background(), bytes.NewReader(data), "listing", 1<<16, func(it Item) error {
			if it.Key == "" || it.Version < 1 {
				t.Fatalf("invalid item %+v", it)
			}
			if !it.Deleted {
				if _, err := decodeObject(it.Data); err != nil {
					t.Fatalf("item data %q: %v", it.Data, err)
				}
			}
			return nil
		})
	})
}

// FuzzReadRecordDump feeds arbitrary input to the fake API dump parser.
func FuzzReadRecordDump(f *testing.F) {
	f.Add([]byte(`{"id":"1","external_id":"a","title":"x","n":1.50}` + "\n" + `{"id":"2"}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`{"id":"1","external_id":3}`))
	f.Add([]byte("[]\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		seed := maphash.MakeSeed()
		_ = ReadRecordDump(bytes.NewReader(data), 1<<16, func(r sink.RemoteRecord) error {
			if r.RemoteID == "" && r.Fields["id"] != "" {
				t.Fatalf("record %+v lost its id", r)
			}
			_ = hashFields(seed, fieldNames(r.Fields, nil), r.Fields)
			return nil
		})
	})
}
