//go:build linux

package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/felis-dev/felis/appliers/nftables/render"
	gnft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Registers: NFT_REG_1 (16 bytes) for single values; the 32-bit registers from NFT_REG32_00
// for concatenations, as nft allocates them.
const (
	reg1    = 1
	reg32_0 = 8
)

// compiler turns render statements into kernel expressions on one connection; anonymous sets
// (literal lists) are queued on the connection right before the rule that uses them.
type compiler struct {
	conn  *gnft.Conn
	table *gnft.Table          // the table of the op being compiled
	sets  map[string]*gnft.Set // sets and maps created in this batch, by table and name (for their IDs)
}

// known returns the set or map name of the current table if this batch created it.
func (c *compiler) known(name string) *gnft.Set { return c.sets[c.table.Name+"\x00"+name] }

// remember records a set or map this batch creates in the current table.
func (c *compiler) remember(s *gnft.Set) { c.sets[c.table.Name+"\x00"+s.Name] = s }

func (c *compiler) rule(chain *gnft.Chain, r render.Rule, udata []byte) (*gnft.Rule, error) {
	var exprs []expr.Any
	for _, s := range r.Stmts {
		e, err := c.stmt(s)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		exprs = append(exprs, e...)
	}
	return &gnft.Rule{Table: c.table, Chain: chain, Exprs: exprs, UserData: udata}, nil
}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

func addrOffset(family int, dst bool) (off, n uint32) {
	if family == 6 {
		if dst {
			return 24, 16
		}
		return 8, 16
	}
	if dst {
		return 16, 4
	}
	return 12, 4
}

func portOffset(dst bool) uint32 {
	if dst {
		return 2
	}
	return 0
}

func (c *compiler) lookup(reg uint32, name string, neg bool) *expr.Lookup {
	l := &expr.Lookup{SourceRegister: reg, SetName: name, Invert: neg}
	if s := c.known(name); s != nil {
		l.SetID = s.ID
	}
	return l
}

func ifname(name string, prefix bool) []byte {
	if prefix {
		return []byte(name)
	}
	b := make([]byte, 16)
	copy(b, name)
	return b
}

