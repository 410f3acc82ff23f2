package derive

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Frontend kinds, as snapshot.Frontend.Kind spells them.
const (
	FrontendClusterIP    = "ClusterIP"
	FrontendNodePort     = "NodePort"
	FrontendExternalIP   = "ExternalIP"
	FrontendLoadBalancer = "LoadBalancer"
)

// NodePortRange is an inclusive range of ports NodePort frontends may use.
type NodePortRange struct{ Min, Max uint16 }

// defaultNodePortRanges is Felix's kubeNodePortRanges default (Kubernetes' own default).
var defaultNodePortRanges = []NodePortRange{{30000, 32767}}

// serviceEnv is what a service's frontends depend on beyond the service and its slices.
type serviceEnv struct {
	node      string
	nodeAddrs []netip.Addr // the node's own addresses (NodePort frontends), v4 then v6
	ranges    []NodePortRange
}

// readServiceEnv reads node's addresses and the effective kubeNodePortRanges ("node.NODE"
// over "default" over Felix's default; an invalid value leaves the layer below in force).
func readServiceEnv(v *store.View, node string) serviceEnv {
	env := serviceEnv{node: node, ranges: defaultNodePortRanges}
	if n, ok := store.Get[*model.Node](v, model.Key{Kind: model.KindNode, Name: node}); ok {
		for _, p := range []netip.Prefix{n.IPv4Address, n.IPv6Address} {
			if p.IsValid() {
				env.nodeAddrs = append(env.nodeAddrs, p.Addr())
			}
		}
	}
	for _, name := range []string{"default", "node." + node} {
		fc, ok := store.Get[*model.FelixConfiguration](v, model.Key{Kind: model.KindFelixConfiguration, Name: name})
		if !ok {
			continue
		}
		if val, ok := configValue(fc.Spec, "kubeNodePortRanges"); ok {
			if r, err := parseNodePortRanges(val); err == nil {
				env.ranges = r
			}
		}
	}
	return env
}

// parseNodePortRanges reads Felix's kubeNodePortRanges: a list of "MIN:MAX" (or "MIN-MAX")
// strings or single port numbers.
func parseNodePortRanges(val any) ([]NodePortRange, error) {
	list, ok := val.([]any)
	if !ok {
		return nil, fmt.Errorf("want a list of port ranges")
	}
	var out []NodePortRange
	for i, item := range list {
		var s string
		switch x := item.(type) {
		case string:
			s = x
		default:
			n, ok := configInt(x)
			if !ok {
				return nil, fmt.Errorf("[%d]: want a port or \"MIN:MAX\"", i)
			}
			s = strconv.FormatInt(n, 10)
		}
		lo, hi, found := strings.Cut(s, ":")
		if !found {
			lo, hi, found = strings.Cut(s, "-")
		}
		if !found {
			hi = lo
		}
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || a == 0 || a > b {
			return nil, fmt.Errorf("[%d]: %q is not a port range", i, s)
		}
		out = append(out, NodePortRange{uint16(a), uint16(b)})
	}
	return out, nil
}

func (env serviceEnv) nodePortAllowed(p uint16) bool {
	for _, r := range env.ranges {
		if p >= r.Min && p <= r.Max {
			return true
		}
	}
	return false
}

// ServiceID is the snapshot ID of a Kubernetes service: "NAMESPACE/NAME".
func ServiceID(namespace, name string) string { return namespace + "/" + name }

