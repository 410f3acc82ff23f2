//go:build linux

package bpf

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/snapshot"
)

const (
	tcOK   = 0
	tcShot = 2
)

func run(t testing.TB, prog *ebpf.Program, p snapshot.Packet) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame(p)})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret
}

// TestVerdictsMatchEvaluator is the key correctness test: on random snapshots and random
// packets, the TC program's verdict (run with BPF_PROG_TEST_RUN on the rendered maps) equals
// snapshot.Evaluator's, in both directions; a spoofed source from the endpoint is dropped.
func TestVerdictsMatchEvaluator(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	stats := map[string]int{}
	for round := range 60 {
		s := randSnapshot(r)
		if _, err := d.Sync(ctx, s, round%7 == 0); err != nil {
			t.Fatalf("round %d: sync: %v", round, err)
		}
		if ops, err := d.Pending(ctx, s); err != nil || len(ops) != 0 {
			t.Fatalf("round %d: pending after sync: %v %v", round, ops, err)
		}
		ev := snapshot.NewEvaluator(s)
		ep := &s.Endpoints[0]
		for range 300 {
			for _, ingress := range []bool{true, false} {
				p := randPacket(r, !ingress)
				var want snapshot.Verdict
				prog := toWEP
				if ingress {
					want = ev.Ingress(ep, p)
				} else {
					prog = fromWEP
					want = ev.Egress(ep, p)
					if !spoofOK(ep, p) {
						want = snapshot.Verdict{Action: snapshot.Deny, Decider: "anti-spoofing"}
					}
				}
				if icmpError(p) && want.Decider != "anti-spoofing" {
					// An ICMP error about no known flow is conntrack INVALID, dropped
					// before policy as in the nftables dataplane.
					want = snapshot.Verdict{Action: snapshot.Deny, Decider: "invalid"}
				}
				wantRet := uint32(tcShot)
				if want.Action == snapshot.Allow {
					wantRet = tcOK
				}
				got := run(t, prog, p)
				clearCT(t, d.CTMap())
				stats[string(want.Action)+" "+want.Decider]++
				if got != wantRet {
					sj, _ := json.MarshalIndent(s, "", " ")
					t.Fatalf("round %d ingress=%v packet %+v: program returned %d, evaluator says %v (%s)\nsnapshot: %s",
						round, ingress, p, got, want.Action, want, sj)
				}
			}
		}
	}
	t.Logf("verdicts checked: %v", stats)
	for _, k := range []string{"Allow rule", "Deny rule", "Deny tier-default", "Deny profile-default", "Deny anti-spoofing"} {
		if stats[k] == 0 {
			t.Errorf("no packet exercised %q: the random generator is too narrow (%v)", k, stats)
		}
	}
}

func spoofOK(ep *snapshot.Endpoint, p snapshot.Packet) bool {
	for _, pfx := range append(append([]netip.Prefix(nil), ep.Addrs...), ep.AllowSpoofedSources...) {
		if pfx.Contains(p.Src) {
			return true
		}
	}
	return false
}

// TestTwoThousandRules: one endpoint with 2,000 rules (the program is the same verified
// object whatever the rule count; the rules are map data) decides like the evaluator at the
// first, last and no rule.
func TestTwoThousandRules(t *testing.T) {
	d, _ := openTest(t)
	toWEP, _ := d.Programs()
	s := syncSnapshot()
	s.Policies[0].Inbound = nil
	for i := range 2000 {
		s.Policies[0].Inbound = append(s.Policies[0].Inbound, snapshot.Rule{Action: snapshot.Allow,
			DstPorts: []snapshot.PortRange{{Min: uint16(i + 1), Max: uint16(i + 1)}}, Origin: snapshot.RuleOrigin{Index: i}})
	}
	res, err := d.Sync(context.Background(), s, true)
	if err != nil {
		t.Fatal(err)
	}
	// Ingress: 2,000 rules of 2 instructions, tier default, final deny = 4,002 instructions in
	// 251 blocks; egress: the final deny, one block.
	if got, want := res.Counts, map[string]int{"prog-put": 2, "block-put": 252, "endpoint-put": 1, "set-add": 3}; !cmp.Equal(got, want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	ev := snapshot.NewEvaluator(s)
	for _, port := range []uint16{1, 2000, 2001, 0} {
		p := snapshot.Packet{Src: netip.MustParseAddr("10.0.0.9"), Dst: netip.MustParseAddr("10.0.0.1"), Protocol: 6, SrcPort: 999, DstPort: port}
		want := ev.Ingress(&s.Endpoints[0], p)
		wantRet := uint32(tcShot)
		if want.Action == snapshot.Allow {
			wantRet = tcOK
		}
		if got := run(t, toWEP, p); got != wantRet {
			t.Errorf("dst port %d: program returned %d, evaluator says %s", port, got, want)
		}
		clearCT(t, d.CTMap())
	}
}

// TestSetLookupMemo: the walk remembers set lookups by set and side, and forgets them
// between walks. The same set is tested on the destination side (false), then on the source
// side (true: a memo keyed by set alone would say false); a later packet from outside the
// set is denied (a memo kept across walks would say true).
func TestSetLookupMemo(t *testing.T) {
	d, _ := openTest(t)
	toWEP, _ := d.Programs()
	s := syncSnapshot()
	s.Policies[0].Inbound = []snapshot.Rule{
		{Action: snapshot.Deny, DstIPSets: []string{"s:a"}},
		{Action: snapshot.Allow, SrcIPSets: []string{"s:a"}},
		{Action: snapshot.Allow, SrcIPSets: []string{"s:a"}, DstPorts: []snapshot.PortRange{{Min: 1, Max: 1}}},
	}
	mustSync(t, d, s, true)
	ev := snapshot.NewEvaluator(s)
	for _, src := range []string{"10.0.0.2", "10.0.0.9", "10.0.0.3", "10.0.0.8"} {
		p := snapshot.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("10.0.0.1"), Protocol: 6, SrcPort: 1000, DstPort: 80}
		want := uint32(tcShot)
		if ev.Ingress(&s.Endpoints[0], p).Action == snapshot.Allow {
			want = tcOK
		}
		if got := run(t, toWEP, p); got != want {
			t.Errorf("packet from %s: verdict %d, want %d", src, got, want)
		}
		clearCT(t, d.CTMap())
	}
}
