//go:build linux

package bpf

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers/bpf/render"
	"github.com/felis-dev/felis/snapshot"
)

func syncSnapshot() *snapshot.Snapshot {
	return &snapshot.Snapshot{
		Node:   "n",
		Config: snapshot.Config{DefaultEndpointToHostAction: snapshot.Allow}, // see randSnapshot
		IPSets: []snapshot.IPSet{{ID: "s:a", Type: snapshot.IPSetIP, Members: []snapshot.Member{
			{Prefix: netip.MustParsePrefix("10.0.0.2/32")}, {Prefix: netip.MustParsePrefix("10.0.0.3/32")}}}},
		Policies: []snapshot.Policy{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow, SrcIPSets: []string{"s:a"}}}}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/ep", Interface: "cali0", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")},
			Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", DefaultAction: snapshot.Deny, Policies: []string{"p"}}}}}},
	}
}

func mustSync(t *testing.T, d *Dataplane, s *snapshot.Snapshot, full bool) map[string]int {
	t.Helper()
	res, err := d.Sync(context.Background(), s, full)
	if err != nil {
		t.Fatal(err)
	}
	if ops, err := d.Pending(context.Background(), s); err != nil || len(ops) != 0 {
		t.Fatalf("pending after sync: %q %v", ops, err)
	}
	return res.Counts
}

// TestMinimalUpdatesDriftAndAdoption: a one-member change is one map operation; a policy
// change writes the new program, switches the endpoint and deletes the old one; a deleted
// entry is restored by a full sync; a new Dataplane on the same pins adopts the maps with
// no operation and keeps the conntrack entries.
func TestMinimalUpdatesDriftAndAdoption(t *testing.T) {
	d, dir := openTest(t)
	s := syncSnapshot()
	toWEP, _ := d.Programs()
	mustSync(t, d, s, true)

	pkt := snapshot.Packet{Src: netip.MustParseAddr("10.0.0.4"), Dst: netip.MustParseAddr("10.0.0.1"), Protocol: 6, SrcPort: 1000, DstPort: 80}
	if got := run(t, toWEP, pkt); got != tcShot {
		t.Fatalf("10.0.0.4 not in the set yet: verdict %d, want drop", got)
	}

	s.IPSets[0].Members = append(s.IPSets[0].Members, snapshot.Member{Prefix: netip.MustParsePrefix("10.0.0.4/32")})
	if got, want := mustSync(t, d, s, false), map[string]int{"set-add": 1}; !cmp.Equal(got, want) {
		t.Errorf("adding one member: counts %v, want %v", got, want)
	}
	if got := run(t, toWEP, pkt); got != tcOK {
		t.Fatalf("10.0.0.4 added: verdict %d, want pass", got)
	}

	// A policy change: the new program (5 instructions: protocol, set, allow, tier default,
	// final deny: one block) is written to a fresh region, the endpoint switched, the old
	// region freed.
	tcp := uint8(17)
	s.Policies[0].Inbound[0].Protocol = &tcp
	if got, want := mustSync(t, d, s, false), map[string]int{"prog-put": 1, "block-put": 1, "endpoint-put": 1, "prog-free": 1}; !cmp.Equal(got, want) {
		t.Errorf("policy change: counts %v, want %v", got, want)
	}
	clearCT(t, d.CTMap())
	if got := run(t, toWEP, pkt); got != tcShot {
		t.Fatalf("policy now UDP only: TCP verdict %d, want drop", got)
	}
	pkt.Protocol = 17
	if got := run(t, toWEP, pkt); got != tcOK {
		t.Fatalf("UDP: verdict %d, want pass", got)
	}

	// Drift: delete a member behind felis's back; an incremental sync trusts its records, a
	// full one restores it.
	key := toSetKey(render.SetKey{Set: mustSetID(t, s, "set:s:a"), Family: 4, Addr: [16]byte{10, 0, 0, 4}, Bits: 32})
	if err := d.SetsMap().Delete(key); err != nil {
		t.Fatal(err)
	}
	if ops, _ := d.Pending(context.Background(), s); len(ops) != 1 {
		t.Errorf("pending after drift: %q, want the one set-add", ops)
	}
	if got, want := mustSync(t, d, s, true), map[string]int{"set-add": 1}; !cmp.Equal(got, want) {
		t.Errorf("full sync after drift: counts %v, want %v", got, want)
	}

	// Drift in the instruction array: the endpoint's ingress Allow becomes a Deny. A full
	// sync writes the program to a fresh region, switches the endpoint to it and frees the
	// damaged one.
	pkt.SrcPort = 2000
	ep := mustEndpoint(t, d)
	var blk policyBlock
	if err := d.objs.FprogV2.Lookup(ep.Base[render.DirToWorkload], &blk); err != nil {
		t.Fatal(err)
	}
	if blk.Insn[2].Kind != render.KindAction || blk.Insn[2].A != render.ActionAllow {
		t.Fatalf("instruction 2 of the ingress program: %+v, want the rule's Allow", blk.Insn[2])
	}
	blk.Insn[2].A = render.ActionDeny
	if err := d.objs.FprogV2.Put(ep.Base[render.DirToWorkload], &blk); err != nil {
		t.Fatal(err)
	}
	if got := run(t, toWEP, pkt); got != tcShot {
		t.Fatalf("damaged program: verdict %d, want drop", got)
	}
	if ops, _ := d.Pending(context.Background(), s); len(ops) != 3 {
		t.Errorf("pending after drift in fprog_v2: %q, want prog-put, endpoint-put, prog-free", ops)
	}
	if got, want := mustSync(t, d, s, true), map[string]int{"prog-put": 1, "block-put": 1, "endpoint-put": 1, "prog-free": 1}; !cmp.Equal(got, want) {
		t.Errorf("full sync after drift in fprog_v2: counts %v, want %v", got, want)
	}
	if got := mustEndpoint(t, d).Base[render.DirToWorkload]; got == ep.Base[render.DirToWorkload] {
		t.Errorf("repaired program written over the damaged region %d, want a fresh one", got)
	}
	if got := run(t, toWEP, pkt); got != tcOK {
		t.Fatalf("repaired program: verdict %d, want pass", got)
	}

	// Restart: a new Dataplane on the same pins adopts everything; the flow established
	// above (UDP, allowed) is still in conntrack.
	ct := countEntries(t, d)
	d.Close()
	d2 := openAt(t, dir)
	if got := mustSync(t, d2, s, true); len(got) != 0 {
		t.Errorf("adopting pinned maps: counts %v, want no operation", got)
	}
	if n := countEntries(t, d2); n != ct || n == 0 {
		t.Errorf("conntrack entries after restart: %d, before %d (want equal, nonzero)", n, ct)
	}
}

