package cli

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestOutboxCommandsSQLite drives install, install-trigger and
// remove-trigger through the command line against a SQLite file.
func TestOutboxCommandsSQLite(t *testing.T) {
	t.Setenv("EVENTSYNC_CONFIG", "")
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT, password TEXT)`); err != nil {
		t.Fatal(err)
	}
	src := "sqlite://" + path

	if code, _, errOut := run(t, "", "outbox", "install-trigger", "--source", src, "--table", "hosts", "--entity", "host", "--key", "id"); code == 0 || !strings.Contains(errOut, "eventsync outbox install") {
		t.Fatalf("install-trigger before install: exit %d, stderr %q; want a hint to run install", code, errOut)
	}
	for range 2 { // idempotent
		if code, out, errOut := run(t, "", "outbox", "install", "--source", src, "--log-level", "error"); code != 0 || !strings.Contains(out, "installed") {
			t.Fatalf("install: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	}
	if code, _, errOut := run(t, "", "outbox", "install-trigger", "--source", src, "--table", "hosts", "--entity", "host", "--key", "id", "--exclude-columns", "pasword"); code == 0 || !strings.Contains(errOut, "pasword") {
		t.Fatalf("misspelt excluded column: exit %d, stderr %q; want an error naming it", code, errOut)
	}
	if code, _, errOut := run(t, "", "outbox", "install-trigger", "--source", src, "--table", "hosts", "--entity", "host", "--key", "id", "--exclude-columns", "password", "--log-level", "error"); code != 0 {
		t.Fatalf("install-trigger: exit %d, stderr %q", code, errOut)
	}
	if _, err := db.Exec(`INSERT INTO hosts (id, name, password) VALUES (1, 'ann', 'secret')`); err != nil {
		t.Fatal(err)
	}
	var data string
	if err := db.QueryRowContext(context.Background(), `SELECT data FROM eventsync_outbox WHERE key = '1'`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(data, "secret") || !strings.Contains(data, "ann") {
		t.Fatalf("outbox data %s", data)
	}
	if code, _, errOut := run(t, "", "outbox", "remove-trigger", "--source", src, "--table", "hosts", "--log-level", "error"); code != 0 {
		t.Fatalf("remove-trigger: exit %d, stderr %q", code, errOut)
	}
	if _, err := db.Exec(`UPDATE hosts SET name = 'bob'`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM eventsync_outbox`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("outbox rows after remove-trigger: %d, %v; want 1", n, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"outbox", "install", "--source", "sqlite://" + filepath.Join(t.TempDir(), "missing.db")}, "no such file"},
		{[]string{"outbox", "install", "--source", "mysql://x"}, "unsupported scheme"},
		{[]string{"outbox", "install-trigger", "--source", src, "--table", "hosts"}, "missing --entity, --key"},
		{[]string{"outbox", "frobnicate"}, `unknown command "frobnicate" for "eventsync outbox"`},
		{[]string{"relay", "--source", src, "--bus", "kafka://x"}, "unsupported scheme"},
	} {
		code, _, errOut := run(t, "", tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error containing %q", tc.args, code, errOut, tc.want)
		}
	}
}
