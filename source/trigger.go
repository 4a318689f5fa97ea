package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// TriggerReader is implemented by a source that records how each table's
// capture trigger was installed (PostgreSQL keeps it in the trigger's own
// arguments), so a snapshot filters the data exactly like the trigger
// without being told again (see SnapshotSpec.FromTrigger).
type TriggerReader interface {
	// Trigger returns the spec the capture trigger of table was installed
	// with; ok is false when the table has no capture trigger.
	Trigger(ctx context.Context, table string) (spec TriggerSpec, ok bool, err error)
}

// ErrTriggerMismatch is matched (errors.Is) by a snapshot whose entity, key
// or column lists differ from those its table's capture trigger was
// installed with: live and snapshot events would then carry different
// data (an excluded secret column in one of them).
var ErrTriggerMismatch = errors.New("outbox trigger mismatch")

// FromTrigger returns s filtered like the capture trigger t of its table:
// column lists s leaves empty are the trigger's, so a resync or verify
// excludes the trigger's columns without being told. An entity, key column
// or non-empty list that differs from the trigger's is an error naming
// both and the fix (ErrTriggerMismatch): the trigger's configuration is
// recorded once, at install.
func (s SnapshotSpec) FromTrigger(t TriggerSpec) (SnapshotSpec, error) {
	var errs []error
	mismatch := func(what, given, installed, fix string) {
		errs = append(errs, fmt.Errorf("%s: given %s, but the outbox trigger on %s was installed with %s (%w); %s", what, given, s.Table, installed, ErrTriggerMismatch, fix))
	}
	reinstall := "or install the trigger again with the new one (eventsync outbox install-trigger) so live events change too"
	if s.Entity != t.Entity {
		mismatch("entity", fmt.Sprintf("%q", s.Entity), fmt.Sprintf("%q", t.Entity), "use the trigger's entity, "+reinstall)
	}
	if s.KeyColumn != t.KeyColumn {
		mismatch("key column", fmt.Sprintf("%q", s.KeyColumn), fmt.Sprintf("%q", t.KeyColumn), "use the trigger's key column, "+reinstall)
	}
	for _, l := range []struct {
		what             string
		given, installed []string
		into             *[]string
	}{
		{"excluded columns", s.ExcludeColumns, t.ExcludeColumns, &s.ExcludeColumns},
		{"included columns", s.Columns, t.Columns, &s.Columns},
	} {
		switch {
		case len(l.given) == 0:
			*l.into = slices.Clone(l.installed)
		case !sameSet(l.given, l.installed):
			mismatch(l.what, listOf(l.given), listOf(l.installed), "leave the list out to use the trigger's, "+reinstall)
		}
	}
	return s, errors.Join(errs...)
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// listOf prints a column list for messages: [a, b], or [] for none.
func listOf(cols []string) string {
	return "[" + strings.Join(cols, ", ") + "]"
}