func (c *compiler) stmt(s render.Stmt) ([]expr.Any, error) {
	switch s := s.(type) {
	case render.NfProto:
		p := byte(unix.NFPROTO_IPV4)
		if s.Family == 6 {
			p = unix.NFPROTO_IPV6
		}
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}}}, nil
	case render.L4Proto:
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1}, &expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: []byte{s.Proto}}}, nil
	case render.AddrSet:
		off, n := addrOffset(s.Family, s.Dst)
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			c.lookup(reg1, s.Set, s.Neg),
		}, nil
	case render.AddrList:
		off, n := addrOffset(s.Family, s.Dst)
		load := &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
		if len(s.Prefixes) == 1 && s.Prefixes[0].IsSingleIP() {
			// A host address needs no mask: one expression less for the kernel to parse.
			return []expr.Any{load, &expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: s.Prefixes[0].Addr().AsSlice()}}, nil
		}
		if len(s.Prefixes) == 1 {
			p := s.Prefixes[0]
			mask := make([]byte, n)
			for i := range p.Bits() {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			return []expr.Any{load,
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: n, Mask: mask, Xor: make([]byte, n)},
				&expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: p.Masked().Addr().AsSlice()},
			}, nil
		}
		keyType := gnft.TypeIPAddr
		if s.Family == 6 {
			keyType = gnft.TypeIP6Addr
		}
		var els []gnft.SetElement
		for _, p := range s.Prefixes {
			els = append(els, intervalElements(p)...)
		}
		set, err := c.anonSet(keyType, true, els)
		if err != nil {
			return nil, err
		}
		return []expr.Any{load, &expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID, Invert: s.Neg}}, nil
	case render.PortList:
		load := &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: portOffset(s.Dst), Len: 2}
		if len(s.Ranges) == 1 {
			r := s.Ranges[0]
			if r.Min == r.Max {
				return []expr.Any{load, &expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: be16(r.Min)}}, nil
			}
			return []expr.Any{load, &expr.Range{Op: cmpOp(s.Neg), Register: reg1, FromData: be16(r.Min), ToData: be16(r.Max)}}, nil
		}
		var els []gnft.SetElement
		for _, r := range s.Ranges {
			els = append(els, gnft.SetElement{Key: be16(r.Min)})
			if r.Max != 0xffff {
				els = append(els, gnft.SetElement{Key: be16(r.Max + 1), IntervalEnd: true})
			}
		}
		set, err := c.anonSet(gnft.TypeInetService, true, els)
		if err != nil {
			return nil, err
		}
		return []expr.Any{load, &expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID, Invert: s.Neg}}, nil
	case render.TupleSet:
		off, n := addrOffset(s.Family, s.Dst)
		return []expr.Any{
			&expr.Payload{DestRegister: reg32_0, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_0 + n/4},
			&expr.Payload{DestRegister: reg32_0 + n/4 + 1, Base: expr.PayloadBaseTransportHeader, Offset: portOffset(s.Dst), Len: 2},
			c.lookup(reg32_0, s.Set, s.Neg),
		}, nil
	case render.ICMPType:
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: []byte{s.Type}},
		}, nil
	case render.ICMPCode:
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 1, Len: 1},
			&expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: []byte{s.Code}},
		}, nil
	case render.ICMPv6Types:
		var els []gnft.SetElement
		for _, t := range s.Types {
			els = append(els, gnft.SetElement{Key: []byte{t}})
		}
		set, err := c.anonSet(gnft.TypeICMP6Type, false, els)
		if err != nil {
			return nil, err
		}
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		}, nil
	case render.CTState:
		var bits uint32
		for _, st := range s.States {
			b, ok := map[string]uint32{
				"invalid": expr.CtStateBitINVALID, "established": expr.CtStateBitESTABLISHED,
				"related": expr.CtStateBitRELATED, "new": expr.CtStateBitNEW, "untracked": expr.CtStateBitUNTRACKED,
			}[st]
			if !ok {
				return nil, fmt.Errorf("ct state %q: %w", st, ErrInvalid)
			}
			bits |= b
		}
		return []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(bits), Xor: ne32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: ne32(0)},
		}, nil
	case render.IfName:
		key := expr.MetaKeyIIFNAME
		if s.Out {
			key = expr.MetaKeyOIFNAME
		}
		return []expr.Any{&expr.Meta{Key: key, Register: reg1}, &expr.Cmp{Op: cmpOp(s.Neg), Register: reg1, Data: ifname(s.Name, s.Prefix)}}, nil
	case render.IfVmap:
		key := expr.MetaKeyIIFNAME
		if s.Out {
			key = expr.MetaKeyOIFNAME
		}
		l := c.lookup(reg1, s.Map, false)
		l.IsDestRegSet, l.DestRegister = true, 0
		return []expr.Any{&expr.Meta{Key: key, Register: reg1}, l}, nil
	case render.MarkTest:
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(s.Bits), Xor: ne32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(s.Bits)},
		}, nil
	case render.MarkSet:
		xor := s.Bits
		if s.Clear {
			xor = 0
		}
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: ne32(^s.Bits), Xor: ne32(xor)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
		}, nil
	case render.LocalAddr:
		return []expr.Any{
			&expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagSADDR: s.Src, FlagDADDR: !s.Src},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(unix.RTN_LOCAL)},
		}, nil
	case render.Log:
		return []expr.Any{&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(s.Prefix)}}, nil
	case render.Notrack:
		return []expr.Any{&expr.Notrack{}}, nil
	case render.Masquerade:
		return []expr.Any{&expr.Masq{}}, nil
	case render.Verdict:
		kinds := map[string]expr.VerdictKind{"accept": expr.VerdictAccept, "drop": expr.VerdictDrop,
			"return": expr.VerdictReturn, "jump": expr.VerdictJump, "goto": expr.VerdictGoto}
		k, ok := kinds[s.Kind]
		if !ok {
			return nil, fmt.Errorf("verdict %q: %w", s.Kind, ErrInvalid)
		}
		return []expr.Any{&expr.Verdict{Kind: k, Chain: s.Chain}}, nil
	}
	if e, ok, err := c.serviceStmt(s); ok {
		return e, err
	}
	return nil, fmt.Errorf("statement %T: %w", s, ErrInvalid)
}