// mustEndpoint returns the entry of the one endpoint (ifindex 1) in feps_v2.
func mustEndpoint(t *testing.T, d *Dataplane) policyEndpoint {
	t.Helper()
	var ep policyEndpoint
	if err := d.objs.FepsV2.Lookup(uint32(1), &ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

// TestUpgradeFromV1Layout: an agent of the _v1 layout left its pins: fprog_v1 (a hash of
// instructions), feps_v1 and fhep_v1 (program IDs without region bases), beside the maps
// whose layout did not change. A new agent removes the retired pins, adopts the others (set members and
// conntrack entries kept) and programs the endpoint in the new maps.
func TestUpgradeFromV1Layout(t *testing.T) {
	d, dir := openTest(t)
	s := syncSnapshot()
	mustSync(t, d, s, true)
	toWEP, _ := d.Programs()
	flow := snapshot.Packet{Src: netip.MustParseAddr("10.0.0.2"), Dst: netip.MustParseAddr("10.0.0.1"), Protocol: 6, SrcPort: 1000, DstPort: 80}
	if got := run(t, toWEP, flow); got != tcOK {
		t.Fatalf("flow from a set member: verdict %d, want pass", got)
	}
	ct := countEntries(t, d)
	d.Close()

	// The pin directory as the v1 agent left it: no v2 maps, its own two maps with entries.
	pins := filepath.Join(dir, "felis")
	for _, name := range []string{"fprog_v2", "feps_v2", "fhep_v2"} {
		if err := os.Remove(filepath.Join(pins, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []struct {
		name       string
		key, value uint32
	}{{"fprog_v1", 8, 16}, {"feps_v1", 4, 24}, {"fhep_v1", 4, 40}} {
		old, err := ebpf.NewMap(&ebpf.MapSpec{Name: m.name, Type: ebpf.Hash, KeySize: m.key, ValueSize: m.value, MaxEntries: 16})
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Put(make([]byte, m.key), make([]byte, m.value)); err != nil {
			t.Fatal(err)
		}
		if err := old.Pin(filepath.Join(pins, m.name)); err != nil {
			t.Fatal(err)
		}
		old.Close()
	}

	d2 := openAt(t, dir)
	for _, name := range retiredMaps {
		if _, err := os.Stat(filepath.Join(pins, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin %s after the upgrade: %v, want it removed", name, err)
		}
	}
	for _, name := range []string{"fprog_v2", "feps_v2", "fhep_v2", "fsets_v1", "fct_v2", "fcnt_v1"} {
		if _, err := os.Stat(filepath.Join(pins, name)); err != nil {
			t.Errorf("pin %s after the upgrade: %v", name, err)
		}
	}
	if n := countEntries(t, d2); n != ct || n == 0 {
		t.Errorf("conntrack entries after the upgrade: %d, before %d (want equal, nonzero)", n, ct)
	}
	// Set members were adopted: only the programs and the endpoint are written.
	if got, want := mustSync(t, d2, s, true), map[string]int{"prog-put": 2, "block-put": 2, "endpoint-put": 1}; !cmp.Equal(got, want) {
		t.Errorf("first sync after the upgrade: counts %v, want %v", got, want)
	}
	toWEP, _ = d2.Programs()
	if got := run(t, toWEP, flow); got != tcOK {
		t.Errorf("established flow after the upgrade: verdict %d, want pass", got)
	}
	clearCT(t, d2.CTMap())
	for src, want := range map[string]uint32{"10.0.0.3": tcOK, "10.0.0.9": tcShot} {
		p := flow
		p.Src = netip.MustParseAddr(src)
		if got := run(t, toWEP, p); got != want {
			t.Errorf("new flow from %s after the upgrade: verdict %d, want %d", src, got, want)
		}
	}
}

func mustSetID(t *testing.T, s *snapshot.Snapshot, key string) uint32 {
	st, err := render.Render(s)
	if err != nil {
		t.Fatal(err)
	}
	return st.SetIDs[key]
}

func countEntries(t *testing.T, d *Dataplane) int {
	var k policyCtKey
	var v policyCtVal
	n := 0
	it := d.CTMap().Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConntrack: replies to an allowed flow pass the other direction's policy; a flow
// established before a deny policy keeps working (as in Calico's BPF mode, policy is not
// re-evaluated for tracked flows) while a new flow is denied; an ICMP echo request in the
// opposite direction is not mistaken for a reply.
func TestConntrack(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	s := syncSnapshot()
	// Egress allows everything; ingress allows only sources in s:a (10.0.0.2, 10.0.0.3).
	s.Profiles = []snapshot.Profile{{ID: "all", Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}}
	s.Endpoints[0].Egress = snapshot.Direction{Profiles: []string{"all"}}
	mustSync(t, d, s, true)
	ep, peer := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.9.9.9")
	out := snapshot.Packet{Src: ep, Dst: peer, Protocol: 6, SrcPort: 40000, DstPort: 443}
	reply := snapshot.Packet{Src: peer, Dst: ep, Protocol: 6, SrcPort: 443, DstPort: 40000}
	if got := run(t, toWEP, reply); got != tcShot {
		t.Fatalf("unsolicited packet from 10.9.9.9: %d, want drop", got)
	}
	if got := run(t, fromWEP, out); got != tcOK {
		t.Fatalf("egress: %d, want pass", got)
	}
	if got := run(t, toWEP, reply); got != tcOK {
		t.Fatalf("reply to an allowed flow: %d, want pass", got)
	}

	in := snapshot.Packet{Src: netip.MustParseAddr("10.0.0.2"), Dst: ep, Protocol: 6, SrcPort: 5000, DstPort: 80}
	if got := run(t, toWEP, in); got != tcOK {
		t.Fatalf("ingress from a set member: %d, want pass", got)
	}
	s.IPSets[0].Members = nil // 10.0.0.2 no longer allowed
	mustSync(t, d, s, false)
	if got := run(t, toWEP, in); got != tcOK {
		t.Errorf("established flow after the policy change: %d, want pass", got)
	}
	in.SrcPort = 5001
	if got := run(t, toWEP, in); got != tcShot {
		t.Errorf("new flow after the policy change: %d, want drop", got)
	}

	echo := func(src, dst netip.Addr, typ uint8) snapshot.Packet {
		return snapshot.Packet{Src: src, Dst: dst, Protocol: 1, ICMPType: &typ, ICMPCode: new(uint8)}
	}
	if got := run(t, fromWEP, echo(ep, peer, 8)); got != tcOK {
		t.Fatalf("echo request out: %d, want pass", got)
	}
	if got := run(t, toWEP, echo(peer, ep, 8)); got != tcShot {
		t.Errorf("echo request in (not a reply): %d, want drop", got)
	}
	if got := run(t, toWEP, echo(peer, ep, 0)); got != tcOK {
		t.Errorf("echo reply in: %d, want pass", got)
	}
}
