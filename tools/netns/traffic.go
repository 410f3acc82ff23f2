//go:build linux

package netns

import (
	"bytes"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Protocol is what a probe or listener speaks.
type Protocol string

// Protocols the traffic helpers speak.
const (
	TCP  Protocol = "TCP"
	UDP  Protocol = "UDP"
	ICMP Protocol = "ICMP" // echo request/reply; ICMPv6 for IPv6 destinations
)

// Outcome classifies what happened to a probe.
type Outcome int

// Probe outcomes. Denied traffic shows as Timeout (dropped) or Unreachable (rejected);
// Refused means the packet got through to a host where nothing listens.
const (
	// Failed: a local error or a wrong reply; see Result.Err.
	Failed Outcome = iota
	// Allowed: the echo came back intact.
	Allowed
	// Timeout: no answer before the deadline; the traffic was dropped somewhere.
	Timeout
	// Refused: TCP RST or ICMP port unreachable; reached the destination, nothing listening.
	Refused
	// Unreachable: ICMP unreachable/prohibited, no route, or a local EPERM/EACCES; rejected.
	Unreachable
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case Allowed:
		return "Allowed"
	case Timeout:
		return "Timeout"
	case Refused:
		return "Refused"
	case Unreachable:
		return "Unreachable"
	default:
		return "Failed"
	}
}

// Result is the outcome of one probe.
type Result struct {
	// From is the namespace the probe ran in.
	From string
	// Protocol and To say what was sent where (To's port is 0 for ICMP).
	Protocol Protocol
	To       netip.AddrPort
	// Outcome classifies the result; Err holds the underlying error, if any.
	Outcome Outcome
	Err     error
	// Elapsed is how long the probe took.
	Elapsed time.Duration
}

// String renders the result on one line, e.g. "TCP felist-1-1-a -> 10.65.0.3:8080: Timeout (2s)".
func (r Result) String() string {
	to := r.To.String()
	if r.Protocol == ICMP {
		to = r.To.Addr().String()
	}
	s := fmt.Sprintf("%s %s -> %s: %s (%s)", r.Protocol, r.From, to, r.Outcome, r.Elapsed.Round(time.Millisecond))
	if r.Err != nil && r.Outcome != Allowed {
		s += ": " + r.Err.Error()
	}
	return s
}

// Allowed returns nil if the traffic got through and back, else an error describing the result.
func (r Result) Allowed() error {
	if r.Outcome == Allowed {
		return nil
	}
	return fmt.Errorf("expected allowed, got %s", r)
}

// Denied returns nil if the traffic was dropped (Timeout) or rejected (Unreachable). It fails
// for Allowed, and for Refused: that is what a destination without a listener answers, so it
// cannot show that policy stopped the traffic (a policy that rejects with TCP reset or ICMP
// port-unreachable needs Outcome == Refused checked explicitly). The kernel rate-limits ICMP
// errors per destination, so a rejected flow probed repeatedly may show as Timeout.
func (r Result) Denied() error {
	switch r.Outcome {
	case Timeout, Unreachable:
		return nil
	case Refused:
		return fmt.Errorf("expected denied, but the destination answered (nothing listening there; is the listener running?): %s", r)
	default:
		return fmt.Errorf("expected denied, got %s", r)
	}
}

// Probe sends one echo exchange of proto to dst from inside the namespace and classifies the
// result, within the harness's probe timeout. TCP and UDP need a Listener at dst; ICMP needs
// none (the kernel answers echo requests).
func (n *Namespace) Probe(proto Protocol, dst netip.AddrPort) Result {
	return n.ProbeTimeout(proto, dst, n.h.probeTimeout)
}

// ProbeTimeout is Probe with an explicit time limit.
func (n *Namespace) ProbeTimeout(proto Protocol, dst netip.AddrPort, timeout time.Duration) Result {
	r := Result{From: n.Name, Protocol: proto, To: dst}
	start := time.Now()
	deadline := start.Add(timeout)
	err := n.Do(func() error {
		switch proto {
		case TCP:
			r.Outcome, r.Err = probeTCP(dst, deadline)
		case UDP:
			r.Outcome, r.Err = probeUDP(dst, deadline)
		case ICMP:
			r.Outcome, r.Err = probeICMP(dst.Addr(), deadline)
		default:
			r.Outcome, r.Err = Failed, fmt.Errorf("unknown protocol %q", proto)
		}
		return nil
	})
	if err != nil {
		r.Outcome, r.Err = Failed, err
	}
	r.Elapsed = time.Since(start)
	return r
}

// ExpectAllowed probes and reports a test error unless the traffic got through; it returns the
// result for further checks.
func (n *Namespace) ExpectAllowed(t TB, proto Protocol, dst netip.AddrPort) Result {
	t.Helper()
	r := n.Probe(proto, dst)
	if err := r.Allowed(); err != nil {
		t.Errorf("%v", err)
	}
	return r
}

// ExpectDenied probes and reports a test error unless the traffic was dropped or rejected (see
// Result.Denied); it returns the result for further checks.
func (n *Namespace) ExpectDenied(t TB, proto Protocol, dst netip.AddrPort) Result {
	t.Helper()
	r := n.Probe(proto, dst)
	if err := r.Denied(); err != nil {
		t.Errorf("%v", err)
	}
	return r
}

