package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleRefusesToStartUnsafely(t *testing.T) {
	conn := []string{"--bus", "amqp://guest:guest@127.0.0.1:1/", "--store", "redis://127.0.0.1:1/0"}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(consoleTokenEnv, "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "0.0.0.0:0"}, "needs a token"},
		{[]string{"--token-file", filepath.Join(t.TempDir(), "missing")}, "--token-file"},
		{[]string{"--token-file", empty}, "is empty"},
		{[]string{"--listen", "nonsense"}, "listen address"},
	} {
		code, _, errOut := run(t, "", append(append([]string{"console"}, c.args...), conn...)...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("console %v: exit %d, %q; want exit 2 mentioning %q", c.args, code, errOut, c.want)
		}
	}
	t.Setenv(consoleTokenEnv, "short")
	if code, _, errOut := run(t, "", append([]string{"console"}, conn...)...); code != exitUsage || !strings.Contains(errOut, "shorter than 16") {
		t.Errorf("console with a short token: exit %d, %q", code, errOut)
	}
}
