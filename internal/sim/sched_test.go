package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func newTestSched(seed uint64) *Sched {
	return NewSched(seed, NewTrace(50, nil))
}

// drive runs every task to its end, taking turns in the order pick says
// and moving the clock to the next wake-up when all tasks sleep.
func drive(t *testing.T, s *Sched, pick func(runnable []*Task) *Task) {
	t.Helper()
	for range 10000 {
		s.Wake()
		run := s.Runnable()
		if len(run) == 0 {
			at, ok := s.NextWake()
			if !ok {
				return
			}
			s.AdvanceTo(at)
			continue
		}
		if err := s.Run(pick(run)); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("tasks did not finish")
}

func first(run []*Task) *Task { return run[0] }

// runTask runs fn as a task to its end.
func runTask(t *testing.T, s *Sched, fn func(ctx context.Context)) {
	t.Helper()
	s.Spawn("test", fn)
	drive(t, s, first)
}

func TestTasksTakeTurns(t *testing.T) {
	s := newTestSched(1)
	// No lock: the race detector fails the test if two tasks ever run at
	// once.
	var log []string
	for i := range 3 {
		s.Spawn(fmt.Sprintf("t%d", i), func(ctx context.Context) {
			for step := range 3 {
				log = append(log, fmt.Sprintf("t%d.%d", i, step))
				if err := s.Yield(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	// The driver decides the order: always the newest runnable task.
	drive(t, s, func(run []*Task) *Task { return run[len(run)-1] })
	want := "t2.0 t2.1 t2.2 t1.0 t1.1 t1.2 t0.0 t0.1 t0.2"
	if got := strings.Join(log, " "); got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}

func TestKillEndsATaskAtItsYieldPoint(t *testing.T) {
	s := newTestSched(1)
	var effects []string
	var errs []error
	task := s.Spawn("victim", func(ctx context.Context) {
		effects = append(effects, "before")
		errs = append(errs, s.Yield())
		errs = append(errs, s.Yield())
		errs = append(errs, s.Sleep(time.Hour))
		errs = append(errs, ctx.Err())
	})
	if err := s.Run(task); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(task); err != nil {
		t.Fatal(err)
	}
	if !task.Dead() || len(s.Tasks()) != 0 {
		t.Fatalf("killed task: dead=%t, %d tasks left", task.Dead(), len(s.Tasks()))
	}
	want := []error{ErrCrashed, ErrCrashed, ErrCrashed, context.Canceled}
	if len(errs) != len(want) {
		t.Fatalf("errors %v, want %v", errs, want)
	}
	for i := range want {
		if !errors.Is(errs[i], want[i]) {
			t.Fatalf("errors %v, want %v", errs, want)
		}
	}
	if len(effects) != 1 {
		t.Fatalf("effects %v", effects)
	}
}

func TestKillBeforeTheFirstTurnNeverRuns(t *testing.T) {
	s := newTestSched(1)
	ran := false
	task := s.Spawn("never", func(context.Context) { ran = true })
	if err := s.Kill(task); err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Fatal("a task killed before its first turn ran")
	}
}

func TestSleepWaitsForTheSimulatedClock(t *testing.T) {
	s := newTestSched(1)
	var woke time.Time
	s.Spawn("sleeper", func(context.Context) {
		if err := s.Sleep(5 * time.Second); err != nil {
			t.Error(err)
		}
		woke = s.Now()
	})
	if err := s.Run(s.Runnable()[0]); err != nil {
		t.Fatal(err)
	}
	if len(s.Runnable()) != 0 {
		t.Fatal("a sleeping task is runnable")
	}
	s.Advance(4 * time.Second)
	s.Wake()
	if len(s.Runnable()) != 0 {
		t.Fatal("woke before its time")
	}
	at, ok := s.NextWake()
	if !ok || at != Epoch.Add(5*time.Second) {
		t.Fatalf("NextWake = %v %t", at, ok)
	}
	drive(t, s, first)
	if woke != Epoch.Add(5*time.Second) {
		t.Fatalf("woke at %v", woke.Sub(Epoch))
	}
}

func TestPanicInATaskIsReturned(t *testing.T) {
	s := newTestSched(1)
	task := s.Spawn("boom", func(context.Context) { panic("kaboom") })
	err := s.Run(task)
	if err == nil || !strings.Contains(err.Error(), "kaboom") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Run = %v, want the panic with the task's name", err)
	}
}

func TestYieldOutsideATurnPanics(t *testing.T) {
	s := newTestSched(1)
	defer func() {
		if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "outside a simulated task's turn") {
			t.Fatalf("recover() = %v", v)
		}
	}()
	_ = s.Yield()
}

func TestSameSeedSameDraws(t *testing.T) {
	a, b := newTestSched(42), newTestSched(42)
	for range 100 {
		if a.Rand().Uint64() != b.Rand().Uint64() || a.Between(0, time.Hour) != b.Between(0, time.Hour) {
			t.Fatal("two schedulers of one seed drew differently")
		}
	}
	if newTestSched(43).Rand().Uint64() == newTestSched(42).Rand().Uint64() {
		t.Fatal("different seeds drew the same")
	}
}
