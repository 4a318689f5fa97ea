package demo

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// sample is the state of the run at one moment, for the progress line and
// the report.
type sample struct {
	elapsed   time.Duration
	phase     string
	published uint64
	results   map[string]int64
	api       APIReport
	breakers  map[string]int
	resyncPub int64
	resyncAll int64
	resyncOK  bool
}

func (d *demo) sample() sample {
	s := sample{
		elapsed:   time.Since(d.started),
		phase:     d.currentPhase(),
		published: d.relay.Stats().Published,
		results:   map[string]int64{},
		breakers:  map[string]int{},
		resyncPub: d.resyncPublished.Load(),
		resyncAll: d.resyncTotal.Load(),
		resyncOK:  d.resyncDone.Load(),
	}
	for _, w := range d.workers {
		st := w.Status()
		for k, v := range st.Results {
			s.results[k] += v
		}
		s.breakers[st.Breaker]++
	}
	st := d.api.Stats()
	s.api.Statuses, s.api.Calls = apiReport(st.Requests)
	s.api.MaxInFlight = st.MaxInFlight
	s.api.OverlappingWrites = st.OverlappingWrites
	s.api.DuplicateRecords = st.DuplicateRecords
	s.api.StaleWrites = st.StaleWrites
	s.api.FaultsInjected = st.FaultsInjected
	return s
}

func (s sample) line() string {
	r := s.results
	var b strings.Builder
	fmt.Fprintf(&b, "%5.1fs %-19s published %s · applied %s · dup %s · stale %s · retried %s · parked %s",
		s.elapsed.Seconds(), s.phase, num(int64(s.published)), num(r["applied"]+r["repaired"]),
		num(r["duplicate"]), num(r["stale"]+r["superseded"]), num(r["retried"]+r["locked"]), num(r["parked"]))
	a := s.api.Statuses
	fmt.Fprintf(&b, " | API 2xx %s 429 %s 5xx %s timeout %s", num(a["2xx"]), num(a["429"]), num(a["5xx"]), num(a["timeout"]))
	fmt.Fprintf(&b, " | breakers %s", breakerSummary(s.breakers))
	switch {
	case s.resyncOK:
		fmt.Fprintf(&b, " | resync done %s/%s", num(s.resyncPub), num(s.resyncAll))
	case s.resyncAll > 0:
		fmt.Fprintf(&b, " | resync %s/%s", num(s.resyncPub), num(s.resyncAll))
	}
	return b.String()
}

func breakerSummary(m map[string]int) string {
	states := make([]string, 0, len(m))
	for k := range m {
		states = append(states, k)
	}
	sort.Strings(states)
	parts := make([]string, 0, len(states))
	for _, k := range states {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// progress prints sample lines until stopped: redrawn in place on a
// terminal, one line every interval otherwise.
type progress struct {
	d      *demo
	stopCh chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newProgress(d *demo) *progress {
	return &progress{d: d, stopCh: make(chan struct{}), done: make(chan struct{})}
}

func (p *progress) start(ctx context.Context) {
	cfg := p.d.cfg
	if cfg.Progress == nil {
		close(p.done)
		return
	}
	every := cfg.ProgressEvery
	if cfg.Interactive {
		every = 250 * time.Millisecond
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				p.print(cfg.Progress, cfg.Interactive, cfg.Width, true)
				return
			case <-p.stopCh:
				p.print(cfg.Progress, cfg.Interactive, cfg.Width, true)
				return
			case <-tick.C:
				p.print(cfg.Progress, cfg.Interactive, cfg.Width, false)
			}
		}
	}()
}

func (p *progress) print(w io.Writer, interactive bool, width int, last bool) {
	line := p.d.sample().line()
	if !interactive {
		fmt.Fprintln(w, line)
		return
	}
	if width > 1 && utf8.RuneCountInString(line) > width-1 {
		line = string([]rune(line)[:width-1])
	}
	// \r returns to the line start, \x1b[K clears what a longer line left.
	fmt.Fprint(w, "\r"+line+"\x1b[K")
	if last {
		fmt.Fprintln(w)
	}
}

// stop prints a final line and waits for the printer; safe to call twice.
func (p *progress) stop() {
	p.once.Do(func() { close(p.stopCh) })
	<-p.done
}
