package derive

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

// TestSortMembersEqualsSnapshotOrder: the packed-integer sort gives exactly
// snapshot.SortMembers' order and deduplication, for IPv4, IPv6, IPv4-mapped IPv6 and
// invalid prefixes, with and without ports.
func TestSortMembersEqualsSnapshotOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randMember := func() snapshot.Member {
		var p netip.Prefix
		switch rng.IntN(5) {
		case 0:
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(rng.IntN(4))}), 126+rng.IntN(3))
		case 1:
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 15: byte(rng.IntN(4))}), 128)
		case 2:
			// the zero prefix sorts first
		default:
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(10 + rng.IntN(2)), 0, byte(rng.IntN(2)), byte(rng.IntN(4))}), 30+rng.IntN(3))
		}
		m := snapshot.Member{Prefix: p}
		if rng.IntN(2) == 0 {
			m.Protocol, m.Port = []uint8{6, 17, 132}[rng.IntN(3)], uint16(rng.IntN(3))*1000+uint16(rng.IntN(2))
		}
		return m
	}
	for n := range 200 {
		var ms []snapshot.Member
		for range n % 40 {
			ms = append(ms, randMember())
		}
		want := snapshot.SortMembers(slices.Clone(ms))
		got := sortMembers(slices.Clone(ms))
		if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
			t.Fatalf("case %d: sortMembers differs from snapshot.SortMembers (-want +got):\n%s", n, diff)
		}
	}
}
