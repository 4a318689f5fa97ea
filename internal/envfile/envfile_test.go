package envfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "pw")
	if err := os.WriteFile(secret, []byte("s3cret:with\nlines\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(kv ...string) func(string) (string, bool) {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	for _, c := range []struct {
		name    string
		lookup  func(string) (string, bool)
		value   string
		ok      bool
		errWant string
	}{
		{"neither", env(), "", false, ""},
		{"variable", env("X", "v"), "v", true, ""},
		{"empty variable", env("X", ""), "", true, ""},
		{"file", env("X_FILE", secret), "s3cret:with\nlines", true, ""},
		{"both", env("X", "v", "X_FILE", secret), "", false, "both X and X_FILE are set"},
		{"empty file name", env("X_FILE", ""), "", false, "X_FILE is empty"},
		{"missing file", env("X_FILE", filepath.Join(dir, "nope")), "", false, "X_FILE: read the file holding X"},
	} {
		v, ok, err := Lookup("X", c.lookup, nil)
		if v != c.value || ok != c.ok || (err == nil) != (c.errWant == "") || (err != nil && !strings.Contains(err.Error(), c.errWant)) {
			t.Errorf("%s: got %q %v %v; want %q %v %q", c.name, v, ok, err, c.value, c.ok, c.errWant)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error shows the file's contents: %v", c.name, err)
		}
	}
	_, _, err := Lookup("X", env("X_FILE", "/x"), func(string) ([]byte, error) { return nil, fs.ErrPermission })
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("read error not wrapped: %v", err)
	}
}
