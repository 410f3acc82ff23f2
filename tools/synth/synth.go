package synth

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
)

// LocalNode is the node whose snapshot benchmarks derive; the rest of the cluster is spread
// over RemoteNodes other nodes.
const LocalNode = "local"

// Spec describes a synthetic cluster.
type Spec struct {
	Seed              uint64
	Endpoints         int // workload endpoints in the whole cluster
	LocalEndpoints    int // of which on LocalNode
	RemoteNodes       int // nodes other than LocalNode
	Namespaces        int
	LabelKeys         int // distinct label keys label0..labelN-1 endpoints draw from
	LabelsPerEndpoint int
	Policies          int // GlobalNetworkPolicies selecting has(labelN), each with RulesPerPolicy ingress rules
	RulesPerPolicy    int // ingress rules with source selector has(labelM)
	NetworkSets       int // GlobalNetworkSets, each referenced by its own policy
	NetsPerSet        int
	Tenants           int // isolated tenants: a namespace, a policy and TenantEndpoints endpoints each
	TenantEndpoints   int
}

// PolicyScale is scenario (a): 250k endpoints (200 local), 100 namespaces, 10k policies each
// selecting has(labelN) with 5 ingress rules whose sources are has(labelM).
func PolicyScale() Spec {
	return Spec{Seed: 1, Endpoints: 250_000, LocalEndpoints: 200, RemoteNodes: 999, Namespaces: 100,
		LabelKeys: 10_000, LabelsPerEndpoint: 5, Policies: 10_000, RulesPerPolicy: 5}
}

// NetworkSetScale is scenario (b): 10k endpoints (200 local) and n network sets, each
// referenced by its own policy.
func NetworkSetScale(n int) Spec {
	return Spec{Seed: 2, Endpoints: 10_000, LocalEndpoints: 200, RemoteNodes: 49, Namespaces: 10,
		LabelKeys: 1_000, LabelsPerEndpoint: 3, NetworkSets: n, NetsPerSet: 10}
}

// TenantScale is scenario (c): n isolated tenants, a namespace and a policy each (and two
// endpoints per tenant; 200 of all endpoints are local).
func TenantScale(n int) Spec {
	return Spec{Seed: 3, LocalEndpoints: 200, RemoteNodes: 99, Tenants: n, TenantEndpoints: 2}
}

// Generate builds the cluster's objects: nodes, namespace profiles, endpoints, policies,
// network sets and a default FelixConfiguration.
func Generate(s Spec) []model.Object {
	g := &gen{s: s, rng: rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15)),
		nodeBlock: map[string]uint32{}, nodeUsed: map[string]uint32{}}
	g.nodes()
	g.namespaces()
	g.endpoints()
	g.policies()
	g.networkSets()
	g.tenants()
	return g.objs
}

type gen struct {
	s         Spec
	rng       *rand.Rand
	objs      []model.Object
	nextBlock uint32            // next /26 block of 10.0.0.0/8 to hand out
	nodeBlock map[string]uint32 // node -> its current block
	nodeUsed  map[string]uint32 // node -> addresses used in its current block
}

func meta(kind model.Kind, ns, name string) model.Meta {
	return model.Meta{Key: model.Key{Kind: kind, Namespace: ns, Name: name}, Source: model.Source{Name: "synth", File: "synth"}}
}

func (g *gen) nodeName(i int) string {
	if i == 0 {
		return LocalNode
	}
	return fmt.Sprintf("node-%d", i)
}

func (g *gen) nodes() {
	for i := 0; i <= g.s.RemoteNodes; i++ {
		ip := netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})
		g.objs = append(g.objs, &model.Node{
			Meta:            meta(model.KindNode, "", g.nodeName(i)),
			IPv4Address:     netip.PrefixFrom(ip, 16),
			VXLANTunnelAddr: netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}),
			VXLANTunnelMAC:  fmt.Sprintf("66:00:00:00:%02x:%02x", byte(i>>8), byte(i)),
		})
	}
	g.objs = append(g.objs, &model.IPPool{
		Meta: meta(model.KindIPPool, "", "default-ipv4-ippool"), CIDR: netip.MustParsePrefix("10.0.0.0/8"),
		VXLANMode: model.EncapAlways, IPIPMode: model.EncapNever, NATOutgoing: true, BlockSize: 26,
	})
	g.objs = append(g.objs, &model.FelixConfiguration{Meta: meta(model.KindFelixConfiguration, "", "default"), Spec: map[string]any{}})
}

