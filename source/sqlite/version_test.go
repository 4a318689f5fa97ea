package sqlite

import (
	"strconv"
	"testing"
)

// FuzzReadVersion: the version column holds whatever the application
// stored (SQLite keeps 'abc' in an INTEGER column as text). readVersion
// must never panic, accept exactly the integers, and name the column, the
// stored value and the problem for everything else.
func FuzzReadVersion(f *testing.F) {
	f.Add(uint8(0), int64(7), 0.0, "")
	f.Add(uint8(1), int64(0), 1.5, "")
	f.Add(uint8(2), int64(0), 0.0, "abc")
	f.Add(uint8(2), int64(0), 0.0, "9223372036854775808")
	f.Add(uint8(3), int64(0), 0.0, "\x00\xff")
	f.Add(uint8(4), int64(0), 0.0, "")
	f.Fuzz(func(t *testing.T, kind uint8, i int64, fl float64, s string) {
		var v any
		switch kind % 5 {
		case 0:
			v = i
		case 1:
			v = fl
		case 2:
			v = s
		case 3:
			v = []byte(s)
		case 4:
			v = nil
		}
		got, fault := readVersion(v)
		want, ok := int64(0), false
		switch x := v.(type) {
		case int64:
			want, ok = x, true
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			want, ok = n, err == nil
		}
		if ok {
			if fault != nil || got != want {
				t.Fatalf("%#v read as %d, %+v; want %d", v, got, fault, want)
			}
			return
		}
		if fault == nil || fault.Column != "version" || fault.Problem == "" || got != 0 {
			t.Fatalf("%#v read as %d, %+v; want a fault naming the column, the value and the problem", v, got, fault)
		}
		// Text is shown as stored (even empty); other values need a rendering.
		if str, isText := v.(string); (isText && fault.Value != str) || (!isText && fault.Value == "") {
			t.Fatalf("%#v shown as %q", v, fault.Value)
		}
		if b, isBlob := v.([]byte); isBlob && len(fault.Value) > 100 {
			t.Fatalf("a %d-byte BLOB shown as %d bytes", len(b), len(fault.Value))
		}
	})
}
