package testenv

import "testing"

func TestWithParam(t *testing.T) {
	for _, c := range []struct{ dsn, want string }{
		{"postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test?pool_max_conns=4"},
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/test?pool_max_conns=4&sslmode=disable"},
		{"postgresql://u@h/db?pool_max_conns=32", "postgresql://u@h/db?pool_max_conns=4"},
		{"host=127.0.0.1 user=postgres", "host=127.0.0.1 user=postgres pool_max_conns=4"},
	} {
		if got := WithParam(c.dsn, "pool_max_conns", "4"); got != c.want {
			t.Errorf("WithParam(%q) = %q, want %q", c.dsn, got, c.want)
		}
	}
}
