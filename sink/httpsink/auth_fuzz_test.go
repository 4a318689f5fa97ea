package httpsink

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzHeaderTemplates compiles an arbitrary header value as the config
// would and renders it with arbitrary event ids and keys: nothing panics,
// and a rendered header never carries a line break or NUL (the call fails
// instead), so event data cannot inject headers.
func FuzzHeaderTemplates(f *testing.F) {
	f.Add("{{.EventID}}", "ev-1", "k")
	f.Add("{{.Key}}", "", "a\r\nX-Injected: 1")
	f.Add("{{.Entity}}:{{.Key | query}}:{{.Version}}", "e", "k/1")
	f.Add("{{ merge .Data \"a\" 1 | json }}", "", "")
	f.Add("{{ template \"x\" }}", "", "")
	f.Add("{{.EventID", "", "")
	f.Fuzz(func(t *testing.T, value, eventID, key string) {
		var errs []error
		h := http.Header{"X-T": {value}}
		tpls := compileHeaderTemplates(func(string) string { return "sink.defaults.headers.X-T" }, h, &errs)
		if len(errs) > 0 || len(tpls) == 0 {
			return
		}
		out := http.Header{}
		err := renderHeaders(out, tpls, TemplateData{EventID: eventID, Entity: "listing", Key: key, Version: 3, RemoteID: key})
		if err != nil {
			return
		}
		if v := out.Get("X-T"); strings.ContainsAny(v, "\r\n\x00") {
			t.Fatalf("header rendered %q", v)
		}
	})
}
