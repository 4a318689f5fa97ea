package httpsink

import (
	"encoding/json"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A walker reads one JSON document in a single pass without allocating:
// it validates it and, as the caller asks, splices the default body out of
// an event's data (spliceBody) or finds the values a jsonPath selects in a
// response (jsonPath.scan). Whenever it gives up (invalid JSON, nesting
// deeper than walkMaxDepth, or in strict mode anything encoding/json would
// not re-encode as it stands), the caller decodes with encoding/json as
// before, which decides and words the outcome.
type walker struct {
	b []byte
	// strict refuses documents whose decoding and re-encoding by
	// encoding/json would mean something else than the bytes do: invalid
	// UTF-8 (replaced by U+FFFD), \uD800-\uDFFF escapes (ditto unless
	// paired), escaped member names (which may spell another's name) and
	// repeated member names (the last one wins).
	strict bool
}

// walkMaxDepth is how deep a walker follows nesting before it leaves the
// document to encoding/json (whose own limit is 10,000).
const walkMaxDepth = 1000

// maxStrictNames bounds the members of an object in strict mode (finding
// repeats is quadratic at worst); a larger object is left to
// encoding/json.
const maxStrictNames = 256

// strFlags says what a string literal contains besides plain characters.
type strFlags uint8

const (
	strEscape    strFlags = 1 << iota // a backslash escape
	strHigh                           // a byte >= 0x80
	strSurrogate                      // a \uD800-\uDFFF escape
)

func skipWS(b []byte, i int) int {
	for ; i < len(b); i++ {
		if c := b[i]; c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			break
		}
	}
	return i
}

// value returns the end of the value at b[i], or -1 when the walker gives
// up on it.
func (w *walker) value(i, depth int) int {
	if i >= len(w.b) {
		return -1
	}
	switch c := w.b[i]; c {
	case '"':
		end, flags := stringEnd(w.b, i)
		if end < 0 || w.strict && !plainText(w.b[i:end], flags) {
			return -1
		}
		return end
	case '{', '[':
		return w.composite(i, depth, func(_ []byte, _, at int) int { return w.value(at, depth+1) })
	case 't', 'f', 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if lit[0] == c {
				if len(w.b)-i >= len(lit) && string(w.b[i:i+len(lit)]) == lit {
					return i + len(lit)
				}
				return -1
			}
		}
	}
	end := i
	for end < len(w.b) && isNumberByte(w.b[end]) {
		end++
	}
	if !validNumber(w.b[i:end]) {
		return -1
	}
	return end
}

// composite walks the object or array opening at b[i]. elem is called for
// each element or member with the member's name literal and its offset
// (nil and -1 in an array) and the offset of the value; it returns the
// value's end, or -1 to give up. composite returns the end of the composite.
func (w *walker) composite(i, depth int, elem func(name []byte, nameAt, at int) int) int {
	if depth > walkMaxDepth {
		return -1
	}
	closer := byte(']')
	if w.b[i] == '{' {
		closer = '}'
	}
	open := i
	// In strict mode a Bloom filter of the names so far tells which names
	// may repeat one; only those are compared with the earlier names.
	var seen [4]uint64
	count := 0
	i = skipWS(w.b, i+1)
	if i < len(w.b) && w.b[i] == closer {
		return i + 1
	}
	for {
		var name []byte
		nameAt := -1
		if closer == '}' {
			if i >= len(w.b) || w.b[i] != '"' {
				return -1
			}
			end, flags := stringEnd(w.b, i)
			if end < 0 {
				return -1
			}
			name, nameAt = w.b[i:end], i
			if w.strict {
				if count++; count > maxStrictNames || flags&strEscape != 0 || !plainText(name, flags) {
					return -1
				}
				h := nameHash(name)
				if seen[h/64]&(1<<(h%64)) != 0 && w.repeats(open, nameAt, name) {
					return -1
				}
				seen[h/64] |= 1 << (h % 64)
			}
			if i = skipWS(w.b, end); i >= len(w.b) || w.b[i] != ':' {
				return -1
			}
			i = skipWS(w.b, i+1)
		}
		if i = elem(name, nameAt, i); i < 0 {
			return -1
		}
		i = skipWS(w.b, i)
		switch {
		case i >= len(w.b):
			return -1
		case w.b[i] == ',':
			i = skipWS(w.b, i+1)
		case w.b[i] == closer:
			return i + 1
		default:
			return -1
		}
	}
}

