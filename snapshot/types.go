package snapshot

import "net/netip"

// Snapshot is the complete desired state of one node. Every slice is sorted by its element's
// ID (or the order stated on the field), so two equal snapshots encode to identical bytes.
type Snapshot struct {
	Node          string         `json:"node"`
	Config        Config         `json:"config"`
	IPSets        []IPSet        `json:"ipSets,omitempty"`        // by ID
	Policies      []Policy       `json:"policies,omitempty"`      // by ID
	Profiles      []Profile      `json:"profiles,omitempty"`      // by ID
	Endpoints     []Endpoint     `json:"endpoints,omitempty"`     // local workload endpoints, by ID
	HostEndpoints []HostEndpoint `json:"hostEndpoints,omitempty"` // by ID
	Routes        []Route        `json:"routes,omitempty"`        // by Dst
	VTEPs         []VTEP         `json:"vteps,omitempty"`         // remote VTEPs, by Node
	Pools         []Pool         `json:"pools,omitempty"`         // by CIDR
	Services      []Service      `json:"services,omitempty"`      // by ID
}

// IPSetType is what an IP set holds.
type IPSetType string

// IP set types.
const (
	IPSetIP     IPSetType = "ip"      // host addresses (/32, /128)
	IPSetNet    IPSetType = "net"     // prefixes
	IPSetIPPort IPSetType = "ip+port" // address, protocol and port (named ports)
)

// IPSet is a set of addresses that rules reference by ID. IDs are content-derived from what
// defines the set (selector, named port, network set), never from its members:
// "s:<hash>" for selector sets, "n:<hash>" for named-port sets, "ns:<hash>" for net sets.
type IPSet struct {
	ID      string    `json:"id"`
	Type    IPSetType `json:"type"`
	Source  string    `json:"source"`            // human-readable origin: the selector, or "port NAME/PROTO of SELECTOR"
	Members []Member  `json:"members,omitempty"` // sorted by (Prefix, Protocol, Port); both families mixed
}

// Member is one IP set member. Protocol and Port are set only in ip+port sets.
type Member struct {
	Prefix   netip.Prefix `json:"prefix"`
	Protocol uint8        `json:"protocol,omitempty"`
	Port     uint16       `json:"port,omitempty"`
}

// Action is a rule verdict or tier default.
type Action string

// Actions. Pass jumps to the next tier (or to the profiles after the last tier).
const (
	Allow Action = "Allow"
	Deny  Action = "Deny"
	Log   Action = "Log"
	Pass  Action = "Pass"
)

// Return is only a DefaultEndpointToHostAction: hand the packet back to the host's own input
// rules after the endpoint's egress policy (Felix's RETURN).
const Return Action = "Return"

// PortRange is an inclusive numeric port range.
type PortRange struct {
	Min uint16 `json:"min"`
	Max uint16 `json:"max"`
}

// ICMPMatch matches an ICMP type and, when Code is set, code.
type ICMPMatch struct {
	Type uint8  `json:"type"`
	Code *uint8 `json:"code,omitempty"`
}

// Rule is one rule in the IR: every selector, named port and network set has been replaced
// by IP set references. Within a list field, entries are ORed (any member of any listed net;
// any listed port), except IPSet lists, where every referenced set must match (AND), as in
// Felix. Named-port sets are ORed with the numeric ports of the same side: a packet matches
// the ports condition if its port is in Ports or its (address, protocol, port) is in any
// NamedPortIPSets set.
type Rule struct {
	Action      Action     `json:"action"`
	IPVersion   int        `json:"ipVersion,omitempty"` // 0, 4 or 6
	Protocol    *uint8     `json:"protocol,omitempty"`
	NotProtocol *uint8     `json:"notProtocol,omitempty"`
	ICMP        *ICMPMatch `json:"icmp,omitempty"`
	NotICMP     *ICMPMatch `json:"notICMP,omitempty"`

	SrcNets               []netip.Prefix `json:"srcNets,omitempty"`
	NotSrcNets            []netip.Prefix `json:"notSrcNets,omitempty"`
	SrcIPSets             []string       `json:"srcIPSets,omitempty"`
	NotSrcIPSets          []string       `json:"notSrcIPSets,omitempty"`
	SrcPorts              []PortRange    `json:"srcPorts,omitempty"`
	NotSrcPorts           []PortRange    `json:"notSrcPorts,omitempty"`
	SrcNamedPortIPSets    []string       `json:"srcNamedPortIPSets,omitempty"`
	NotSrcNamedPortIPSets []string       `json:"notSrcNamedPortIPSets,omitempty"`

	DstNets               []netip.Prefix `json:"dstNets,omitempty"`
	NotDstNets            []netip.Prefix `json:"notDstNets,omitempty"`
	DstIPSets             []string       `json:"dstIPSets,omitempty"`
	NotDstIPSets          []string       `json:"notDstIPSets,omitempty"`
	DstPorts              []PortRange    `json:"dstPorts,omitempty"`
	NotDstPorts           []PortRange    `json:"notDstPorts,omitempty"`
	DstNamedPortIPSets    []string       `json:"dstNamedPortIPSets,omitempty"`
	NotDstNamedPortIPSets []string       `json:"notDstNamedPortIPSets,omitempty"`

	// Services rules (destination.services) resolve to the service's endpoint addresses and
	// ports through these sets; see derive.
	DstServiceIPSets []string `json:"dstServiceIPSets,omitempty"`

	// Origin locates the rule in its source resource for explanations ("why was this dropped").
	Origin RuleOrigin `json:"origin"`
}

