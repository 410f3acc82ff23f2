package derive

import (
	"net/netip"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// ipSetMembers computes one IP set's members from the given holders (selector and
// named-port sets) or from the service's EndpointSlices (service sets). The result is sorted
// and deduplicated. Pure: a function of the definition and its inputs.
func ipSetMembers(d ipSetDef, hs []holder, slices []*model.EndpointSlice) []snapshot.Member {
	if d.Kind == setService {
		return snapshot.SortMembers(serviceMembers(d, slices))
	}
	var out []snapshot.Member
	for i := range hs {
		out = holderMembers(d, &hs[i], out)
	}
	return snapshot.SortMembers(out)
}

// indexedMembers is ipSetMembers over a whole holder set, evaluating the selector only on
// the candidates its label restrictions allow.
func indexedMembers(d ipSetDef, hs *holderSet, slices []*model.EndpointSlice) []snapshot.Member {
	if d.Kind == setService {
		return snapshot.SortMembers(serviceMembers(d, slices))
	}
	var out []snapshot.Member
	hs.index.candidates(d.Selector, func(i int) { out = holderMembers(d, &hs.items[i], out) })
	return snapshot.SortMembers(out)
}

// holderMembers appends what one holder contributes to a selector or named-port set.
func holderMembers(d ipSetDef, h *holder, out []snapshot.Member) []snapshot.Member {
	switch d.Kind {
	case setSelector:
		// A selector set holds the addresses of every matching endpoint and the networks of
		// every matching network set (Felix's hash:net sets).
		if d.Selector.EvaluateLabels(h.labels) {
			for _, n := range h.nets {
				out = append(out, snapshot.Member{Prefix: n.Masked()})
			}
		}
	case setNamedPort:
		// A named-port set is the cross product of each matching endpoint's addresses with
		// its ports of that name and protocol (an unspecified endpoint protocol means TCP).
		if len(h.ports) == 0 || !d.Selector.EvaluateLabels(h.labels) {
			return out
		}
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
