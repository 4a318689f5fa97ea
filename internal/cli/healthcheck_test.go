package cli

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		http.Error(w, "store: connection refused", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{[]string{"healthcheck", srv.URL + "/readyz"}, 0, "ok", ""},
		{[]string{"healthcheck", srv.URL + "/down"}, 1, "", "503 Service Unavailable: store: connection refused"},
		{[]string{"healthcheck", "http://127.0.0.1:1/readyz", "--timeout", "2s"}, 1, "", "connect"},
		{[]string{"healthcheck", "127.0.0.1:9090/readyz"}, 2, "", "not an http:// or https:// URL"},
	} {
		code, out, errOut := run(t, "", tc.args...)
		if code != tc.code || !strings.Contains(out, tc.inStdout) || !strings.Contains(errOut, tc.inStderr) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", tc.args, code, out, errOut, tc.code, tc.inStdout, tc.inStderr)
		}
	}
}
