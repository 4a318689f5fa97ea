package natslimit

import "testing"

// FuzzDecodeRecord: a foreign or corrupt value in the bucket never panics.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"tat":1,"held_until":2,"probe_owner":"a","probe_until":3}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord(data)
		if err != nil && r != (record{}) {
			t.Fatalf("error %v with a non-zero record %+v", err, r)
		}
	})
}
