package httpsink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// jsonPath is a small path into a JSON document: field names separated by
// dots, each optionally followed by [N] (one array element) or [] (every
// element): "id", "data.id", "[0].id", "[].id", "data[].id". A path with []
// selects many values.
type jsonPath struct {
	raw   string
	steps []pathStep
	multi bool
}

type stepKind int

const (
	stepField stepKind = iota
	stepIndex
	stepEach
)

type pathStep struct {
	kind  stepKind
	field string
	index int
}

var segmentPattern = regexp.MustCompile(`^([^.\[\]]*)((?:\[[0-9]*\])*)$`)

const maxPathIndex = 1 << 20

func parsePath(raw string) (jsonPath, error) {
	p := jsonPath{raw: raw}
	if raw == "" {
		return p, errors.New("empty path; write a field name like \"id\" or \"data.id\"")
	}
	for i, seg := range strings.Split(raw, ".") {
		m := segmentPattern.FindStringSubmatch(seg)
		if m == nil {
			return p, fmt.Errorf("path %q: segment %q is not a field name optionally followed by [N] or []", raw, seg)
		}
		name, brackets := m[1], m[2]
		if name == "" && (i > 0 || brackets == "") {
			return p, fmt.Errorf("path %q: empty field name (only the first segment may start with [N] or [])", raw)
		}
		if name != "" {
			p.steps = append(p.steps, pathStep{kind: stepField, field: name})
		}
		for _, b := range strings.SplitAfter(brackets, "]") {
			if b == "" {
				continue
			}
			digits := b[1 : len(b)-1]
			if digits == "" {
				p.steps = append(p.steps, pathStep{kind: stepEach})
				p.multi = true
				continue
			}
			n, err := strconv.Atoi(digits)
			if err != nil || n > maxPathIndex {
				return p, fmt.Errorf("path %q: index [%s] is out of range", raw, digits)
			}
			p.steps = append(p.steps, pathStep{kind: stepIndex, index: n})
		}
	}
	return p, nil
}

func (p jsonPath) String() string { return p.raw }

// eval returns every value the path selects in doc; missing fields and
// type mismatches select nothing.
func (p jsonPath) eval(doc any) []any {
	current := []any{doc}
	for _, st := range p.steps {
		var next []any
		for _, v := range current {
			switch st.kind {
			case stepField:
				if obj, ok := v.(map[string]any); ok {
					if child, ok := obj[st.field]; ok {
						next = append(next, child)
					}
				}
			case stepIndex:
				if arr, ok := v.([]any); ok && st.index < len(arr) {
					next = append(next, arr[st.index])
				}
			case stepEach:
				if arr, ok := v.([]any); ok {
					next = append(next, arr...)
				}
			}
		}
		current = next
	}
	return current
}

// decodeJSON decodes one JSON document, keeping numbers exact.
func decodeJSON(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty body, expected JSON")
		}
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not valid JSON: trailing data after the document")
	}
	return doc, nil
}

// idString turns a JSON string or integral number into an id.
func idString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case json.Number:
		s := string(x)
		if _, err := strconv.ParseInt(s, 10, 64); err == nil {
			return s, true
		}
		if isDigits(strings.TrimPrefix(s, "-")) {
			return s, true // integer beyond int64: keep its decimal text
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return "", false
		}
		return strconv.FormatInt(int64(f), 10), true
	}
	return "", false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// extractID returns the single id at path in a response body. It reads
// only what path needs (scanID); a body the scan gives up on is decoded
// whole, which words the error.
func extractID(body []byte, path jsonPath, what string, excerptLen int) (string, error) {
	if id, found, ok := scanID(body, path); ok {
		if !found {
			return "", noIDError(body, path, what, excerptLen)
		}
		return id, nil
	}
	return decodedID(body, path, what, excerptLen)
}

// scanID finds the id at path with jsonPath.scan. ok is false when the
// scan gave up on body; found is false when path selects no single id.
func scanID(body []byte, path jsonPath) (id string, found, ok bool) {
	var first []byte
	n := 0
	if !path.scan(body, func(v []byte) {
		if n == 0 {
			first = v
		}
		n++
	}) {
		return "", false, false
	}
	if n != 1 {
		return "", false, true
	}
	id, found = rawID(first)
	return id, found, true
}

