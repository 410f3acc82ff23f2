//go:build linux

package netns

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// probeICMP sends up to three echo requests to dst over a raw ICMP socket (we are root) and
// waits for the matching reply, or for a destination-unreachable quoting our request.
func probeICMP(dst netip.Addr, deadline time.Time) (Outcome, error) {
	dst = dst.Unmap()
	network, listen, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType, unreachType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply, ipv4.ICMPTypeDestinationUnreachable
	if dst.Is6() {
		network, listen, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType, unreachType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, ipv6.ICMPTypeDestinationUnreachable
	}
	conn, err := icmp.ListenPacket(network, listen)
	if err != nil {
		return Failed, fmt.Errorf("open raw ICMP socket: %w", err)
	}
	defer conn.Close()

	id := int(rand.Uint32() & 0xffff)
	payload := token()
	to := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	const tries = 3
	for seq := range tries {
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
		wb, err := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
		if err != nil {
			return Failed, err
		}
		if _, err := conn.WriteTo(wb, to); err != nil {
			return classify(err), err
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		_ = conn.SetReadDeadline(time.Now().Add(left / time.Duration(tries-seq)))
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				if classify(err) == Timeout {
					break // next try
				}
				return classify(err), err
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			switch {
			case m.Type == replyType:
				e, ok := m.Body.(*icmp.Echo)
				src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
				if ok && e.ID == id && src.Unmap() == dst && string(e.Data) == string(payload) {
					return Allowed, nil
				}
			case m.Type == unreachType:
				if u, ok := m.Body.(*icmp.DstUnreach); ok && quotesEcho(u.Data, dst.Is6(), id) {
					return Unreachable, fmt.Errorf("ICMP destination unreachable (code %d) from %s", m.Code, from)
				}
			}
		}
	}
	return Timeout, os.ErrDeadlineExceeded
}

// quotesEcho reports whether the quoted packet in an ICMP error is one of our echo requests.
func quotesEcho(quoted []byte, v6 bool, id int) bool {
	hdr := 0
	switch {
	case v6 && len(quoted) >= 40:
		hdr = 40 // no extension headers in our requests
	case !v6 && len(quoted) >= 20:
		hdr = int(quoted[0]&0x0f) * 4
	default:
		return false
	}
	if len(quoted) < hdr+8 {
		return false
	}
	return int(binary.BigEndian.Uint16(quoted[hdr+4:hdr+6])) == id
}
