package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md's generated table")

// TestConfigurationDocIsCurrent keeps the environment table in
// docs/configuration.md equal to the code. Run with -update to rewrite it.
func TestConfigurationDocIsCurrent(t *testing.T) {
	const path = "../../docs/configuration.md"
	const begin, end = "<!-- env-table:begin -->\n", "<!-- env-table:end -->"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the env-table markers", path)
	}
	want := doc[:i+len(begin)] + EnvTable() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is out of date; run: go test ./internal/config -run TestConfigurationDocIsCurrent -update", path)
}

// TestConfigurationDocExampleIsValid parses the example file shown in
// docs/configuration.md, so the documentation cannot drift into invalid YAML.
func TestConfigurationDocExampleIsValid(t *testing.T) {
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "```yaml\n")
	end := strings.Index(doc[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no yaml example in docs/configuration.md")
	}
	cfg, err := Parse([]byte(doc[start+8 : start+8+end]))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.HasSink() || cfg.Bus == "" {
		t.Fatalf("example lost its content: %+v", cfg)
	}
}
