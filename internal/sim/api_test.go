package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// fakeObserver gives every task the lease status the test sets.
type fakeObserver struct {
	status     map[*Task]WriterStatus
	expiry     map[*Task]time.Time
	tombstone  int64
	answers    []error
	zombies    []string
	violations []string
}

func newFakeObserver() *fakeObserver {
	return &fakeObserver{status: map[*Task]WriterStatus{}, expiry: map[*Task]time.Time{}}
}

func (o *fakeObserver) Writer(t *Task, k store.Key) WriterStatus { return o.status[t] }
func (o *fakeObserver) Tombstone(t *Task, k store.Key) int64     { return o.tombstone }
func (o *fakeObserver) Answered(t *Task, op string, k store.Key, err error) {
	o.answers = append(o.answers, err)
}
func (o *fakeObserver) Expiry(t *Task, k store.Key) (time.Time, bool) {
	at, ok := o.expiry[t]
	return at, ok
}
func (o *fakeObserver) ZombieWrite(t *Task, k store.Key, what string) {
	o.zombies = append(o.zombies, what)
}
func (o *fakeObserver) Violation(kind, format string, args ...any) {
	o.violations = append(o.violations, kind+": "+fmt.Sprintf(format, args...))
}

var k1 = store.Key{Entity: Entity, Key: "k1"}

func rec(v int64) sink.Record {
	return sink.Record{Entity: k1.Entity, Key: k1.Key, Version: v, Data: []byte(fmt.Sprintf(`{"n":%d}`, v))}
}

func newTestAPI() (*Sched, *API, *fakeObserver) {
	s := newTestSched(1)
	obs := newFakeObserver()
	return s, NewAPI(s, NewTrace(50, nil), obs), obs
}

// as runs fn in a task whose lease status is st.
func as(t *testing.T, s *Sched, obs *fakeObserver, st WriterStatus, fn func(ctx context.Context)) {
	t.Helper()
	task := s.Spawn("writer", fn)
	obs.status[task] = st
	drive(t, s, first)
}

func TestAPICreatesAreNotIdempotent(t *testing.T) {
	s, api, obs := newTestAPI()
	var ids []string
	as(t, s, obs, Held, func(ctx context.Context) {
		for range 2 {
			id, err := api.Create(ctx, rec(1))
			if err != nil {
				t.Error(err)
			}
			ids = append(ids, id)
		}
		got, err := api.Lookup(ctx, k1.Entity, k1.Key)
		if err != nil || strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("Lookup = %v %v, want %v", got, err, ids)
		}
		if err := api.Delete(ctx, k1.Entity, ids[0]); err != nil {
			t.Error(err)
		}
		if err := api.Delete(ctx, k1.Entity, ids[0]); !errors.Is(err, sink.ErrNotFound) {
			t.Errorf("second delete = %v, want ErrNotFound", err)
		}
		if err := api.Update(ctx, ids[0], rec(2)); !errors.Is(err, sink.ErrNotFound) {
			t.Errorf("update of a deleted record = %v, want ErrNotFound", err)
		}
	})
	if ids[0] == ids[1] || api.Stats.DuplicatePeak != 2 || len(api.Records(k1)) != 1 {
		t.Fatalf("ids %v, duplicate peak %d, records %v", ids, api.Stats.DuplicatePeak, api.Records(k1))
	}
	// A lease holder's second create while its first record exists is
	// the engine's bug.
	if len(obs.violations) != 1 || !strings.HasPrefix(obs.violations[0], "duplicate create") {
		t.Fatalf("violations %v, want one duplicate create", obs.violations)
	}
}

func TestAPIZombieCreatesDoNotCountAsDuplicates(t *testing.T) {
	s, api, obs := newTestAPI()
	as(t, s, obs, Zombie, func(ctx context.Context) { _, _ = api.Create(ctx, rec(1)) })
	as(t, s, obs, Held, func(ctx context.Context) { _, _ = api.Create(ctx, rec(2)) })
	if len(obs.violations) != 0 || len(api.Records(k1)) != 2 {
		t.Fatalf("a holder's create after a zombie's: violations %v, records %v", obs.violations, api.Records(k1))
	}
}

func TestAPIStaleWriteDetector(t *testing.T) {
	for _, tc := range []struct {
		status WriterStatus
		want   string // violation kind, or "" for an excused zombie
	}{
		{Held, "stale write"},
		{Zombie, ""},
		{Unleased, "write without a lease"},
	} {
		t.Run(tc.status.String(), func(t *testing.T) {
			s, api, obs := newTestAPI()
			var id string
			as(t, s, obs, Held, func(ctx context.Context) {
				id, _ = api.Create(ctx, rec(5))
				if err := api.Update(ctx, id, rec(5)); err != nil { // equal is not stale
					t.Error(err)
				}
			})
			if len(obs.violations) != 0 {
				t.Fatal(obs.violations)
			}
			as(t, s, obs, tc.status, func(ctx context.Context) {
				if err := api.Update(ctx, id, rec(4)); err != nil {
					t.Error(err)
				}
			})
			switch {
			case tc.want == "":
				if len(obs.violations) != 0 || api.Stats.StaleByZombie != 1 || len(obs.zombies) != 1 {
					t.Fatalf("zombie stale write: violations %v, counted %d, reported %v", obs.violations, api.Stats.StaleByZombie, obs.zombies)
				}
			case len(obs.violations) == 0 || !strings.HasPrefix(obs.violations[0], tc.want):
				t.Fatalf("violations %v, want %q", obs.violations, tc.want)
			}
		})
	}
}