// classify maps a socket error to an outcome.
func classify(err error) Outcome {
	var ne net.Error
	switch {
	case err == nil:
		return Allowed
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return Timeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EHOSTDOWN):
		return Unreachable
	default:
		return Failed
	}
}

// token returns a fresh payload so replies cannot be confused with other probes'.
func token() []byte {
	return fmt.Appendf(nil, "felis-probe-%016x", rand.Uint64())
}

func probeTCP(dst netip.AddrPort, deadline time.Time) (Outcome, error) {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.Dial("tcp", dst.String())
	if err != nil {
		return classify(err), err
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	return echo(conn)
}

func probeUDP(dst netip.AddrPort, deadline time.Time) (Outcome, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return classify(err), err
	}
	defer conn.Close()
	// Up to three tries, so one lost datagram does not read as a drop.
	const tries = 3
	var lastErr error
	for i := range tries {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		_ = conn.SetDeadline(time.Now().Add(left / time.Duration(tries-i)))
		outcome, err := echo(conn)
		if outcome != Timeout {
			return outcome, err
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = os.ErrDeadlineExceeded
	}
	return Timeout, lastErr
}

// echo writes a token and expects it back verbatim.
func echo(conn net.Conn) (Outcome, error) {
	want := token()
	if _, err := conn.Write(want); err != nil {
		return classify(err), err
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil {
		return classify(err), err
	}
	if !bytes.Equal(got, want) {
		return Failed, fmt.Errorf("reply %q, want %q", got, want)
	}
	return Allowed, nil
}

// Listener is a TCP or UDP echo server in a namespace, listening on every address of it (IPv4
// and IPv6); the harness closes it on Close.
type Listener struct {
	// Protocol and Port say what it listens on.
	Protocol Protocol
	Port     uint16

	closeOnce sync.Once
	closeFn   func() error
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	served    int
	sources   map[netip.Addr]int
}

// Listen starts an echo server for proto on port (0 picks a free port; see Listener.Port).
func (n *Namespace) Listen(proto Protocol, port uint16) (*Listener, error) {
	l := &Listener{Protocol: proto, conns: map[net.Conn]struct{}{}, sources: map[netip.Addr]int{}}
	addr := fmt.Sprintf(":%d", port)
	err := n.Do(func() error {
		switch proto {
		case TCP:
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			l.Port = uint16(ln.Addr().(*net.TCPAddr).Port)
			l.closeFn = ln.Close
			l.wg.Add(1)
			go l.serveTCP(ln)
		case UDP:
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			l.Port = uint16(pc.LocalAddr().(*net.UDPAddr).Port)
			l.closeFn = pc.Close
			l.wg.Add(1)
			go l.serveUDP(pc)
		default:
			return fmt.Errorf("cannot listen on %q (ICMP needs no listener)", proto)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s: listen %s %d: %w", n.Name, proto, port, err)
	}
	if err := n.h.addCleanup(l.Close); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

// Served returns how many TCP connections or UDP datagrams the listener has echoed.
func (l *Listener) Served() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.served
}

// Sources returns how many TCP connections or UDP datagrams the listener has echoed per
// source address (as the listener saw it, after any NAT on the way).
func (l *Listener) Sources() map[netip.Addr]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[netip.Addr]int, len(l.sources))
	for a, n := range l.sources {
		out[a] = n
	}
	return out
}

// count records one echoed connection or datagram from addr.
func (l *Listener) count(addr net.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.served++
	if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
		l.sources[ap.Addr().Unmap()]++
	}
}

// Close stops the server and closes its open connections; it is safe to call more than once.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		err = l.closeFn()
		l.mu.Lock()
		for c := range l.conns {
			_ = c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

func (l *Listener) serveTCP(ln net.Listener) {
	defer l.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		l.count(conn.RemoteAddr())
		l.mu.Lock()
		l.conns[conn] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.Copy(conn, conn)
			_ = conn.Close()
			l.mu.Lock()
			delete(l.conns, conn)
			l.mu.Unlock()
		}()
	}
}

func (l *Listener) serveUDP(pc net.PacketConn) {
	defer l.wg.Done()
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.count(from)
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

// EchoUDP sends one datagram of size random bytes from inside the namespace to the echo
// server at dst and returns nil once it comes back whole; it tries three times, a second each,
// so one lost datagram does not read as a drop. Sizes above the path MTU exercise
// fragmentation.
func (n *Namespace) EchoUDP(dst netip.AddrPort, size int) error {
	want := make([]byte, size)
	_, _ = crand.Read(want)
	return n.Do(func() error {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer conn.Close()
		got := make([]byte, 64*1024)
		err = errors.New("no echo")
		for range 3 {
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			if _, werr := conn.Write(want); werr != nil {
				return werr
			}
			n, rerr := conn.Read(got)
			if rerr == nil && bytes.Equal(got[:n], want) {
				return nil
			}
			err = rerr
			if rerr == nil {
				err = fmt.Errorf("echo of %d bytes, want the %d sent", n, size)
			}
		}
		return err
	})
}
