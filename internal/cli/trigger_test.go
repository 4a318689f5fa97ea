package cli

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestResyncTakesTheTriggersExcludedColumns: the excluded columns given
// to install-trigger are recorded once; resync without them uses them, and
// resync with another list is refused naming both lists and the fix.
func TestResyncTakesTheTriggersExcludedColumns(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT, owner_email TEXT)`); err != nil {
		t.Fatal(err)
	}
	src := "sqlite://" + path
	for _, args := range [][]string{
		{"outbox", "install", "--source", src, "--log-level", "error"},
		{"outbox", "install-trigger", "--source", src, "--table", "hosts", "--entity", "host", "--key", "id", "--exclude-columns", "owner_email", "--log-level", "error"},
	} {
		if code, _, errOut := run(t, "", args...); code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	resync := []string{"resync", "--source", src, "--data-dir", t.TempDir(), "--table", "hosts", "--entity", "host", "--key", "id", "--dry-run", "--log-level", "error"}
	if code, out, errOut := run(t, "", resync...); code != 0 {
		t.Fatalf("resync without --exclude-columns: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut := run(t, "", append(resync, "--exclude-columns", "name")...)
	if code == 0 {
		t.Fatal("resync with another --exclude-columns succeeded")
	}
	for _, want := range []string{"excluded columns: given [name]", "installed with [owner_email]", "leave the list out"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not say %q", errOut, want)
		}
	}
}
