package render

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"

	"github.com/felis-dev/felis/snapshot"
)

// Frontend and backend flags: the contract with bpf-programs/nat.h.
const (
	FrontendAffinity uint32 = 1 // ClientIP session affinity
	FrontendSNAT     uint32 = 2 // from outside to a remote backend: the node's address becomes the source
	FrontendReject   uint32 = 4 // no backend: new flows get an ICMP port unreachable (else they are dropped)
	// FrontendLocal marks an external frontend with externalTrafficPolicy Local: clients from
	// outside the node get the group's first Count backends (the local ones), a local pod
	// the Cluster backends after them (kube-proxy's short-circuit).
	FrontendLocal uint32 = 8
	// FrontendNode marks a frontend on a node address (a NodePort, or an external or
	// load-balancer IP equal to Config.NodeIPv4/6): a pod's replies from it are forwarded by
	// fib lookup, as the stack drops packets arriving with a local source.
	FrontendNode uint32 = 16
	BackendLocal uint8  = 1 // the backend runs on this node
)

// FrontendKey is one service frontend (struct fe_key in nat.h).
type FrontendKey struct {
	Family   uint8 // 4 or 6
	Protocol uint8
	Port     uint16
	Addr     [16]byte
}

// String renders the key for op logs: address, port and protocol.
func (k FrontendKey) String() string {
	return netip.AddrPortFrom(addrOf(k.Family, k.Addr), k.Port).String() + "/" + strconv.Itoa(int(k.Protocol))
}

// Frontend is what a frontend balances over (struct fe_val in nat.h): a backend group and
// its size (0: no backend, packets are dropped), flags, the affinity timeout in seconds, the
// number of cluster-wide backends a FrontendLocal frontend's group holds after its Count
// local ones, and the address external traffic to a remote backend is SNATed to.
type Frontend struct {
	Group    uint64
	Count    uint32
	Flags    uint32
	Affinity uint32
	Cluster  uint32
	SNAT     [16]byte
}

// BackendKey is one backend of a group (struct be_key in nat.h).
type BackendKey struct {
	Group uint64
	Index uint32
}

// String renders the key for op logs.
func (k BackendKey) String() string { return fmt.Sprintf("%016x/%d", k.Group, k.Index) }

// Backend is a backend's address and port (struct be_val in nat.h).
type Backend struct {
	Addr   [16]byte
	Port   uint16
	Family uint8
	Flags  uint8
}

// ServiceEntries are the map entries one service renders to. Frontends of one address,
// protocol and port claimed by two services go to the first by ID (as in the nftables
// renderer); that is decided across services, not here.
type ServiceEntries struct {
	Frontends map[FrontendKey]Frontend
	Backends  map[BackendKey]Backend
}

// NodeAddrs are the node's addresses external traffic to a remote backend is SNATed to.
type NodeAddrs struct{ V4, V6 netip.Addr }

// NodeAddrsOf reads them from a snapshot's configuration.
func NodeAddrsOf(s *snapshot.Snapshot) NodeAddrs {
	return NodeAddrs{V4: s.Config.NodeIPv4.Addr(), V6: s.Config.NodeIPv6.Addr()}
}