func TestAPITombstoneFencesOlderCreates(t *testing.T) {
	s, api, obs := newTestAPI()
	as(t, s, obs, Held, func(ctx context.Context) {
		id, _ := api.Create(ctx, rec(3))
		obs.tombstone = 7 // the task applies the delete at v7
		if err := api.Delete(ctx, k1.Entity, id); err != nil {
			t.Error(err)
		}
		obs.tombstone = 0
		if _, err := api.Create(ctx, rec(5)); err != nil {
			t.Error(err)
		}
	})
	if len(obs.violations) != 1 || !strings.Contains(obs.violations[0], "stale write") {
		t.Fatalf("a create at v5 after a delete at v7: violations %v", obs.violations)
	}
}

func TestAPIOverlapDetector(t *testing.T) {
	s, api, obs := newTestAPI()
	api.Faults = APIFaults{Slow: 1, SlowMax: time.Minute}
	for range 2 {
		task := s.Spawn("w", func(ctx context.Context) { _, _ = api.Create(ctx, rec(1)) })
		obs.status[task] = Held
	}
	drive(t, s, first)
	if len(obs.violations) == 0 || !strings.HasPrefix(obs.violations[0], "overlapping writes") {
		t.Fatalf("two slow creates by lease holders: violations %v", obs.violations)
	}
}

func TestAPIFaults(t *testing.T) {
	t.Run("refuse", func(t *testing.T) {
		s, api, obs := newTestAPI()
		api.Faults = APIFaults{Refuse: 1, RetryAfterMax: time.Minute}
		as(t, s, obs, Held, func(ctx context.Context) {
			for range 20 {
				_, err := api.Create(ctx, rec(1))
				if c := sink.Classify(ctx, err).Class; !c.APIFailure() {
					t.Errorf("refused create: %v is %s, not an API failure", err, c)
				}
			}
		})
		if len(api.Records(k1)) != 0 || api.Stats.Creates != 0 {
			t.Fatalf("refused calls took effect: %v", api.Records(k1))
		}
	})
	t.Run("local", func(t *testing.T) {
		s, api, obs := newTestAPI()
		api.Faults = APIFaults{Local: 1}
		as(t, s, obs, Held, func(ctx context.Context) {
			if _, err := api.Create(ctx, rec(1)); !errors.Is(err, sink.ErrLocal) {
				t.Errorf("create = %v, want ErrLocal", err)
			}
		})
		if len(api.Records(k1)) != 0 {
			t.Fatal("a call never sent took effect")
		}
	})
	t.Run("permanent", func(t *testing.T) {
		s, api, obs := newTestAPI()
		api.Faults = APIFaults{Permanent: 1}
		as(t, s, obs, Held, func(ctx context.Context) {
			_, err := api.Create(ctx, rec(1))
			if c := sink.Classify(ctx, err).Class; c != sink.ClassClientError {
				t.Errorf("create = %v (%s), want a client error", err, c)
			}
		})
	})
	t.Run("late error", func(t *testing.T) {
		s, api, obs := newTestAPI()
		api.Faults = APIFaults{LateError: 1}
		as(t, s, obs, Held, func(ctx context.Context) {
			_, err := api.Create(ctx, rec(1))
			if c := sink.Classify(ctx, err).Class; !c.APIFailure() {
				t.Errorf("create = %v (%s), want an API failure", err, c)
			}
		})
		if len(api.Records(k1)) != 1 {
			t.Fatal("a write that answered a timeout did not land")
		}
	})
	t.Run("outage", func(t *testing.T) {
		s, api, obs := newTestAPI()
		api.DownUntil = Epoch.Add(time.Minute)
		as(t, s, obs, Held, func(ctx context.Context) {
			if _, err := api.Create(ctx, rec(1)); err == nil {
				t.Error("a create succeeded during an outage")
			}
			s.Advance(time.Minute)
			if _, err := api.Create(ctx, rec(1)); err != nil {
				t.Errorf("a create failed after the outage: %v", err)
			}
		})
	})
}

func TestAPIWriteOfACrashedCallerLandsWithinItsLease(t *testing.T) {
	s, api, obs := newTestAPI()
	api.Faults = APIFaults{Slow: 1, SlowMax: 10 * time.Hour}
	task := s.Spawn("crashing", func(ctx context.Context) { _, _ = api.Create(ctx, rec(1)) })
	obs.status[task] = Held
	obs.expiry[task] = Epoch.Add(time.Minute)
	for range 2 { // the turn before the call, then the call until its sleep
		if err := s.Run(task); err != nil {
			t.Fatal(err)
		}
	}
	if !api.inflight[k1][0].landAt.After(Epoch.Add(time.Minute)) {
		t.Fatal("the seed drew a delay within the lease; the test needs one past it")
	}
	if err := s.Kill(task); err != nil {
		t.Fatal(err)
	}
	at, ok := api.NextLanding()
	if !ok || at.After(Epoch.Add(time.Minute)) {
		t.Fatalf("the write lands at %v (%t), after the caller's lease", at.Sub(Epoch), ok)
	}
	s.AdvanceTo(at)
	if n := api.LandDue(); n != 1 || len(api.Records(k1)) != 1 || api.Pending() {
		t.Fatalf("landed %d, records %v", n, api.Records(k1))
	}
}