// decodedID is extractID by decoding the whole body.
func decodedID(body []byte, path jsonPath, what string, excerptLen int) (string, error) {
	doc, err := decodeJSON(body)
	if err != nil {
		return "", fmt.Errorf("%s response is %v: got %s", what, err, excerptBytes(body, excerptLen))
	}
	values := path.eval(doc)
	if len(values) == 1 {
		if id, ok := idString(values[0]); ok {
			return id, nil
		}
	}
	return "", noIDError(body, path, what, excerptLen)
}

func noIDError(body []byte, path jsonPath, what string, excerptLen int) error {
	return fmt.Errorf("%s response has no string or number at id path %q: got %s", what, path.raw, excerptBytes(body, excerptLen))
}

func badIDError(body []byte, path jsonPath, what string, excerptLen int) error {
	return fmt.Errorf("%s response has a value at id path %q that is not a string or integer id: got %s", what, path.raw, excerptBytes(body, excerptLen))
}

// extractIDs returns every id the path selects; a path that selects nothing
// (an empty array) yields no ids. A path without [] may select the array
// of ids itself. Like extractID it reads only what path needs.
func extractIDs(body []byte, path jsonPath, what string, excerptLen int) ([]string, error) {
	if ids, allIDs, ok := scanIDs(body, path); ok {
		if !allIDs {
			return nil, badIDError(body, path, what, excerptLen)
		}
		return ids, nil
	}
	return decodedIDs(body, path, what, excerptLen)
}

// scanIDs finds the ids at path with jsonPath.scan. ok is false when the
// scan gave up on body; allIDs is false when a selected value is no id.
func scanIDs(body []byte, path jsonPath) (ids []string, allIDs, ok bool) {
	ids, allIDs = []string{}, true
	add := func(v []byte) {
		id, isID := rawID(v)
		allIDs = allIDs && isID
		ids = append(ids, id)
	}
	var single []byte // the one value a path without [] selects
	if !path.scan(body, func(v []byte) {
		if path.multi {
			add(v)
		} else {
			single = v
		}
	}) {
		return nil, false, false
	}
	switch {
	case single == nil:
	case single[0] == '[':
		w := &walker{b: single}
		w.composite(0, 1, func(_ []byte, _, at int) int {
			end := w.value(at, 2)
			add(single[at:end])
			return end
		})
	default:
		add(single)
	}
	return ids, allIDs, true
}

// decodedIDs is extractIDs by decoding the whole body.
func decodedIDs(body []byte, path jsonPath, what string, excerptLen int) ([]string, error) {
	doc, err := decodeJSON(body)
	if err != nil {
		return nil, fmt.Errorf("%s response is %v: got %s", what, err, excerptBytes(body, excerptLen))
	}
	values := path.eval(doc)
	if !path.multi && len(values) == 1 {
		if arr, ok := values[0].([]any); ok {
			values = arr
		}
	}
	ids := make([]string, 0, len(values))
	for _, v := range values {
		id, ok := idString(v)
		if !ok {
			return nil, badIDError(body, path, what, excerptLen)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// listItems returns the record objects of one list page.
func listItems(body []byte, items jsonPath, excerptLen int) ([]map[string]any, error) {
	doc, err := decodeJSON(body)
	if err != nil {
		return nil, fmt.Errorf("list response is %v: got %s", err, excerptBytes(body, excerptLen))
	}
	values := items.eval(doc)
	if !items.multi {
		if len(values) != 1 {
			return nil, fmt.Errorf("list response has no array at items path %q: got %s", items.raw, excerptBytes(body, excerptLen))
		}
		arr, ok := values[0].([]any)
		if !ok {
			if values[0] == nil {
				return nil, nil // "data": null on an empty page
			}
			return nil, fmt.Errorf("list response has no array at items path %q: got %s", items.raw, excerptBytes(body, excerptLen))
		}
		values = arr
	}
	out := make([]map[string]any, 0, len(values))
	for i, v := range values {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("list response item %d at items path %q is not a JSON object: got %s", i, items.raw, excerptBytes(body, excerptLen))
		}
		out = append(out, obj)
	}
	return out, nil
}

// excerptBytes is at most n bytes of b as valid UTF-8, never splitting a
// character.
func excerptBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strings.ToValidUTF8(string(b), "")
}

func excerptString(s string, n int) string { return excerptBytes([]byte(s), n) }
