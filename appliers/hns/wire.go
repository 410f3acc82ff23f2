package hns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// ACLSetting is an ACL rule in HNS's wire form: the fields of hcn's AclPolicySetting, lists
// comma-joined, the protocol as a decimal string ("" for any).
type ACLSetting struct {
	Protocols       string
	Action          string
	Direction       string
	LocalAddresses  string
	RemoteAddresses string
	LocalPorts      string
	RemotePorts     string
	RuleType        string
	Priority        uint16
}

// Setting encodes a rule in HNS's wire form.
func (r Rule) Setting() ACLSetting {
	s := ACLSetting{
		Action: string(r.Action), Direction: string(r.Direction), RuleType: string(r.Type), Priority: r.Priority,
		LocalAddresses: joinPrefixes(r.LocalAddresses), RemoteAddresses: joinPrefixes(r.RemoteAddresses),
		LocalPorts: joinPorts(r.LocalPorts), RemotePorts: joinPorts(r.RemotePorts),
	}
	if r.Protocol != AnyProtocol {
		s.Protocols = strconv.Itoa(int(r.Protocol))
	}
	return s
}

// Parse decodes and validates a wire-form rule the way HNS does: known action, direction and
// rule type; one protocol number (or none, or 256, for any); ports only with TCP or UDP;
// addresses as prefixes or bare addresses, all of one family. Errors wrap ErrMalformed.
func (s ACLSetting) Parse() (Rule, error) {
	r := Rule{Action: Action(s.Action), Direction: Direction(s.Direction), Type: RuleType(s.RuleType), Priority: s.Priority, Protocol: AnyProtocol}
	bad := func(field, format string, args ...any) (Rule, error) {
		return Rule{}, fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), ErrMalformed)
	}
	if r.Action != Allow && r.Action != Block {
		return bad("Action", "%q is neither Allow nor Block", s.Action)
	}
	if r.Direction != In && r.Direction != Out {
		return bad("Direction", "%q is neither In nor Out", s.Direction)
	}
	switch r.Type {
	case "":
		r.Type = Switch
	case Switch, Host:
	default:
		return bad("RuleType", "%q is neither Switch nor Host", s.RuleType)
	}
	if s.Protocols != "" {
		n, err := strconv.ParseUint(s.Protocols, 10, 16)
		if err != nil || n > 256 {
			return bad("Protocols", "%q is not one protocol number (0-255, 256 for any)", s.Protocols)
		}
		r.Protocol = uint16(n)
	}
	var err error
	if r.LocalAddresses, err = parseAddrs(s.LocalAddresses); err != nil {
		return bad("LocalAddresses", "%v", err)
	}
	if r.RemoteAddresses, err = parseAddrs(s.RemoteAddresses); err != nil {
		return bad("RemoteAddresses", "%v", err)
	}
	fam := 0
	for _, p := range append(append([]netip.Prefix(nil), r.LocalAddresses...), r.RemoteAddresses...) {
		f := 6
		if p.Addr().Is4() {
			f = 4
		}
		if fam != 0 && f != fam {
			return bad("LocalAddresses/RemoteAddresses", "IPv4 and IPv6 mixed in one rule")
		}
		fam = f
	}
	if r.LocalPorts, err = parsePorts(s.LocalPorts); err != nil {
		return bad("LocalPorts", "%v", err)
	}
	if r.RemotePorts, err = parsePorts(s.RemotePorts); err != nil {
		return bad("RemotePorts", "%v", err)
	}
	if len(r.LocalPorts)+len(r.RemotePorts) > 0 && r.Protocol != 6 && r.Protocol != 17 {
		return bad("LocalPorts/RemotePorts", "ports need protocol 6 (TCP) or 17 (UDP), have %q", s.Protocols)
	}
	return r, nil
}

func parseAddrs(s string) ([]netip.Prefix, error) {
	if s == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func parsePorts(s string) ([]snapshot.PortRange, error) {
	if s == "" {
		return nil, nil
	}
	var out []snapshot.PortRange
	for _, f := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", f, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
				return nil, fmt.Errorf("port range %q: %w", f, err)
			}
		}
		if a > b {
			return nil, fmt.Errorf("port range %q is reversed", f)
		}
		out = append(out, snapshot.PortRange{Min: uint16(a), Max: uint16(b)})
	}
	return out, nil
}
