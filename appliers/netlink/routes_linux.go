package netlink

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

// routeSocket speaks rtnetlink for routes directly: route writes go out in batches of many
// messages per sendmsg (one ack each, read back in bulk), and route dumps are filtered by
// protocol in the kernel and parsed without per-route allocation beyond the result. At 65,536
// routes this is what keeps a resync within budget; everything else uses vishvananda/netlink.
type routeSocket struct {
	fd      int
	seq     uint32
	buf     []byte
	rbuf    []byte
	lastOff int // offset of the last message header in buf
}

// routeBatch is the number of route messages sent per sendmsg.
const routeBatch = 256

func newRouteSocket(k *Netlink) (*routeSocket, error) {
	var fd int
	err := k.inNamespace(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink: route socket: %w", err)
	}
	s := &routeSocket{fd: fd, rbuf: make([]byte, 1<<20)}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		s.close()
		return nil, fmt.Errorf("netlink: route socket bind: %w", err)
	}
	// Short acks (no copy of our request), kernel-side dump filtering, room for a batch of
	// acks; a generous timeout so a lost ack cannot hang the agent.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return s, nil
}

func (s *routeSocket) close() { unix.Close(s.fd) }

// nlmsg appends a netlink message header for typ/flags with the next sequence number and
// returns the offset of the header (the length is patched by end).
func (s *routeSocket) nlmsg(typ, flags uint16) (int, uint32) {
	s.seq++
	off := len(s.buf)
	s.buf = binary.NativeEndian.AppendUint32(s.buf, 0) // length, patched later
	s.buf = binary.NativeEndian.AppendUint16(s.buf, typ)
	s.buf = binary.NativeEndian.AppendUint16(s.buf, flags)
	s.buf = binary.NativeEndian.AppendUint32(s.buf, s.seq)
	s.buf = binary.NativeEndian.AppendUint32(s.buf, 0) // pid: the kernel fills it in
	return off, s.seq
}

func (s *routeSocket) end(off int) {
	binary.NativeEndian.PutUint32(s.buf[off:], uint32(len(s.buf)-off))
}

// rtmsg appends struct rtmsg.
func (s *routeSocket) rtmsg(family, dstLen, table, protocol, scope, typ uint8, flags uint32) {
	s.buf = append(s.buf, family, dstLen, 0, 0, table, protocol, scope, typ)
	s.buf = binary.NativeEndian.AppendUint32(s.buf, flags)
}

// attr appends one rtattr with its payload, padded to 4 bytes.
func (s *routeSocket) attr(typ uint16, payload []byte) {
	s.buf = binary.NativeEndian.AppendUint16(s.buf, uint16(4+len(payload)))
	s.buf = binary.NativeEndian.AppendUint16(s.buf, typ)
	s.buf = append(s.buf, payload...)
	for len(s.buf)%4 != 0 {
		s.buf = append(s.buf, 0)
	}
}

func (s *routeSocket) attrU32(typ uint16, v uint32) {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	s.attr(typ, b[:])
}

// appendRoute encodes one route op; ifindex is the route's device (0 for none).
func (s *routeSocket) appendRoute(kind diff.Kind, r render.Route, ifindex int) uint32 {
	// No NLM_F_ACK: the kernel reports failures anyway; flush asks for one ack on the batch's
	// last message, which (messages being handled in order) says the whole batch is done.
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_REQUEST|unix.NLM_F_CREATE)
	switch kind {
	case diff.Add:
		flags |= unix.NLM_F_EXCL
	case diff.Replace:
		flags |= unix.NLM_F_REPLACE
	default:
		typ, flags = unix.RTM_DELROUTE, unix.NLM_F_REQUEST
	}
	off, seq := s.nlmsg(typ, flags)
	s.lastOff = off
	fam := uint8(unix.AF_INET)
	if r.Dst.Addr().Is6() {
		fam = unix.AF_INET6
	}
	table := tableOf(r)
	t8 := uint8(unix.RT_TABLE_UNSPEC)
	if table < 256 {
		t8 = uint8(table)
	}
	var rtflags uint32
	if r.OnLink {
		rtflags = unix.RTNH_F_ONLINK
	}
	scope := uint8(r.Scope)
	if kind == diff.Delete {
		// Match by table, destination, type and, above all, protocol: never someone else's.
		scope = unix.RT_SCOPE_NOWHERE
	}
	s.rtmsg(fam, uint8(r.Dst.Bits()), t8, uint8(r.Protocol), scope, uint8(r.Type), rtflags)
	s.attr(unix.RTA_DST, r.Dst.Addr().AsSlice())
	s.attrU32(unix.RTA_TABLE, uint32(table))
	if kind != diff.Delete {
		if r.Gateway.IsValid() {
			s.attr(unix.RTA_GATEWAY, r.Gateway.AsSlice())
		}
		if ifindex != 0 {
			s.attrU32(unix.RTA_OIF, uint32(ifindex))
		}
	}
	if r.Metric != 0 {
		s.attrU32(unix.RTA_PRIORITY, uint32(r.Metric))
	}
	s.end(off)
	return seq
}

