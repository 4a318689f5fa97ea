package bus

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// HeaderPartitionKey carries the key a partitioned (per-key ordered) bus
// routes a message by: "<entity>:<key>" of the event in its body. A bus in
// ordered mode sets it at Publish when the publisher has not; retries,
// parked messages and replays keep it, so every copy of a message returns
// to its key's partition.
const HeaderPartitionKey = "x-eventsync-partition-key"

// PartitionKey returns the key a partitioned bus routes m by: its
// HeaderPartitionKey header when set, else "<entity>:<key>" read from the
// body, else "" (not an event: the adapter spreads such messages freely).
func PartitionKey(m Message) string {
	if k := m.Headers[HeaderPartitionKey]; k != "" {
		return k
	}
	var probe struct {
		Entity string `json:"entity"`
		Key    string `json:"key"`
	}
	if json.Unmarshal(m.Body, &probe) != nil || probe.Key == "" {
		return ""
	}
	return probe.Entity + ":" + probe.Key
}

// FanIn merges subscriptions (one per partition, say) into one. Each
// source's deliveries keep their order; sources interleave freely.
// Deliveries is closed once every source's is. Close closes every source;
// a delivery taken from a source but not yet handed out is released. The
// merged subscription counts Unacked as the sum over the sources that
// count theirs (UnackedCounter).
func FanIn(subs ...Subscription) Subscription {
	f := &fanIn{subs: subs, out: make(chan Delivery), stop: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.forward(s)
		}()
	}
	go func() {
		wg.Wait()
		close(f.out)
		close(f.done)
	}()
	return f
}

type fanIn struct {
	subs []Subscription
	out  chan Delivery
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func (f *fanIn) forward(s Subscription) {
	for d := range s.Deliveries() {
		select {
		case f.out <- d:
		case <-f.stop:
			// Closing: nobody takes it any more; it goes back unharmed.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = d.Release(ctx)
			cancel()
		}
	}
}

func (f *fanIn) Deliveries() <-chan Delivery { return f.out }

func (f *fanIn) Close() error {
	f.once.Do(func() { close(f.stop) })
	var errs []error
	for _, s := range f.subs {
		errs = append(errs, s.Close())
	}
	<-f.done
	return errors.Join(errs...)
}

// Unacked implements UnackedCounter over the sources that count.
func (f *fanIn) Unacked() int {
	n := 0
	for _, s := range f.subs {
		if c, ok := s.(UnackedCounter); ok {
			n += c.Unacked()
		}
	}
	return n
}

// Rebalancer runs a partitioned subscription's rebalancing: step every
// interval (jittered ±50 %, so workers started together look at different
// moments) until Stop, ctx ends or quit closes; then finally, if not nil.
type Rebalancer struct {
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

// StartRebalancer starts the loop; its goroutine ends before Stop returns.
func StartRebalancer(ctx context.Context, every time.Duration, quit <-chan struct{}, step func(context.Context), finally func()) *Rebalancer {
	r := &Rebalancer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if finally != nil {
			defer finally()
		}
		t := time.NewTimer(jitter(every))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.stop:
				return
			case <-quit:
				return
			case <-t.C:
			}
			step(ctx)
			t.Reset(jitter(every))
		}
	}()
	return r
}

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d+1) }

// Stop ends the loop and waits for it.
func (r *Rebalancer) Stop() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

// Excess returns, chosen at random, the partitions among active (the ones
// a subscription is active on) beyond its share of n partitions among
// workers subscriptions, ceil(n / workers), and that share.
func Excess(active []int, n, workers int) (excess []int, share int) {
	share = (n + max(workers, 1) - 1) / max(workers, 1)
	if len(active) <= share {
		return nil, share
	}
	active = slices.Clone(active)
	rand.Shuffle(len(active), func(i, j int) { active[i], active[j] = active[j], active[i] })
	return active[share:], share
}