// Services derives every service's frontends and backends for node. Pure.
func Services(v *store.View, node string) []snapshot.Service {
	env := readServiceEnv(v, node)
	bySvc := map[string][]*model.EndpointSlice{}
	for es := range store.List[*model.EndpointSlice](v, model.KindEndpointSlice) {
		if es.ServiceName != "" {
			id := ServiceID(es.Key.Namespace, es.ServiceName)
			bySvc[id] = append(bySvc[id], es)
		}
	}
	var out []snapshot.Service
	for svc := range store.List[*model.Service](v, model.KindService) {
		id := ServiceID(svc.Key.Namespace, svc.Key.Name)
		if s, ok := service(svc, bySvc[id], env); ok {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b snapshot.Service) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// service derives one service; false when it has no frontend on this node (ExternalName,
// headless, or no ports). slices may come in any order.
func service(svc *model.Service, esl []*model.EndpointSlice, env serviceEnv) (snapshot.Service, bool) {
	if svc.Type == "ExternalName" || len(svc.Ports) == 0 {
		return snapshot.Service{}, false
	}
	s := snapshot.Service{ID: ServiceID(svc.Key.Namespace, svc.Key.Name)}
	if svc.SessionAffinityClientIP {
		s.AffinitySeconds = svc.SessionAffinityTimeoutSeconds
	}
	families := map[int]bool{}
	for _, a := range svc.ClusterIPs {
		families[addrFamily(a)] = true
	}
	add := func(a netip.Addr, p model.ServicePort, kind string, port uint16, local bool) {
		s.Frontends = append(s.Frontends, snapshot.Frontend{Addr: a.Unmap(), Protocol: p.Protocol, Port: port, Kind: kind, PortName: p.Name, LocalOnly: local})
	}
	for _, p := range svc.Ports {
		for _, a := range svc.ClusterIPs {
			add(a, p, FrontendClusterIP, p.Port, svc.InternalTrafficLocal)
		}
		for _, a := range svc.ExternalIPs {
			add(a, p, FrontendExternalIP, p.Port, svc.ExternalTrafficLocal)
		}
		for _, a := range svc.LoadBalancerIPs {
			add(a, p, FrontendLoadBalancer, p.Port, svc.ExternalTrafficLocal)
		}
		if (svc.Type == "NodePort" || svc.Type == "LoadBalancer") && p.NodePort != 0 && env.nodePortAllowed(p.NodePort) {
			for _, a := range env.nodeAddrs {
				if families[addrFamily(a)] {
					add(a, p, FrontendNodePort, p.NodePort, svc.ExternalTrafficLocal)
				}
			}
		}
	}
	if len(s.Frontends) == 0 {
		return snapshot.Service{}, false
	}
	// Backends: per service port, each slice's port of the same name and protocol gives the
	// target port of that slice's endpoints (the endpoint controller resolved named target
	// ports per pod). Endpoints neither ready nor serving are never used and are left out.
	for _, p := range svc.Ports {
		for _, es := range esl {
			i := slices.IndexFunc(es.Ports, func(sp model.EndpointSlicePort) bool {
				return sp.Name == p.Name && sp.Protocol == p.Protocol
			})
			if i < 0 || es.Ports[i].Port == 0 {
				continue
			}
			port := es.Ports[i].Port
			for _, ep := range es.Endpoints {
				if len(ep.Addresses) == 0 || !ep.Ready && !ep.Serving {
					continue
				}
				s.Backends = append(s.Backends, snapshot.Backend{
					Addr: ep.Addresses[0].Unmap(), Protocol: p.Protocol, Port: port, PortName: p.Name,
					Node: ep.NodeName, Ready: ep.Ready, Serving: ep.Serving,
				})
			}
		}
	}
	slices.SortFunc(s.Frontends, func(a, b snapshot.Frontend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port),
			strings.Compare(a.Kind, b.Kind), strings.Compare(a.PortName, b.PortName))
	})
	s.Frontends = slices.Compact(s.Frontends)
	// The same endpoint in two slices (during a slice hand-over) counts once, with the best
	// conditions any copy reports.
	slices.SortFunc(s.Backends, func(a, b snapshot.Backend) int {
		return cmp.Or(compareBackendKey(a, b), -cmpBool(a.Ready, b.Ready), -cmpBool(a.Serving, b.Serving), strings.Compare(a.Node, b.Node))
	})
	s.Backends = slices.CompactFunc(s.Backends, func(a, b snapshot.Backend) bool { return compareBackendKey(a, b) == 0 })
	tmp := snapshot.Snapshot{Services: []snapshot.Service{s}}
	tmp.Finalize()
	return tmp.Services[0], true
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

func addrFamily(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// compareBackendKey orders backends as snapshot.Finalize does, ignoring the flags.
func compareBackendKey(a, b snapshot.Backend) int {
	return cmp.Or(strings.Compare(a.PortName, b.PortName), a.Addr.Compare(b.Addr),
		cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}
