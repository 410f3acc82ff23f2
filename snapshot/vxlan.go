package snapshot

import "net/netip"

// DefaultVXLANPort is the VXLAN UDP port when the config leaves it unset (Felix's default).
const DefaultVXLANPort = 4789

// VXLANHosts returns the host prefixes of the other nodes' VXLAN tunnel endpoints in IP
// family fam (4 or 6), their underlay addresses (Felix's "all-vxlan-net" set), and whether
// VXLAN is enabled for fam at all. Every dataplane lets VXLAN from and to them through ahead
// of host endpoint policy, as Felix does.
func (s *Snapshot) VXLANHosts(fam int) ([]netip.Prefix, bool) {
	on := s.Config.VXLANEnabled
	if fam == 6 {
		on = s.Config.VXLANEnabledV6
	}
	if !on {
		return nil, false
	}
	var out []netip.Prefix
	for _, v := range s.VTEPs {
		a := v.ParentIP.Unmap()
		if a.IsValid() && (a.Is4() == (fam == 4)) {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, true
}

// VXLANUDPPort is the configured VXLAN port, or DefaultVXLANPort.
func (c Config) VXLANUDPPort() uint16 {
	if c.VXLANPort > 0 && c.VXLANPort < 65536 {
		return uint16(c.VXLANPort)
	}
	return DefaultVXLANPort
}
