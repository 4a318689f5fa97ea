package main

import "testing"

func TestBodySplicesKeyAndVersionIntoData(t *testing.T) {
	for _, c := range []struct{ event, want string }{
		{`{"entity":"listing","key":"k\"1","version":7,"data":{"title":"x","n":1}}`, `{"external_id":"k\"1","version":7,"title":"x","n":1}`},
		{`{"key":"k","version":1,"data":{}}`, `{"external_id":"k","version":1}`},
		{`{"key":"k","version":1,"data": { } }`, `{"external_id":"k","version":1 }`},
	} {
		got, err := body([]byte(c.event))
		if err != nil || string(got) != c.want {
			t.Errorf("body(%s) = %s, %v; want %s", c.event, got, err, c.want)
		}
	}
	for _, bad := range []string{`{"key":"k","data":[1]}`, `{"key":"k"}`, `not json`} {
		if _, err := body([]byte(bad)); err == nil {
			t.Errorf("body(%s): no error", bad)
		}
	}
}
