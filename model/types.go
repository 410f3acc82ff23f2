package model

import (
	"fmt"
	"net/netip"

	"github.com/felis-dev/felis/model/selector"
)

// Kind names a resource kind as felis stores it. Kubernetes objects are stored after
// conversion, under the Calico kind they become (a Pod is a WorkloadEndpoint).
type Kind string

// The kinds felis stores.
const (
	KindTier                Kind = "Tier"
	KindGlobalNetworkPolicy Kind = "GlobalNetworkPolicy"
	KindNetworkPolicy       Kind = "NetworkPolicy" // includes converted Kubernetes policies (knp.default.NAME)
	KindProfile             Kind = "Profile"       // includes kns.NAME and ksa.NS.NAME
	KindWorkloadEndpoint    Kind = "WorkloadEndpoint"
	KindHostEndpoint        Kind = "HostEndpoint"
	KindNetworkSet          Kind = "NetworkSet"
	KindGlobalNetworkSet    Kind = "GlobalNetworkSet"
	KindIPPool              Kind = "IPPool"
	KindNode                Kind = "Node"
	KindFelixConfiguration  Kind = "FelixConfiguration"
	KindBGPConfiguration    Kind = "BGPConfiguration"
	KindIPAMBlock           Kind = "IPAMBlock"
	KindBlockAffinity       Kind = "BlockAffinity"
	KindService             Kind = "Service"
	KindEndpointSlice       Kind = "EndpointSlice"
)

// Kinds lists every stored kind in a fixed order (the order tables are created in).
var Kinds = []Kind{
	KindTier, KindGlobalNetworkPolicy, KindNetworkPolicy, KindProfile, KindWorkloadEndpoint,
	KindHostEndpoint, KindNetworkSet, KindGlobalNetworkSet, KindIPPool, KindNode,
	KindFelixConfiguration, KindBGPConfiguration, KindIPAMBlock, KindBlockAffinity,
	KindService, KindEndpointSlice,
}

// Key identifies one stored object. Namespace is empty for cluster-scoped kinds.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

// String renders the key as "Kind namespace/name" or "Kind name".
func (k Key) String() string {
	if k.Namespace == "" {
		return fmt.Sprintf("%s %s", k.Kind, k.Name)
	}
	return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name)
}

// ID is the key's unique string form inside its kind: "namespace/name" or "name".
func (k Key) ID() string {
	if k.Namespace == "" {
		return k.Name
	}
	return k.Namespace + "/" + k.Name
}

// Source says where an object came from, for error messages: "path/file.yaml:12".
type Source struct {
	Name string // the datastore source that owns the object ("file", "kubernetes", "etcd", ...)
	File string // file path, or resource URL for API sources
	Line int    // 1-based line of the document start; 0 when unknown
}