// flush sends the buffered messages (sequence numbers first..s.seq), the last one asking for
// an ack, and fills errs[i] for the op of each failed message, errIdx mapping seq-first to
// the op's index; it returns once the last message is acknowledged (or failed).
func (s *routeSocket) flush(first uint32, errIdx []int, errs []error) {
	if len(s.buf) == 0 {
		return
	}
	defer func() { s.buf = s.buf[:0] }()
	fail := func(err error) {
		for _, i := range errIdx {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	flags := binary.NativeEndian.Uint16(s.buf[s.lastOff+6:])
	binary.NativeEndian.PutUint16(s.buf[s.lastOff+6:], flags|unix.NLM_F_ACK)
	if err := unix.Sendto(s.fd, s.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(err)
		return
	}
	last := first + uint32(len(errIdx)) - 1
	for done := false; !done; {
		n, _, err := unix.Recvfrom(s.fd, s.rbuf, 0)
		if err != nil {
			fail(fmt.Errorf("reading acks: %w", err))
			return
		}
		for b := s.rbuf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := binary.NativeEndian.Uint32(b[8:])
			if typ == unix.NLMSG_ERROR && seq >= first && int(seq-first) < len(errIdx) && l >= unix.NLMSG_HDRLEN+4 {
				if code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
					errs[errIdx[seq-first]] = unix.Errno(-code)
				}
				done = done || seq == last
			}
			b = b[(l+3)&^3:]
		}
	}
}

// writeRoutes executes a run of route ops in batches; index resolves device names.
func (s *routeSocket) writeRoutes(ops []render.Op, errs []error, index func(string) (int, error)) {
	var errIdx []int
	var first uint32
	for i, op := range ops {
		r := op.Object.(render.Route)
		ifindex := 0
		if r.Dev != "" && op.Kind != diff.Delete {
			var err error
			if ifindex, err = index(r.Dev); err != nil {
				errs[i] = err
				continue
			}
		}
		if len(errIdx) == 0 {
			first = s.seq + 1
		}
		s.appendRoute(op.Kind, r, ifindex)
		errIdx = append(errIdx, i)
		if len(errIdx) == routeBatch {
			s.flush(first, errIdx, errs)
			errIdx = errIdx[:0]
		}
	}
	s.flush(first, errIdx, errs)
}

// dumpRoutes lists the routes of protocol in every table, both families, calling fn for each.
func (s *routeSocket) dumpRoutes(protocol int, names map[int]string, fn func(render.Route)) error {
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		s.buf = s.buf[:0]
		off, seq := s.nlmsg(unix.RTM_GETROUTE, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
		s.rtmsg(fam, 0, unix.RT_TABLE_UNSPEC, uint8(protocol), 0, 0, 0)
		s.end(off)
		if err := unix.Sendto(s.fd, s.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		s.buf = s.buf[:0]
		if err := s.readDump(seq, func(m []byte) { parseRoute(m, protocol, names, fn) }); err != nil {
			return err
		}
	}
	return nil
}

// readDump reads the multipart answer to request seq, calling fn with each message body.
func (s *routeSocket) readDump(seq uint32, fn func([]byte)) error {
	for {
		n, _, err := unix.Recvfrom(s.fd, s.rbuf, 0)
		if err != nil {
			return err
		}
		for b := s.rbuf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("malformed netlink message")
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			flags := binary.NativeEndian.Uint16(b[6:])
			if binary.NativeEndian.Uint32(b[8:]) == seq {
				switch typ {
				case unix.NLMSG_DONE:
					return nil
				case unix.NLMSG_ERROR:
					if code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
						return unix.Errno(-code)
					}
					return nil
				default:
					if flags&unix.NLM_F_DUMP_INTR != 0 {
						return fmt.Errorf("route dump interrupted by a concurrent change: %w", unix.EINTR)
					}
					fn(b[unix.NLMSG_HDRLEN:l])
				}
			}
			b = b[(l+3)&^3:]
		}
	}
}

// parseRoute decodes one RTM_NEWROUTE body into felis's form: the device of a gateway route
// that is not on-link, and of a blackhole, is the kernel's business (see render.Route); IPv6's
// default metric reads as 0.
func parseRoute(m []byte, protocol int, names map[int]string, fn func(render.Route)) {
	if len(m) < 12 {
		return
	}
	fam, dstLen, table, proto, scope, typ := m[0], m[1], int(m[4]), int(m[5]), m[6], m[7]
	flags := binary.NativeEndian.Uint32(m[8:])
	if proto != protocol || flags&unix.RTM_F_CLONED != 0 {
		return
	}
	r := render.Route{Type: render.RouteType(typ), Scope: render.Scope(scope), Protocol: proto, OnLink: flags&unix.RTNH_F_ONLINK != 0}
	var dst netip.Addr
	if fam == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	} else {
		dst = netip.IPv4Unspecified()
	}
	oif := 0
	for a := m[12:]; len(a) >= 4; {
		l := int(binary.NativeEndian.Uint16(a))
		t := binary.NativeEndian.Uint16(a[2:])
		if l < 4 || l > len(a) {
			break
		}
		v := a[4:l]
		switch t {
		case unix.RTA_DST:
			if ip, ok := netip.AddrFromSlice(v); ok {
				dst = ip
			}
		case unix.RTA_GATEWAY:
			if ip, ok := netip.AddrFromSlice(v); ok {
				r.Gateway = ip
			}
		case unix.RTA_OIF:
			if len(v) >= 4 {
				oif = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_PRIORITY:
			if len(v) >= 4 {
				r.Metric = int(binary.NativeEndian.Uint32(v))
			}
		case unix.RTA_TABLE:
			if len(v) >= 4 {
				table = int(binary.NativeEndian.Uint32(v))
			}
		}
		a = a[(l+3)&^3:]
	}
	r.Table = table
	r.Dst = netip.PrefixFrom(dst, int(dstLen))
	if fam == unix.AF_INET6 && r.Metric == 1024 {
		r.Metric = 0
	}
	if oif != 0 && r.Type != render.Blackhole && (!r.Gateway.IsValid() || r.OnLink) {
		r.Dev = names[oif]
		if r.Dev == "" {
			r.Dev = fmt.Sprintf("if%d", oif)
		}
	}
	fn(r)
}