func (c *compiler) anonSet(key gnft.SetDatatype, interval bool, els []gnft.SetElement) (*gnft.Set, error) {
	set := &gnft.Set{Table: c.table, Anonymous: true, Constant: true, Interval: interval, KeyType: key}
	if err := c.conn.AddSet(set, els); err != nil {
		return nil, err
	}
	return set, nil
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// intervalElements encodes a prefix as an interval: its first address, and the address after
// its last one flagged as the interval's end (omitted when the prefix reaches the top).
func intervalElements(p netip.Prefix) []gnft.SetElement {
	p = p.Masked()
	els := []gnft.SetElement{{Key: p.Addr().AsSlice()}}
	if next, ok := prefixEnd(p); ok {
		els = append(els, gnft.SetElement{Key: next.AsSlice(), IntervalEnd: true})
	}
	return els
}

// prefixEnd returns the address after p's last one; false when p reaches the top of the space.
func prefixEnd(p netip.Prefix) (netip.Addr, bool) {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	next := last.Next()
	return next, next.IsValid()
}

// elementKey encodes a set element's key: the address, or address . protocol . port with
// each field padded to 4 bytes.
func elementKey(e render.Element, concat bool) []byte {
	k := e.Prefix.Addr().AsSlice()
	if concat {
		k = append(k, e.Proto, 0, 0, 0)
		k = binary.BigEndian.AppendUint16(k, e.Port)
		k = append(k, 0, 0)
	}
	return k
}

func setElements(set *render.Set, es []render.Element) []gnft.SetElement {
	var out []gnft.SetElement
	for _, e := range es {
		if set.Pair {
			out = append(out, gnft.SetElement{Key: append(e.Prefix.Addr().AsSlice(), e.Peer.AsSlice()...)})
			continue
		}
		if set.Concat {
			out = append(out, gnft.SetElement{Key: elementKey(e, true)})
		} else {
			out = append(out, intervalElements(e.Prefix)...)
		}
	}
	return out
}

func nftMapElements(es []render.MapElement) []gnft.SetElement {
	out := make([]gnft.SetElement, len(es))
	for i, e := range es {
		key := ifname(e.Interface, false)
		if e.Addr.IsValid() {
			key = frontendKey(e.Addr, e.Proto, e.Port)
		}
		out[i] = gnft.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.Chain}}
	}
	return out
}

// nftSet returns the kernel definition of a felis set.
func nftSet(t *gnft.Table, s *render.Set) *gnft.Set {
	addr := gnft.TypeIPAddr
	if s.Family == 6 {
		addr = gnft.TypeIP6Addr
	}
	if s.Timeout > 0 {
		return timeoutSet(t, s)
	}
	if s.Concat {
		return &gnft.Set{Table: t, Name: s.Name, Concatenation: true, KeyType: gnft.MustConcatSetType(addr, gnft.TypeInetProto, gnft.TypeInetService)}
	}
	if s.Pair {
		return &gnft.Set{Table: t, Name: s.Name, Concatenation: true, KeyType: gnft.MustConcatSetType(addr, addr)}
	}
	return &gnft.Set{Table: t, Name: s.Name, Interval: true, KeyType: addr}
}

func nftMap(t *gnft.Table, name string, family int) *gnft.Set {
	if family == 4 || family == 6 {
		addr := gnft.TypeIPAddr
		if family == 6 {
			addr = gnft.TypeIP6Addr
		}
		return &gnft.Set{Table: t, Name: name, IsMap: true, Concatenation: true,
			KeyType: gnft.MustConcatSetType(addr, gnft.TypeInetProto, gnft.TypeInetService), DataType: gnft.TypeVerdict}
	}
	// Interface names are strings, host byte order to nft: without saying so, `nft list`
	// prints the keys as "".
	return &gnft.Set{Table: t, Name: name, IsMap: true, KeyType: gnft.TypeIFName, DataType: gnft.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

var hooks = map[string]gnft.ChainHook{
	"prerouting": *gnft.ChainHookPrerouting, "input": *gnft.ChainHookInput, "forward": *gnft.ChainHookForward,
	"output": *gnft.ChainHookOutput, "postrouting": *gnft.ChainHookPostrouting,
}

func nftChain(t *gnft.Table, c *render.Chain) *gnft.Chain {
	ch := &gnft.Chain{Table: t, Name: c.Name}
	if b := c.Base; b != nil {
		hook := hooks[b.Hook]
		prio := gnft.ChainPriority(b.Priority)
		policy := gnft.ChainPolicyAccept
		ch.Hooknum, ch.Priority, ch.Type, ch.Policy = &hook, &prio, gnft.ChainType(b.Type), &policy
	}
	return ch
}

// ruleUserData marks rule i of n in a chain with the chain's level and hash, as an nft
// comment ("felis L HASH I/N") so `nft list` shows it too.
func ruleUserData(c *render.Chain, i int) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, fmt.Sprintf("felis %d %s %d/%d", c.Level, c.Hash, i, len(c.Rules)))
}

// chunks splits elements so no single netlink message grows past the kernel's limits.
