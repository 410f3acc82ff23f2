package hns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Action is an HNS ACL action.
type Action string

// HNS ACL actions.
const (
	Allow Action = "Allow"
	Block Action = "Block"
)

// Direction is the side of the endpoint's switch port a rule polices.
type Direction string

// HNS ACL directions: In is traffic arriving at the endpoint, Out is traffic leaving it.
const (
	In  Direction = "In"
	Out Direction = "Out"
)

// RuleType says where HNS enforces a rule: Switch (VFP, the endpoint's port) or Host (WFP).
type RuleType string

// HNS rule types.
const (
	Switch RuleType = "Switch"
	Host   RuleType = "Host"
)

// AnyProtocol is HNS's protocol number for "any protocol".
const AnyProtocol uint16 = 256

// Priority range for policy rules, as Calico's Windows dataplane uses it: the host-to-endpoint
// rule sits at HostToEndpointPriority, policy rules from PolicyRuleBasePriority up to
// PolicyRuleMaxPriority.
const (
	HostToEndpointPriority uint16 = 900
	PolicyRuleBasePriority uint16 = 1000
	PolicyRuleMaxPriority  uint16 = 65000
)

// MaxListEntries caps the addresses or port ranges in one rule's list (Microsoft's advice, as
// Calico applies it); longer lists are split across rules.
const MaxListEntries = 4000

// Rule is one HNS ACL rule as felis renders it (the typed form of hcn's AclPolicySetting).
// Empty lists mean "any".
type Rule struct {
	Direction       Direction
	Priority        uint16
	Action          Action
	Type            RuleType
	Protocol        uint16 // AnyProtocol or an IP protocol number
	LocalAddresses  []netip.Prefix
	RemoteAddresses []netip.Prefix
	LocalPorts      []snapshot.PortRange
	RemotePorts     []snapshot.PortRange
}

// String is the rule's canonical one-line form, e.g.
// "In 1000 Allow proto=6 remote=10.0.0.0/8 rports=80,8000-8080".
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d %s", r.Direction, r.Priority, r.Action)
	if r.Type != Switch && r.Type != "" {
		fmt.Fprintf(&b, " type=%s", r.Type)
	}
	if r.Protocol != AnyProtocol {
		fmt.Fprintf(&b, " proto=%d", r.Protocol)
	}
	if len(r.LocalAddresses) > 0 {
		b.WriteString(" local=" + joinPrefixes(r.LocalAddresses))
	}
	if len(r.LocalPorts) > 0 {
		b.WriteString(" lports=" + joinPorts(r.LocalPorts))
	}
	if len(r.RemoteAddresses) > 0 {
		b.WriteString(" remote=" + joinPrefixes(r.RemoteAddresses))
	}
	if len(r.RemotePorts) > 0 {
		b.WriteString(" rports=" + joinPorts(r.RemotePorts))
	}
	return b.String()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func joinPorts(rs []snapshot.PortRange) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		if r.Min == r.Max {
			s[i] = strconv.Itoa(int(r.Min))
		} else {
			s[i] = strconv.Itoa(int(r.Min)) + "-" + strconv.Itoa(int(r.Max))
		}
	}
	return strings.Join(s, ",")
}

// EndpointACL is the desired ACL list of one local workload endpoint: In rules then Out rules,
// each in priority order. HNS replaces an endpoint's whole ACL list at once, so this is also
// the unit of update.
type EndpointACL struct {
	Endpoint string       // the snapshot's endpoint ID
	Addrs    []netip.Addr // the endpoint's addresses (HNS endpoints are found by address)
	Rules    []Rule
	// Err is set when the endpoint's policy cannot be expressed in HNS (ErrUnsupported,
	// ErrPriorityLimit); Rules is then empty and Plan keeps what HNS has.
	Err error
}

// String lists the endpoint's rules, one per line, after a header line.
func (e EndpointACL) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "endpoint %s", e.Endpoint)
	for _, a := range e.Addrs {
		b.WriteString(" " + a.String())
	}
	b.WriteString("\n")
	if e.Err != nil {
		fmt.Fprintf(&b, "  error: %v\n", e.Err)
	}
	for _, r := range e.Rules {
		b.WriteString("  " + r.String() + "\n")
	}
	return b.String()
}

// RemoteSubnetRoute is an HNS network policy sending a remote block through VXLAN to the node
// that owns it.
type RemoteSubnetRoute struct {
	DestinationPrefix           netip.Prefix
	IsolationID                 uint16     // the VXLAN VNI
	ProviderAddress             netip.Addr // the remote node's underlay address
	DistributedRouterMacAddress string     // the remote VTEP's MAC, Windows spelling (aa-bb-cc-dd-ee-ff)
}

// String is the route's canonical form.
func (r RemoteSubnetRoute) String() string {
	return fmt.Sprintf("remote-subnet %s vni %d via %s mac %s", r.DestinationPrefix, r.IsolationID, r.ProviderAddress, r.DistributedRouterMacAddress)
}

// Desired is everything felis wants HNS to hold for one node.
type Desired struct {
	Endpoints []EndpointACL       // by Endpoint
	Routes    []RemoteSubnetRoute // by DestinationPrefix
	Errs      []error             // problems outside any endpoint (routes)
}

// String renders the whole desired state canonically (the golden-file form).
func (d Desired) String() string {
	var b strings.Builder
	for _, e := range d.Endpoints {
		b.WriteString(e.String())
	}
	for _, r := range d.Routes {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}
