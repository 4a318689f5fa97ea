package cli

import (
	"errors"
	"strings"

	"github.com/eventsync/eventsync/internal/setting"
)

// how says how a command-line user sets one setting: flags (alternatives,
// in the order to suggest), its YAML key and its environment variable;
// empty where there is none.
type how struct {
	flags []string
	yaml  string
	env   string
}

// settings maps every key library errors name (see internal/setting) to
// its flags, YAML key and environment variable. It is the one place a
// library error meets the command line; hints_test.go checks that every
// key the code uses is here and that the YAML keys and variables exist.
var settings = map[string]how{
	"bus":              {flags: []string{"--bus"}, yaml: "bus", env: "EVENTSYNC_BUS"},
	"store":            {flags: []string{"--store"}, yaml: "store", env: "EVENTSYNC_STORE"},
	"source":           {flags: []string{"--source"}, yaml: "source", env: "EVENTSYNC_SOURCE"},
	"data_dir":         {flags: []string{"--data-dir"}, yaml: "data_dir", env: "EVENTSYNC_DATA_DIR"},
	"bus_partitions":   {yaml: "bus_partitions", env: "EVENTSYNC_BUS_PARTITIONS"},
	"config":           {flags: []string{"--config"}, env: "EVENTSYNC_CONFIG"},
	"sink":             {yaml: "sink"},
	"worker.lease_ttl": {yaml: "worker.lease_ttl", env: "EVENTSYNC_WORKER_LEASE_TTL"},

	"relay.batch_size":    {flags: []string{"--batch-size"}},
	"relay.concurrency":   {flags: []string{"--concurrency"}},
	"relay.poll_interval": {flags: []string{"--poll-interval"}},

	"resync.table":          {flags: []string{"--table"}},
	"resync.run_id":         {flags: []string{"--run-id"}},
	"resync.restart":        {flags: []string{"--restart"}},
	"resync.version_col":    {flags: []string{"--version-col"}},
	"resync.delete_missing": {flags: []string{"--delete-missing"}},

	"verify.entity":   {flags: []string{"--entity"}},
	"verify.table":    {flags: []string{"--table"}},
	"verify.expected": {flags: []string{"--table", "--expected"}},
	"verify.fakeapi":  {flags: []string{"--fakeapi"}},
	"verify.remote":   {flags: []string{"--fakeapi"}, yaml: "sink"},

	"fakeapi.listen":     {flags: []string{"--listen"}},
	"fakeapi.state_file": {flags: []string{"--state-file"}},
	"fakeapi.max_batch":  {flags: []string{"--max-batch"}},

	"demo.entities":    {flags: []string{"--entities"}},
	"demo.duration":    {flags: []string{"--duration"}},
	"demo.rate":        {flags: []string{"--rate"}},
	"demo.workers":     {flags: []string{"--workers"}},
	"demo.concurrency": {flags: []string{"--concurrency"}},
	"demo.faults":      {flags: []string{"--faults"}},
}

// The TLS blocks and NATS credentials of the bus and the store (bus_tls,
// store_tls, bus_nats, store_nats): a YAML key and a variable per scalar.
// (The sink's tls block is under sink, whose errors name their keys.)
func init() {
	for _, block := range []string{"bus_tls", "store_tls", "bus_nats", "store_nats"} {
		fields := []string{"ca_file", "cert_file", "key_file", "server_name", "min_version"}
		if strings.HasSuffix(block, "_nats") {
			fields = []string{"credentials_file", "nkey_file"}
		}
		for _, f := range fields {
			key := block + "." + f
			settings[key] = how{yaml: key, env: "EVENTSYNC_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))}
		}
	}
}

// hint says how to set the settings err names (every *setting.Error in its
// tree, joins included), once per key: "set it with --store, the config
// key store, or EVENTSYNC_STORE". It is "" when err names none.
func hint(err error) string {
	var keys []string
	seen := map[string]bool{}
	var walk func(error)
	walk = func(err error) {
		var se *setting.Error
		if errors.As(err, &se) {
			if _, known := settings[se.Key]; known && !seen[se.Key] {
				seen[se.Key] = true
				keys = append(keys, se.Key)
			}
		}
		// errors.As stops at the first match: look below each branch too.
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			if e := u.Unwrap(); e != nil {
				walk(e)
			}
		}
	}
	if err != nil {
		walk(err)
	}
	if len(keys) == 1 {
		return "set it with " + settings[keys[0]].String()
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = "set " + k + " with " + settings[k].String()
	}
	return strings.Join(parts, "; ")
}

// String lists the ways: "--store, the config key store, or EVENTSYNC_STORE".
func (h how) String() string {
	ways := append([]string(nil), h.flags...)
	if h.yaml != "" {
		ways = append(ways, "the config key "+h.yaml)
	}
	if h.env != "" {
		ways = append(ways, h.env)
	}
	switch len(ways) {
	case 0:
		return ""
	case 1:
		return ways[0]
	case 2:
		return ways[0] + " or " + ways[1]
	}
	return strings.Join(ways[:len(ways)-1], ", ") + ", or " + ways[len(ways)-1]
}