// RuleOrigin names the resource, direction and 0-based rule index a rule came from.
type RuleOrigin struct {
	Kind      string `json:"kind"` // GlobalNetworkPolicy, NetworkPolicy, Profile
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Direction string `json:"direction"` // ingress | egress
	Index     int    `json:"index"`
}

// Policy is an active policy (one that applies to at least one local endpoint, or is marked
// needed on every node). ID is "NAMESPACE/NAME" for namespaced policies, "NAME" for global.
type Policy struct {
	ID             string   `json:"id"`
	Kind           string   `json:"kind"`
	Namespace      string   `json:"namespace,omitempty"`
	Name           string   `json:"name"`
	Tier           string   `json:"tier"`
	Order          *float64 `json:"order,omitempty"`
	Selector       string   `json:"selector"`
	Inbound        []Rule   `json:"inbound,omitempty"`
	Outbound       []Rule   `json:"outbound,omitempty"`
	DoNotTrack     bool     `json:"doNotTrack,omitempty"`
	PreDNAT        bool     `json:"preDNAT,omitempty"`
	ApplyOnForward bool     `json:"applyOnForward,omitempty"`
	Hash           string   `json:"hash"` // content hash of everything above except Hash
}

// Profile is an active profile (listed by at least one local endpoint).
type Profile struct {
	ID       string `json:"id"`
	Inbound  []Rule `json:"inbound,omitempty"`
	Outbound []Rule `json:"outbound,omitempty"`
	// Missing is set when an endpoint lists a profile that does not exist: as in Felix, its
	// rules are then a single Deny in each direction.
	Missing bool   `json:"missing,omitempty"`
	Hash    string `json:"hash"`
}

// TierPolicies is one tier's slice of an endpoint's policy list, in evaluation order.
type TierPolicies struct {
	Tier          string   `json:"tier"`
	DefaultAction Action   `json:"defaultAction"` // Deny or Pass: what happens when no rule in the tier decides
	Policies      []string `json:"policies"`      // policy IDs in order
}

// Direction is the ordered policy program for one direction of an endpoint: tiers in order,
// then profiles (only reached if every tier passed or no tier had a policy for this direction).
type Direction struct {
	Tiers    []TierPolicies `json:"tiers,omitempty"`
	Profiles []string       `json:"profiles,omitempty"`
}

// Endpoint is a local workload endpoint.
type Endpoint struct {
	ID                  string            `json:"id"` // NAMESPACE/WEPNAME
	Namespace           string            `json:"namespace"`
	Workload            string            `json:"workload"`
	Name                string            `json:"name"`
	Interface           string            `json:"interface"`
	MAC                 string            `json:"mac,omitempty"`
	Addrs               []netip.Prefix    `json:"addrs"`
	AllowSpoofedSources []netip.Prefix    `json:"allowSpoofedSources,omitempty"`
	Ingress             Direction         `json:"ingress"`
	Egress              Direction         `json:"egress"`
	Labels              map[string]string `json:"labels,omitempty"` // effective labels (own + inherited)
	Ports               []NamedPort       `json:"ports,omitempty"`  // named ports, sorted by (Name, Protocol)
	Hash                string            `json:"hash"`
}

// NamedPort is a port an endpoint exposes under a name.
type NamedPort struct {
	Name     string `json:"name"`
	Protocol uint8  `json:"protocol"`
	Port     uint16 `json:"port"`
}

// HostEndpoint is a local host endpoint with its four policy programs.
type HostEndpoint struct {
	ID          string            `json:"id"`
	Interface   string            `json:"interface"` // "*" for all interfaces
	ExpectedIPs []netip.Addr      `json:"expectedIPs,omitempty"`
	Normal      HostDirections    `json:"normal"`
	PreDNAT     HostDirections    `json:"preDNAT"`   // ingress only
	Untracked   HostDirections    `json:"untracked"` // doNotTrack policies
	Forward     HostDirections    `json:"forward"`   // applyOnForward policies
	Labels      map[string]string `json:"labels,omitempty"`
	Hash        string            `json:"hash"`
}

// HostDirections is a host endpoint's policy program for each direction.
type HostDirections struct {
	Ingress Direction `json:"ingress"`
	Egress  Direction `json:"egress"`
}

// RouteType says how a route is programmed.
type RouteType string

