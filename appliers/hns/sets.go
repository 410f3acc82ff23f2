package hns

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/felis-dev/felis/snapshot"
)

// u128 is an address (or port) as a 128-bit number, so prefixes become intervals.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func (a u128) add(b u128) u128 {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, _ := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}
}

func (a u128) sub1() u128 {
	lo, b := bits.Sub64(a.lo, 1, 0)
	return u128{a.hi - b, lo}
}

func (a u128) trailingZeros() int {
	if a.lo != 0 {
		return bits.TrailingZeros64(a.lo)
	}
	if a.hi != 0 {
		return 64 + bits.TrailingZeros64(a.hi)
	}
	return 128
}

// pow2m1 is 2^k - 1.
func pow2m1(k int) u128 {
	switch {
	case k <= 0:
		return u128{}
	case k < 64:
		return u128{0, 1<<uint(k) - 1}
	case k == 64:
		return u128{0, ^uint64(0)}
	case k < 128:
		return u128{1<<uint(k-64) - 1, ^uint64(0)}
	}
	return u128{^uint64(0), ^uint64(0)}
}

var one = u128{0, 1}

// span is an inclusive interval.
type span struct{ lo, hi u128 }

// spans is a sorted list of disjoint, non-adjacent intervals.
type spans []span

func (s spans) empty() bool { return len(s) == 0 }

func (s spans) equal(t spans) bool {
	if len(s) != len(t) {
		return false
	}
	for i := range s {
		if s[i] != t[i] {
			return false
		}
	}
	return true
}

func (s spans) contains(v u128) bool {
	for _, x := range s {
		if x.lo.cmp(v) <= 0 && v.cmp(x.hi) <= 0 {
			return true
		}
	}
	return false
}

// normalize sorts and merges arbitrary intervals.
func normalize(in []span) spans {
	if len(in) == 0 {
		return nil
	}
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b span) int { return a.lo.cmp(b.lo) })
	return mergeSorted(s)
}

