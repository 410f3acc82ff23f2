package hns

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/felis-dev/felis/snapshot"
)

// probeStats counts what an equivalence run checked.
type probeStats struct {
	endpoints, unsupported, probes, rules, allowed int
}

// checkEquivalence evaluates every probe flow of every local endpoint against the snapshot's
// evaluator and against the rendered HNS list, and reports each disagreement.
func checkEquivalence(t *testing.T, name string, s *snapshot.Snapshot, st *probeStats) {
	t.Helper()
	d := Render(s, Options{})
	ev := snapshot.NewEvaluator(s)
	probes := probeSpace(s)
	failures := 0
	for i := range s.Endpoints {
		ep := &s.Endpoints[i]
		acl := d.Endpoints[slices.IndexFunc(d.Endpoints, func(a EndpointACL) bool { return a.Endpoint == ep.ID })]
		st.endpoints++
		if acl.Err != nil {
			if !errors.Is(acl.Err, ErrUnsupported) || !usesUnsupported(s, ep) {
				t.Errorf("%s: endpoint %s: unexpected render error: %v", name, ep.ID, acl.Err)
			}
			st.unsupported++
			continue
		}
		st.rules += len(acl.Rules)
		for _, inbound := range []bool{true, false} {
			dir, prog := Out, ep.Egress
			if inbound {
				dir, prog = In, ep.Ingress
			}
			for _, localPfx := range ep.Addrs {
				local := localPfx.Addr()
				for _, remote := range probes.addrs {
					if remote.Is4() != local.Is4() {
						continue
					}
					for _, proto := range probes.protos {
						if proto == 1 && !local.Is4() || proto == 58 && local.Is4() {
							continue
						}
						lports, rports := probes.dstPorts, probes.srcPorts
						if !inbound {
							lports, rports = probes.srcPorts, probes.dstPorts
						}
						if proto != 6 && proto != 17 && proto != 132 {
							lports, rports = []uint16{0}, []uint16{0}
						}
						for _, lp := range lports {
							for _, rp := range rports {
								hp := Packet{Local: local, Remote: remote, Protocol: proto, LocalPort: lp, RemotePort: rp}
								sp := snapshot.Packet{Src: remote, Dst: local, Protocol: proto, SrcPort: rp, DstPort: lp}
								if !inbound {
									sp = snapshot.Packet{Src: local, Dst: remote, Protocol: proto, SrcPort: lp, DstPort: rp}
								}
								if proto == 1 || proto == 58 {
									typ, code := uint8(8), uint8(0)
									if proto == 58 {
										typ = 128
									}
									sp.ICMPType, sp.ICMPCode = &typ, &code
								}
								want := ev.Program(prog, inbound, sp)
								got := Evaluate(acl.Rules, dir, hp)
								st.probes++
								if got.Action == Allow {
									st.allowed++
								}
								wantHNS := Block
								if want.Action == snapshot.Allow {
									wantHNS = Allow
								}
								if got.Action != wantHNS || got.Ambiguous || got.Rule < 0 {
									failures++
									if failures <= 10 {
										rule := "none (HNS default)"
										if got.Rule >= 0 {
											rule = acl.Rules[got.Rule].String()
										}
										t.Errorf("%s: endpoint %s %s %+v: evaluator says %s (%s), HNS says %s by %s (ambiguous=%v)\n%s",
											name, ep.ID, dir, sp, want.Action, want, got.Action, rule, got.Ambiguous, acl)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	if failures > 10 {
		t.Errorf("%s: %d probes disagree in total", name, failures)
	}
}

// usesUnsupported reports whether any rule the endpoint's programs reach has an ICMP
// type/code match, or a port match without TCP/UDP (the matches HNS cannot express).
func usesUnsupported(s *snapshot.Snapshot, ep *snapshot.Endpoint) bool {
	var rules []snapshot.Rule
	for _, d := range []snapshot.Direction{ep.Ingress, ep.Egress} {
		for _, t := range d.Tiers {
			for _, id := range t.Policies {
				if p, ok := s.Policy(id); ok {
					rules = append(append(rules, p.Inbound...), p.Outbound...)
				}
			}
		}
		for _, id := range d.Profiles {
			if p, ok := s.Profile(id); ok {
				rules = append(append(rules, p.Inbound...), p.Outbound...)
			}
		}
	}
	for _, r := range rules {
		if r.ICMP != nil || r.NotICMP != nil {
			return true
		}
		tcpUDP := r.Protocol != nil && (*r.Protocol == 6 || *r.Protocol == 17)
		if !tcpUDP && (len(r.SrcPorts)+len(r.DstPorts)+len(r.NotSrcPorts)+len(r.NotDstPorts)+
			len(r.SrcNamedPortIPSets)+len(r.DstNamedPortIPSets)+len(r.NotSrcNamedPortIPSets)+len(r.NotDstNamedPortIPSets)+len(r.DstServiceIPSets) > 0) {
			return true
		}
	}
	return false
}

// probes is the flow space: addresses at every boundary of every prefix the snapshot mentions
// plus outside addresses, the protocols it mentions plus TCP/UDP/ICMP, and ports at every
// boundary of every port range and named port.
type probes struct {
	addrs              []netip.Addr
	protos             []uint8
	srcPorts, dstPorts []uint16
}

func probeSpace(s *snapshot.Snapshot) probes {
	addrs := map[netip.Addr]bool{
		netip.MustParseAddr("203.0.113.77"): true, netip.MustParseAddr("2001:db8:ffff::77"): true,
		netip.MustParseAddr("0.0.0.0"): true, netip.MustParseAddr("255.255.255.255"): true,
		netip.MustParseAddr("::"): true,
	}
	addPrefix := func(p netip.Prefix) {
		p = p.Masked()
		first := p.Addr()
		set := addrsOf([]netip.Prefix{p})
		last := uAddr(set.fam(first.Is4())[0].hi, first.Is4())
		for _, a := range []netip.Addr{first, last, first.Prev(), last.Next()} {
			if a.IsValid() {
				addrs[a] = true
			}
		}
	}
	protos := map[uint8]bool{1: true, 6: true, 17: true, 58: true}
	sports, dports := map[uint16]bool{40000: true}, map[uint16]bool{80: true}
	addRange := func(m map[uint16]bool, r snapshot.PortRange) {
		for _, v := range []int{int(r.Min) - 1, int(r.Min), int(r.Max), int(r.Max) + 1} {
			if v >= 1 && v <= 65535 {
				m[uint16(v)] = true
			}
		}
	}
	for _, set := range s.IPSets {
		for _, m := range set.Members {
			addPrefix(m.Prefix)
			if m.Port != 0 {
				addRange(sports, snapshot.PortRange{Min: m.Port, Max: m.Port})
				addRange(dports, snapshot.PortRange{Min: m.Port, Max: m.Port})
				protos[m.Protocol] = true
			}
		}
	}
	for _, ep := range s.Endpoints {
		for _, p := range ep.Addrs {
			addPrefix(p)
		}
	}
	var rules []snapshot.Rule
	for _, p := range s.Policies {
		rules = append(append(rules, p.Inbound...), p.Outbound...)
	}
	for _, p := range s.Profiles {
		rules = append(append(rules, p.Inbound...), p.Outbound...)
	}
	for _, r := range rules {
		for _, l := range [][]netip.Prefix{r.SrcNets, r.NotSrcNets, r.DstNets, r.NotDstNets} {
			for _, p := range l {
				addPrefix(p)
			}
		}
		for _, p := range []*uint8{r.Protocol, r.NotProtocol} {
			if p != nil {
				protos[*p] = true
			}
		}
		for _, pr := range append(slices.Clone(r.SrcPorts), r.NotSrcPorts...) {
			addRange(sports, pr)
		}
		for _, pr := range append(slices.Clone(r.DstPorts), r.NotDstPorts...) {
			addRange(dports, pr)
		}
	}
	var p probes
	for a := range addrs {
		p.addrs = append(p.addrs, a)
	}
	slices.SortFunc(p.addrs, netip.Addr.Compare)
	for x := range protos {
		p.protos = append(p.protos, x)
	}
	slices.Sort(p.protos)
	for x := range sports {
		p.srcPorts = append(p.srcPorts, x)
	}
	slices.Sort(p.srcPorts)
	for x := range dports {
		p.dstPorts = append(p.dstPorts, x)
	}
	slices.Sort(p.dstPorts)
	return p
}

// TestEquivalenceGolden checks every golden scenario's derived snapshot.
func TestEquivalenceGolden(t *testing.T) {
	files, err := filepath.Glob("../../golden/*/snapshot.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden snapshots found (%v)", err)
	}
	var st probeStats
	start := time.Now()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := snapshot.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		checkEquivalence(t, filepath.Base(filepath.Dir(f)), s, &st)
	}
	el := time.Since(start)
	t.Logf("golden: %d scenarios, %d endpoints (%d unsupported), %d rules, %d probes (%d allowed) in %v (%.0f probes/s)",
		len(files), st.endpoints, st.unsupported, st.rules, st.probes, st.allowed, el, float64(st.probes)/el.Seconds())
	if st.probes == 0 {
		t.Fatal("no probes evaluated")
	}
}

// TestEquivalenceRandom checks synthetic snapshots that mix every construct the render
// compiles away: Pass rules and Pass tier defaults, Log, negated nets/sets/ports/protocols,
// named-port and service sets, IP versions, missing sets, profiles with Pass.
func TestEquivalenceRandom(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 40
	}
	var st probeStats
	start := time.Now()
	for seed := range n {
		s := randomSnapshot(rand.New(rand.NewPCG(uint64(seed), 7)))
		checkEquivalence(t, fmt.Sprintf("seed %d", seed), s, &st)
	}
	el := time.Since(start)
	t.Logf("random: %d snapshots, %d endpoints (%d unsupported), %d rules, %d probes (%d allowed) in %v (%.0f probes/s)",
		n, st.endpoints, st.unsupported, st.rules, st.probes, st.allowed, el, float64(st.probes)/el.Seconds())
	// A generator whose flows are nearly all denied (or allowed) would prove little.
	if st.allowed < st.probes/10 || st.allowed > st.probes*9/10 {
		t.Errorf("verdict mix too one-sided: %d of %d probes allowed", st.allowed, st.probes)
	}
	if st.unsupported > st.endpoints/10 {
		t.Errorf("generator produced too many unsupported endpoints (%d of %d)", st.unsupported, st.endpoints)
	}
}

// FuzzEquivalence explores generator seeds beyond the fixed ones:
// go test ./appliers/hns -fuzz FuzzEquivalence.
func FuzzEquivalence(f *testing.F) {
	for _, seed := range []uint64{0, 1, 2, 3} {
		f.Add(seed, uint64(7))
	}
	f.Fuzz(func(t *testing.T, a, b uint64) {
		var st probeStats
		checkEquivalence(t, fmt.Sprintf("seed %d/%d", a, b), randomSnapshot(rand.New(rand.NewPCG(a, b))), &st)
	})
}
