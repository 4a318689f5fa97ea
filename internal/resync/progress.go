package resync

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Printer shows progress: on a terminal a one-line bar redrawn in place
// (rows/total, rate, ETA), otherwise a log line every LogEvery.
type Printer struct {
	w        io.Writer
	terminal bool
	log      *slog.Logger
	// LogEvery is the interval between log lines when not on a terminal.
	LogEvery time.Duration
	// RedrawEvery bounds terminal redraws.
	RedrawEvery time.Duration

	mu    sync.Mutex
	last  time.Time
	drawn bool
}

// NewPrinter writes the bar to w when terminal is true, else logs to log.
func NewPrinter(w io.Writer, terminal bool, log *slog.Logger) *Printer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Printer{w: w, terminal: terminal, log: log, LogEvery: 5 * time.Second, RedrawEvery: 200 * time.Millisecond}
}

// Update is a WithProgress callback.
func (p *Printer) Update(pr Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	every := p.LogEvery
	if p.terminal {
		every = p.RedrawEvery
	}
	final := pr.Phase == PhaseSnapshot && pr.Total > 0 && pr.Rows >= pr.Total
	if !final && time.Since(p.last) < every {
		return
	}
	p.last = time.Now()
	if p.terminal {
		fmt.Fprintf(p.w, "\r%s\x1b[K", FormatLine(pr, 30))
		p.drawn = true
		return
	}
	if pr.Phase == PhaseDrain {
		p.log.Info("resync: waiting for the resync stream to drain", "run", pr.RunID, "ready", pr.Drain.Ready,
			"delayed", pr.Drain.Delayed, "in_flight", pr.Drain.InFlight, "consumers", pr.Drain.Consumers)
		return
	}
	args := []any{"run", pr.RunID, "rows", pr.Rows, "total", pr.Total, "rate", fmt.Sprintf("%.0f/s", pr.Rate)}
	if pr.Total > 0 {
		args = append(args, "percent", fmt.Sprintf("%.1f", 100*float64(pr.Rows)/float64(pr.Total)))
	}
	if pr.ETA >= 0 {
		args = append(args, "eta", pr.ETA.Round(time.Second).String())
	}
	p.log.Info("resync progress", args...)
}

// Finish ends the terminal line so that later output starts on its own.
func (p *Printer) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// FormatLine renders one progress line with a bar of width characters.
func FormatLine(pr Progress, width int) string {
	if pr.Phase == PhaseDrain {
		delayed := fmt.Sprint(pr.Drain.Delayed)
		if pr.Drain.Delayed < 0 {
			delayed = "?"
		}
		return fmt.Sprintf("draining resync: %s ready, %s delayed, %s in flight, %d consumers",
			groupDigits(pr.Drain.Ready), delayed, groupDigits(pr.Drain.InFlight), pr.Drain.Consumers)
	}
	frac := 0.0
	if pr.Total > 0 {
		frac = min(1, float64(pr.Rows)/float64(pr.Total))
	}
	filled := int(frac * float64(width))
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	if filled < width && filled > 0 {
		bar = strings.Repeat("=", filled-1) + ">" + strings.Repeat(" ", width-filled)
	}
	eta := "--"
	if pr.ETA >= 0 {
		eta = pr.ETA.Round(time.Second).String()
	}
	return fmt.Sprintf("[%s] %5.1f%% %s/%s rows  %s rows/s  ETA %s",
		bar, 100*frac, groupDigits(pr.Rows), groupDigits(pr.Total), groupDigits(int64(pr.Rate)), eta)
}

// groupDigits writes 1234567 as 1,234,567.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
