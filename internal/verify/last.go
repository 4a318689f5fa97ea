package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/eventsync/eventsync/store"
)

// lastPrefix names the last-report records in the store's control space:
// "verify/last/<entity>", one per entity, overwritten by every check.
const lastPrefix = "verify/last/"

// LastSamples bounds the keys a recorded report keeps per category,
// whatever the check listed, so the record stays small.
const LastSamples = 10

// LastReport is the record a check leaves in the state store, so that
// every console (and `GET /api/v1/verify`) sees the last report of each
// entity, whichever machine ran it.
type LastReport struct {
	At time.Time `json:"at"`
	// By names who ran the check: user, host and process id.
	By   string `json:"by"`
	Host string `json:"host"`
	Report
}

// LastName is the control-space name of an entity's last report.
func LastName(entity string) string { return lastPrefix + entity }

// Last makes the record of rep, with at most LastSamples keys per
// category.
func Last(rep Report, at time.Time, by, host string) LastReport {
	cut := func(s []Sample) []Sample {
		if len(s) > LastSamples {
			s = s[:LastSamples]
		}
		return s
	}
	rep.Samples = Samples{
		Missing: cut(rep.Samples.Missing), Extra: cut(rep.Samples.Extra), Differing: cut(rep.Samples.Differing),
		Duplicated: cut(rep.Samples.Duplicated), Unkeyed: cut(rep.Samples.Unkeyed),
	}
	return LastReport{At: at.UTC(), By: by, Host: host, Report: rep}
}

// SaveLast records r as its entity's last report; it never expires.
func SaveLast(ctx context.Context, c store.Control, r LastReport) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := c.SetControl(ctx, LastName(r.Entity), b, 0); err != nil {
		return fmt.Errorf("record verify report %s: %w", LastName(r.Entity), err)
	}
	return nil
}

// LastReports returns every entity's last report, sorted by entity,
// skipping records that cannot be read.
func LastReports(ctx context.Context, c store.Control) ([]LastReport, error) {
	recs, err := c.ListControl(ctx, lastPrefix)
	if err != nil {
		return nil, fmt.Errorf("list verify reports: %w", err)
	}
	out := make([]LastReport, 0, len(recs))
	for name, b := range recs {
		var r LastReport
		if json.Unmarshal(b, &r) != nil {
			continue
		}
		if r.Entity == "" {
			r.Entity = strings.TrimPrefix(name, lastPrefix)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Entity < out[j].Entity })
	return out, nil
}
