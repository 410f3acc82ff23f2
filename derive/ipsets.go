package derive

import (
	"net/netip"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// ipSetMembers computes one IP set's members from every holder in the cluster (selector and
// named-port sets) or from the service's EndpointSlices (service sets). The result is sorted
// and deduplicated. Pure: a function of the definition and its inputs.
func ipSetMembers(d ipSetDef, hs []holder, slices []*model.EndpointSlice) []snapshot.Member {
	var out []snapshot.Member
	switch d.Kind {
	case setSelector:
		// A selector set holds the addresses of every matching endpoint and the networks of
		// every matching network set (Felix's hash:net sets).
		for i := range hs {
			if d.Selector.EvaluateLabels(hs[i].labels) {
				for _, n := range hs[i].nets {
					out = append(out, snapshot.Member{Prefix: n.Masked()})
				}
			}
		}
	case setNamedPort:
		// A named-port set is the cross product of each matching endpoint's addresses with
		// its ports of that name and protocol (an unspecified endpoint protocol means TCP).
		for i := range hs {
			h := &hs[i]
			if len(h.ports) == 0 || !d.Selector.EvaluateLabels(h.labels) {
				continue
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
	case setService:
		out = serviceMembers(d, slices)
	}
	return snapshot.SortMembers(out)
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
