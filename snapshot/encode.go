package snapshot

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// hashLen is the number of hex digits kept from the SHA-256 content hash: 64 bits, plenty to
// detect change between two versions of one object.
const hashLen = 16

// Finalize puts the snapshot in canonical form: every keyed list sorted by its key, every
// IP set's members sorted and deduplicated, every OR-list inside a rule sorted (their order
// has no meaning), and every Hash filled. Rule order, tier order, policy order and profile
// order inside programs are meaningful and are left alone. Finalize is idempotent.
func (s *Snapshot) Finalize() {
	slices.SortFunc(s.IPSets, func(a, b IPSet) int { return strings.Compare(a.ID, b.ID) })
	for i := range s.IPSets {
		s.IPSets[i].Members = SortMembers(s.IPSets[i].Members)
	}
	slices.SortFunc(s.Policies, func(a, b Policy) int { return strings.Compare(a.ID, b.ID) })
	for i := range s.Policies {
		p := &s.Policies[i]
		canonicalRules(p.Inbound)
		canonicalRules(p.Outbound)
		p.Hash = ""
		p.Hash = hashOf(p)
	}
	slices.SortFunc(s.Profiles, func(a, b Profile) int { return strings.Compare(a.ID, b.ID) })
	for i := range s.Profiles {
		p := &s.Profiles[i]
		canonicalRules(p.Inbound)
		canonicalRules(p.Outbound)
		p.Hash = ""
		p.Hash = hashOf(p)
	}
	slices.SortFunc(s.Endpoints, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		slices.SortFunc(e.Addrs, ComparePrefix)
		slices.SortFunc(e.AllowSpoofedSources, ComparePrefix)
		slices.SortFunc(e.Ports, func(a, b NamedPort) int {
			return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
		})
		e.Hash = ""
		e.Hash = hashOf(e)
	}
	slices.SortFunc(s.HostEndpoints, func(a, b HostEndpoint) int { return strings.Compare(a.ID, b.ID) })
	for i := range s.HostEndpoints {
		h := &s.HostEndpoints[i]
		slices.SortFunc(h.ExpectedIPs, netip.Addr.Compare)
		h.Hash = ""
		h.Hash = hashOf(h)
	}
	slices.SortFunc(s.Routes, func(a, b Route) int {
		return cmp.Or(ComparePrefix(a.Dst, b.Dst), strings.Compare(string(a.Type), string(b.Type)),
			strings.Compare(a.Node, b.Node), strings.Compare(a.Interface, b.Interface), a.Gateway.Compare(b.Gateway))
	})
	slices.SortFunc(s.VTEPs, func(a, b VTEP) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), a.TunnelIP.Compare(b.TunnelIP))
	})
	slices.SortFunc(s.Pools, func(a, b Pool) int { return ComparePrefix(a.CIDR, b.CIDR) })
	slices.SortFunc(s.Services, func(a, b Service) int { return strings.Compare(a.ID, b.ID) })
	for i := range s.Services {
		sv := &s.Services[i]
		slices.SortFunc(sv.Frontends, func(a, b Frontend) int {
			return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port),
				strings.Compare(a.Kind, b.Kind), strings.Compare(a.PortName, b.PortName))
		})
		slices.SortFunc(sv.Backends, func(a, b Backend) int {
			return cmp.Or(strings.Compare(a.PortName, b.PortName), a.Addr.Compare(b.Addr),
				cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
		})
		sv.Hash = ""
		sv.Hash = hashOf(sv)
	}
}

// canonicalRules sorts the OR-lists and AND-lists inside each rule; neither order carries
// meaning, so sorting them makes equal rules encode identically.
func canonicalRules(rules []Rule) {
	for i := range rules {
		r := &rules[i]
		for _, nets := range []*[]netip.Prefix{&r.SrcNets, &r.NotSrcNets, &r.DstNets, &r.NotDstNets} {
			*nets = slices.CompactFunc(sortedPrefixes(*nets), func(a, b netip.Prefix) bool { return a == b })
		}
		for _, ports := range []*[]PortRange{&r.SrcPorts, &r.NotSrcPorts, &r.DstPorts, &r.NotDstPorts} {
			slices.SortFunc(*ports, func(a, b PortRange) int { return cmp.Or(cmp.Compare(a.Min, b.Min), cmp.Compare(a.Max, b.Max)) })
			*ports = slices.Compact(*ports)
		}
		for _, ids := range []*[]string{&r.SrcIPSets, &r.NotSrcIPSets, &r.SrcNamedPortIPSets, &r.NotSrcNamedPortIPSets,
			&r.DstIPSets, &r.NotDstIPSets, &r.DstNamedPortIPSets, &r.NotDstNamedPortIPSets, &r.DstServiceIPSets} {
			slices.Sort(*ids)
			*ids = slices.Compact(*ids)
		}
	}
}

func sortedPrefixes(p []netip.Prefix) []netip.Prefix {
	slices.SortFunc(p, ComparePrefix)
	return p
}

// ComparePrefix orders prefixes by address (IPv4 before IPv6), then by length.
func ComparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// CompareMember orders IP set members by prefix, then protocol, then port.
func CompareMember(a, b Member) int {
	return cmp.Or(ComparePrefix(a.Prefix, b.Prefix), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}

// SortMembers sorts members in canonical order and drops duplicates, in place.
func SortMembers(m []Member) []Member {
	slices.SortFunc(m, CompareMember)
	return slices.Compact(m)
}

// hashOf is the content hash of v's canonical JSON. Callers clear v's own Hash first.
func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Snapshot types hold only JSON-safe values; this cannot happen.
		panic(fmt.Sprintf("snapshot: hashing %T: %v", v, err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:hashLen]
}

// JSON encodes the snapshot as canonical, indented JSON. Call Finalize first.
func (s *Snapshot) JSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("encode snapshot of node %q as JSON: %w", s.Node, err)
	}
	return buf.Bytes(), nil
}

// YAML encodes the snapshot as canonical YAML (keys sorted). Call Finalize first.
func (s *Snapshot) YAML() ([]byte, error) {
	j, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of node %q: %w", s.Node, err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of node %q as YAML: %w", s.Node, err)
	}
	return y, nil
}

// Decode reads a snapshot written by JSON or YAML (JSON is valid YAML).
func Decode(data []byte) (*Snapshot, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	var s Snapshot
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	return &s, nil
}

// IPSet returns the IP set with the given ID (the snapshot must be finalized).
func (s *Snapshot) IPSet(id string) (IPSet, bool) {
	i, ok := slices.BinarySearchFunc(s.IPSets, id, func(e IPSet, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return IPSet{}, false
	}
	return s.IPSets[i], true
}

// Policy returns the active policy with the given ID (the snapshot must be finalized).
func (s *Snapshot) Policy(id string) (Policy, bool) {
	i, ok := slices.BinarySearchFunc(s.Policies, id, func(e Policy, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return Policy{}, false
	}
	return s.Policies[i], true
}

// Profile returns the active profile with the given ID (the snapshot must be finalized).
func (s *Snapshot) Profile(id string) (Profile, bool) {
	i, ok := slices.BinarySearchFunc(s.Profiles, id, func(e Profile, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return Profile{}, false
	}
	return s.Profiles[i], true
}

// Endpoint returns the local workload endpoint with the given ID (the snapshot must be finalized).
func (s *Snapshot) Endpoint(id string) (Endpoint, bool) {
	i, ok := slices.BinarySearchFunc(s.Endpoints, id, func(e Endpoint, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return Endpoint{}, false
	}
	return s.Endpoints[i], true
}
