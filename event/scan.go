package event

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// The scanner below reads an event in one pass without allocating: it
// validates the JSON and slices out the fields. It handles the documents
// publishers write; anything else (invalid JSON, an unknown, escaped or
// differently cased field name, nesting deeper than scanMaxDepth) makes it
// give up, and encoding/json decides and words the error exactly as it
// did before the scanner existed (FuzzScanAgreesWithDecoder).

// scanMaxDepth is how deep the scanner follows nested data before it leaves
// the document to encoding/json (whose own limit is 10,000).
const scanMaxDepth = 1000

// scan fills w from doc, a JSON object with no surrounding whitespace.
// The fields alias doc. It reports false, with w partly filled, when
// encoding/json must decide.
func (w *wire) scan(doc []byte) bool {
	i := skipSpace(doc, 1)
	if i < len(doc) && doc[i] == '}' {
		return i+1 == len(doc)
	}
	for {
		if i >= len(doc) || doc[i] != '"' {
			return false
		}
		end := skipString(doc, i)
		if end < 0 {
			return false
		}
		field := w.field(doc[i+1 : end-1])
		if field == nil {
			return false
		}
		i = skipSpace(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return false
		}
		i = skipSpace(doc, i+1)
		end = skipValue(doc, i, 1)
		if end < 0 {
			return false
		}
		*field = doc[i:end]
		i = skipSpace(doc, end)
		if i >= len(doc) {
			return false
		}
		switch doc[i] {
		case ',':
			i = skipSpace(doc, i+1)
		case '}':
			return i+1 == len(doc)
		default:
			return false
		}
	}
}

// field returns the field named exactly name, nil for any other name.
func (w *wire) field(name []byte) *json.RawMessage {
	switch string(name) {
	case "id":
		return &w.ID
	case "entity":
		return &w.Entity
	case "key":
		return &w.Key
	case "version":
		return &w.Version
	case "op":
		return &w.Op
	case "data":
		return &w.Data
	case "occurred_at":
		return &w.OccurredAt
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the end of the JSON value that starts at b[i], or -1
// when there is none or it nests deeper than scanMaxDepth.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{':
		return skipComposite(b, i, depth, '}')
	case c == '[':
		return skipComposite(b, i, depth, ']')
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return skipNumber(b, i)
	}
	return -1
}

// skipComposite skips the object or array opening at b[i]; closer is its
// closing bracket.
func skipComposite(b []byte, i, depth int, closer byte) int {
	if depth >= scanMaxDepth {
		return -1
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == closer {
		return i + 1
	}
	for {
		if closer == '}' {
			if i >= len(b) || b[i] != '"' {
				return -1
			}
			if i = skipString(b, i); i < 0 {
				return -1
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				return -1
			}
			i = skipSpace(b, i+1)
		}
		if i = skipValue(b, i, depth+1); i < 0 {
			return -1
		}
		i = skipSpace(b, i)
		switch {
		case i >= len(b):
			return -1
		case b[i] == ',':
			i = skipSpace(b, i+1)
		case b[i] == closer:
			return i + 1
		default:
			return -1
		}
	}
}

// skipString skips the string opening at b[i]: no control characters,
// only JSON's escapes. Like encoding/json it accepts invalid UTF-8 here;
// decodeString replaces it.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		case c == '\\':
			i++
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return -1
				}
				i += 4
			default:
				return -1
			}
		}
	}
	return -1
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// skipNumber skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func skipNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		start := i + 1
		if i = skipDigits(b, start); i == start {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		if i = skipDigits(b, start); i == start {
			return -1
		}
	}
	return i
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// decodeString decodes a valid JSON string literal. The common string (no
// escapes, valid UTF-8) costs one copy; others go through encoding/json for
// its exact unescaping and replacement of invalid UTF-8.
func decodeString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
