package sim

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Trace records what happened in a run, one line per event, each stamped
// with the step and the simulated time since Epoch. It keeps the last
// lines for a failure report, and writes all of them to full when asked (a
// replay). Kept lines are formatted only when shown, so their arguments
// must not change afterwards (pass copies of slices).
type Trace struct {
	clock *Sched
	step  int64
	full  io.Writer // every line, when not nil
	ring  []traceEntry
	next  int
	n     int64
}

type traceEntry struct {
	step   int64
	at     time.Duration
	format string
	args   []any
}

func (e traceEntry) String() string {
	return fmt.Sprintf("%6d %12s  ", e.step, fmtDur(e.at)) + fmt.Sprintf(e.format, e.args...)
}

// NewTrace keeps the last keep lines, and writes every line to full when
// it is not nil.
func NewTrace(keep int, full io.Writer) *Trace {
	if keep < 1 {
		keep = 1
	}
	return &Trace{ring: make([]traceEntry, keep), full: full}
}

// Step starts a new step; the lines after it carry its number.
func (tr *Trace) Step() int64 {
	tr.step++
	return tr.step
}

// Steps is the number of steps so far.
func (tr *Trace) Steps() int64 { return tr.step }

// Addf records one line.
func (tr *Trace) Addf(format string, args ...any) {
	e := traceEntry{step: tr.step, format: format, args: args}
	if tr.clock != nil {
		e.at = tr.clock.now.Sub(Epoch)
	}
	tr.n++
	tr.ring[tr.next] = e
	tr.next = (tr.next + 1) % len(tr.ring)
	if tr.full != nil {
		io.WriteString(tr.full, e.String()+"\n")
	}
}

// Lines is the number of lines so far.
func (tr *Trace) Lines() int64 { return tr.n }

// Tail returns the kept lines, oldest first.
func (tr *Trace) Tail() string {
	var b strings.Builder
	if tr.n > int64(len(tr.ring)) {
		fmt.Fprintf(&b, "... %d earlier lines (replay the seed for all of them)\n", tr.n-int64(len(tr.ring)))
	}
	for i := range len(tr.ring) {
		e := tr.ring[(tr.next+i)%len(tr.ring)]
		if e.format != "" {
			b.WriteString(e.String())
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// fmtDur prints simulated durations compactly and the same way on every
// platform: seconds with millisecond precision.
func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3fs", d.Seconds())
}
