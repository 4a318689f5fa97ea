package redislimit

import "testing"

// FuzzParseHold: whatever another program left in the hold hash never
// panics and never yields a negative or NaN rate.
func FuzzParseHold(f *testing.F) {
	f.Add("1700000000000000", "500", true)
	f.Add("x", "-1", true)
	f.Add("1", "NaN", false)
	f.Fuzz(func(t *testing.T, u, r string, withRate bool) {
		v := []any{u, nil}
		if withRate {
			v[1] = r
		}
		_, rate, err := parseHold("n", v)
		if err == nil && (rate < 0 || rate != rate) {
			t.Fatalf("rate %v accepted from %q", rate, r)
		}
	})
}
