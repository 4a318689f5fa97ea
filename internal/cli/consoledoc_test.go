package cli

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestConsoleSettingsAreDocumented: the console's own flags and its token
// variable, which are no config keys (so the generated table lacks them),
// are in docs/configuration.md.
func TestConsoleSettingsAreDocumented(t *testing.T) {
	doc := configDoc()
	shared := map[string]bool{}
	for _, f := range []string{"config", "bus", "store", "namespace", "data-dir", "log-level"} {
		shared[f] = true
	}
	n := 0
	newConsoleCmd(Env{}).Flags().VisitAll(func(f *pflag.Flag) {
		if shared[f.Name] {
			return
		}
		n++
		if !strings.Contains(doc, "`--"+f.Name) {
			t.Errorf("console flag --%s is not in docs/configuration.md", f.Name)
		}
	})
	if n == 0 {
		t.Fatal("the console has no flags of its own: the test reads the wrong command")
	}
	if !strings.Contains(doc, "`"+consoleTokenEnv+"`") {
		t.Errorf("%s is not in docs/configuration.md", consoleTokenEnv)
	}
}
