package verify

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Values are compared through a canonical encoding fed to a 64-bit hash:
// object keys sorted, numbers reduced to their exact decimal value (12.50
// and 12.5 are equal, 0.1 and 0.10000000000000001 are not), every value
// tagged with its type and length-prefixed, so two different documents
// never produce the same byte stream. Only the hash of each expected record
// is kept in memory, which is what lets verify hold a million keys.

// Type tags of the canonical encoding.
const (
	tagAbsent = 'a' // the field is missing (distinct from null)
	tagNull   = 'n'
	tagTrue   = 't'
	tagFalse  = 'f'
	tagNumber = '#'
	tagString = 's'
	tagArray  = '['
	tagObject = '{'
	tagOther  = '?'
)

// decodeObject decodes a JSON object with numbers kept as json.Number.
func decodeObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("want a JSON object, got null")
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the JSON object")
	}
	return m, nil
}

// fieldNames returns m's keys without the ignored ones, sorted.
func fieldNames(m map[string]any, ignore map[string]bool) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		if !ignore[k] {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}

// hashFields hashes the values of fields (in that order) from m; a field
// missing from m hashes as absent.
func hashFields(seed maphash.Seed, fields []string, m map[string]any) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, f := range fields {
		v, ok := m[f]
		if !ok {
			_ = h.WriteByte(tagAbsent)
			continue
		}
		writeCanonical(&h, v)
	}
	return h.Sum64()
}

func writeLen(h *maphash.Hash, n int) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	_, _ = h.Write(b[:])
}

func writeStr(h *maphash.Hash, tag byte, s string) {
	_ = h.WriteByte(tag)
	writeLen(h, len(s))
	_, _ = h.WriteString(s)
}

func writeCanonical(h *maphash.Hash, v any) {
	switch v := v.(type) {
	case nil:
		_ = h.WriteByte(tagNull)
	case bool:
		if v {
			_ = h.WriteByte(tagTrue)
		} else {
			_ = h.WriteByte(tagFalse)
		}
	case json.Number:
		writeStr(h, tagNumber, normalizeNumber(string(v)))
	case float64:
		writeStr(h, tagNumber, normalizeNumber(strconv.FormatFloat(v, 'g', -1, 64)))
	case int:
		writeStr(h, tagNumber, normalizeNumber(strconv.Itoa(v)))
	case int64:
		writeStr(h, tagNumber, normalizeNumber(strconv.FormatInt(v, 10)))
	case string:
		writeStr(h, tagString, v)
	case []any:
		_ = h.WriteByte(tagArray)
		writeLen(h, len(v))
		for _, e := range v {
			writeCanonical(h, e)
		}
	case map[string]any:
		_ = h.WriteByte(tagObject)
		writeLen(h, len(v))
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			writeLen(h, len(k))
			_, _ = h.WriteString(k)
			writeCanonical(h, v[k])
		}
	default:
		// Decoders used here never produce other types; hash the Go
		// representation so the comparison still fails loudly, not silently.
		writeStr(h, tagOther, fmt.Sprintf("%T:%v", v, v))
	}
}

// normalizeNumber returns the exact decimal value of a JSON number as
// "[-]D...De<exp>" with no leading or trailing zeros in the digits ("0" for
// zero). Text that is not a JSON number, or whose exponent does not fit,
// comes back unchanged, so it only equals itself.
func normalizeNumber(s string) string {
	orig := s
	neg := false
	if strings.HasPrefix(s, "-") {
		neg = true
		s = s[1:]
	}
	mant, exp := s, ""
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant, exp = s[:i], s[i+1:]
	}
	intPart, frac := mant, ""
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		intPart, frac = mant[:i], mant[i+1:]
	}
	if intPart == "" || !allDigits(intPart) || !allDigits(frac) || (strings.Contains(mant, ".") && frac == "") {
		return orig
	}
	e := int64(0)
	if exp != "" {
		n, err := strconv.ParseInt(strings.TrimPrefix(exp, "+"), 10, 32)
		if err != nil || exp == "+" || exp == "-" {
			return orig
		}
		e = n
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	e -= int64(len(frac))
	if digits == "" {
		return "0"
	}
	trimmed := strings.TrimRight(digits, "0")
	e += int64(len(digits) - len(trimmed))
	if e > math.MaxInt32 || e < math.MinInt32 {
		return orig
	}
	sign := ""
	if neg {
		sign = "-"
	}
	return sign + trimmed + "e" + strconv.FormatInt(e, 10)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// sameValue reports whether a and b are equal under the canonical encoding.
func sameValue(seed maphash.Seed, a, b any) bool {
	var ha, hb maphash.Hash
	ha.SetSeed(seed)
	hb.SetSeed(seed)
	writeCanonical(&ha, a)
	writeCanonical(&hb, b)
	return ha.Sum64() == hb.Sum64()
}

// firstDifference names the first field (in sorted order) whose remote
// value is missing or differs from the expected one.
func firstDifference(seed maphash.Seed, expected map[string]any, fields []string, remote map[string]any) (field string, want, got string, found bool) {
	for _, f := range fields {
		ev := expected[f]
		rv, ok := remote[f]
		if !ok {
			return f, compactJSON(ev), "absent", true
		}
		if !sameValue(seed, ev, rv) {
			return f, compactJSON(ev), compactJSON(rv), true
		}
	}
	return "", "", "", false
}

// compactJSON renders a value for a report, bounded in length.
func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	const max = 120
	if len(b) > max {
		return strings.ToValidUTF8(string(b[:max]), "") + "…"
	}
	return string(b)
}
