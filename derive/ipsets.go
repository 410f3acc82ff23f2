package derive

import (
	"net/netip"
	"slices"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// ipSetMembers computes one IP set's members from the given holders (selector and
// named-port sets) or from the service's EndpointSlices (service sets). The result is sorted
// and deduplicated. Pure: a function of the definition and its inputs. It evaluates every
// holder's flattened labels: the reference the indexed path (indexedMembers) is tested
// against.
func ipSetMembers(d ipSetDef, hs []holder, slices []*model.EndpointSlice) []snapshot.Member {
	if d.Kind == setService {
		return snapshot.SortMembers(serviceMembers(d, slices))
	}
	var out []snapshot.Member
	for i := range hs {
		if d.Selector.EvaluateLabels(hs[i].src.labels(nil)) {
			out = holderMembers(d, &hs[i], out)
		}
	}
	return snapshot.SortMembers(out)
}

// indexedMembers is ipSetMembers over a whole holder set, evaluating the selector only on
// the candidates its label restrictions allow.
func indexedMembers(d ipSetDef, hs *holderSet, slices []*model.EndpointSlice) []snapshot.Member {
	if d.Kind == setService {
		return snapshot.SortMembers(serviceMembers(d, slices))
	}
	c := hs.index.candidates(d.Selector)
	var out []snapshot.Member
	if n := c.size(); c.exact && d.Kind == setSelector && n > 0 {
		out = make([]snapshot.Member, 0, n) // one address each, typically
	}
	c.each(func(i int) {
		h := &hs.items[i]
		if d.Kind == setNamedPort && len(h.ports) == 0 {
			return // contributes nothing: skip the evaluation
		}
		if c.exact || hs.matches(d.Selector, i) {
			out = holderMembers(d, h, out)
		}
	})
	return sortMembers(out)
}

// holderMembers appends what one holder whose labels the set's selector matches contributes
// to a selector or named-port set.
func holderMembers(d ipSetDef, h *holder, out []snapshot.Member) []snapshot.Member {
	switch d.Kind {
	case setSelector:
		// A selector set holds the addresses of every matching endpoint and the networks of
		// every matching network set (Felix's hash:net sets).
		for _, n := range h.nets {
			out = append(out, snapshot.Member{Prefix: n.Masked()})
		}
	case setNamedPort:
		// A named-port set is the cross product of each matching endpoint's addresses with
		// its ports of that name and protocol (an unspecified endpoint protocol means TCP).
		for _, p := range h.ports {
			proto := p.Protocol
			if proto == 0 {
				proto = model.ProtoTCP
			}
			if p.Name != d.PortName || proto != d.Protocol {
				continue
			}
			for _, n := range h.nets {
				a := n.Addr()
				out = append(out, snapshot.Member{Prefix: netip.PrefixFrom(a, a.BitLen()), Protocol: proto, Port: p.Port})
			}
		}
	}
	return out
}

// serviceMembers lists a service's endpoint addresses, crossed with its slice ports when the
// set carries ports (ports without a number contribute nothing; a missing protocol is TCP).
// Like Felix, readiness is not considered.
func serviceMembers(d ipSetDef, slices []*model.EndpointSlice) []snapshot.Member {
	var out []snapshot.Member
	for _, es := range slices {
		if es.Key.Namespace+"/"+es.ServiceName != d.Service {
			continue
		}
		for _, ep := range es.Endpoints {
			for _, a := range ep.Addresses {
				pfx := netip.PrefixFrom(a, a.BitLen())
				if !d.Ports {
					out = append(out, snapshot.Member{Prefix: pfx})
					continue
				}
				for _, p := range es.Ports {
					if p.Port == 0 {
						continue
					}
					proto := p.Protocol
					if proto == 0 {
						proto = model.ProtoTCP
					}
					out = append(out, snapshot.Member{Prefix: pfx, Protocol: proto, Port: p.Port})
				}
			}
		}
	}
	return out
}

// endpointSlices lists every EndpointSlice, or nil when no service set needs them.
func endpointSlices(v *store.View, defs map[string]ipSetDef) []*model.EndpointSlice {
	need := false
	for _, d := range defs {
		need = need || d.Kind == setService
	}
	if !need {
		return nil
	}
	var out []*model.EndpointSlice
	for es := range store.List[*model.EndpointSlice](v, model.KindEndpointSlice) {
		out = append(out, es)
	}
	return out
}

// sortMembers is snapshot.SortMembers, faster for the common IPv4 members: each packs into
// one integer whose order is the canonical order (IPv4 before IPv6, then address, prefix
// length, protocol, port), sorted without a comparison callback.
func sortMembers(ms []snapshot.Member) []snapshot.Member {
	if len(ms) < 2 {
		return ms
	}
	keys := make([]uint64, 0, len(ms))
	var other []snapshot.Member // IPv6 and invalid (the zero address sorts before IPv4)
	for _, m := range ms {
		a := m.Prefix.Addr()
		if !a.Is4() {
			other = append(other, m)
			continue
		}
		b := a.As4()
		keys = append(keys, uint64(b[0])<<56|uint64(b[1])<<48|uint64(b[2])<<40|uint64(b[3])<<32|
			uint64(m.Prefix.Bits())<<24|uint64(m.Protocol)<<16|uint64(m.Port))
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	other = snapshot.SortMembers(other)
	invalid := 0
	for invalid < len(other) && !other[invalid].Prefix.Addr().IsValid() {
		invalid++
	}
	out := append(ms[:0], other[:invalid]...)
	for _, k := range keys {
		a := netip.AddrFrom4([4]byte{byte(k >> 56), byte(k >> 48), byte(k >> 40), byte(k >> 32)})
		out = append(out, snapshot.Member{Prefix: netip.PrefixFrom(a, int(k>>24&0xff)), Protocol: uint8(k >> 16), Port: uint16(k)})
	}
	return append(out, other[invalid:]...)
}