// Service renders one service for node: per frontend a backend group of the backends
// snapshot.BackendsFor picks (the nftables renderer's choice), identified by a 64-bit hash
// of (service, port name, protocol, family, local-only), so IDs survive restarts. An
// external frontend with externalTrafficPolicy Local gets a group of its own holding the
// local choice, then the cluster-wide one (FrontendLocal, Cluster): outside clients get the
// first, local pods the second, as kube-proxy short-circuits them. SCTP frontends are not
// rendered (a port rewrite would need the packet's CRC32c recomputed): the warning says so.
func Service(s *snapshot.Service, node string, addrs NodeAddrs) (ServiceEntries, []string, error) {
	out := ServiceEntries{Frontends: map[FrontendKey]Frontend{}, Backends: map[BackendKey]Backend{}}
	var warns []string
	type sizes struct{ local, cluster uint32 }
	groups := map[uint64]sizes{} // group → backend counts, rendered once
	for _, f := range s.Frontends {
		if !f.Addr.IsValid() || f.Port == 0 {
			return ServiceEntries{}, nil, fmt.Errorf("service %s: frontend %s/%d/%d: invalid address or port", s.ID, f.Addr, f.Protocol, f.Port)
		}
		if f.Protocol != 6 && f.Protocol != 17 {
			warns = append(warns, fmt.Sprintf("service %s: frontend %s port %d protocol %d: only TCP and UDP are load-balanced by the bpf dataplane", s.ID, f.Addr, f.Port, f.Protocol))
			continue
		}
		addr := f.Addr.Unmap()
		fam := uint8(6)
		if addr.Is4() {
			fam = 4
		}
		external := f.Kind != "ClusterIP"
		cluster := f
		cluster.LocalOnly = false
		name := fmt.Sprintf("%s/%s/%d/%d/%t", s.ID, f.PortName, f.Protocol, fam, f.LocalOnly)
		if external && f.LocalOnly {
			name += "/external"
		}
		group := groupID(name)
		n, ok := groups[group]
		if !ok {
			var index uint32
			add := func(bs []snapshot.Backend) (uint32, error) {
				for _, b := range bs {
					if !b.Addr.IsValid() || b.Port == 0 {
						return 0, fmt.Errorf("service %s: backend %s:%d: invalid address or port", s.ID, b.Addr, b.Port)
					}
					be := Backend{Addr: addrBytes(b.Addr.Unmap()), Port: b.Port, Family: fam}
					if b.Node == node {
						be.Flags |= BackendLocal
					}
					out.Backends[BackendKey{Group: group, Index: index}] = be
					index++
				}
				return uint32(len(bs)), nil
			}
			var err error
			if n.local, err = add(s.BackendsFor(f, node)); err != nil {
				return ServiceEntries{}, nil, err
			}
			if external && f.LocalOnly {
				if n.cluster, err = add(s.BackendsFor(cluster, node)); err != nil {
					return ServiceEntries{}, nil, err
				}
			}
			groups[group] = n
		}
		fe := Frontend{Group: group, Count: n.local}
		if external && f.LocalOnly {
			fe.Flags |= FrontendLocal
			fe.Cluster = n.cluster
		}
		// A node-address frontend: a NodePort, or an external / load-balancer IP that is
		// one of the node's configured addresses (a pod's reply from it must be forwarded,
		// not handed to the stack, whose input route check drops a local source).
		if f.Kind == "NodePort" || (addrs.V4.IsValid() && addr == addrs.V4) || (addrs.V6.IsValid() && addr == addrs.V6) {
			fe.Flags |= FrontendNode
		}
		if n.local == 0 {
			// As the nftables renderer (and kube-proxy): reject, but drop for a Local
			// frontend without local backends while the service has some elsewhere.
			if !f.LocalOnly || len(s.BackendsFor(cluster, node)) == 0 {
				fe.Flags |= FrontendReject
			}
		}
		if s.AffinitySeconds > 0 {
			fe.Flags |= FrontendAffinity
			fe.Affinity = uint32(s.AffinitySeconds)
		}
		if external && !f.LocalOnly {
			snat := addrs.V4
			if fam == 6 {
				snat = addrs.V6
			}
			if snat.IsValid() {
				fe.Flags |= FrontendSNAT
				fe.SNAT = addrBytes(snat)
			}
		}
		k := FrontendKey{Family: fam, Protocol: f.Protocol, Port: f.Port, Addr: addrBytes(addr)}
		if _, dup := out.Frontends[k]; !dup {
			out.Frontends[k] = fe
		}
	}
	return out, warns, nil
}

// groupID is the 64-bit FNV-1a hash of a backend group's name.
func groupID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// addrBytes is an address as the programs hold it: IPv4 in the first 4 bytes.
func addrBytes(a netip.Addr) [16]byte {
	if a.Is4() {
		var b [16]byte
		v := a.As4()
		copy(b[:], v[:])
		return b
	}
	return a.As16()
}

// addrOf reads a 16-byte map address of the family back.
func addrOf(fam uint8, b [16]byte) netip.Addr {
	if fam == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}
