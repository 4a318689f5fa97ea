package throttle

import (
	"math"
	"time"
)

// The limits every Limiter adapter accepts, and so the range of every rate,
// burst, hold and lease the throttle passes to one. Adapters clamp what they
// are given into them the same way (the helpers below), so an extreme input
// never fails a statement, never yields a negative wait and never means "no
// limit"; Config.Validate refuses settings outside them.
const (
	// MinRate is the lowest rate, in calls per second: one call every
	// 1000 s. NaN and rates at or below it count as MinRate.
	MinRate = 0.001
	// MaxRate is the highest rate: one call per microsecond, the resolution
	// of the server-side adapters (Redis TIME, PostgreSQL timestamptz).
	// Above it PostgreSQL would round the emission interval to 0, which is
	// no limit at all.
	MaxRate = 1e6
	// MaxBurst is the largest burst. With MinRate it lets the theoretical
	// arrival time run 10⁹ s (32 years) ahead of now, which every adapter's
	// arithmetic holds exactly: Go's time.Duration (292 years), Lua's exact
	// integers (2⁵³ µs, 285 years), PostgreSQL's bigint and interval.
	MaxBurst = 1_000_000
	// MaxSpan is the longest hold and probe lease, counted from now: a
	// hold asked to end later ends then.
	MaxSpan = 24 * time.Hour
)

// ClampRate returns rate within [MinRate, MaxRate]; NaN and rates at or
// below 0 are MinRate, the most careful reading of "no rate".
func ClampRate(rate float64) float64 {
	if math.IsNaN(rate) || rate < MinRate {
		return MinRate
	}
	return min(rate, MaxRate)
}

// ClampBurst returns burst within [1, MaxBurst].
func ClampBurst(burst int) int {
	return max(1, min(burst, MaxBurst))
}

// EmissionInterval is the GCRA's time between calls at rate: 1/rate after
// ClampRate, rounded to the microsecond, so between 1µs and 1000s. Every
// adapter spaces calls by exactly this.
func EmissionInterval(rate float64) time.Duration {
	us := math.Round(1e6 / ClampRate(rate))
	return time.Duration(max(1, us)) * time.Microsecond
}

// HoldRate is the rate a Hold stores when given rate: 0 (none) for NaN and
// rates at or below 0, else ClampRate(rate).
func HoldRate(rate float64) float64 {
	if math.IsNaN(rate) || rate <= 0 {
		return 0
	}
	return ClampRate(rate)
}

// ClampSpan returns d within [0, MaxSpan]: the length of a probe lease or
// of a hold from now.
func ClampSpan(d time.Duration) time.Duration {
	return max(0, min(d, MaxSpan))
}

// ClampHoldEnd returns until within [now-MaxSpan, now+MaxSpan]: a hold
// ends at most MaxSpan from now, and one that ended long ago is as over as
// one that ended a day ago (but every adapter can store the time).
func ClampHoldEnd(now, until time.Time) time.Time {
	if limit := now.Add(MaxSpan); until.After(limit) {
		return limit
	}
	if limit := now.Add(-MaxSpan); until.Before(limit) {
		return limit
	}
	return until
}
