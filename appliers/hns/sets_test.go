package hns

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestPrefixesMinimal(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  addrSet
		v4   bool
		want []netip.Prefix
	}{
		{"whole v4", fullAddrs(), true, pfx("0.0.0.0/0")},
		{"whole v6", fullAddrs(), false, pfx("::/0")},
		{"adjacent halves merge", addrsOf(pfx("10.0.0.0/25", "10.0.0.128/25")), true, pfx("10.0.0.0/24")},
		{"complement of one address", fullAddrs().subtract(addrsOf(pfx("0.0.0.1/32"))), true,
			pfx("0.0.0.0/32", "0.0.0.2/31", "0.0.0.4/30", "0.0.0.8/29", "0.0.0.16/28", "0.0.0.32/27", "0.0.0.64/26",
				"0.0.0.128/25", "0.0.1.0/24", "0.0.2.0/23", "0.0.4.0/22", "0.0.8.0/21", "0.0.16.0/20", "0.0.32.0/19",
				"0.0.64.0/18", "0.0.128.0/17", "0.1.0.0/16", "0.2.0.0/15", "0.4.0.0/14", "0.8.0.0/13", "0.16.0.0/12",
				"0.32.0.0/11", "0.64.0.0/10", "0.128.0.0/9", "1.0.0.0/8", "2.0.0.0/7", "4.0.0.0/6", "8.0.0.0/5",
				"16.0.0.0/4", "32.0.0.0/3", "64.0.0.0/2", "128.0.0.0/1")},
		{"top of the space", addrsOf(pfx("255.255.255.254/31")).subtract(addrsOf(pfx("255.255.255.254/32"))), true, pfx("255.255.255.255/32")},
		{"v6 hole", addrsOf(pfx("fd00::/126")).subtract(addrsOf(pfx("fd00::1/128"))), false, pfx("fd00::/128", "fd00::2/127")},
		{"unaligned host bits masked", addrsOf(pfx("10.1.2.3/16")), true, pfx("10.1.0.0/16")},
		{"4in6 unmapped", addrsOf(pfx("::ffff:10.0.0.0/104")), true, pfx("10.0.0.0/8")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, tc.set.prefixes(tc.v4), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
				t.Errorf("prefixes (-want +got):\n%s", d)
			}
		})
	}
}

// TestSetAlgebra checks union, intersection and difference against plain membership at every
// boundary address, and that prefixes() round-trips.
func TestSetAlgebra(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randPrefixes := func() []netip.Prefix {
		var out []netip.Prefix
		for range r.IntN(4) {
			if r.IntN(2) == 0 {
				a := netip.AddrFrom4([4]byte{10, byte(r.IntN(3)), byte(r.IntN(256)), byte(r.IntN(256))})
				out = append(out, netip.PrefixFrom(a, 8+r.IntN(25)).Masked())
			} else {
				a := netip.AddrFrom16([16]byte{0xfd, 14: byte(r.IntN(4)), 15: byte(r.IntN(256))})
				out = append(out, netip.PrefixFrom(a, 100+r.IntN(29)).Masked())
			}
		}
		return out
	}
	in := func(ps []netip.Prefix, a netip.Addr) bool {
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for i := range 500 {
		pa, pb := randPrefixes(), randPrefixes()
		a, b := addrsOf(pa), addrsOf(pb)
		var probes []netip.Addr
		for _, p := range append(append([]netip.Prefix(nil), pa...), pb...) {
			s, is4 := prefixSpan(p)
			for _, x := range []netip.Addr{uAddr(s.lo, is4), uAddr(s.hi, is4)} {
				probes = append(probes, x, x.Prev(), x.Next())
			}
		}
		for _, x := range probes {
			if !x.IsValid() {
				continue
			}
			ia, ib := in(pa, x), in(pb, x)
			for _, c := range []struct {
				op   string
				set  addrSet
				want bool
			}{
				{"a", a, ia}, {"union", a.union(b), ia || ib}, {"intersect", a.intersect(b), ia && ib},
				{"subtract", a.subtract(b), ia && !ib}, {"complement", fullAddrs().subtract(a), !ia},
			} {
				if got := c.set.contains(x); got != c.want {
					t.Fatalf("case %d: %v %s %v contains %s = %v, want %v", i, pa, c.op, pb, x, got, c.want)
				}
			}
		}
		u := a.union(b)
		if back := addrsOf(u.allPrefixes()); !back.equal(u) {
			t.Fatalf("case %d: prefixes of %v ∪ %v do not round-trip: %v", i, pa, pb, u.allPrefixes())
		}
		if a.subtract(b).union(a.intersect(b)).equal(a) != true {
			t.Fatalf("case %d: (a-b) ∪ (a∩b) != a", i)
		}
	}
}

func TestPortSets(t *testing.T) {
	got := portRanges(fullPorts.subtract(portsOf([]snapshot.PortRange{{Min: 80, Max: 80}, {Min: 443, Max: 450}, {Min: 65535, Max: 65535}})))
	want := []snapshot.PortRange{{Min: 0, Max: 79}, {Min: 81, Max: 442}, {Min: 451, Max: 65534}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("complement (-want +got):\n%s", d)
	}
	got = portRanges(portsOf([]snapshot.PortRange{{Min: 10, Max: 20}, {Min: 21, Max: 30}, {Min: 5, Max: 12}, {Min: 40, Max: 39}}))
	if d := cmp.Diff([]snapshot.PortRange{{Min: 5, Max: 30}}, got); d != "" {
		t.Errorf("merge (-want +got):\n%s", d)
	}
}
