package config

import (
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
