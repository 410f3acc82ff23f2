package snapshot

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/model/selector"
)

// Cluster evaluates connectivity across the snapshots of every node: a flow is decided by
// its source endpoint's egress program (on the source's node) and its destination's ingress
// program (on the destination's node). It only reads the snapshots.
type Cluster struct {
	evals     map[string]*Evaluator
	endpoints []Located // sorted by (Namespace, Workload, ID)
}

// Located is an endpoint with the node whose snapshot holds it.
type Located struct {
	Node     string
	Endpoint *Endpoint
}

// Name is the endpoint's NAMESPACE/WORKLOAD spelling used by felis reach.
func (l Located) Name() string { return l.Endpoint.Namespace + "/" + l.Endpoint.Workload }

// NewCluster indexes one snapshot per node.
func NewCluster(snaps []*Snapshot) *Cluster {
	c := &Cluster{evals: map[string]*Evaluator{}}
	for _, s := range snaps {
		c.evals[s.Node] = NewEvaluator(s)
		for i := range s.Endpoints {
			c.endpoints = append(c.endpoints, Located{Node: s.Node, Endpoint: &s.Endpoints[i]})
		}
	}
	sort.Slice(c.endpoints, func(i, j int) bool {
		a, b := c.endpoints[i], c.endpoints[j]
		if a.Name() != b.Name() {
			return a.Name() < b.Name()
		}
		return a.Endpoint.ID < b.Endpoint.ID
	})
	return c
}

// Endpoints lists every workload endpoint of the cluster.
func (c *Cluster) Endpoints() []Located { return c.endpoints }

// Peer is one side of a flow: a workload endpoint or a bare address outside felis's control.
type Peer struct {
	Endpoint *Located   // nil for an address
	Addr     netip.Addr // for an address
}

// Name is "ip:ADDR" for a peer given by address (even when an endpoint owns it), else
// "NAMESPACE/WORKLOAD": peers are spelled as the user gave them.
func (p Peer) Name() string {
	if p.Addr.IsValid() {
		return "ip:" + p.Addr.String()
	}
	return p.Endpoint.Name()
}