// nameHash is FNV-1a of a name, reduced to a bit of composite's filter.
func nameHash(name []byte) uint {
	h := uint32(2166136261)
	for _, c := range name {
		h = (h ^ uint32(c)) * 16777619
	}
	return uint(h % 256)
}

// repeats reports whether a member before the one at nameAt, in the
// object opening at open (already walked up to there), has name.
func (w *walker) repeats(open, nameAt int, name []byte) bool {
	found := false
	strict := w.strict
	w.strict = false
	w.composite(open, 1, func(n []byte, at, valueAt int) int {
		if at >= nameAt || string(n) == string(name) {
			found = at < nameAt
			return -1 // stop here
		}
		return w.value(valueAt, 2)
	})
	w.strict = strict
	return found
}

// stringEnd returns the end of the string literal opening at b[i] and what
// it contains, or -1 when it is not a valid literal. Like encoding/json it
// accepts invalid UTF-8 here.
func stringEnd(b []byte, i int) (int, strFlags) {
	var flags strFlags
	for i++; i < len(b); i++ {
		c := b[i]
		if c >= utf8.RuneSelf {
			flags |= strHigh
			continue
		}
		if c < 0x20 {
			return -1, 0
		}
		if c == '"' {
			return i + 1, flags
		}
		if c != '\\' {
			continue
		}
		flags |= strEscape
		if i++; i >= len(b) {
			return -1, 0
		}
		if b[i] != 'u' {
			if !isSimpleEscape(b[i]) {
				return -1, 0
			}
			continue
		}
		if len(b)-i < 5 {
			return -1, 0
		}
		var r rune
		for _, h := range b[i+1 : i+5] {
			switch {
			case h >= '0' && h <= '9':
				r = r<<4 | rune(h-'0')
			case h >= 'a' && h <= 'f':
				r = r<<4 | rune(h-'a'+10)
			case h >= 'A' && h <= 'F':
				r = r<<4 | rune(h-'A'+10)
			default:
				return -1, 0
			}
		}
		if utf16.IsSurrogate(r) {
			flags |= strSurrogate
		}
		i += 4
	}
	return -1, 0
}

func isSimpleEscape(c byte) bool {
	switch c {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return true
	}
	return false
}

// plainText reports whether the string literal lit means the same once
// decoded and encoded again: valid UTF-8 and no surrogate escapes.
func plainText(lit []byte, flags strFlags) bool {
	return flags&strSurrogate == 0 && (flags&strHigh == 0 || utf8.Valid(lit))
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// validNumber reports whether s is a JSON number:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func validNumber(s []byte) bool {
	digits := func(s []byte) int {
		n := 0
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		return n
	}
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	n := digits(s)
	if n == 0 || n > 1 && s[0] == '0' {
		return false
	}
	s = s[n:]
	if len(s) > 0 && s[0] == '.' {
		n = digits(s[1:])
		if n == 0 {
			return false
		}
		s = s[1+n:]
	}
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
			s = s[1:]
		}
		n = digits(s)
		if n == 0 {
			return false
		}
		s = s[n:]
	}
	return len(s) == 0
}

// bodyShape is where the default body puts the event's key and version.
type bodyShape struct {
	idField      string // member holding the key
	versionField string // member holding the version; "" leaves it out
	// idLit and versionLit are the members' names as JSON string
	// literals (the names need no escaping: fieldNamePattern).
	idLit, versionLit string
}

// defaultShape is the default body's shape unless configured otherwise.
var defaultShape = newBodyShape(DefaultExternalIDField, DefaultVersionField)

// newBodyShape returns the shape with the key in idField and the version
// in versionField, none when versionField is VersionNone or empty.
func newBodyShape(idField, versionField string) *bodyShape {
	s := &bodyShape{idField: idField, idLit: `"` + idField + `"`}
	if versionField != "" && versionField != VersionNone {
		s.versionField, s.versionLit = versionField, `"`+versionField+`"`
	}
	return s
}

// sets reports whether the member name literal is one the shape sets.
func (s *bodyShape) sets(name []byte) bool {
	return string(name) == s.idLit || s.versionLit != "" && string(name) == s.versionLit
}

