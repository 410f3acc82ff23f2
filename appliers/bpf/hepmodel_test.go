//go:build linux

package bpf

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// hepModel is the nftables dataplane's verdict for a new packet through a host endpoint,
// written from its hooks (appliers/nftables/render baseChains): each stage is an
// Evaluator.Program whose fall-through (no rule, no tier default decided) means "no
// verdict"; failsafes end the untracked and preDNAT stages without a verdict and allow in
// the normal programs. ingress: the packet arrives on the interface; local: it is addressed
// to the host (ingress) or sent by it (egress), else forwarded.
func hepModel(ev *snapshot.Evaluator, cfg *snapshot.Config, hep *snapshot.HostEndpoint, p snapshot.Packet, ingress, local bool) uint32 {
	failsafe := func(list []snapshot.FailsafePort, inbound bool) bool {
		for _, f := range list {
			remote := p.Src
			if !inbound {
				remote = p.Dst
			}
			if f.Protocol == p.Protocol && f.Port == p.DstPort && (!f.Net.IsValid() || f.Net.Masked().Contains(remote)) {
				return true
			}
		}
		return false
	}
	const none = snapshot.Action("")
	stage := func(d snapshot.Direction, inbound bool, fs []snapshot.FailsafePort) snapshot.Action {
		if len(d.Tiers) == 0 || failsafe(fs, inbound) {
			return none
		}
		v := ev.Program(d, inbound, p)
		if v.Decider == "profile-default" {
			return none
		}
		return v.Action
	}
	normal := func(d snapshot.Direction, inbound bool, fs []snapshot.FailsafePort) uint32 {
		if failsafe(fs, inbound) || ev.Program(d, inbound, p).Action == snapshot.Allow {
			return tcOK
		}
		return tcShot
	}
	exempt := p.Dst.Is6() && p.Protocol == 58 && p.ICMPType != nil &&
		((*p.ICMPType >= 130 && *p.ICMPType <= 137) || *p.ICMPType == 143)
	// A tracked ICMP error about no known flow is conntrack INVALID: dropped (filter chains).
	invalid := icmpError(p)
	if ingress {
		u := stage(hep.Untracked.Ingress, true, cfg.FailsafeInbound)
		if u == snapshot.Deny || stage(hep.PreDNAT.Ingress, true, cfg.FailsafeInbound) == snapshot.Deny {
			return tcShot
		}
		switch {
		case exempt:
			return tcOK
		case invalid && u != snapshot.Allow:
			return tcShot
		case local && u == snapshot.Allow:
			return tcOK
		case local:
			return normal(hep.Normal.Ingress, true, cfg.FailsafeInbound)
		case stage(hep.Forward.Ingress, true, nil) == snapshot.Deny:
			return tcShot
		}
		return tcOK
	}
	if !local {
		if !exempt && invalid {
			return tcShot
		}
		if exempt || stage(hep.Forward.Egress, false, nil) != snapshot.Deny {
			return tcOK
		}
		return tcShot
	}
	switch stage(hep.Untracked.Egress, false, cfg.FailsafeOutbound) {
	case snapshot.Deny:
		return tcShot
	case snapshot.Allow:
		return tcOK
	}
	if exempt {
		return tcOK
	}
	if invalid {
		return tcShot
	}
	return normal(hep.Normal.Egress, false, cfg.FailsafeOutbound)
}

