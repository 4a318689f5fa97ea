// Package sim is a deterministic simulation of eventsync's core: the real
// engine.Applier, settled as engine.Worker settles deliveries, run over
// in-memory models of the bus, the state store (store/memory behind a
// fault-injecting wrapper), the third-party API and the clock, with faults
// at every step. One seed fixes everything: the workload, which faults are
// on, and the order of every step, so a failing seed replays exactly.
// Anchors: FoundationDB's simulation testing and TigerBeetle's VOPR.
//
// # Turns
//
// Every delivery a simulated worker takes is handled in its own goroutine
// (a Task), as in the worker, but only one goroutine runs at a time: the
// driver (Run) hands out turns, and every port call is a yield point, so
// each store call, API call and settle passes the turn back before it
// takes effect and again before its caller sees the answer. At each step
// the driver draws, from a PCG seeded with the run's seed, which runnable
// task continues or which event happens instead: a delivery, a
// publication, a worker crash, a clock jump, an API outage, a pause. Every
// handoff is a channel send and receive, so the race detector sees the
// order too.
//
// # Time
//
// The clock is simulated (engine.Config.Now and the memory store's clock
// read it); it moves a little at every step, jumps when nothing can run,
// and jumps by about a lease TTL as a fault, which makes leases expire
// under calls in progress: zombies. The engine renews leases with a
// real-time timer at a third of LeaseTTL; LeaseTTL is an hour so that the
// timer never fires during a run, and a port called outside a task's turn
// panics. The engine draws retry jitter from math/rand/v2's global source,
// which cannot be seeded: the bus ignores the delay a retry asks for and
// draws its own (honouring Retry-After), and so does the engine's Sleep
// (engine.Config.Sleep, a turn of the simulated clock), so the replay
// stays exact.
//
// # Faults
//
// Each run enables a random subset of the faults (swarm testing), each at
// a random rate:
//   - store: a call fails before taking effect, or after (the caller does
//     not know the outcome); extra turns pass inside a call.
//   - API: retryable refusals (5xx, 429 and 503 with Retry-After, 408,
//     refused connections), permanent 422s, local failures before sending
//     (sink.ErrLocal, as a throttle whose limiter is down), writes that
//     land and then answer a timeout or a reset, slow calls (leases expire
//     under them), outages.
//   - bus: a settle fails before or after the broker takes it, or is lost
//     on the way while the caller sees success (the broker redelivers);
//     deliveries out of order; streams paused and resumed.
//   - workers crash between any two steps: their tasks stop at their next
//     yield point and never settle, their deliveries are redelivered, their
//     leases stand until they expire, and a write they had on the wire still
//     lands at its time. A crashed worker restarts as a new process.
//   - the workload: per-key versions with gaps, deletes, duplicates,
//     reordering, stale repeats, snapshot copies on the resync stream, and
//     poison messages.
//
// # Invariants
//
// Checked at every step:
//   - no stale write: the API never sees a create or update lower a key's
//     version (or re-create it below a delete's), from a writer that holds
//     the key's newest lease. A writer whose lease was taken over after it
//     expired (a zombie) may land a stale write: no client-side protocol
//     prevents that, so it is counted, and its writer must flag the key for
//     repair (its commit or release is fenced; when the store fails, it
//     keeps asking), after which the end checks hold;
//   - no write without a lease, no two writes in progress on one key by
//     lease holders, no key leased to two unexpired holders;
//   - no duplicate create: a lease holder never creates a record while
//     another one of the key exists that was not created by a zombie (those
//     may appear after a lookup; the repair removes them);
//   - an ack only for an event whose version the store has applied, or
//     (superseded) below a newer write in doubt: never on its own intent;
//   - a park only for poison, a permanent API answer, or an event whose own
//     API failures (over all its deliveries) reached max_attempts: waiting
//     for a lock, a store or a limiter never counts;
//   - no panic, no port called outside a task's turn.
//
// Checked at the end, after the quiet phase (faults off, streams resumed,
// workers restarted, run until the bus is empty, then every event parked
// for the API's sake replayed as an operator would, and run again): every
// message acked or parked, poison parked; every key's one remote record
// equal to its newest event (none after a delete); the store at that
// version, with the record's id, no write in doubt, no repair pending.
//
// # Model limits
//
//   - Lease renewal does not run (see Time): a zombie here is a worker
//     whose renewals did not happen, as in a stall of the whole process.
//   - A write on the wire when its worker crashes lands by the end of the
//     worker's lease at the latest (a sink timeout shorter than the lease
//     TTL, which renewal keeps alive while the call runs). A zombie write
//     of a worker that then crashed cannot be reported by anyone; its key
//     is a residual (counted, its remote record not checked at the end).
//   - The worker's pump, breaker and throttle are not simulated: each
//     simulated worker takes deliveries up to its capacity, applies them
//     with engine.Applier and settles them with Settle, a copy of
//     engine.Worker.handle's mapping. A pause stops the bus handing out
//     the stream's messages.
package sim
