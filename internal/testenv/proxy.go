package testenv

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a real service and fails them on
// demand as a network would: Refuse drops every connection and refuses new
// ones (a service that is down), Stall keeps connections open and forwards
// nothing (a partition: calls hang until their deadline), Resume restores
// forwarding. It listens on one port for its whole life, so a client
// given its address finds the service again after Resume.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	state proxyState
	conns []net.Conn
	wg    sync.WaitGroup
}

type proxyState int

const (
	forwarding proxyState = iota
	refusing
	stalling
)

// NewProxy starts a proxy to target (host:port); it is closed when the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// URL returns rawURL with its host replaced by the proxy's address.
func (p *Proxy) URL(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// Refuse drops every connection and refuses new ones until Resume.
func (p *Proxy) Refuse() { p.set(refusing) }

// Stall drops every connection's traffic until Resume: nothing is
// forwarded either way, new connections are accepted and left hanging.
func (p *Proxy) Stall() { p.set(stalling) }

// Resume forwards new connections again. Connections that were stalled
// stay dead (closed now), as after a partition a client's old ones are.
func (p *Proxy) Resume() { p.set(forwarding) }

func (p *Proxy) set(s proxyState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.state
	p.state = s
	// Leaving a failure, or refusing: end every connection. Stalling
	// keeps them open, silent.
	if s == refusing || old != forwarding && s == forwarding {
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
	}
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		state := p.state
		p.mu.Unlock()
		switch state {
		case refusing:
			_ = c.Close()
			continue
		case stalling:
			p.track(c)
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(c, up)
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, cs...)
}

// pipe copies src to dst while the proxy forwards; a stalled proxy reads
// and drops.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			forward := p.state == forwarding
			p.mu.Unlock()
			if forward {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.Refuse()
	p.wg.Wait()
}
