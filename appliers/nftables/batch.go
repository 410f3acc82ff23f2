//go:build linux

package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	gnft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// go-nftables marshals well but sends every message with an ack request and reads the acks
// one by one: for a full table that is tens of thousands of acks and most of the time. So
// felis lets go-nftables marshal into a capture (its test dialer) and sends the batch itself
// without acks, followed by a GETGEN request: the kernel answers that only after the batch,
// so its reply means the batch is done, and any error before it names the message (by
// sequence number) the kernel rejected.

// recorder captures the messages go-nftables would send.
type recorder struct {
	msgs []netlink.Message
}

func (r *recorder) dial(req []netlink.Message) ([]netlink.Message, error) {
	if req == nil {
		return nil, io.EOF
	}
	r.msgs = append(r.msgs, req...)
	// One ack is enough for go-nftables' Flush to return.
	return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
}

// take returns the captured messages without go-nftables' batch begin and end, and resets.
func (r *recorder) take() []netlink.Message {
	var out []netlink.Message
	for _, m := range r.msgs {
		if t := m.Header.Type; t == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) || t == netlink.HeaderType(unix.NFNL_MSG_BATCH_END) {
			continue
		}
		out = append(out, m)
	}
	r.msgs = nil
	return out
}

func newRecorder() (*recorder, *gnft.Conn, error) {
	r := &recorder{}
	// Lasting: the test dialer is dialled once, not on every Flush (it seeds a PRNG each time).
	c, err := gnft.New(gnft.AsLasting(), gnft.WithTestDial(r.dial))
	return r, c, err
}

// batchTimeout bounds the wait for the kernel's answer to a batch.
const batchTimeout = 60 * time.Second

// batchError is a message of the batch the kernel rejected.
type batchError struct {
	op    int
	errno unix.Errno
}

// replyBuffer is the size of the buffer sendBatch reads the kernel's answers into.
const replyBuffer = 1 << 20

// sendBatch sends msgs (op[i] says which op each came from) as one nftables transaction and
// waits for its end, reading the answers into buf (replyBuffer bytes, reused across batches:
// allocating it per batch was a quarter of what adding a service allocated). It returns the
// ops the kernel rejected with their errnos.
func sendBatch(conn *netlink.Conn, msgs []netlink.Message, opOf []int, seq uint32, buf []byte) ([]batchError, error) {
	batchHdr := func(t uint16, s uint32) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request, Sequence: s},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	out := make([]netlink.Message, 0, len(msgs)+3)
	out = append(out, batchHdr(unix.NFNL_MSG_BATCH_BEGIN, seq))
	first := seq + 1
	for i, m := range msgs {
		// No acks, and no echo: go-nftables asks the kernel to echo every new rule back (for
		// its handle), which made the kernel serialise each rule again and us read them all.
		m.Header.Flags &^= netlink.Acknowledge | netlink.Echo
		m.Header.Sequence = first + uint32(i)
		m.Header.Length = 0
		out = append(out, m)
	}
	end := first + uint32(len(msgs))
	out = append(out, batchHdr(unix.NFNL_MSG_BATCH_END, end))
	if _, err := conn.SendMessages(out); err != nil {
		return nil, err
	}
	// The kernel ignores whatever follows a batch's end in the same sendmsg, so GETGEN goes
	// in its own; netlink handles both in order, so its answer comes after the batch's errors.
	genSeq := end + 1
	if _, err := conn.SendMessages([]netlink.Message{{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request | netlink.Acknowledge, Sequence: genSeq},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}}); err != nil {
		return nil, err
	}
	if err := conn.SetReadDeadline(time.Now().Add(batchTimeout)); err != nil {
		return nil, err
	}
	defer conn.SetReadDeadline(time.Time{})
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var errs []batchError
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		}); err != nil {
			return errs, err
		}
		if rerr != nil {
			return errs, fmt.Errorf("recvfrom: %w", rerr)
		}
		done := false
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return errs, errors.New("malformed netlink reply")
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			s := binary.NativeEndian.Uint32(b[8:12])
			payload := b[unix.NLMSG_HDRLEN:l]
			switch {
			case typ == unix.NLMSG_ERROR && len(payload) >= 4:
				code := int32(binary.NativeEndian.Uint32(payload[0:4]))
				if s == genSeq {
					done = true // the GETGEN ack
					break
				}
				if code != 0 {
					op := -1
					if s >= first && s < end {
						op = opOf[s-first]
					}
					errs = append(errs, batchError{op: op, errno: unix.Errno(-code)})
				}
			case s == genSeq && typ != unix.NLMSG_DONE:
				// The NEWGEN reply; its ack follows.
			}
			b = b[min(len(b), (l+3)&^3):]
		}
		if done {
			return errs, nil
		}
	}
}
