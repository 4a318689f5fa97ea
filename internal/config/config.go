// Package config is eventsync's one YAML configuration file, shared by every
// subcommand. Every scalar key can be overridden by an environment variable
// named after its path (worker.concurrency → EVENTSYNC_WORKER_CONCURRENCY),
// and command-line flags override both. The file is validated at start and
// every error names the key at fault.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/internal/envfile"
	"github.com/eventsync/eventsync/internal/setting"
)

// Config is the whole file: the public eventsync.Config, which documents
// every key. The aliases keep this package's callers short.
type (
	Config   = eventsync.Config
	Worker   = eventsync.WorkerConfig
	Throttle = eventsync.ThrottleConfig
	Admin    = eventsync.AdminConfig
	Log      = eventsync.LogConfig
)

// EnvPrefix starts every environment override.
const EnvPrefix = "EVENTSYNC_"

// Load reads path (empty: no file) and applies environment overrides.
func Load(path string) (*Config, error) {
	cfg := &Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, setting.Errorf("config", "read config: %w (want an existing YAML file)", err)
		}
		parsed, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		cfg = parsed
	}
	if err := ApplyEnv(cfg, os.LookupEnv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes YAML strictly: unknown keys are errors with their line.
func Parse(data []byte) (*Config, error) {
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) { // an empty file is a valid, empty config
			return cfg, nil
		}
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	return cfg, nil
}

// EnvVar describes one environment override, for documentation.
type EnvVar struct {
	Name string
	Key  string
	Doc  string
}

// EnvVars lists every override in file order.
func EnvVars() []EnvVar {
	var out []EnvVar
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(key string, f reflect.StructField, _ reflect.Value) {
		out = append(out, EnvVar{Name: envName(key), Key: key, Doc: f.Tag.Get("doc")})
	})
	return out
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// ApplyEnv overrides keys of c from the environment; lookup is
// os.LookupEnv. Each variable may instead name a file holding its value
// with the suffix _FILE (EVENTSYNC_STORE_FILE=/run/secrets/store), the
// way Kubernetes and Docker mount secrets (internal/envfile).
func ApplyEnv(c *Config, lookup func(string) (string, bool)) error {
	return applyEnv(c, lookup, os.ReadFile)
}

func applyEnv(c *Config, lookup func(string) (string, bool), readFile func(string) ([]byte, error)) error {
	var errs []error
	walk(reflect.ValueOf(c).Elem(), "", func(key string, _ reflect.StructField, v reflect.Value) {
		name := envName(key)
		raw, ok, err := envfile.Lookup(name, lookup, readFile)
		if err != nil {
			errs = append(errs, setting.Errorf(key, "environment %s (config key %s): %w", name, key, err))
			return
		}
		if !ok {
			return
		}
		if err := setScalar(v, raw); err != nil {
			errs = append(errs, fmt.Errorf("environment %s (config key %s): %w", name, key, err))
		}
	})
	return errors.Join(errs...)
}

var durationType = reflect.TypeOf(time.Duration(0))

// walk visits every scalar field with its dotted YAML key.
func walk(v reflect.Value, prefix string, fn func(key string, f reflect.StructField, v reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name := strings.Split(tag, ",")[0]
		if f.Anonymous && strings.Contains(tag, ",inline") && f.Type.Kind() == reflect.Struct {
			walk(v.Field(i), prefix, fn)
			continue
		}
		if name == "" || name == "-" || f.Tag.Get("doc") == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			walk(fv, key, fn)
			continue
		}
		fn(key, f, fv)
	}
}

func setScalar(v reflect.Value, raw string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 500ms, 30s or 5m", raw)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		v.Set(reflect.ValueOf(&b))
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// EnvTable renders the override table for docs, in file order.
func EnvTable() string {
	var b strings.Builder
	b.WriteString("| config key | environment variable | meaning |\n|---|---|---|\n")
	for _, v := range EnvVars() {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", v.Key, v.Name, v.Doc)
	}
	return b.String()
}
