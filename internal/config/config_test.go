package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseAndEnv(t *testing.T) {
	cfg, err := Parse([]byte("bus: amqp://guest:guest@127.0.0.1:5672/\nworker:\n  concurrency: 64\n  lease_ttl: 45s\n  streams: [live]\nsink:\n  defaults: {base_url: \"http://127.0.0.1:8081\"}\n  entities:\n    listing: {collection: listings}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Worker.Concurrency != 64 || cfg.Worker.LeaseTTL != 45*time.Second || cfg.Worker.Streams[0] != "live" {
		t.Fatalf("%+v", cfg.Worker)
	}
	env := map[string]string{"EVENTSYNC_WORKER_CONCURRENCY": "512", "EVENTSYNC_WORKER_STREAMS": "live, resync", "EVENTSYNC_STORE": "redis://127.0.0.1:6379/0"}
	if err := ApplyEnv(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.Worker.Concurrency != 512 || len(cfg.Worker.Streams) != 2 || cfg.Store != "redis://127.0.0.1:6379/0" {
		t.Fatalf("env not applied: %+v", cfg)
	}
	if !cfg.HasSink() || cfg.Sink.EntityConfigs["listing"].Collection != "listings" {
		t.Fatalf("sink not decoded: %+v", cfg.Sink)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejectsUnknownKeyWithLine(t *testing.T) {
	_, err := Parse([]byte("bus: amqp://x\nworker:\n  concurency: 3\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "concurency") {
		t.Fatalf("got %v", err)
	}
}

func TestSinkErrorsKeepFileLines(t *testing.T) {
	_, err := Parse([]byte("bus: amqp://x\nsink:\n  entities:\n    listing:\n      colection: listings\n"))
	if err == nil || !strings.Contains(err.Error(), "line 5") {
		t.Fatalf("got %v", err)
	}
}

func TestEnvErrorsNameVariable(t *testing.T) {
	cfg := &Config{}
	err := ApplyEnv(cfg, func(k string) (string, bool) {
		if k == "EVENTSYNC_WORKER_LEASE_TTL" {
			return "ten", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), "EVENTSYNC_WORKER_LEASE_TTL") || !strings.Contains(err.Error(), "worker.lease_ttl") {
		t.Fatalf("got %v", err)
	}
}

func TestValidateNamesKeys(t *testing.T) {
	cfg := &Config{Bus: "kafka://x", Store: "mysql://u:secret@h/db", Log: Log{Level: "loud"}, Worker: Worker{Streams: []string{"bulk"}}}
	err := cfg.Validate()
	for _, want := range []string{"bus:", "store:", "log.level", "worker.streams", "xxxxx"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("password leaked: %v", err)
	}
}

func TestEnvTableListsEveryKey(t *testing.T) {
	table := EnvTable()
	for _, want := range []string{"EVENTSYNC_BUS", "EVENTSYNC_WORKER_CONCURRENCY", "EVENTSYNC_ADMIN_LISTEN", "EVENTSYNC_LOG_FORMAT"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %s", want)
		}
	}
	if strings.Contains(table, "EVENTSYNC_SINK") {
		t.Error("sink section must not have env overrides")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("bus: amqp://x\nworker:\n  concurrency: 3\n"))
	f.Add([]byte("sink: {entities: {a: {collection: b}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err == nil {
			_ = cfg.Validate()
			_ = cfg.HasSink()
		}
	})
}

func TestEnvFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := map[string]string{
		"EVENTSYNC_STORE_FILE":              write("store", "postgres://app:s3cret@db:5432/app\n"),
		"EVENTSYNC_WORKER_CONCURRENCY_FILE": write("conc", "64\r\n"),
		"EVENTSYNC_BUS":                     "nats://127.0.0.1:4222",
	}
	cfg := &Config{}
	if err := ApplyEnv(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.Store != "postgres://app:s3cret@db:5432/app" || cfg.Worker.Concurrency != 64 || cfg.Bus != "nats://127.0.0.1:4222" {
		t.Fatalf("not applied from files: %+v", cfg)
	}

	env["EVENTSYNC_BUS_FILE"] = write("bus", "nats://other:4222")
	env["EVENTSYNC_SOURCE_FILE"] = filepath.Join(dir, "missing")
	err := ApplyEnv(&Config{}, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	for _, want := range []string{"both EVENTSYNC_BUS and EVENTSYNC_BUS_FILE", "EVENTSYNC_SOURCE_FILE", "config key source"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error shows a file's contents: %v", err)
	}
}

// fieldOf returns the field of c at the dotted key.
func fieldOf(c *Config, key string) reflect.Value {
	var out reflect.Value
	walk(reflect.ValueOf(c).Elem(), "", func(k string, _ reflect.StructField, v reflect.Value) {
		if k == key {
			out = v
		}
	})
	return out
}

// FuzzApplyEnv sets one EVENTSYNC_* variable (picked by index) to any
// value, directly and through its _FILE: both ways agree, an error names
// the variable, and a value that is accepted is exactly what its type's
// parser reads (lists: trimmed, no empty items).
func FuzzApplyEnv(f *testing.F) {
	vars := EnvVars()
	for i, v := range vars {
		f.Add(uint8(i), "1")
		f.Add(uint8(i), "30s")
		f.Add(uint8(i), "live, resync,,")
		f.Add(uint8(i), "true")
		f.Add(uint8(i), v.Key)
	}
	f.Add(uint8(0), "-9223372036854775808")
	f.Add(uint8(0), "1e400")
	f.Fuzz(func(t *testing.T, idx uint8, raw string) {
		v := vars[int(idx)%len(vars)]
		direct, viaFile := &Config{}, &Config{}
		errDirect := applyEnv(direct, func(k string) (string, bool) { return raw, k == v.Name }, nil)
		errFile := applyEnv(viaFile, func(k string) (string, bool) { return "/secret", k == v.Name+"_FILE" },
			func(string) ([]byte, error) { return []byte(raw + "\n"), nil })
		if errDirect != nil && !strings.Contains(errDirect.Error(), v.Name) {
			t.Fatalf("error does not name %s: %v", v.Name, errDirect)
		}
		if strings.TrimRight(raw, "\r\n") == raw { // a file loses its trailing line breaks only
			if (errDirect == nil) != (errFile == nil) || !reflect.DeepEqual(direct, viaFile) {
				t.Fatalf("%s=%q: direct %+v (%v) differs from the file's %+v (%v)", v.Name, raw, direct, errDirect, viaFile, errFile)
			}
		}
		if errDirect != nil {
			return
		}
		got := fieldOf(direct, v.Key)
		var want any
		var perr error
		switch {
		case got.Type() == durationType:
			want, perr = time.ParseDuration(raw)
		case got.Kind() == reflect.String:
			want = raw
		case got.Kind() == reflect.Int:
			want, perr = strconv.Atoi(raw)
		case got.Kind() == reflect.Bool:
			want, perr = strconv.ParseBool(raw)
		case got.Kind() == reflect.Pointer:
			var b bool
			b, perr = strconv.ParseBool(raw)
			want = &b
		case got.Kind() == reflect.Float64:
			want, perr = strconv.ParseFloat(raw, 64)
		case got.Kind() == reflect.Slice:
			for _, item := range got.Interface().([]string) {
				if item == "" || item != strings.TrimSpace(item) || strings.Contains(item, ",") {
					t.Fatalf("%s=%q: list item %q", v.Name, raw, item)
				}
			}
			return
		default:
			t.Fatalf("%s: unexpected kind %s", v.Name, got.Kind())
		}
		if perr != nil {
			t.Fatalf("%s=%q accepted though its parser refuses it: %v", v.Name, raw, perr)
		}
		if !reflect.DeepEqual(got.Interface(), reflect.ValueOf(want).Convert(got.Type()).Interface()) {
			t.Fatalf("%s=%q set %v, want %v", v.Name, raw, got.Interface(), want)
		}
	})
}
