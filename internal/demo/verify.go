package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/source"
)

// Verdict compares the source table with the remote records.
type Verdict struct {
	SourceRows    int `json:"source_rows"`
	RemoteRecords int `json:"remote_records"`
	// Missing rows have no remote record.
	Missing int `json:"missing"`
	// Extra remote records have no row (deleted, rolled back, or unknown).
	Extra int `json:"extra"`
	// Differing records hold other data or another version than the row.
	Differing int `json:"differing"`
	// Duplicated rows have more than one remote record.
	Duplicated int `json:"duplicated"`
	// SecretsLeaked counts remote records carrying an excluded column.
	SecretsLeaked int `json:"secrets_leaked"`
	// Examples name a few of the problems, for the report.
	Examples []string `json:"examples,omitempty"`
}

// Converged reports whether the API equals the source exactly.
func (v Verdict) Converged() bool {
	return v.Missing == 0 && v.Extra == 0 && v.Differing == 0 && v.Duplicated == 0 && v.SecretsLeaked == 0
}

func (v *Verdict) example(format string, args ...any) {
	if len(v.Examples) < 5 {
		v.Examples = append(v.Examples, fmt.Sprintf(format, args...))
	}
}

// Fields the API or the sink adds to every record; they are not row data.
var remoteOwnFields = map[string]bool{"id": true, fakeapi.ExternalIDField: true, fakeapi.DefaultVersionField: true}

// verifyRecords reads the table through the source's snapshot (the same
// reader a resync uses) and compares every row with the remote records:
// one record per key, the same data, the same version, no secret columns.
func verifyRecords(ctx context.Context, src source.Source, spec source.SnapshotSpec, secrets []string, records []fakeapi.Record) (Verdict, error) {
	type row struct {
		version int64
		data    map[string]any
	}
	want := map[string]row{}
	err := src.Snapshot(ctx, spec, func(page []event.Event, _ string) error {
		for _, ev := range page {
			var data map[string]any
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				return fmt.Errorf("row %s: data is not a JSON object: %w", ev.Key, err)
			}
			want[ev.Key] = row{version: ev.Version, data: data}
		}
		return nil
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("verify: read the source table: %w", err)
	}
	v := Verdict{SourceRows: len(want), RemoteRecords: len(records)}
	byKey := map[string][]fakeapi.Record{}
	for _, r := range records {
		byKey[r.ExternalID()] = append(byKey[r.ExternalID()], r)
		for _, s := range secrets {
			if _, ok := r[s]; ok {
				v.SecretsLeaked++
				v.example("remote record %s carries the secret column %q", r.ID(), s)
			}
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		w := want[key]
		recs := byKey[key]
		switch {
		case len(recs) == 0:
			v.Missing++
			v.example("listing %s (version %d) is missing remotely", key, w.version)
			continue
		case len(recs) > 1:
			v.Duplicated++
			v.example("listing %s has %d remote records", key, len(recs))
		}
		if diff := differs(w.data, w.version, recs[0], secrets); diff != "" {
			v.Differing++
			v.example("listing %s differs: %s", key, diff)
		}
	}
	extraKeys := make([]string, 0)
	for key := range byKey {
		if _, ok := want[key]; !ok {
			extraKeys = append(extraKeys, key)
		}
	}
	sort.Strings(extraKeys)
	for _, key := range extraKeys {
		v.Extra += len(byKey[key])
		v.example("remote record for listing %q has no row (deleted or never committed)", key)
	}
	return v, nil
}

// differs describes the first difference between a row and its record.
// Secret columns are reported as leaks, not as differences.
func differs(data map[string]any, version int64, rec fakeapi.Record, secrets []string) string {
	if got, ok := rec[fakeapi.DefaultVersionField].(float64); !ok || int64(got) != version {
		return fmt.Sprintf("remote version %v, row version %d", rec[fakeapi.DefaultVersionField], version)
	}
	fields := make([]string, 0, len(data))
	for f := range data {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for _, f := range fields {
		if !reflect.DeepEqual(data[f], rec[f]) {
			return fmt.Sprintf("%s is %v remotely, %v in the row", f, rec[f], data[f])
		}
	}
	for f := range rec {
		if _, ok := data[f]; !ok && !remoteOwnFields[f] && !slices.Contains(secrets, f) {
			return fmt.Sprintf("remote field %s is not in the row", f)
		}
	}
	return ""
}
