package render

import (
	"fmt"
	"net/netip"

	"github.com/felis-dev/felis/snapshot"
)

// Services are rendered as kube-proxy's nftables mode does it, inside the felis table so that
// one transaction changes policy and load balancing together and the same chain-hash diff
// applies: static base chains at the dstnat hooks look every packet's destination up in a
// frontend verdict map; each service port has a chain that picks an endpoint chain at random
// (after an affinity check) with a cascade of random draws, and each endpoint chain DNATs. DNAT happens at priority -100,
// after the preDNAT policies (-150) and before every filter chain, so policy sees the chosen
// backend, as in Calico.

// MasqMark is the packet-mark bit that asks nat-postrouting to masquerade: set for hairpin
// traffic (a backend reaching itself through its service) and for traffic arriving on an
// external frontend whose service does not keep the client's address (externalTrafficPolicy
// Cluster), so replies from a backend on another node come back through this one.
const MasqMark uint32 = 0x02000000

// PriorityDstNAT is the nat hook priority of the service dispatch chains.
const PriorityDstNAT = -100

// MapServices is the stem of the frontend verdict maps svc-4 and svc-6.
const MapServices = "svc"

// ServiceMap is the frontend verdict map of one family.
func ServiceMap(family int) string { return fmt.Sprintf("%s-%d", MapServices, family) }

// servicePort identifies one service port of one family: the unit that owns a service chain.
type servicePort struct {
	name     string // chain name stem: svc ID / port name / protocol / family
	portName string
	proto    uint8
	family   int
}

// services renders every service's chains and map elements.
func (b *builder) services() error {
	for _, fam := range []int{4, 6} {
		b.maps[ServiceMap(fam)] = &Map{Name: ServiceMap(fam), Family: fam}
	}
	taken := map[MapElement]string{} // frontend key -> the service that has it
	for i := range b.snap.Services {
		s := &b.snap.Services[i]
		made := map[string]bool{} // chains this service already rendered
		for _, f := range s.Frontends {
			if !f.Addr.IsValid() || f.Port == 0 {
				return fmt.Errorf("service %s: frontend %s/%d/%d: invalid address or port", s.ID, f.Addr, f.Protocol, f.Port)
			}
			fam := family(f.Addr)
			sp := servicePort{name: safeName(fmt.Sprintf("%s/%s/%s/%d", s.ID, f.PortName, protoName(f.Protocol), fam)),
				portName: f.PortName, proto: f.Protocol, family: fam}
			target, err := b.serviceChains(s, f, sp, made)
			if err != nil {
				return err
			}
			key := MapElement{Addr: f.Addr.Unmap(), Proto: f.Protocol, Port: f.Port}
			if owner, dup := taken[key]; dup {
				// Two frontends on one address, protocol and port: the first service (by ID)
				// keeps it, as the map can hold one verdict per key.
				_ = owner
				continue
			}
			taken[key] = s.ID
			key.Chain = target
			m := b.maps[ServiceMap(fam)]
			m.Elements = append(m.Elements, key)
		}
	}
	return nil
}

// serviceChains renders the chains a frontend needs and returns the one its map element
// jumps to: the cluster-wide chain, the local-endpoints chain, or (external frontends that
// do not keep the client address) a chain that marks for masquerade first.
func (b *builder) serviceChains(s *snapshot.Service, f snapshot.Frontend, sp servicePort, made map[string]bool) (string, error) {
	external := f.Kind != "ClusterIP"
	lb := "svc-" + sp.name
	if f.LocalOnly {
		lb += "-local"
	}
	if !made[lb] {
		made[lb] = true
		if err := b.balanceChain(s, f, sp, lb); err != nil {
			return "", err
		}
	}
	if !external || f.LocalOnly {
		return lb, nil
	}
	ext := "svc-" + sp.name + "-ext"
	if !made[ext] {
		made[ext] = true
		if err := b.addChain(Chain{Name: ext, Level: LevelEndpoint, Rules: []Rule{
			{Stmts: []Stmt{MarkSet{Bits: MasqMark}}},
			{Stmts: []Stmt{Verdict{Kind: "goto", Chain: lb}}},
		}}); err != nil {
			return "", err
		}
	}
	return ext, nil
}

