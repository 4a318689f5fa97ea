package httpsink

import (
	"encoding/json"
	"reflect"
	"testing"
	"text/template"
	"unicode/utf8"
)

// FuzzBodyShape: with any external-id and version field names the
// settings accept, whatever data the splice takes the map path takes too,
// and the spliced body means the same as the map path's, with no repeated
// names for a receiver to read differently.
func FuzzBodyShape(f *testing.F) {
	for _, s := range [][3]string{
		{`{"title":"Sea view","external_ref":"x","rev":2}`, "external_ref", "rev"},
		{`{"a":1,"version":1,"external_id":2}`, "external_id", "none"},
		{`{"ref":1,"ref2":{"ref":3}}`, "ref", "ref2"},
		{` { } `, "$id", "@v"}, {`{"a":{"a":1,"a":2}}`, "a", "b"}, {`{"a\u0062":1,"ab":2}`, "ab", "none"},
		{"{\"s\":\"\xe9\"}", "s", "t"}, {`{"a":1}x`, "a", "b"}, {`[1]`, "a", "b"},
	} {
		f.Add([]byte(s[0]), s[1], s[2], `k"1/é<`, int64(9))
	}
	f.Fuzz(func(t *testing.T, data []byte, idField, versionField, key string, version int64) {
		if checkShape("f", idField, versionField, "") != nil || idField == versionField {
			return // refused by the config
		}
		shape := newBodyShape(idField, versionField)
		body, ok := shape.splice(data, key, version)
		if !ok {
			return // the caller takes the map path
		}
		m, err := decodeData(data)
		if err != nil {
			t.Fatalf("spliced data the map path refuses: %q", data)
		}
		want, err := shape.mapBody(m, key, version)
		if err != nil {
			t.Fatal(err)
		}
		if !plainJSON(body) {
			t.Fatalf("spliced body %q has repeated names or text that decodes differently", body)
		}
		if !sameJSON(t, body, want) {
			t.Fatalf("spliced body %s\nmeans other than %s", body, want)
		}
	})
}

// FuzzTemplateMerge: merge of any event data with any member name renders
// the data with the members set, as JSON, and leaves .Data as it was.
func FuzzTemplateMerge(f *testing.F) {
	for _, s := range [][2]string{
		{`{"title":"x","rev":1}`, "external_ref"}, {`{}`, "rev"}, {`{"a":{"b":[1,null]}}`, "a"},
		{`{"s":"\ud83d\ude00<&>"}`, ""}, {`{"n":1e400}`, "n"}, {`{"n":12345678901234567890}`, "\x00"},
	} {
		f.Add([]byte(s[0]), s[1], `k"1/é<`, int64(7))
	}
	tmpl := template.Must(template.New("body").Funcs(templateFuncs).Parse(`{{ merge .Data .Entity .Key "rev" .Version | json }}`))
	f.Fuzz(func(t *testing.T, data []byte, name, key string, version int64) {
		m, err := decodeData(data)
		if err != nil || !utf8.ValidString(name) {
			return // member names come from templates and decoded JSON: valid UTF-8
		}
		before, err := marshalJSON(m)
		if err != nil {
			return // a number encoding/json cannot write back: json fails either way
		}
		var want map[string]any
		if json.Unmarshal(before, &want) != nil {
			return // a number beyond float64, which the comparison below cannot hold
		}
		out, err := execute(tmpl, TemplateData{Entity: name, Key: key, Version: version, Data: m})
		if err != nil {
			t.Fatalf("merge of %s with %q: %v", data, name, err)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("merge rendered invalid JSON %s: %v", out, err)
		}
		want[name] = decodeString(key)
		want["rev"] = float64(version)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("merge rendered %s\nwant %v", out, want)
		}
		after, _ := marshalJSON(m)
		if string(after) != string(before) {
			t.Fatalf(".Data changed from %s to %s", before, after)
		}
	})
}

// decodeString is s as it reads after a JSON round trip (invalid UTF-8
// becomes U+FFFD).
func decodeString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}