// Route types.
const (
	RouteWorkload  RouteType = "workload"  // local pod: via its host-side veth, scope link
	RouteVXLAN     RouteType = "vxlan"     // remote block via the VXLAN device, gateway = remote tunnel IP, onlink
	RouteDirect    RouteType = "direct"    // remote block via the remote node IP (no encapsulation, same subnet)
	RouteBlackhole RouteType = "blackhole" // local block: unreachable except through more specific routes
	RouteHost      RouteType = "host"      // remote host tunnel address via VXLAN
)

// Route is one desired route.
type Route struct {
	Dst       netip.Prefix `json:"dst"`
	Type      RouteType    `json:"type"`
	Interface string       `json:"interface,omitempty"`
	Gateway   netip.Addr   `json:"gateway,omitzero"`
	Node      string       `json:"node,omitempty"` // the node this route leads to (remote) or "" (local)
}

// VTEP is a remote node's VXLAN tunnel endpoint.
type VTEP struct {
	Node     string     `json:"node"`
	TunnelIP netip.Addr `json:"tunnelIP"`
	MAC      string     `json:"mac"`
	ParentIP netip.Addr `json:"parentIP"` // the node's underlay address
	IPv6     bool       `json:"ipv6,omitempty"`
}

// Pool is an IP pool as the dataplane needs it (NAT outgoing, encapsulation, pool membership).
type Pool struct {
	CIDR        netip.Prefix `json:"cidr"`
	VXLANMode   string       `json:"vxlanMode"`
	NATOutgoing bool         `json:"natOutgoing,omitempty"`
	Disabled    bool         `json:"disabled,omitempty"`
}

// Service is a load-balanced frontend with its backends (filled by the services work).
type Service struct {
	ID              string     `json:"id"`
	Frontends       []Frontend `json:"frontends,omitempty"`
	Backends        []Backend  `json:"backends,omitempty"`
	AffinitySeconds int32      `json:"affinitySeconds,omitempty"`
	Hash            string     `json:"hash"`
}

// Frontend is one (address, protocol, port) a service answers on.
type Frontend struct {
	Addr      netip.Addr `json:"addr"`
	Protocol  uint8      `json:"protocol"`
	Port      uint16     `json:"port"`
	Kind      string     `json:"kind"` // ClusterIP, NodePort, ExternalIP, LoadBalancer
	PortName  string     `json:"portName,omitempty"`
	LocalOnly bool       `json:"localOnly,omitempty"`
}

// Backend is one endpoint address and port behind a frontend's port name.
type Backend struct {
	Addr     netip.Addr `json:"addr"`
	Protocol uint8      `json:"protocol"`
	Port     uint16     `json:"port"`
	PortName string     `json:"portName,omitempty"`
	Node     string     `json:"node,omitempty"`
	Ready    bool       `json:"ready"`
	Serving  bool       `json:"serving"`
}

// FailsafePort is a port always open on host endpoints.
type FailsafePort struct {
	Protocol uint8        `json:"protocol"`
	Port     uint16       `json:"port"`
	Net      netip.Prefix `json:"net,omitzero"` // optional remote network restriction
}

// Config is the effective configuration the dataplane needs.
type Config struct {
	InterfacePrefixes           []string       `json:"interfacePrefixes"`
	FailsafeInbound             []FailsafePort `json:"failsafeInbound,omitempty"`
	FailsafeOutbound            []FailsafePort `json:"failsafeOutbound,omitempty"`
	DefaultEndpointToHostAction Action         `json:"defaultEndpointToHostAction"` // Drop→Deny, Accept→Allow, Return
	NodeIPv4                    netip.Prefix   `json:"nodeIPv4,omitzero"`
	NodeIPv6                    netip.Prefix   `json:"nodeIPv6,omitzero"`
	VXLANEnabled                bool           `json:"vxlanEnabled,omitempty"`
	VXLANVNI                    int            `json:"vxlanVNI,omitempty"`
	VXLANPort                   int            `json:"vxlanPort,omitempty"`
	VXLANMTU                    int            `json:"vxlanMTU,omitempty"`
	VXLANTunnelAddr             netip.Addr     `json:"vxlanTunnelAddr,omitzero"`
	VXLANTunnelMAC              string         `json:"vxlanTunnelMAC,omitempty"`
	VXLANEnabledV6              bool           `json:"vxlanEnabledV6,omitempty"`
	VXLANMTUV6                  int            `json:"vxlanMTUV6,omitempty"`
	VXLANTunnelAddrV6           netip.Addr     `json:"vxlanTunnelAddrV6,omitzero"`
	VXLANTunnelMACV6            string         `json:"vxlanTunnelMACV6,omitempty"`
	RouteProtocol               int            `json:"routeProtocol,omitempty"`
	IPSetsMaxSize               int            `json:"ipSetsMaxSize,omitempty"`
	ChainInsertMode             string         `json:"chainInsertMode,omitempty"`
	LogPrefix                   string         `json:"logPrefix,omitempty"`
}