// balanceChain renders a service port's load-balancing chain over the frontend's backends,
// and their endpoint chains.
func (b *builder) balanceChain(s *snapshot.Service, f snapshot.Frontend, sp servicePort, name string) error {
	backends := s.BackendsFor(f, b.snap.Node)
	c := Chain{Name: name, Level: LevelTier}
	if len(backends) == 0 {
		// kube-proxy rejects; felis drops (no reject statement in its vocabulary yet).
		c.Rules = []Rule{{Stmts: []Stmt{Drop}}}
		return b.addChain(c)
	}
	chains := make([]string, len(backends))
	for i, be := range backends {
		ep, err := b.endpointChain(s, sp, be)
		if err != nil {
			return err
		}
		chains[i] = ep
		if s.AffinitySeconds > 0 {
			c.Rules = append(c.Rules, Rule{Stmts: []Stmt{
				AddrSet{Family: sp.family, Set: affinitySet(ep, s.AffinitySeconds)},
				Verdict{Kind: "goto", Chain: ep},
			}})
		}
	}
	n := len(chains)
	for i, ep := range chains[:n-1] {
		c.Rules = append(c.Rules, Rule{Stmts: []Stmt{RandomOneIn{Mod: uint32(n - i)}, Verdict{Kind: "goto", Chain: ep}}})
	}
	c.Rules = append(c.Rules, Rule{Stmts: []Stmt{Verdict{Kind: "goto", Chain: chains[n-1]}}})
	return b.addChain(c)
}

func affinitySet(endpointChain string, seconds int32) string {
	return safeName(fmt.Sprintf("aff-%d-%s", seconds, endpointChain))
}

// endpointChain renders (once) the chain that sends a service port's packet to one backend:
// hairpin masquerade mark, affinity record, DNAT.
func (b *builder) endpointChain(s *snapshot.Service, sp servicePort, be snapshot.Backend) (string, error) {
	if !be.Addr.IsValid() || be.Port == 0 {
		return "", fmt.Errorf("service %s: backend %s:%d: invalid address or port", s.ID, be.Addr, be.Port)
	}
	addr := be.Addr.Unmap()
	name := safeName(fmt.Sprintf("sep-%s/%s", sp.name, netip.AddrPortFrom(addr, be.Port)))
	if _, done := b.chains[name]; done {
		return name, nil
	}
	c := Chain{Name: name, Level: LevelPolicy, Rules: []Rule{
		{Stmts: []Stmt{AddrList{Family: sp.family, Prefixes: []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}}, MarkSet{Bits: MasqMark}}},
	}}
	if s.AffinitySeconds > 0 {
		set := affinitySet(name, s.AffinitySeconds)
		b.affinity = append(b.affinity, Set{Name: set, Family: sp.family, Timeout: int(s.AffinitySeconds)})
		c.Rules = append(c.Rules, Rule{Stmts: []Stmt{SetUpdate{Family: sp.family, Set: set}}})
	}
	c.Rules = append(c.Rules, Rule{Stmts: []Stmt{L4Proto{Proto: sp.proto}, DNAT{Addr: addr, Port: be.Port}}})
	return name, b.addChain(c)
}

// serviceBaseChains are the static dispatch chains at the dstnat hooks: packets from
// workloads and from outside (prerouting) and from the host itself (output).
func serviceBaseChains() []Chain {
	dispatch := []Rule{
		{Stmts: []Stmt{NfProto{4}, FrontendVmap{Family: 4, Map: ServiceMap(4)}}},
		{Stmts: []Stmt{NfProto{6}, FrontendVmap{Family: 6, Map: ServiceMap(6)}}},
	}
	return []Chain{
		{Name: "nat-prerouting", Base: &BaseChain{Type: "nat", Hook: "prerouting", Priority: PriorityDstNAT}, Rules: dispatch},
		{Name: "nat-output", Base: &BaseChain{Type: "nat", Hook: "output", Priority: PriorityDstNAT}, Rules: dispatch},
	}
}
