package setting_test

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/eventsync/eventsync/internal/setting"
)

func TestErrorKeepsMessageAndChain(t *testing.T) {
	err := fmt.Errorf("open store: %w", setting.Errorf("store", "connect to Redis at %s: %w; is it running?", "h:6379", fs.ErrNotExist))
	if got, want := err.Error(), "open store: connect to Redis at h:6379: file does not exist; is it running?"; got != want {
		t.Fatalf("message %q, want %q (the key must not show)", got, want)
	}
	var se *setting.Error
	if !errors.As(err, &se) || se.Key != "store" {
		t.Fatalf("errors.As found %+v, want key store", se)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the wrapped cause is lost")
	}
}

func TestWrap(t *testing.T) {
	if setting.Key(errors.New("plain")) != "" || setting.Key(nil) != "" {
		t.Fatal("Key of an error without a setting is not empty")
	}
	if setting.Wrap("store", nil) != nil {
		t.Fatal("Wrap(nil) is not nil")
	}
	cause := errors.New("redis limiter: URL is empty")
	err := setting.Wrap("store", cause)
	if setting.Key(fmt.Errorf("open: %w", err)) != "store" || !errors.Is(err, cause) || err.Error() != cause.Error() {
		t.Fatalf("Wrap = %v, key %q", err, setting.Key(err))
	}
}

func TestClosest(t *testing.T) {
	known := []string{"hosts", "listings", "bookings", "eventsync_outbox"}
	for _, tc := range []struct{ name, want string }{
		{"listngs", "listings"},  // one deletion
		{"Listings", "listings"}, // case ignored
		{"lsitings", "listings"}, // transposition = two edits
		{"host", "hosts"},
		{"bost", ""},     // two edits are too many for a short name
		{"listings", ""}, // known: nothing to suggest
		{"payments", ""}, // nothing close
		{"", ""},
	} {
		if got := setting.Closest(tc.name, known); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := setting.Closest("x", nil); got != "" {
		t.Errorf("Closest with nothing known = %q", got)
	}
}