// Resolve turns a --from/--to value into peers: "NAMESPACE/WORKLOAD", "sel:EXPR" (matched
// against endpoints' effective labels), "ip:ADDR" (an endpoint if one owns the address, else
// an outside address), or "" (every workload endpoint).
func (c *Cluster) Resolve(spec string) ([]Peer, error) {
	var out []Peer
	switch {
	case spec == "":
		for i := range c.endpoints {
			out = append(out, Peer{Endpoint: &c.endpoints[i]})
		}
	case strings.HasPrefix(spec, "sel:"):
		sel, err := selector.Parse(strings.TrimPrefix(spec, "sel:"))
		if err != nil {
			return nil, fmt.Errorf("%q: bad selector: %w", spec, err)
		}
		for i := range c.endpoints {
			if sel.Evaluate(c.endpoints[i].Endpoint.Labels) {
				out = append(out, Peer{Endpoint: &c.endpoints[i]})
			}
		}
	case strings.HasPrefix(spec, "ip:"):
		a, err := netip.ParseAddr(strings.TrimPrefix(spec, "ip:"))
		if err != nil {
			return nil, fmt.Errorf("%q: bad address: %w", spec, err)
		}
		for i := range c.endpoints {
			for _, p := range c.endpoints[i].Endpoint.Addrs {
				if p.Addr() == a {
					return []Peer{{Endpoint: &c.endpoints[i], Addr: a}}, nil
				}
			}
		}
		out = append(out, Peer{Addr: a})
	case strings.Count(spec, "/") == 1:
		for i := range c.endpoints {
			if c.endpoints[i].Name() == spec {
				out = append(out, Peer{Endpoint: &c.endpoints[i]})
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%q: no workload endpoint with that NAMESPACE/WORKLOAD", spec)
		}
	default:
		return nil, fmt.Errorf("%q: want NAMESPACE/WORKLOAD, sel:EXPR or ip:ADDR", spec)
	}
	return out, nil
}

// PortSpec is a --port value: a number with a protocol, or a named port resolved per
// destination endpoint.
type PortSpec struct {
	Name     string // named port; Number and Protocol come from the destination
	Number   uint16
	Protocol uint8
}

// String renders the spec as given ("80/TCP" or the name).
func (p PortSpec) String() string {
	if p.Name != "" {
		return p.Name
	}
	return fmt.Sprintf("%d/%s", p.Number, ProtocolName(p.Protocol))
}

// ParsePort parses "NUMBER/PROTOCOL" (TCP, UDP, SCTP; a bare number means TCP) or a port name.
func ParsePort(s string) (PortSpec, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil {
		// A port name has at least one letter (IANA service name rules); digits alone are a
		// number out of range.
		if _, numErr := strconv.ParseUint(num, 10, 64); numErr == nil {
			return PortSpec{}, fmt.Errorf("--port %q: port must be 1-65535", s)
		}
		if hasProto || s == "" {
			return PortSpec{}, fmt.Errorf("--port %q: want NUMBER/PROTOCOL or a port name", s)
		}
		return PortSpec{Name: s}, nil
	}
	if n == 0 {
		return PortSpec{}, fmt.Errorf("--port %q: port must be 1-65535", s)
	}
	p := PortSpec{Number: uint16(n), Protocol: 6}
	if hasProto {
		switch strings.ToUpper(proto) {
		case "TCP":
		case "UDP":
			p.Protocol = 17
		case "SCTP":
			p.Protocol = 132
		default:
			return PortSpec{}, fmt.Errorf("--port %q: protocol must be TCP, UDP or SCTP", s)
		}
	}
	return p, nil
}

// ProtocolName names the protocols felis reports.
func ProtocolName(p uint8) string {
	switch p {
	case 1:
		return "ICMP"
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 58:
		return "ICMPv6"
	case 132:
		return "SCTP"
	}
	return strconv.Itoa(int(p))
}

// Row is one evaluated flow, in the JSON shape DESIGN.md fixes for felis reach.
type Row struct {
	From     string  `json:"from"`
	To       string  `json:"to"`
	Port     uint16  `json:"port"`
	Protocol string  `json:"protocol"`
	Verdict  Action  `json:"verdict"`
	Egress   Verdict `json:"egress"`
	Ingress  Verdict `json:"ingress"`
	// PortName is the --port value when it was a named port (kept out of JSON, which the
	// contract fixes).
	PortName string `json:"-"`
}

// unpoliced is the verdict for a side felis does not police (an outside address).
var unpoliced = Verdict{Action: Allow, Decider: "outside"}

// Reach evaluates every (from, to, port) combination. Pairs of an endpoint with itself are
// skipped (such traffic never crosses the endpoint's interface); a named port is evaluated
// only for destinations that define it.
func (c *Cluster) Reach(from, to []Peer, ports []PortSpec) []Row {
	var rows []Row
	for _, f := range from {
		for _, t := range to {
			if f.Endpoint != nil && t.Endpoint != nil && f.Endpoint.Endpoint == t.Endpoint.Endpoint {
				continue
			}
			if f.Endpoint == nil && t.Endpoint == nil {
				continue
			}
			src, dst, ok := addrPair(f, t)
			if !ok {
				continue
			}
			for _, ps := range ports {
				proto, port, ok := resolvePort(ps, t)
				if !ok {
					continue
				}
				p := Packet{Src: src, Dst: dst, Protocol: proto, SrcPort: 40000, DstPort: port}
				row := Row{From: f.Name(), To: t.Name(), Port: port, Protocol: ProtocolName(proto), Egress: unpoliced, Ingress: unpoliced, PortName: ps.Name}
				if f.Endpoint != nil {
					row.Egress = c.evals[f.Endpoint.Node].Egress(f.Endpoint.Endpoint, p)
				}
				if t.Endpoint != nil {
					row.Ingress = c.evals[t.Endpoint.Node].Ingress(t.Endpoint.Endpoint, p)
				}
				row.Verdict = Deny
				if row.Egress.Action == Allow && row.Ingress.Action == Allow {
					row.Verdict = Allow
				}
				rows = append(rows, row)
			}
		}
	}
	return rows
}

// addrPair picks the addresses a flow between two peers uses: IPv4 when both sides have
// one, else IPv6.
func addrPair(f, t Peer) (netip.Addr, netip.Addr, bool) {
	for _, v4 := range []bool{true, false} {
		s, okS := peerAddr(f, v4)
		d, okD := peerAddr(t, v4)
		if okS && okD {
			return s, d, true
		}
	}
	return netip.Addr{}, netip.Addr{}, false
}

func peerAddr(p Peer, v4 bool) (netip.Addr, bool) {
	if p.Addr.IsValid() {
		return p.Addr, p.Addr.Is4() == v4
	}
	for _, a := range p.Endpoint.Endpoint.Addrs {
		if a.Addr().Is4() == v4 {
			return a.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func resolvePort(ps PortSpec, to Peer) (uint8, uint16, bool) {
	if ps.Name == "" {
		return ps.Protocol, ps.Number, true
	}
	if to.Endpoint == nil {
		return 0, 0, false
	}
	for _, np := range to.Endpoint.Endpoint.Ports {
		if np.Name == ps.Name {
			return np.Protocol, np.Port, true
		}
	}
	return 0, 0, false
}