// TestHostEndpointStagesMatchModel: on random snapshots (randSnapshot's sets, policies and
// profiles, a host endpoint with random tiers in every stage as derive shapes them, random
// failsafes with and without nets) and random packets to / from the host and forwarded, both
// directions, IPv4 and IPv6, ND among them, the TC programs' verdict for a new packet equals
// hepModel's.
func TestHostEndpointStagesMatchModel(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	r := rand.New(rand.NewPCG(7, 9))
	tiers := func(def func() snapshot.Action) []snapshot.TierPolicies {
		var out []snapshot.TierPolicies
		for i := range r.IntN(3) {
			tp := snapshot.TierPolicies{Tier: "t" + string(rune('0'+i)), DefaultAction: def()}
			for range 1 + r.IntN(3) {
				tp.Policies = append(tp.Policies, pick(r, []string{"p0", "p1", "p2", "p3", "p4", "pmissing", "q0", "q1", "q2", "q3"}))
			}
			out = append(out, tp)
		}
		return out
	}
	pass := func() snapshot.Action { return snapshot.Pass }
	either := func() snapshot.Action { return pick(r, []snapshot.Action{snapshot.Deny, snapshot.Pass}) }
	normalDir := func() snapshot.Direction {
		d := snapshot.Direction{Tiers: tiers(either)}
		for range r.IntN(3) {
			d.Profiles = append(d.Profiles, pick(r, []string{"prof0", "prof1", "prof2", "profmissing"}))
		}
		return d
	}
	failsafes := func() []snapshot.FailsafePort {
		var out []snapshot.FailsafePort
		for range r.IntN(3) {
			f := snapshot.FailsafePort{Protocol: pick(r, []uint8{6, 17}), Port: pick(r, portPool)}
			if r.IntN(2) == 0 {
				f.Net = randPrefix(r, r.IntN(2) == 0)
			}
			out = append(out, f)
		}
		return out
	}
	addr := map[bool]map[bool]netip.Addr{ // [v6][local]
		false: {true: netip.MustParseAddr("192.168.5.1"), false: netip.MustParseAddr("192.168.5.7")},
		true:  {true: netip.MustParseAddr("fd00:5::1"), false: netip.MustParseAddr("fd00:5::7")},
	}
	// q policies: few, broad rules (protocol, ports, the host's subnet), so stages decide often.
	simple := func() []snapshot.Rule {
		var out []snapshot.Rule
		for i := range 1 + r.IntN(3) {
			ru := snapshot.Rule{Action: pick(r, []snapshot.Action{snapshot.Allow, snapshot.Deny, snapshot.Pass, snapshot.Log, snapshot.Deny}),
				Origin: snapshot.RuleOrigin{Index: i}}
			if r.IntN(2) == 0 {
				ru.Protocol = u8(pick(r, []uint8{6, 17, 58, 1}))
			}
			if r.IntN(3) == 0 {
				ru.DstPorts = randPorts(r)
			}
			if r.IntN(4) == 0 {
				ru.DstNets = []netip.Prefix{pick(r, []netip.Prefix{netip.MustParsePrefix("192.168.5.0/29"), netip.MustParsePrefix("fd00:5::/125"), netip.MustParsePrefix("192.168.5.4/30")})}
			}
			out = append(out, ru)
		}
		return out
	}
	stats := map[uint32]int{}
	inNetNS(t, func(func(bool)) {
		for round := range 60 {
			s := randSnapshot(r)
			s.Endpoints = nil
			for i := range 4 {
				s.Policies = append(s.Policies, snapshot.Policy{ID: "q" + string(rune('0'+i)), Inbound: simple(), Outbound: simple()})
			}
			s.Config.FailsafeInbound, s.Config.FailsafeOutbound = failsafes(), failsafes()
			hep := snapshot.HostEndpoint{ID: "h", Interface: "eth0",
				Normal:    snapshot.HostDirections{Ingress: normalDir(), Egress: normalDir()},
				Untracked: snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: tiers(pass)}, Egress: snapshot.Direction{Tiers: tiers(pass)}},
				PreDNAT:   snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: tiers(pass)}},
				Forward:   snapshot.HostDirections{Ingress: snapshot.Direction{Tiers: tiers(either)}, Egress: snapshot.Direction{Tiers: tiers(either)}},
			}
			s.HostEndpoints = []snapshot.HostEndpoint{hep}
			mustSync(t, d, s, round%5 == 0)
			ev := snapshot.NewEvaluator(s)
			for range 300 {
				p := randPacket(r, false)
				v6 := p.Src.Is6()
				if v6 && r.IntN(8) == 0 {
					p.Protocol, p.ICMPType, p.SrcPort, p.DstPort = 58, u8(pick(r, []uint8{133, 135, 136, 143})), 0, 0
				}
				ingress, local := r.IntN(2) == 0, r.IntN(2) == 0
				prog := toWEP
				if ingress {
					p.Dst = addr[v6][local]
					prog = fromWEP
				} else {
					p.Src = addr[v6][local]
					if !local { // a routed source that is not the host's
						p.Src = netip.MustParseAddr("192.168.5.9")
						if v6 {
							p.Src = netip.MustParseAddr("fd00:5::9")
						}
					}
				}
				want := hepModel(ev, &s.Config, &hep, p, ingress, local)
				clearCT(t, d.CTMap())
				if got := run(t, prog, p); got != want {
					t.Fatalf("round %d: %+v (ingress %v, local %v): verdict %d, model %d\nhost endpoint %+v\nfailsafes in %v out %v",
						round, p, ingress, local, got, want, hep, s.Config.FailsafeInbound, s.Config.FailsafeOutbound)
				}
				stats[want]++
			}
		}
	})
	if stats[tcOK] < 1000 || stats[tcShot] < 1000 {
		t.Errorf("verdicts %v: the random cases hardly exercise one side", stats)
	}
}