// String renders "file:line" (or just the file).
func (s Source) String() string {
	if s.Line == 0 {
		return s.File
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// Meta is common to every object. Revision is stamped by the store when the object is
// written; an object is never modified after it has been written.
type Meta struct {
	Key      Key
	Source   Source
	Revision uint64
}

// Object is any stored resource.
type Object interface {
	// GetMeta returns the object's metadata. Only the store may set Revision, and only
	// before the object is visible to readers.
	GetMeta() *Meta
}

// GetMeta implements Object.
func (m *Meta) GetMeta() *Meta { return m }

// Labels is a label map. Treat it as read-only once stored.
type Labels map[string]string

// Action is a rule action or a tier default action.
type Action string

// Rule actions.
const (
	ActionAllow Action = "Allow"
	ActionDeny  Action = "Deny"
	ActionLog   Action = "Log"
	ActionPass  Action = "Pass"
)

// Protocol numbers felis names. Rules hold protocol numbers; names are decoded by convert.
const (
	ProtoICMP    uint8 = 1
	ProtoTCP     uint8 = 6
	ProtoUDP     uint8 = 17
	ProtoICMPv6  uint8 = 58
	ProtoSCTP    uint8 = 132
	ProtoUDPLite uint8 = 136
)

// Port is one entry of a rule's ports list: a numeric range (Min..Max, Min==Max for one
// port) or a named port (Name set, Min/Max zero).
type Port struct {
	Min, Max uint16
	Name     string
}

// ICMPMatch matches ICMP type and optionally code. Code is only valid with Type.
type ICMPMatch struct {
	Type *uint8
	Code *uint8
}

// ServiceMatch is a rule's `services` match (a Kubernetes Service by name).
type ServiceMatch struct {
	Name      string
	Namespace string
}

// EntityRule is a rule's source or destination match, after conversion. Selector and
// NotSelector are the *effective* selectors: namespace scoping, namespaceSelector and
// serviceAccounts have already been folded in exactly as Calico's backend does. A nil
// selector means "no selector constraint".
type EntityRule struct {
	Nets        []netip.Prefix
	NotNets     []netip.Prefix
	Selector    *selector.Selector
	NotSelector *selector.Selector
	Ports       []Port
	NotPorts    []Port
	Services    *ServiceMatch
}

// Rule is one policy or profile rule, after conversion.
type Rule struct {
	Action      Action
	IPVersion   int    // 0 (both), 4 or 6
	Protocol    *uint8 // nil = any
	NotProtocol *uint8
	ICMP        *ICMPMatch
	NotICMP     *ICMPMatch
	Source      EntityRule
	Destination EntityRule
}

// PolicyType says which directions a policy applies to.
type PolicyType string

// Policy types.
const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

// Tier orders groups of policies. A missing Order sorts last; DefaultAction is Deny
// unless set to Pass.
type Tier struct {
	Meta
	Order         *float64
	DefaultAction Action
}

// Policy is a GlobalNetworkPolicy or (namespaced) NetworkPolicy, including Kubernetes
// NetworkPolicies converted to knp.default.NAME in tier "default". Selector is the
// effective endpoint selector (namespace and serviceAccountSelector folded in).
type Policy struct {
	Meta
	Tier           string
	Order          *float64 // nil = last
	Selector       *selector.Selector
	Types          []PolicyType
	Ingress        []Rule
	Egress         []Rule
	DoNotTrack     bool
	PreDNAT        bool
	ApplyOnForward bool
	// PerformanceHints carries Calico's spec.performanceHints (e.g. "AssumeNeededOnEveryNode").
	PerformanceHints []string
}

// Profile is a Calico Profile, including kns.NAME (from a Namespace) and ksa.NS.NAME (from
// a ServiceAccount). LabelsToApply are inherited by endpoints that list the profile.
type Profile struct {
	Meta
	LabelsToApply Labels
	Ingress       []Rule
	Egress        []Rule
}

// NamedPort is a port an endpoint exposes under a name.
type NamedPort struct {
	Name     string
	Protocol uint8
	Port     uint16
}

// WorkloadEndpoint is a pod's (or other workload's) network interface. Key.Name is the
// Calico WEP name; for converted pods it follows Calico's NODE-k8s-POD-eth0 convention.
type WorkloadEndpoint struct {
	Meta
	Node                       string
	Orchestrator               string
	Workload                   string // pod name
	Endpoint                   string // usually "eth0"
	InterfaceName              string // host-side interface, e.g. cali0123456789a
	MAC                        string
	IPNetworks                 []netip.Prefix // /32 and /128 addresses
	IPNATs                     []IPNAT
	Profiles                   []string
	Labels                     Labels // own labels, including projectcalico.org/namespace etc.
	Ports                      []NamedPort
	ServiceAccount             string
	AllowSpoofedSourcePrefixes []netip.Prefix
}

// IPNAT is a 1:1 NAT mapping of a workload address (floating IP).
type IPNAT struct {
	InternalIP netip.Addr
	ExternalIP netip.Addr
}

// HostEndpoint is a host interface (or all interfaces, InterfaceName "*") under policy.
type HostEndpoint struct {
	Meta
	Node          string
	InterfaceName string
	ExpectedIPs   []netip.Addr
	Profiles      []string
	Labels        Labels
	Ports         []NamedPort
}

// NetworkSet is a NetworkSet (namespaced) or GlobalNetworkSet (Namespace empty). Labels
// include projectcalico.org/namespace for namespaced sets, as Calico adds it.
type NetworkSet struct {
	Meta
	Labels Labels
	Nets   []netip.Prefix
}

// EncapMode is an IP pool's VXLAN or IPIP mode.
type EncapMode string

// Encapsulation modes.
const (
	EncapNever       EncapMode = "Never"
	EncapAlways      EncapMode = "Always"
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// IPPool is a Calico IP pool.
type IPPool struct {
	Meta
	CIDR         netip.Prefix
	VXLANMode    EncapMode
	IPIPMode     EncapMode
	NATOutgoing  bool
	Disabled     bool
	BlockSize    int
	NodeSelector *selector.Selector
}

// Node is a cluster node: a Calico v3 Node, or a Kubernetes Node converted with Calico's
// annotations (falling back to its InternalIP).
type Node struct {
	Meta
	Labels            Labels
	IPv4Address       netip.Prefix // node IP with its subnet (e.g. 192.168.1.10/24); invalid if none
	IPv6Address       netip.Prefix
	VXLANTunnelAddr   netip.Addr
	VXLANTunnelMAC    string
	VXLANTunnelAddrV6 netip.Addr
	VXLANTunnelMACV6  string
	PodCIDRs          []netip.Prefix
}

// IPAMBlock is an IPAM block with its affinity (crd.projectcalico.org/v1 IPAMBlock).
// Key.Name is Calico's name for the block: its CIDR with dots, colons and "/" as "-" (10-0-0-0-26).
type IPAMBlock struct {
	Meta
	CIDR         netip.Prefix
	AffinityNode string // "" when the block has no host affinity
	Deleted      bool
}

// BlockAffinity is a projectcalico.org/v3 BlockAffinity.
type BlockAffinity struct {
	Meta
	Node  string
	CIDR  netip.Prefix
	State string
}

// FelixConfiguration is a FelixConfiguration resource ("default" or "node.NAME"). Spec
// keeps the fields as decoded, by their JSON field name, so the effective configuration
// can be layered field by field (see derive).
type FelixConfiguration struct {
	Meta
	Spec map[string]any
}

// BGPConfiguration is a BGPConfiguration resource; felis reads only its service CIDRs.
type BGPConfiguration struct {
	Meta
	ServiceClusterIPs      []netip.Prefix
	ServiceExternalIPs     []netip.Prefix
	ServiceLoadBalancerIPs []netip.Prefix
}

// ServicePort is one port of a Kubernetes Service.
type ServicePort struct {
	Name       string
	Protocol   uint8
	Port       uint16
	TargetPort string // number or name, as given
	NodePort   uint16
}

// Service is a Kubernetes Service.
type Service struct {
	Meta
	Type                          string // ClusterIP, NodePort, LoadBalancer, ExternalName
	ClusterIPs                    []netip.Addr
	ExternalIPs                   []netip.Addr
	LoadBalancerIPs               []netip.Addr
	Ports                         []ServicePort
	ExternalTrafficLocal          bool
	InternalTrafficLocal          bool
	SessionAffinityClientIP       bool
	SessionAffinityTimeoutSeconds int32
	Selector                      Labels
}

// EndpointSlicePort is one port of an EndpointSlice.
type EndpointSlicePort struct {
	Name     string
	Protocol uint8
	Port     uint16
}

// SliceEndpoint is one endpoint of an EndpointSlice.
type SliceEndpoint struct {
	Addresses   []netip.Addr
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
}

// EndpointSlice is a discovery.k8s.io/v1 EndpointSlice.
type EndpointSlice struct {
	Meta
	ServiceName string
	Ports       []EndpointSlicePort
	Endpoints   []SliceEndpoint
}
