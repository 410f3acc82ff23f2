//go:build linux

package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/felis-dev/felis/appliers/nftables/render"
	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// serviceStmt compiles the statements of the services vocabulary; ok is false for any other.
func (c *compiler) serviceStmt(s render.Stmt) (exprs []expr.Any, ok bool, err error) {
	switch s := s.(type) {
	case render.FrontendVmap:
		off, n := addrOffset(s.Family, true)
		l := c.lookup(reg32_0, s.Map, false)
		l.IsDestRegSet, l.DestRegister = true, 0
		return []expr.Any{
			&expr.Payload{DestRegister: reg32_0, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_0 + n/4},
			&expr.Payload{DestRegister: reg32_0 + n/4 + 1, Base: expr.PayloadBaseTransportHeader, Offset: portOffset(true), Len: 2},
			l,
		}, true, nil
	case render.AddrPairSet:
		// Source then destination address in consecutive 32-bit registers, as nft lays out a
		// concatenation.
		src, n := addrOffset(s.Family, false)
		dst, _ := addrOffset(s.Family, true)
		return []expr.Any{
			&expr.Payload{DestRegister: reg32_0, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: n},
			&expr.Payload{DestRegister: reg32_0 + n/4, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: n},
			c.lookup(reg32_0, s.Set, false),
		}, true, nil
	case render.CTStatus:
		if s.Status != "dnat" {
			return nil, true, fmt.Errorf("ct status %q: %w", s.Status, ErrInvalid)
		}
		return []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(ctStatusDstNAT), Xor: ne32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
		}, true, nil
	case render.Reject:
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}, true, nil
	case render.RandomOneIn:
		if s.Mod == 0 {
			return nil, true, fmt.Errorf("numgen modulus 0: %w", ErrInvalid)
		}
		return []expr.Any{
			&expr.Numgen{Register: reg1, Modulus: s.Mod, Type: unix.NFT_NG_RANDOM},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(0)},
		}, true, nil
	case render.DNAT:
		fam := uint32(unix.NFPROTO_IPV4)
		if s.Addr.Is6() {
			fam = unix.NFPROTO_IPV6
		}
		return []expr.Any{
			&expr.Immediate{Register: reg1, Data: s.Addr.AsSlice()},
			&expr.Immediate{Register: 2, Data: be16(s.Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: reg1, RegProtoMin: 2, Specified: true},
		}, true, nil
	case render.SetUpdate:
		off, n := addrOffset(s.Family, false)
		d := &expr.Dynset{SrcRegKey: reg1, SetName: s.Set, Operation: unix.NFT_DYNSET_OP_UPDATE}
		if known := c.known(s.Set); known != nil {
			d.SetID = known.ID
		}
		return []expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}, d}, true, nil
	}
	return nil, false, nil
}

// ctStatusDstNAT is IPS_DST_NAT, the conntrack status bit of a destination-NATed connection.
const ctStatusDstNAT = 1 << 5

// timeoutSet is the kernel definition of a dynamic affinity set.
func timeoutSet(t *gnft.Table, s *render.Set) *gnft.Set {
	addr := gnft.TypeIPAddr
	if s.Family == 6 {
		addr = gnft.TypeIP6Addr
	}
	return &gnft.Set{Table: t, Name: s.Name, KeyType: addr, Dynamic: true, HasTimeout: true, Timeout: time.Duration(s.Timeout) * time.Second}
}

// frontendKey encodes a frontend map key: address . protocol . port, each padded to 4 bytes.
func frontendKey(a netip.Addr, proto uint8, port uint16) []byte {
	return elementKey(render.Element{Prefix: netip.PrefixFrom(a, a.BitLen()), Proto: proto, Port: port}, true)
}

// mapFamily is the key family of the map an op acts on: its definition's, else its elements'.
func mapFamily(op Op) int {
	if op.Map != nil {
		return op.Map.Family
	}
	for _, e := range op.MapElements {
		if e.Addr.IsValid() {
			if e.Addr.Is4() {
				return 4
			}
			return 6
		}
	}
	return 0
}

// observeFrontendElement decodes a frontend map element's key.
func observeFrontendElement(key []byte, chain string) render.MapElement {
	n := len(key) - 8
	if n != 4 && n != 16 {
		return render.MapElement{Interface: fmt.Sprintf("%x", key), Chain: chain} // never desired: replaced
	}
	a, _ := netip.AddrFromSlice(key[:n])
	return render.MapElement{Addr: a, Proto: key[n], Port: binary.BigEndian.Uint16(key[n+4:]), Chain: chain}
}

// observeTimeoutSet reads a dynamic set's definition; its elements belong to the packets.
func observeTimeoutSet(s *gnft.Set) render.Set {
	out := render.Set{Name: s.Name, Family: 4, Timeout: int(s.Timeout / time.Second)}
	if s.KeyType.Bytes == 16 {
		out.Family = 6
	}
	if !s.HasTimeout || !s.Dynamic || out.Timeout == 0 || s.KeyType.Bytes != 4 && s.KeyType.Bytes != 16 {
		out.Timeout, out.Drift = 0, true // not a set felis writes: the definitions differ, so it is re-created
	}
	return out
}

// frontendMapFamily is the family of a frontend map by its name, or 0 for any other map.
func frontendMapFamily(name string) int {
	for _, fam := range []int{4, 6} {
		if name == render.ServiceMap(fam) {
			return fam
		}
	}
	return 0
}