// mergeSorted merges overlapping and adjacent intervals of a list sorted by lo, in place.
func mergeSorted(s []span) spans {
	out := s[:1]
	for _, x := range s[1:] {
		last := &out[len(out)-1]
		// adjacent or overlapping: x.lo <= last.hi+1 (guarding the overflow at the top)
		if last.hi == maxU128 || x.lo.cmp(last.hi.add(one)) <= 0 {
			if x.hi.cmp(last.hi) > 0 {
				last.hi = x.hi
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

var maxU128 = u128{^uint64(0), ^uint64(0)}

func (s spans) union(t spans) spans {
	if len(t) == 0 {
		return s
	}
	if len(s) == 0 {
		return t
	}
	m := make([]span, 0, len(s)+len(t))
	i, j := 0, 0
	for i < len(s) || j < len(t) {
		if j == len(t) || i < len(s) && s[i].lo.cmp(t[j].lo) <= 0 {
			m = append(m, s[i])
			i++
		} else {
			m = append(m, t[j])
			j++
		}
	}
	return mergeSorted(m)
}

func (s spans) intersect(t spans) spans {
	var out spans
	i, j := 0, 0
	for i < len(s) && j < len(t) {
		lo, hi := s[i].lo, s[i].hi
		if t[j].lo.cmp(lo) > 0 {
			lo = t[j].lo
		}
		if t[j].hi.cmp(hi) < 0 {
			hi = t[j].hi
		}
		if lo.cmp(hi) <= 0 {
			out = append(out, span{lo, hi})
		}
		if s[i].hi.cmp(t[j].hi) < 0 {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtract returns s minus t.
func (s spans) subtract(t spans) spans {
	if len(t) == 0 || len(s) == 0 {
		return s
	}
	var out spans
	j := 0
	for _, x := range s {
		lo := x.lo
		done := false
		for j < len(t) && t[j].hi.cmp(lo) < 0 {
			j++
		}
		for k := j; k < len(t) && t[k].lo.cmp(x.hi) <= 0; k++ {
			if t[k].lo.cmp(lo) > 0 {
				out = append(out, span{lo, t[k].lo.sub1()})
			}
			if t[k].hi.cmp(x.hi) >= 0 {
				done = true
				break
			}
			lo = t[k].hi.add(one)
		}
		if !done {
			out = append(out, span{lo, x.hi})
		}
	}
	return out
}

// subsetOf reports s ⊆ t: every interval of s lies inside one of t (t is merged, so an
// interval of s cannot straddle two of t's).
func (s spans) subsetOf(t spans) bool {
	j := 0
	for _, x := range s {
		for j < len(t) && t[j].hi.cmp(x.lo) < 0 {
			j++
		}
		if j == len(t) || t[j].lo.cmp(x.lo) > 0 || t[j].hi.cmp(x.hi) < 0 {
			return false
		}
	}
	return true
}

var (
	fullV4    = spans{{u128{}, u128{0, 1<<32 - 1}}}
	fullV6    = spans{{u128{}, u128{^uint64(0), ^uint64(0)}}}
	fullPorts = spans{{u128{}, u128{0, 65535}}}
)

// addrSet is a set of addresses of both families.
type addrSet struct{ v4, v6 spans }

func fullAddrs() addrSet { return addrSet{fullV4, fullV6} }

func (a addrSet) empty() bool { return a.v4.empty() && a.v6.empty() }

func (a addrSet) equal(b addrSet) bool { return a.v4.equal(b.v4) && a.v6.equal(b.v6) }

func (a addrSet) intersect(b addrSet) addrSet {
	return addrSet{a.v4.intersect(b.v4), a.v6.intersect(b.v6)}
}

func (a addrSet) union(b addrSet) addrSet { return addrSet{a.v4.union(b.v4), a.v6.union(b.v6)} }

func (a addrSet) subtract(b addrSet) addrSet {
	return addrSet{a.v4.subtract(b.v4), a.v6.subtract(b.v6)}
}

func (a addrSet) subsetOf(b addrSet) bool { return a.v4.subsetOf(b.v4) && a.v6.subsetOf(b.v6) }

func (a addrSet) fam(v4 bool) spans {
	if v4 {
		return a.v4
	}
	return a.v6
}

func (a addrSet) contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	if addr.Is4() {
		return a.v4.contains(addrU(addr))
	}
	return a.v6.contains(addrU(addr))
}

func addrU(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])}
	}
	b := a.As16()
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return u128{hi, lo}
}

func uAddr(u u128, v4 bool) netip.Addr {
	if v4 {
		return netip.AddrFrom4([4]byte{byte(u.lo >> 24), byte(u.lo >> 16), byte(u.lo >> 8), byte(u.lo)})
	}
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(u.hi >> (56 - 8*i))
		b[8+i] = byte(u.lo >> (56 - 8*i))
	}
	return netip.AddrFrom16(b)
}

// prefixSpan is the interval a prefix covers.
func prefixSpan(p netip.Prefix) (span, bool) {
	p = p.Masked()
	a := p.Addr()
	bitsN := 128
	if a.Is4() {
		bitsN = 32
	}
	lo := addrU(a)
	return span{lo, lo.add(pow2m1(bitsN - p.Bits()))}, a.Is4()
}

// addrsOf is the set of addresses the prefixes cover.
func addrsOf(ps []netip.Prefix) addrSet {
	var v4, v6 []span
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		s, is4 := prefixSpan(p)
		if is4 {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	return addrSet{normalize(v4), normalize(v6)}
}

// prefixes returns the fewest prefixes covering exactly the family's part of the set.
func (a addrSet) prefixes(v4 bool) []netip.Prefix {
	width := 128
	if v4 {
		width = 32
	}
	var out []netip.Prefix
	for _, s := range a.fam(v4) {
		lo := s.lo
		for {
			k := min(lo.trailingZeros(), width)
			for k > 0 && lo.add(pow2m1(k)).cmp(s.hi) > 0 {
				k--
			}
			out = append(out, netip.PrefixFrom(uAddr(lo, v4), width-k))
			end := lo.add(pow2m1(k))
			if end.cmp(s.hi) >= 0 {
				break
			}
			lo = end.add(one)
		}
	}
	return out
}

// portsOf is the set of ports in the ranges.
func portsOf(rs []snapshot.PortRange) spans {
	var in []span
	for _, r := range rs {
		if r.Min > r.Max {
			continue
		}
		in = append(in, span{u128{0, uint64(r.Min)}, u128{0, uint64(r.Max)}})
	}
	return normalize(in)
}

// portRanges turns a port set back into ranges.
func portRanges(s spans) []snapshot.PortRange {
	out := make([]snapshot.PortRange, 0, len(s))
	for _, x := range s {
		out = append(out, snapshot.PortRange{Min: uint16(x.lo.lo), Max: uint16(x.hi.lo)})
	}
	return out
}