func (g *gen) nsName(i int) string { return fmt.Sprintf("ns-%d", i) }

func (g *gen) namespaces() {
	for i := 0; i < g.s.Namespaces; i++ {
		g.objs = append(g.objs, nsProfile(g.nsName(i)))
	}
}

func nsProfile(ns string) *model.Profile {
	return &model.Profile{
		Meta:          meta(model.KindProfile, "", "kns."+ns),
		LabelsToApply: model.Labels{"pcns.projectcalico.org/name": ns},
		Ingress:       []model.Rule{{Action: model.ActionAllow}},
		Egress:        []model.Rule{{Action: model.ActionAllow}},
	}
}

// BlockSize is the prefix length of the IPAM blocks synth allocates pod addresses from.
const BlockSize = 26

// addr allocates a pod address on node from the node's IPAM block, as Calico IPAM does:
// each node gets /26 blocks of 10.0.0.0/8 with affinity to it, a new one when one is full.
func (g *gen) addr(node string) netip.Prefix {
	const perBlock = 1 << (32 - BlockSize)
	used, ok := g.nodeUsed[node]
	if !ok || used == perBlock {
		g.nodeBlock[node] = g.nextBlock
		g.nodeUsed[node] = 0
		used = 0
		base := 10<<24 | g.nextBlock*perBlock
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(base >> 24), byte(base >> 16), byte(base >> 8), byte(base)}), BlockSize)
		g.objs = append(g.objs, &model.IPAMBlock{
			Meta: meta(model.KindIPAMBlock, "", fmt.Sprintf("%d-%d-%d-%d-%d", base>>24, byte(base>>16), byte(base>>8), byte(base), BlockSize)),
			CIDR: cidr, AffinityNode: node,
		})
		g.nextBlock++
	}
	g.nodeUsed[node] = used + 1
	v := 10<<24 | g.nodeBlock[node]*perBlock + used
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 32)
}

// node places endpoint i: the first LocalEndpoints are local, the rest spread round-robin.
func (g *gen) node(i int) string {
	if i < g.s.LocalEndpoints || g.s.RemoteNodes == 0 {
		return LocalNode
	}
	return g.nodeName(1 + i%g.s.RemoteNodes)
}

// Endpoint builds one workload endpoint; exported so benchmarks can add and remove endpoints.
func Endpoint(ns, pod, node string, addr netip.Prefix, labels model.Labels) *model.WorkloadEndpoint {
	l := model.Labels{"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": "k8s"}
	for k, v := range labels {
		l[k] = v
	}
	return &model.WorkloadEndpoint{
		Meta:          meta(model.KindWorkloadEndpoint, ns, node+"-k8s-"+pod+"-eth0"),
		Node:          node,
		Orchestrator:  "k8s",
		Workload:      pod,
		Endpoint:      "eth0",
		InterfaceName: fmt.Sprintf("cali%011x", uint64(len(pod))<<32^uint64(hashString(ns+"."+pod))),
		IPNetworks:    []netip.Prefix{addr},
		Profiles:      []string{"kns." + ns},
		Labels:        l,
		Ports:         []model.NamedPort{{Name: "http", Protocol: model.ProtoTCP, Port: 8080}},
	}
}

func hashString(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return h
}

func (g *gen) endpoints() {
	for i := 0; i < g.s.Endpoints; i++ {
		labels := model.Labels{}
		for j := 0; j < g.s.LabelsPerEndpoint && g.s.LabelKeys > 0; j++ {
			labels[fmt.Sprintf("label%d", g.rng.IntN(g.s.LabelKeys))] = "true"
		}
		ns := g.nsName(i % max(g.s.Namespaces, 1))
		node := g.node(i)
		g.objs = append(g.objs, Endpoint(ns, fmt.Sprintf("pod-%d", i), node, g.addr(node), labels))
	}
}

