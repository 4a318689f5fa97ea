package rabbitmq

import (
	"encoding/binary"
	"math"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
)

// valueGen builds AMQP field values of every type the protocol carries
// from fuzz bytes.
type valueGen struct{ b []byte }

func (g *valueGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

func (g *valueGen) u64() uint64 {
	var buf [8]byte
	n := copy(buf[:], g.b)
	g.b = g.b[n:]
	return binary.LittleEndian.Uint64(buf[:])
}

func (g *valueGen) str() string {
	n := int(g.byte()) % 40
	n = min(n, len(g.b))
	s := string(g.b[:n])
	g.b = g.b[n:]
	return s
}

func (g *valueGen) value(depth int) any {
	kind := g.byte() % 18
	if depth > 3 && kind >= 16 {
		kind = 0
	}
	switch kind {
	case 0:
		return nil
	case 1:
		return g.byte()%2 == 0
	case 2:
		return int8(g.byte())
	case 3:
		return int16(g.u64())
	case 4:
		return int32(g.u64())
	case 5:
		return int64(g.u64())
	case 6:
		return uint8(g.byte())
	case 7:
		return uint16(g.u64())
	case 8:
		return uint32(g.u64())
	case 9:
		return g.u64()
	case 10:
		return math.Float32frombits(uint32(g.u64()))
	case 11:
		return math.Float64frombits(g.u64())
	case 12:
		return g.str()
	case 13:
		return []byte(g.str())
	case 14:
		return time.Unix(int64(g.u64()%(1<<40))-(1<<39), 0)
	case 15:
		return amqp.Decimal{Scale: g.byte(), Value: int32(g.u64())}
	case 16:
		t := amqp.Table{}
		for range int(g.byte() % 4) {
			t[[]string{"queue", "reason", "time", "count", g.str()}[g.byte()%5]] = g.value(depth + 1)
		}
		return t
	default:
		var list []any
		for range int(g.byte() % 4) {
			list = append(list, g.value(depth+1))
		}
		return list
	}
}

// FuzzParkedHeaderTypes gives every header a parked message's decoders
// read (ours, x-death, x-delivery-count) values of any AMQP type, nested
// tables and arrays included: the decoders never panic, the attempt count
// stays within its bounds, every header is listed, the stream is empty or
// one eventsync knows unless our own header named it, and decoding twice
// gives the same message.
func FuzzParkedHeaderTypes(f *testing.F) {
	f.Add([]byte{12, 1, '3', 12, 4, 'l', 'i', 'v', 'e'}, "m1")
	f.Add([]byte{17, 3, 16, 2, 0, 12, 19, 'e', 'v', 'e', 'n', 't', 's', 'y', 'n', 'c', '.', 'l', 'i', 'v', 'e', '.', 'p', '1'}, "m2")
	f.Add([]byte{5, 255, 255, 255, 255, 255, 255, 255, 127, 9, 0, 0, 0, 0, 0, 0, 0, 128}, "")
	f.Add([]byte{11, 0, 0, 0, 0, 0, 0, 248, 127, 14, 1, 2, 3}, "x")
	keys := []string{bus.HeaderAttempt, bus.HeaderStream, bus.HeaderReason, bus.HeaderParkedAt, "x-death", "x-delivery-count", "x-first-death-queue", "custom"}
	topo := topology{ns: "eventsync", deliveryLimit: 5}
	f.Fuzz(func(t *testing.T, data []byte, id string) {
		g := &valueGen{b: data}
		h := amqp.Table{}
		for _, k := range keys {
			if v := g.value(0); v != nil || g.byte()%2 == 0 {
				h[k] = v
			}
		}
		d := amqp.Delivery{Headers: h, MessageId: id, Body: []byte(`{"entity":"listing"}`)}
		pm := topo.parkedMessage(d)
		if pm.ID != id || len(pm.Headers) != len(h) {
			t.Fatalf("id %q headers %d from %q and %d", pm.ID, len(pm.Headers), id, len(h))
		}
		if pm.Attempts < 1 || pm.Attempts > 1<<30+topo.deliveryLimit {
			t.Fatalf("attempts %d from %#v", pm.Attempts, h)
		}
		if _, ours := h[bus.HeaderStream].(string); !ours && pm.Stream != "" {
			if _, err := bus.ParseStream(string(pm.Stream)); err != nil {
				t.Fatalf("stream %q from %#v", pm.Stream, h)
			}
		}
		if again := topo.parkedMessage(d); !reflect.DeepEqual(pm, again) {
			t.Fatalf("decoding twice differs: %+v / %+v", pm, again)
		}
		if a := attemptOf(h); a < 1 || a > 2<<30 {
			t.Fatalf("attemptOf = %d", a)
		}
		for k := range stringHeaders(h) {
			if isBrokerHeader(k) {
				t.Fatalf("stringHeaders kept the broker's %s", k)
			}
		}
		_ = bus.ParkedFilter{Entity: "listing", ReasonContains: "x", Stream: bus.Live, Since: time.Unix(0, 0)}.Match(pm)
	})
}
