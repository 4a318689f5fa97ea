package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
)

// recordingPublisher keeps what it is asked to publish; failAt > 0 fails
// the call that would take the total past failAt messages.
type recordingPublisher struct {
	got    [][]byte
	failAt int
}

var errBrokerDown = errors.New("broker down")

func (p *recordingPublisher) Publish(_ context.Context, _ bus.Stream, msgs ...bus.Message) error {
	if p.failAt > 0 && len(p.got)+len(msgs) > p.failAt {
		return errBrokerDown
	}
	for _, m := range msgs {
		p.got = append(p.got, m.Body)
	}
	return nil
}

// FuzzPublishNDJSON feeds arbitrary input to publish's NDJSON loop: it
// never panics; what it publishes is, in order, the input's non-blank
// lines up to the first one event.Parse refuses (or one over the size
// limit), each a valid event; it reports exactly that count; an error
// names the line it stopped at; a broker failure is returned, never
// taken for a bad line.
func FuzzPublishNDJSON(f *testing.F) {
	good := `{"id":"1","entity":"listing","key":"a","version":1,"op":"upsert","data":{}}`
	f.Add([]byte(good+"\n\n"+good+"\r\n"), 1024, 0)
	f.Add([]byte(good+"\nnot json\n"+good), 1024, 0)
	f.Add([]byte(good+"\n"+good), 40, 0)
	f.Add([]byte(strings.Repeat(good+"\n", 3)), 1024, 2)
	f.Add([]byte("\xff\n  \t\n{}"), 8, 0)
	f.Fuzz(func(t *testing.T, in []byte, maxBytes, failAt int) {
		maxBytes = 16 + abs(maxBytes)%4096
		failAt = abs(failAt) % 4
		pub := &recordingPublisher{failAt: failAt}
		n, err := publishNDJSON(context.Background(), pub, bus.Live, bytes.NewReader(in), maxBytes)
		if n != len(pub.got) {
			t.Fatalf("reported %d published, the broker got %d", n, len(pub.got))
		}
		// The expected run: non-blank lines up to the first bad one.
		var want [][]byte
		badLine := 0
		sc := bufio.NewScanner(bytes.NewReader(in))
		sc.Buffer(make([]byte, 64*1024), maxBytes+1)
		line := 0
		for sc.Scan() {
			line++
			raw := sc.Bytes()
			if len(bytes.TrimSpace(raw)) == 0 {
				continue
			}
			if _, perr := event.Parse(raw, maxBytes); perr != nil {
				badLine = line
				break
			}
			want = append(want, append([]byte(nil), raw...))
		}
		if badLine == 0 && sc.Err() != nil {
			badLine = line + 1
		}
		if errors.Is(err, errBrokerDown) {
			if len(pub.got) > len(want) {
				t.Fatalf("published %d of %d valid lines before the broker failed", len(pub.got), len(want))
			}
		} else {
			if len(pub.got) != len(want) {
				t.Fatalf("published %d events, want the %d valid lines before line %d (err %v)", len(pub.got), len(want), badLine, err)
			}
			if (err != nil) != (badLine > 0) {
				t.Fatalf("err %v, first bad line %d", err, badLine)
			}
			if err != nil && !strings.Contains(err.Error(), "line "+strconv.Itoa(badLine)) {
				t.Fatalf("error %q does not name line %d", err, badLine)
			}
		}
		for i, body := range pub.got {
			if !bytes.Equal(body, want[i]) {
				t.Fatalf("event %d is %q, want line %q", i, body, want[i])
			}
		}
	})
}

func abs(n int) int {
	if n < 0 {
		if n == -n { // math.MinInt
			return 0
		}
		return -n
	}
	return n
}