// splice is the default body, data with the external-id member (key) and
// the version member set, built from data's bytes instead of a decoded
// map: same members, same values, in data's order with the shape's
// appended. It reports false when data is not a JSON object that the
// walker can vouch for in strict mode; the caller then decodes it
// (recordData).
func (s *bodyShape) splice(data []byte, key string, version int64) ([]byte, bool) {
	w := &walker{b: data, strict: true}
	start := skipWS(data, 0)
	if start >= len(data) || data[start] != '{' {
		return nil, false
	}
	members, replaced := 0, 0
	end := w.composite(start, 1, func(name []byte, _, at int) int {
		members++
		if s.sets(name) {
			replaced++
		}
		return w.value(at, 2)
	})
	if end < 0 || skipWS(data, end) != len(data) {
		return nil, false
	}
	out := make([]byte, 0, len(data)+len(key)+len(s.idLit)+len(s.versionLit)+28)
	out = append(out, '{')
	switch {
	case members == 0:
	case replaced == 0:
		out = append(out, data[start+1:end-1]...)
	case replaced < members:
		// Copy the other members; this second walk cannot fail.
		kept := 0
		w.strict = false
		w.composite(start, 1, func(name []byte, nameAt, at int) int {
			valueEnd := w.value(at, 2)
			if !s.sets(name) {
				if kept > 0 {
					out = append(out, ',')
				}
				out = append(out, data[nameAt:valueEnd]...)
				kept++
			}
			return valueEnd
		})
	}
	if members > replaced {
		out = append(out, ',')
	}
	out = append(out, s.idLit...)
	out = append(out, ':')
	out = appendJSONString(out, key)
	if s.versionLit != "" {
		out = append(out, ',')
		out = append(out, s.versionLit...)
		out = append(out, ':')
		out = strconv.AppendInt(out, version, 10)
	}
	return append(out, '}'), true
}

// appendJSONString appends s encoded as encoding/json does without HTML
// escaping.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			b, _ := marshalJSON(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// scan calls emit with every value p selects in doc, in document order,
// and reports whether doc is one valid JSON document the walker could
// follow; when it is not, what was emitted is to be ignored.
func (p jsonPath) scan(doc []byte, emit func(value []byte)) bool {
	w := &walker{b: doc}
	end := w.follow(skipWS(doc, 0), 1, p.steps, emit)
	return end >= 0 && skipWS(doc, end) == len(doc)
}

// follow walks the value at b[i] and emits what steps select in it. A
// repeated member name selects its last value, as a decoded map would.
func (w *walker) follow(i, depth int, steps []pathStep, emit func([]byte)) int {
	if len(steps) == 0 || i >= len(w.b) {
		end := w.value(i, depth)
		if end >= 0 && len(steps) == 0 {
			emit(w.b[i:end])
		}
		return end
	}
	st, rest := steps[0], steps[1:]
	switch {
	case st.kind == stepField && w.b[i] == '{':
		last := -1
		end := w.composite(i, depth, func(name []byte, _, at int) int {
			if nameIs(name, st.field) {
				last = at
			}
			return w.value(at, depth+1)
		})
		if end >= 0 && last >= 0 && w.follow(last, depth+1, rest, emit) < 0 {
			return -1
		}
		return end
	case st.kind != stepField && w.b[i] == '[':
		n := -1
		return w.composite(i, depth, func(_ []byte, _, at int) int {
			if n++; st.kind == stepEach || n == st.index {
				return w.follow(at, depth+1, rest, emit)
			}
			return w.value(at, depth+1)
		})
	}
	return w.value(i, depth)
}

// nameIs reports whether the member name literal decodes to field.
func nameIs(lit []byte, field string) bool {
	if s, ok := plainString(lit); ok {
		return string(s) == field
	}
	var s string
	return json.Unmarshal(lit, &s) == nil && s == field
}

// plainString is the content of a string literal without escapes and with
// valid UTF-8 (which decoding leaves as is), aliasing lit.
func plainString(lit []byte) ([]byte, bool) {
	inner := lit[1 : len(lit)-1]
	for _, c := range inner {
		if c == '\\' {
			return nil, false
		}
	}
	return inner, utf8.Valid(inner)
}

// rawID is idString for a value the walker emitted.
func rawID(v []byte) (string, bool) {
	switch {
	case v[0] == '"':
		if s, ok := plainString(v); ok {
			return string(s), len(s) > 0
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", false
		}
		return s, s != ""
	case v[0] == '-' || v[0] >= '0' && v[0] <= '9':
		return idString(json.Number(v))
	}
	return "", false
}