func (g *gen) policies() {
	for i := 0; i < g.s.Policies; i++ {
		p := &model.Policy{
			Meta:     meta(model.KindGlobalNetworkPolicy, "", fmt.Sprintf("policy-%d", i)),
			Tier:     "default",
			Order:    ptr(float64(i % 100)),
			Selector: selector.MustParse(fmt.Sprintf("has(label%d)", i%g.s.LabelKeys)),
			Types:    []model.PolicyType{model.PolicyTypeIngress},
		}
		for r := 0; r < g.s.RulesPerPolicy; r++ {
			src := selector.MustParse(fmt.Sprintf("has(label%d)", g.rng.IntN(g.s.LabelKeys)))
			p.Ingress = append(p.Ingress, model.Rule{
				Action: model.ActionAllow, Protocol: ptr(model.ProtoTCP),
				Source:      model.EntityRule{Selector: src},
				Destination: model.EntityRule{Ports: []model.Port{{Min: uint16(1000 + r), Max: uint16(1000 + r)}}},
			})
		}
		g.objs = append(g.objs, p)
	}
}

func (g *gen) networkSets() {
	for i := 0; i < g.s.NetworkSets; i++ {
		name := fmt.Sprintf("netset-%d", i)
		ns := &model.NetworkSet{Meta: meta(model.KindGlobalNetworkSet, "", name), Labels: model.Labels{"netset": name}}
		for j := 0; j < g.s.NetsPerSet; j++ {
			v := uint32(i*g.s.NetsPerSet+j) << 8
			ns.Nets = append(ns.Nets, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(v >> 16), byte(v >> 8), 0}), 24))
		}
		g.objs = append(g.objs, ns)
		g.objs = append(g.objs, &model.Policy{
			Meta:     meta(model.KindGlobalNetworkPolicy, "", "allow-"+name),
			Tier:     "default",
			Order:    ptr(float64(100)),
			Selector: selector.MustParse(fmt.Sprintf("has(label%d)", i%max(g.s.LabelKeys, 1))),
			Types:    []model.PolicyType{model.PolicyTypeEgress},
			Egress: []model.Rule{{Action: model.ActionAllow,
				Destination: model.EntityRule{Selector: selector.MustParse(fmt.Sprintf("netset == '%s'", name))}}},
		})
	}
}

func (g *gen) tenants() {
	local := 0
	for t := 0; t < g.s.Tenants; t++ {
		ns := fmt.Sprintf("tenant-%d", t)
		g.objs = append(g.objs, nsProfile(ns))
		for e := 0; e < g.s.TenantEndpoints; e++ {
			node := g.nodeName(1 + (t*g.s.TenantEndpoints+e)%max(g.s.RemoteNodes, 1))
			if local < g.s.LocalEndpoints && (t*g.s.TenantEndpoints+e)%max(1, g.s.Tenants*g.s.TenantEndpoints/max(g.s.LocalEndpoints, 1)) == 0 {
				node, local = LocalNode, local+1
			}
			g.objs = append(g.objs, Endpoint(ns, fmt.Sprintf("pod-%d", e), node, g.addr(node), model.Labels{"app": "web"}))
		}
		// The namespace isolates itself: only its own pods may connect.
		g.objs = append(g.objs, &model.Policy{
			Meta:     meta(model.KindNetworkPolicy, ns, "isolate"),
			Tier:     "default",
			Order:    ptr(float64(1000)),
			Selector: selector.MustParse(fmt.Sprintf("projectcalico.org/namespace == '%s'", ns)),
			Types:    []model.PolicyType{model.PolicyTypeIngress},
			Ingress: []model.Rule{{Action: model.ActionAllow,
				Source: model.EntityRule{Selector: selector.MustParse(fmt.Sprintf("projectcalico.org/namespace == '%s'", ns))}}},
		})
	}
}

func ptr[T any](v T) *T { return &v }
