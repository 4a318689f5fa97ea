package redis

import (
	"net/url"
	"testing"
)

func TestTakeAutoPipelineParam(t *testing.T) {
	cases := []struct {
		in, rest string
		off      bool
	}{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", false},
		{"redis://127.0.0.1:6379/0?autopipeline=false", "redis://127.0.0.1:6379/0", true},
		{"redis://h:6379/1?pool_size=8&autopipeline=0", "redis://h:6379/1?pool_size=8", true},
		{"redis://h:6379/1?autopipeline=true&pool_size=8", "redis://h:6379/1?pool_size=8", false},
	}
	for _, tc := range cases {
		rest, off, err := takeAutoPipelineParam(tc.in)
		if err != nil || rest != tc.rest || off != tc.off {
			t.Errorf("takeAutoPipelineParam(%q) = %q, %v, %v; want %q, %v", tc.in, rest, off, err, tc.rest, tc.off)
		}
	}
	if _, _, err := takeAutoPipelineParam("redis://h/0?autopipeline=sometimes"); err == nil {
		t.Error("autopipeline=sometimes accepted")
	}
}

func FuzzTakeAutoPipelineParam(f *testing.F) {
	f.Add("redis://127.0.0.1:6379/0?autopipeline=false")
	f.Add("rediss://:pw@h:1/2?pool_size=3&autopipeline=true")
	f.Add("redis://%zz?autopipeline=1")
	f.Fuzz(func(t *testing.T, in string) {
		rest, _, err := takeAutoPipelineParam(in)
		if err != nil {
			return
		}
		if u, perr := url.Parse(rest); perr == nil && rest != in && u.Query().Has("autopipeline") {
			t.Fatalf("%q: the parameter is still in %q", in, rest)
		}
	})
}
