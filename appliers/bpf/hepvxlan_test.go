//go:build linux

package bpf

import (
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// TestHostEndpointVXLAN runs VXLAN packets through a host endpoint's TC programs with
// BPF_PROG_TEST_RUN (192.168.5.1 and fd00:5::1 local): as Felix's filter chains, node-to-node
// VXLAN passes ahead of the host endpoint's normal policy (which denies it), VXLAN from any
// other source is dropped even where normal policy would allow it, and the untracked and
// preDNAT stages still come first.
func TestHostEndpointVXLAN(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	inNetNS(t, func(func(bool)) {
		s := stageSnapshot()
		s.Config.VXLANEnabled, s.Config.VXLANEnabledV6 = true, true
		s.VTEPs = []snapshot.VTEP{
			{Node: "b", TunnelIP: netip.MustParseAddr("10.66.2.0"), ParentIP: netip.MustParseAddr("10.1.1.5")},
			{Node: "b", TunnelIP: netip.MustParseAddr("fd66::2"), ParentIP: netip.MustParseAddr("fd00:1::5"), IPv6: true},
		}
		// Normal ingress allows UDP 4789 from anywhere: Felix's drop of VXLAN from unknown
		// hosts comes first.
		for i := range s.Policies {
			if s.Policies[i].ID == "host" {
				s.Policies[i].Inbound = append(s.Policies[i].Inbound, snapshot.Rule{Action: snapshot.Allow, Protocol: u8(17),
					DstPorts: []snapshot.PortRange{{Min: 4789, Max: 4789}}})
			}
		}
		udp := func(src, dst string, dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 17, SrcPort: 51000, DstPort: dport}
		}
		const in, out = true, false
		type tc struct {
			name    string
			ingress bool
			pkt     snapshot.Packet
			want    uint32
		}
		check := func(cases []tc) {
			t.Helper()
			for _, c := range cases {
				clearCT(t, d.CTMap())
				prog := toWEP
				if c.ingress {
					prog = fromWEP
				}
				if got := run(t, prog, c.pkt); got != c.want {
					t.Errorf("%s (%v→%v:%d): verdict %d, want %d", c.name, c.pkt.Src, c.pkt.Dst, c.pkt.DstPort, got, c.want)
				}
			}
		}
		mustSync(t, d, s, true)
		check([]tc{
			{"VXLAN from another node's VTEP", in, udp("10.1.1.5", "192.168.5.1", 4789), tcOK},
			{"VXLAN from another node's VTEP, IPv6", in, udp("fd00:1::5", "fd00:5::1", 4789), tcOK},
			{"VXLAN from an unknown host: dropped although normal policy allows it", in, udp("10.1.1.6", "192.168.5.1", 4789), tcShot},
			{"VXLAN from an unknown host, IPv6", in, udp("fd00:1::6", "fd00:5::1", 4789), tcShot},
			{"another UDP port from the VTEP: normal policy (deny)", in, udp("10.1.1.5", "192.168.5.1", 4790), tcShot},
			{"VXLAN to another node's VTEP (normal egress denies UDP)", out, udp("192.168.5.1", "10.1.1.5", 4789), tcOK},
			{"VXLAN to another node's VTEP, IPv6", out, udp("fd00:5::1", "fd00:1::5", 4789), tcOK},
			{"VXLAN to an unknown host: normal egress (deny)", out, udp("192.168.5.1", "10.1.1.6", 4789), tcShot},
		})

		// Another port, and VXLAN off for IPv6.
		s.Config.VXLANPort = 8472
		s.Config.VXLANEnabledV6 = false
		mustSync(t, d, s, false)
		check([]tc{
			{"VXLAN on the configured port", in, udp("10.1.1.5", "192.168.5.1", 8472), tcOK},
			{"4789 is no longer VXLAN: normal policy allows it", in, udp("10.1.1.6", "192.168.5.1", 4789), tcOK},
			{"IPv6 VXLAN off: normal policy (deny)", in, udp("fd00:1::5", "fd00:5::1", 8472), tcShot},
			{"IPv6 VXLAN off, out: normal egress (deny)", out, udp("fd00:5::1", "fd00:1::5", 8472), tcShot},
		})

		// A preDNAT deny precedes the VXLAN allow, as the mangle chain precedes filter input.
		for i := range s.Policies {
			if s.Policies[i].ID == "pre" {
				s.Policies[i].Inbound = append(s.Policies[i].Inbound, snapshot.Rule{Action: snapshot.Deny, Protocol: u8(17),
					DstPorts: []snapshot.PortRange{{Min: 8472, Max: 8472}}})
			}
		}
		mustSync(t, d, s, false)
		check([]tc{{"preDNAT deny of VXLAN", in, udp("10.1.1.5", "192.168.5.1", 8472), tcShot}})
	})
}
