package source

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestFromTrigger(t *testing.T) {
	trig := TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"owner_email", "phone"}}
	base := SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"}

	got, err := base.FromTrigger(trig)
	if err != nil || !slices.Equal(got.ExcludeColumns, trig.ExcludeColumns) || got.Columns != nil {
		t.Fatalf("untold: %+v %v", got, err)
	}
	got.ExcludeColumns[0] = "changed" // a copy: the trigger's spec stays
	if trig.ExcludeColumns[0] != "owner_email" {
		t.Fatal("FromTrigger shares the trigger's list")
	}

	same := base
	same.ExcludeColumns = []string{"phone", "owner_email", "phone"}
	if _, err := same.FromTrigger(trig); err != nil {
		t.Fatalf("the same set in another order: %v", err)
	}

	other := base
	other.ExcludeColumns = []string{"owner_email"}
	other.Columns = []string{"title"}
	other.Entity = "home"
	_, err = other.FromTrigger(trig)
	if !errors.Is(err, ErrTriggerMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	for _, want := range []string{`entity: given "home"`, `was installed with "listing"`, "excluded columns: given [owner_email]", "installed with [owner_email, phone]", "included columns: given [title]", "installed with []", "leave the list out to use the trigger's", "eventsync outbox install-trigger"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Log(err)
}
