package demo

import (
	"context"
	"fmt"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/verify"
)

// Verdict compares the source table with the remote records.
type Verdict struct {
	SourceRows    int64 `json:"source_rows"`
	RemoteRecords int64 `json:"remote_records"`
	// Missing rows have no remote record.
	Missing int64 `json:"missing"`
	// Extra remote records have no row (deleted, rolled back, or unknown).
	Extra int64 `json:"extra"`
	// Differing records hold other data than the row.
	Differing int64 `json:"differing"`
	// Duplicated rows have more than one remote record.
	Duplicated int64 `json:"duplicated"`
	// Unkeyed remote records carry no external id.
	Unkeyed int64 `json:"unkeyed"`
	// SecretsLeaked counts remote records carrying an excluded secret
	// column (verify compares the row's fields only, so the demo checks
	// this itself).
	SecretsLeaked int64 `json:"secrets_leaked"`
	// Examples name a few of the problems, for the report.
	Examples []string `json:"examples,omitempty"`
}

// Converged reports whether the API equals the source exactly.
func (v Verdict) Converged() bool {
	return v.Missing == 0 && v.Extra == 0 && v.Differing == 0 && v.Duplicated == 0 && v.Unkeyed == 0 && v.SecretsLeaked == 0
}

// verifyAPI runs eventsync's verify (the same check as `eventsync verify`)
// over the table, read through the source's snapshot, and the fake API's
// records, and looks for secret columns in the records.
func (d *demo) verifyAPI(ctx context.Context) (Verdict, error) {
	res, err := verify.Check(ctx, verify.Config{
		Entity:     Entity,
		Expected:   verify.Table{Source: d.src, Spec: d.spec},
		Remote:     verify.FakeAPIDump{BaseURL: d.api.URL, Collections: map[string]string{Entity: Collection}},
		RemoteName: "fake API " + d.api.URL,
		Samples:    3,
		Logger:     d.log,
	})
	if err != nil {
		return Verdict{}, fmt.Errorf("verify the API against the table: %w", err)
	}
	c := res.Report.Counts
	v := Verdict{
		SourceRows: c.Expected, RemoteRecords: c.Remote,
		Missing: c.Missing, Extra: c.Extra, Differing: c.Differing, Duplicated: c.Duplicated, Unkeyed: c.Unkeyed,
	}
	s := res.Report.Samples
	for _, m := range s.Missing {
		v.example("listing %s (version %d) is missing remotely", m.Key, m.Version)
	}
	for _, m := range s.Extra {
		v.example("remote record %v for listing %s has no row", m.RemoteIDs, m.Key)
	}
	for _, m := range s.Differing {
		v.example("listing %s differs: %s is %s remotely, %s in the row", m.Key, m.Field, m.Remote, m.Expected)
	}
	for _, m := range s.Duplicated {
		v.example("listing %s has remote records %v", m.Key, m.RemoteIDs)
	}
	for _, r := range d.api.Records(Collection) {
		if leaked := secretFields(r); leaked != "" {
			v.SecretsLeaked++
			v.example("remote record %s carries the secret column %s", r.ID(), leaked)
		}
	}
	return v, nil
}

func secretFields(r fakeapi.Record) string {
	for _, s := range secretColumns {
		if _, ok := r[s]; ok {
			return s
		}
	}
	return ""
}

func (v *Verdict) example(format string, args ...any) {
	if len(v.Examples) < 5 {
		v.Examples = append(v.Examples, fmt.Sprintf(format, args...))
	}
}
