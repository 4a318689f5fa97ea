package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"
)

// ErrCrashed is what every port call of a task returns once its worker
// crashed: the call has no effect, and the task runs to its end without
// waiting for turns, its outcome thrown away.
var ErrCrashed = errors.New("sim: worker crashed")

// Epoch is the simulated clock's start, far from any real time so that a
// real clock leaking into the run shows in the trace.
var Epoch = time.Date(2040, time.January, 1, 0, 0, 0, 0, time.UTC)

type taskState int

const (
	taskRunnable taskState = iota // waiting for its turn
	taskSleeping                  // waiting for the simulated clock
	taskDone
)

// Task is one goroutine of simulated code (one delivery being applied and
// settled). It runs only while the scheduler has handed it the turn.
type Task struct {
	ID   int
	Name string

	ctx    context.Context
	cancel context.CancelFunc
	resume chan bool // true: the task's worker crashed
	state  taskState
	wakeAt time.Time
	dead   bool
	panicV any
	stack  []byte
}

// Dead reports whether the task's worker crashed.
func (t *Task) Dead() bool { return t.dead }

// Context is the task's context: cancelled when its worker crashes, and
// carrying the task for the ports to find.
func (t *Task) Context() context.Context { return t.ctx }

type taskKey struct{}

// TaskOf returns the task whose context ctx derives from, nil if none.
func TaskOf(ctx context.Context) *Task {
	t, _ := ctx.Value(taskKey{}).(*Task)
	return t
}

// Sched owns the simulated clock, the seeded random source and the turn:
// exactly one task runs at a time, from one yield point to the next, and
// the driver decides which one. Every handoff is a channel send and
// receive, so the race detector sees the order too.
type Sched struct {
	rng    *rand.Rand
	now    time.Time
	tasks  []*Task // unfinished, in creation order
	cur    *Task
	back   chan struct{}
	nextID int
	trace  *Trace
}

// NewSched returns a scheduler whose choices all derive from seed.
func NewSched(seed uint64, tr *Trace) *Sched {
	s := &Sched{
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now:   Epoch,
		back:  make(chan struct{}),
		trace: tr,
	}
	tr.clock = s
	return s
}

// Rand is the run's random source. Use it only from the goroutine that
// holds the turn (the driver or the running task).
func (s *Sched) Rand() *rand.Rand { return s.rng }

// Now is the simulated time.
func (s *Sched) Now() time.Time { return s.now }

// Advance moves the clock forward by d.
func (s *Sched) Advance(d time.Duration) {
	if d > 0 {
		s.now = s.now.Add(d)
	}
}

// AdvanceTo moves the clock to t if t is later.
func (s *Sched) AdvanceTo(t time.Time) {
	if t.After(s.now) {
		s.now = t
	}
}

// Chance reports true with probability p.
func (s *Sched) Chance(p float64) bool { return p > 0 && s.rng.Float64() < p }

// Between returns a duration uniformly drawn from [lo, hi].
func (s *Sched) Between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

// Spawn creates a task that runs fn once it gets its first turn. A task
// killed before that never runs fn.
func (s *Sched) Spawn(name string, fn func(ctx context.Context)) *Task {
	s.nextID++
	t := &Task{ID: s.nextID, Name: name, resume: make(chan bool)}
	ctx, cancel := context.WithCancel(context.Background())
	t.ctx, t.cancel = context.WithValue(ctx, taskKey{}, t), cancel
	s.tasks = append(s.tasks, t)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				t.panicV, t.stack = v, debug.Stack()
			}
			t.state = taskDone
			t.cancel()
			s.back <- struct{}{}
		}()
		if crashed := <-t.resume; crashed {
			return
		}
		fn(t.ctx)
	}()
	return t
}

// Current is the task holding the turn, nil while the driver holds it.
func (s *Sched) Current() *Task { return s.cur }

// Runnable returns the tasks waiting for a turn, in creation order.
func (s *Sched) Runnable() []*Task {
	var out []*Task
	for _, t := range s.tasks {
		if t.state == taskRunnable {
			out = append(out, t)
		}
	}
	return out
}

// Tasks returns every unfinished task in creation order.
func (s *Sched) Tasks() []*Task { return append([]*Task(nil), s.tasks...) }

// Wake makes runnable every sleeping task whose time has come.
func (s *Sched) Wake() {
	for _, t := range s.tasks {
		if t.state == taskSleeping && !t.wakeAt.After(s.now) {
			t.state = taskRunnable
		}
	}
}

// NextWake is the earliest time a sleeping task wakes; ok is false when
// none sleeps.
func (s *Sched) NextWake() (at time.Time, ok bool) {
	for _, t := range s.tasks {
		if t.state == taskSleeping && (!ok || t.wakeAt.Before(at)) {
			at, ok = t.wakeAt, true
		}
	}
	return at, ok
}

// Run hands the turn to t until its next yield point or its end. It
// returns the panic t raised, if any, as an error with the stack.
func (s *Sched) Run(t *Task) error {
	if t.state != taskRunnable {
		panic(fmt.Sprintf("sim: Run(%s) in state %d", t.Name, t.state))
	}
	return s.handoff(t, false)
}

// Kill crashes t: it is cancelled, resumed once with ErrCrashed from its
// pending yield, and runs to its end with every further yield failing at
// once. It returns the panic t raised, if any.
func (s *Sched) Kill(t *Task) error {
	if t.state == taskDone {
		return nil
	}
	t.dead = true
	t.cancel()
	err := s.handoff(t, true)
	if t.state != taskDone {
		panic(fmt.Sprintf("sim: killed task %s did not finish", t.Name))
	}
	return err
}

func (s *Sched) handoff(t *Task, crashed bool) error {
	s.cur = t
	t.resume <- crashed
	<-s.back
	s.cur = nil
	if t.state == taskDone {
		s.remove(t)
		if t.panicV != nil {
			return fmt.Errorf("panic in task %s: %v\n%s", t.Name, t.panicV, t.stack)
		}
	}
	return nil
}

func (s *Sched) remove(t *Task) {
	for i, x := range s.tasks {
		if x == t {
			s.tasks = append(s.tasks[:i], s.tasks[i+1:]...)
			return
		}
	}
}

// Yield passes the turn back to the driver and waits for the next one. It
// must be called from the running task's goroutine; ErrCrashed means the
// task's worker crashed meanwhile.
func (s *Sched) Yield() error {
	t := s.mustCurrent()
	if t.dead {
		return ErrCrashed
	}
	t.state = taskRunnable
	return s.wait(t)
}

// Sleep passes the turn back and waits until the simulated clock reaches
// now+d (or the task's worker crashes).
func (s *Sched) Sleep(d time.Duration) error {
	t := s.mustCurrent()
	if t.dead {
		return ErrCrashed
	}
	t.state, t.wakeAt = taskSleeping, s.now.Add(d)
	return s.wait(t)
}

func (s *Sched) wait(t *Task) error {
	s.back <- struct{}{}
	if crashed := <-t.resume; crashed {
		return ErrCrashed
	}
	return nil
}

func (s *Sched) mustCurrent() *Task {
	if s.cur == nil {
		// A port was called outside any task's turn: a goroutine or timer
		// of the code under test that the simulation does not drive.
		panic("sim: a port was called outside a simulated task's turn (a real-time timer or an extra goroutine in the code under test)")
	}
	return s.cur
}

// Shutdown kills every unfinished task so that no goroutine outlives the
// run; the errors are their panics.
func (s *Sched) Shutdown() []error {
	var errs []error
	for _, t := range s.Tasks() {
		if err := s.Kill(t); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
