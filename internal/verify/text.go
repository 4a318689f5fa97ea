package verify

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteText renders the report for a terminal.
func WriteText(w io.Writer, rep Report) error {
	var b strings.Builder
	c := rep.Counts
	fmt.Fprintf(&b, "verify %s: %s → %s\n", rep.Entity, rep.Source, rep.Target)
	fmt.Fprintf(&b, "expected %d records", c.Expected)
	if c.ExpectedAbsent > 0 {
		fmt.Fprintf(&b, " (and %d absent)", c.ExpectedAbsent)
	}
	fmt.Fprintf(&b, ", remote %d records, checked in %s\n", c.Remote, rep.Elapsed.Round(time.Millisecond))
	if rep.Converged {
		fmt.Fprintf(&b, "CONVERGED: all %d keys have exactly one remote record with equal fields\n", c.Matching)
		_, err := io.WriteString(w, b.String())
		return err
	}
	b.WriteString("DIVERGED\n")
	rows := []struct {
		name  string
		n     int64
		means string
	}{
		{"matching", c.Matching, "one remote record, equal fields"},
		{"missing", c.Missing, "in the source, not in the API"},
		{"extra", c.Extra, "in the API, not in the source"},
		{"differing", c.Differing, "fields differ from the source"},
		{"duplicated", c.Duplicated, "keys with more than one remote record"},
		{"unkeyed", c.Unkeyed, "remote records without external_id"},
	}
	for _, r := range rows {
		if r.n == 0 && r.name == "unkeyed" {
			continue
		}
		fmt.Fprintf(&b, "  %-10s %8d  %s\n", r.name, r.n, r.means)
	}
	section := func(name string, total int64, samples []Sample, line func(Sample) string) {
		if len(samples) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (first %d of %d):\n", name, len(samples), total)
		for _, s := range samples {
			b.WriteString("  " + line(s) + "\n")
		}
	}
	section("missing", c.Missing, rep.Samples.Missing, func(s Sample) string {
		return fmt.Sprintf("%s  version %d", s.Key, s.Version)
	})
	section("extra", c.Extra, rep.Samples.Extra, func(s Sample) string {
		return fmt.Sprintf("%s  remote %s", s.Key, strings.Join(s.RemoteIDs, ", "))
	})
	section("differing", c.Differing, rep.Samples.Differing, func(s Sample) string {
		if s.Expected == "" && s.Remote == "" {
			return fmt.Sprintf("%s  remote %s  %s", s.Key, strings.Join(s.RemoteIDs, ", "), s.Field)
		}
		return fmt.Sprintf("%s  remote %s  field %q: expected %s, remote %s", s.Key, strings.Join(s.RemoteIDs, ", "), s.Field, s.Expected, s.Remote)
	})
	section("duplicated", c.Duplicated, rep.Samples.Duplicated, func(s Sample) string {
		return fmt.Sprintf("%s  remote %s", s.Key, strings.Join(s.RemoteIDs, ", "))
	})
	section("unkeyed", c.Unkeyed, rep.Samples.Unkeyed, func(s Sample) string {
		return "remote " + strings.Join(s.RemoteIDs, ", ")
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// FormatAction renders one repair action as a line.
func FormatAction(a Action, dryRun bool) string {
	if a.Skipped != "" {
		if a.Key == "" {
			return fmt.Sprintf("skip %s: %s", a.Reason, a.Skipped)
		}
		return fmt.Sprintf("skip %s (%s): %s", a.Key, a.Reason, a.Skipped)
	}
	verb := "published"
	if dryRun {
		verb = "would publish"
	}
	mark := ""
	if a.MarkRepair {
		mark = " after flagging it for repair"
	}
	return fmt.Sprintf("%s %s version %d for %s (%s)%s", verb, a.Op, a.Version, a.Key, a.Reason, mark)
}

// FormatDedup renders one duplicate-removal plan or outcome as a line.
func FormatDedup(a DedupAction, dryRun bool) string {
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	s := fmt.Sprintf("%s: keep %s (%s), %s %s", a.Key, a.Keep, a.Why, verb, strings.Join(a.Delete, ", "))
	if a.Err != "" {
		s += "; FAILED " + a.Err
	}
	return s
}
