package convert

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	apiv3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/felis-dev/felis/model"
)

var (
	interfaceRegex = regexp.MustCompile("^[a-zA-Z0-9_.-]{1,15}$")
	portNameRegex  = regexp.MustCompile("^[a-zA-Z0-9_.-]{1,128}$")
	linkLocalV4    = netip.MustParsePrefix("169.254.0.0/16")
	linkLocalV6    = netip.MustParsePrefix("fe80::/10")
)

// WorkloadEndpointV3 mirrors the projectcalico.org/v3 WorkloadEndpoint schema (the official
// API module does not ship it; this is the part felis reads).
type WorkloadEndpointV3 struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              WorkloadEndpointV3Spec `json:"spec,omitempty"`
}

// WorkloadEndpointV3Spec mirrors the v3 WorkloadEndpoint spec.
type WorkloadEndpointV3Spec struct {
	Orchestrator               string                   `json:"orchestrator,omitempty"`
	Workload                   string                   `json:"workload,omitempty"`
	Node                       string                   `json:"node,omitempty"`
	ContainerID                string                   `json:"containerID,omitempty"`
	Pod                        string                   `json:"pod,omitempty"`
	Endpoint                   string                   `json:"endpoint,omitempty"`
	ServiceAccountName         string                   `json:"serviceAccountName,omitempty"`
	IPNetworks                 []string                 `json:"ipNetworks,omitempty"`
	IPNATs                     []IPNATV3                `json:"ipNATs,omitempty"`
	IPv4Gateway                string                   `json:"ipv4Gateway,omitempty"`
	IPv6Gateway                string                   `json:"ipv6Gateway,omitempty"`
	Profiles                   []string                 `json:"profiles,omitempty"`
	InterfaceName              string                   `json:"interfaceName,omitempty"`
	MAC                        string                   `json:"mac,omitempty"`
	Ports                      []WorkloadEndpointV3Port `json:"ports,omitempty"`
	AllowSpoofedSourcePrefixes []string                 `json:"allowSpoofedSourcePrefixes,omitempty"`
	QoSControls                json.RawMessage          `json:"qosControls,omitempty"`
}

// WorkloadEndpointV3Port mirrors a v3 WorkloadEndpoint port.
type WorkloadEndpointV3Port struct {
	Name     string               `json:"name"`
	Protocol numorstring.Protocol `json:"protocol"`
	Port     uint16               `json:"port"`
	HostPort uint16               `json:"hostPort"`
	HostIP   string               `json:"hostIP"`
}

// IPNATV3 mirrors a v3 WorkloadEndpoint 1:1 NAT entry.
type IPNATV3 struct {
	InternalIP string `json:"internalIP"`
	ExternalIP string `json:"externalIP"`
}

// NodeV3 mirrors the projectcalico.org/v3 Node schema (the part felis reads).
type NodeV3 struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodeV3Spec `json:"spec,omitempty"`
}

// NodeV3Spec mirrors the v3 Node spec.
type NodeV3Spec struct {
	BGP                  *NodeV3BGP `json:"bgp,omitempty"`
	IPv4VXLANTunnelAddr  string     `json:"ipv4VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddr   string     `json:"vxlanTunnelMACAddr,omitempty"`
	IPv6VXLANTunnelAddr  string     `json:"ipv6VXLANTunnelAddr,omitempty"`
	VXLANTunnelMACAddrV6 string     `json:"vxlanTunnelMACAddrV6,omitempty"`
}

// NodeV3BGP mirrors the v3 Node spec.bgp.
type NodeV3BGP struct {
	IPv4Address        string `json:"ipv4Address,omitempty"`
	IPv6Address        string `json:"ipv6Address,omitempty"`
	IPv4IPIPTunnelAddr string `json:"ipv4IPIPTunnelAddr,omitempty"`
}

// CalicoWorkloadEndpoint converts a v3 WorkloadEndpoint as Calico's WEP update processor
// does: no IP networks means no endpoint; pcns./pcsa. labels dropped; the service-account
// label added; only named ports kept.
func CalicoWorkloadEndpoint(w *WorkloadEndpointV3) Result {
	var e errs
	res := resourceText("WorkloadEndpoint", w.Namespace, w.Name)
	checkName(&w.ObjectMeta, nameRegex, 253, true, &e)
	s := &w.Spec
	if s.Node == "" {
		e.add("spec.node", "missing node")
	}
	if s.InterfaceName != "" && !interfaceRegex.MatchString(s.InterfaceName) {
		e.add("spec.interfaceName", "invalid interface name %q; expected 1-15 of [a-zA-Z0-9_.-]", s.InterfaceName)
	}
	out := &model.WorkloadEndpoint{
		Meta:           key(model.KindWorkloadEndpoint, w.Namespace, w.Name),
		Node:           s.Node,
		Orchestrator:   s.Orchestrator,
		Workload:       s.Workload,
		Endpoint:       s.Endpoint,
		InterfaceName:  s.InterfaceName,
		Profiles:       s.Profiles,
		ServiceAccount: s.ServiceAccountName,
	}
	if out.Workload == "" {
		out.Workload = s.Pod
	}
	if s.MAC != "" {
		m, err := parseMAC(s.MAC)
		if err != nil {
			e.add("spec.mac", "invalid MAC %q", s.MAC)
		}
		out.MAC = m
	}
	for i, n := range s.IPNetworks {
		p, err := parseCIDROrIP(n)
		if err != nil {
			e.add(idx("spec.ipNetworks", i), "invalid CIDR %q", n)
			continue
		}
		if !p.IsSingleIP() {
			e.add(idx("spec.ipNetworks", i), "IP network %s contains multiple addresses; expected a /32 or /128", n)
			continue
		}
		out.IPNetworks = append(out.IPNetworks, p)
	}
	for i, n := range s.IPNATs {
		in, err1 := parseIP(n.InternalIP)
		ex, err2 := parseIP(n.ExternalIP)
		if err1 != nil {
			e.add(idx("spec.ipNATs", i)+".internalIP", "invalid IP %q", n.InternalIP)
		}
		if err2 != nil {
			e.add(idx("spec.ipNATs", i)+".externalIP", "invalid IP %q", n.ExternalIP)
		}
		if err1 == nil && !slices.ContainsFunc(out.IPNetworks, func(p netip.Prefix) bool { return p.Contains(in) }) {
			e.add(idx("spec.ipNATs", i)+".internalIP", "internal IP %s is not one of the endpoint's ipNetworks", in)
			continue
		}
		if err1 == nil && err2 == nil {
			out.IPNATs = append(out.IPNATs, model.IPNAT{InternalIP: in, ExternalIP: ex})
		}
	}
	for i, p := range s.AllowSpoofedSourcePrefixes {
		pfx, err := parseCIDROrIP(p)
		if err != nil {
			e.add(idx("spec.allowSpoofedSourcePrefixes", i), "invalid CIDR %q", p)
			continue
		}
		out.AllowSpoofedSourcePrefixes = append(out.AllowSpoofedSourcePrefixes, pfx)
	}
	for i, p := range s.Ports {
		np, ok := endpointPort(idx("spec.ports", i), p.Name, p.Protocol, p.Port, &e)
		if ok && np.Name != "" {
			out.Ports = append(out.Ports, np)
		}
	}
	labels := model.Labels{}
	for k, v := range w.Labels {
		if strings.HasPrefix(k, prefixNamespace) || strings.HasPrefix(k, prefixSA) {
			continue
		}
		labels[k] = v
	}
	if s.ServiceAccountName != "" {
		labels[labelServiceAccount] = s.ServiceAccountName
	}
	out.Labels = labels
	if e.ok() && len(out.IPNetworks) == 0 {
		return Result{Resource: res}
	}
	return e.result(res, out)
}

// endpointPort validates one endpoint port (name, protocol TCP/UDP/SCTP, port > 0).
func endpointPort(field, name string, proto numorstring.Protocol, port uint16, e *errs) (model.NamedPort, bool) {
	ok := true
	if name != "" && !portNameRegex.MatchString(name) {
		e.add(field+".name", "invalid port name %q", name)
		ok = false
	}
	if port == 0 {
		e.add(field+".port", "port must be 1-65535")
		ok = false
	}
	n := protocol(field+".protocol", &proto, e)
	if n == nil {
		return model.NamedPort{}, false
	}
	if !proto.SupportsPorts() {
		e.add(field+".protocol", "protocol %s has no ports; expected TCP, UDP or SCTP", proto.String())
		ok = false
	}
	return model.NamedPort{Name: name, Protocol: *n, Port: port}, ok
}

// decodeHostEndpoint decodes a projectcalico.org/v3 HostEndpoint.
func decodeHostEndpoint(data []byte) Result {
	var h apiv3.HostEndpoint
	unknown, fatal := decodeCalico(data, &h)
	if fatal != nil {
		return Result{Resource: resourceName("HostEndpoint", data), Errors: fatal}
	}
	return withErrors(HostEndpoint(&h), unknown)
}

// HostEndpoint converts a Calico HostEndpoint (Calico's validator: a node, and an interface
// or expected IPs).
func HostEndpoint(h *apiv3.HostEndpoint) Result {
	var e errs
	res := resourceText("HostEndpoint", "", h.Name)
	checkName(&h.ObjectMeta, nameRegex, 253, false, &e)
	s := &h.Spec
	if s.Node == "" {
		e.add("spec.node", "missing node")
	}
	if s.InterfaceName == "" && len(s.ExpectedIPs) == 0 {
		e.add("spec.interfaceName", "no interface or expected IPs have been specified")
	}
	if s.InterfaceName != "" && s.InterfaceName != "*" && !interfaceRegex.MatchString(s.InterfaceName) {
		e.add("spec.interfaceName", "invalid interface name %q; expected 1-15 of [a-zA-Z0-9_.-] or \"*\"", s.InterfaceName)
	}
	checkLabels("metadata.labels", h.Labels, &e)
	out := &model.HostEndpoint{
		Meta:          key(model.KindHostEndpoint, "", h.Name),
		Node:          s.Node,
		InterfaceName: s.InterfaceName,
		Profiles:      s.Profiles,
		Labels:        copyLabels(h.Labels),
	}
	for i, a := range s.ExpectedIPs {
		ip, err := parseIP(a)
		if err != nil {
			e.add(idx("spec.expectedIPs", i), "invalid IP %q", a)
			continue
		}
		out.ExpectedIPs = append(out.ExpectedIPs, ip)
	}
	for i, p := range s.Ports {
		np, ok := endpointPort(idx("spec.ports", i), p.Name, p.Protocol, p.Port, &e)
		if ok {
			out.Ports = append(out.Ports, np)
		}
	}
	return e.result(res, out)
}

// decodeNetworkSet decodes a projectcalico.org/v3 NetworkSet.
func decodeNetworkSet(data []byte) Result {
	var n apiv3.NetworkSet
	unknown, fatal := decodeCalico(data, &n)
	if fatal != nil {
		return Result{Resource: resourceName("NetworkSet", data), Errors: fatal}
	}
	return withErrors(NetworkSet(&n), unknown)
}

// NetworkSet converts a namespaced NetworkSet; Calico's processor adds the
// projectcalico.org/namespace label (and its validator forbids setting it by hand).
func NetworkSet(n *apiv3.NetworkSet) Result {
	var e errs
	res := resourceText("NetworkSet", n.Namespace, n.Name)
	checkName(&n.ObjectMeta, nameRegex, 253, true, &e)
	checkLabels("metadata.labels", n.Labels, &e)
	if _, ok := n.Labels[labelNamespace]; ok {
		e.add("metadata.labels."+labelNamespace, "projectcalico.org/namespace is not a valid label name (Calico sets it)")
	}
	labels := copyLabels(n.Labels)
	if labels == nil {
		labels = model.Labels{}
	}
	labels[labelNamespace] = n.Namespace
	return e.result(res, &model.NetworkSet{
		Meta:   key(model.KindNetworkSet, n.Namespace, n.Name),
		Labels: labels,
		Nets:   cidrList("spec.nets", n.Spec.Nets, &e),
	})
}

// decodeGlobalNetworkSet decodes a projectcalico.org/v3 GlobalNetworkSet.
func decodeGlobalNetworkSet(data []byte) Result {
	var n apiv3.GlobalNetworkSet
	unknown, fatal := decodeCalico(data, &n)
	if fatal != nil {
		return Result{Resource: resourceName("GlobalNetworkSet", data), Errors: fatal}
	}
	return withErrors(GlobalNetworkSet(&n), unknown)
}

// GlobalNetworkSet converts a GlobalNetworkSet (labels as given).
func GlobalNetworkSet(n *apiv3.GlobalNetworkSet) Result {
	var e errs
	res := resourceText("GlobalNetworkSet", "", n.Name)
	checkName(&n.ObjectMeta, nameRegex, 253, false, &e)
	checkLabels("metadata.labels", n.Labels, &e)
	if _, ok := n.Labels[labelNamespace]; ok {
		e.add("metadata.labels."+labelNamespace, "projectcalico.org/namespace is not a valid label name")
	}
	return e.result(res, &model.NetworkSet{
		Meta:   key(model.KindGlobalNetworkSet, "", n.Name),
		Labels: copyLabels(n.Labels),
		Nets:   cidrList("spec.nets", n.Spec.Nets, &e),
	})
}

// cidrList parses a list of CIDRs or bare IPs (masked).
func cidrList(field string, in []string, e *errs) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range in {
		p, err := parseCIDROrIP(s)
		if err != nil {
			e.add(idx(field, i), "invalid CIDR %q; expected an address or address/prefix-length", s)
			continue
		}
		out = append(out, p)
	}
	return out
}

// decodeIPPool decodes a projectcalico.org/v3 IPPool.
func decodeIPPool(data []byte) Result {
	var p apiv3.IPPool
	unknown, fatal := decodeCalico(data, &p)
	if fatal != nil {
		return Result{Resource: resourceName("IPPool", data), Errors: fatal}
	}
	return withErrors(IPPool(&p), unknown)
}

// IPPool converts an IP pool: block size defaults to 26 (IPv4) or 122 (IPv6) and modes to
// Never, as Calico's client defaults them; both encapsulations at once are rejected.
func IPPool(p *apiv3.IPPool) Result {
	var e errs
	res := resourceText("IPPool", "", p.Name)
	checkName(&p.ObjectMeta, nameRegex, 253, false, &e)
	s := &p.Spec
	out := &model.IPPool{
		Meta:        key(model.KindIPPool, "", p.Name),
		NATOutgoing: s.NATOutgoing,
		Disabled:    s.Disabled,
		VXLANMode:   model.EncapNever,
		IPIPMode:    model.EncapNever,
		BlockSize:   s.BlockSize,
	}
	if s.CIDR == "" {
		e.add("spec.cidr", "IPPool CIDR must be specified")
	} else if c, err := netip.ParsePrefix(s.CIDR); err != nil {
		e.add("spec.cidr", "invalid CIDR %q; expected address/prefix-length", s.CIDR)
	} else {
		out.CIDR = c.Masked()
		if c.Masked() != c {
			e.add("spec.cidr", "CIDR %q has host bits set; expected %s", s.CIDR, c.Masked())
		}
		v4 := c.Addr().Is4()
		if out.BlockSize == 0 {
			out.BlockSize = map[bool]int{true: 26, false: 122}[v4]
		}
		switch {
		case v4 && (out.BlockSize < 20 || out.BlockSize > 32):
			e.add("spec.blockSize", "block size %d invalid for IPv4; expected 20-32", out.BlockSize)
		case !v4 && (out.BlockSize < 116 || out.BlockSize > 128):
			e.add("spec.blockSize", "block size %d invalid for IPv6; expected 116-128", out.BlockSize)
		case !s.Disabled && out.BlockSize < c.Bits():
			// Calico checks this only for enabled pools.
			e.add("spec.blockSize", "the pool /%d is smaller than its block size /%d; Calico IPAM needs pool >= block", c.Bits(), out.BlockSize)
		}
		if c.Masked().Overlaps(linkLocalV4) || c.Masked().Overlaps(linkLocalV6) {
			e.add("spec.cidr", "pool %s overlaps the link-local range, which Calico forbids", s.CIDR)
		}
		if !v4 && s.IPIPMode != "" && s.IPIPMode != apiv3.IPIPModeNever {
			e.add("spec.ipipMode", "IPIP is not supported on an IPv6 pool")
		}
	}
	if m, ok := encapMode("spec.vxlanMode", string(s.VXLANMode), &e); ok {
		out.VXLANMode = m
	}
	if m, ok := encapMode("spec.ipipMode", string(s.IPIPMode), &e); ok {
		out.IPIPMode = m
	}
	if out.VXLANMode != model.EncapNever && out.IPIPMode != model.EncapNever {
		e.add("spec.vxlanMode", "cannot enable both VXLAN and IPIP on the same pool")
	}
	if strings.Contains(s.NodeSelector, "global(") {
		e.add("spec.nodeSelector", "global() is not valid in an IPPool nodeSelector; use all()")
	} else if s.NodeSelector != "" && checkSelector("spec.nodeSelector", s.NodeSelector, &e) {
		out.NodeSelector = parsed("spec.nodeSelector", s.NodeSelector, &e)
	} else if s.NodeSelector == "" {
		out.NodeSelector = parsed("spec.nodeSelector", "all()", &e)
	}
	return e.result(res, out)
}

// encapMode validates an encapsulation mode; "" means Never.
func encapMode(field, m string, e *errs) (model.EncapMode, bool) {
	switch model.EncapMode(m) {
	case "":
		return model.EncapNever, true
	case model.EncapNever, model.EncapAlways, model.EncapCrossSubnet:
		return model.EncapMode(m), true
	}
	e.add(field, "invalid mode %q; expected Always, CrossSubnet or Never", m)
	return "", false
}

// CalicoNode converts a Calico v3 Node (spec.bgp addresses with prefix length; VXLAN
// tunnel addresses and MACs).
func CalicoNode(n *NodeV3) Result {
	var e errs
	res := resourceText("Node", "", n.Name)
	checkName(&n.ObjectMeta, nameRegex, 253, false, &e)
	out := &model.Node{Meta: key(model.KindNode, "", n.Name), Labels: copyLabels(n.Labels)}
	if b := n.Spec.BGP; b != nil {
		out.IPv4Address = nodeAddr("spec.bgp.ipv4Address", b.IPv4Address, true, &e)
		out.IPv6Address = nodeAddr("spec.bgp.ipv6Address", b.IPv6Address, false, &e)
	}
	out.VXLANTunnelAddr = familyIP("spec.ipv4VXLANTunnelAddr", n.Spec.IPv4VXLANTunnelAddr, true, &e)
	out.VXLANTunnelAddrV6 = familyIP("spec.ipv6VXLANTunnelAddr", n.Spec.IPv6VXLANTunnelAddr, false, &e)
	for _, m := range []struct {
		field, in string
		out       *string
	}{
		{"spec.vxlanTunnelMACAddr", n.Spec.VXLANTunnelMACAddr, &out.VXLANTunnelMAC},
		{"spec.vxlanTunnelMACAddrV6", n.Spec.VXLANTunnelMACAddrV6, &out.VXLANTunnelMACV6},
	} {
		if m.in == "" {
			continue
		}
		mac, err := parseMAC(m.in)
		if err != nil {
			e.add(m.field, "invalid MAC %q", m.in)
		}
		*m.out = mac
	}
	return e.result(res, out)
}

// nodeAddr parses a node address with prefix length of the wanted family.
func nodeAddr(field, s string, v4 bool, e *errs) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	p, err := parseAddrPrefix(s)
	if err != nil || p.Addr().Is4() != v4 {
		e.add(field, "invalid address %q; expected an IPv%s address with prefix length", s, map[bool]string{true: "4", false: "6"}[v4])
		return netip.Prefix{}
	}
	return p
}

// familyIP parses an address of the wanted family.
func familyIP(field, s string, v4 bool, e *errs) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	a, err := parseIP(s)
	if err != nil || a.Is4() != v4 {
		e.add(field, "invalid address %q; expected an IPv%s address", s, map[bool]string{true: "4", false: "6"}[v4])
		return netip.Addr{}
	}
	return a
}

// felixConfigurationDoc is a FelixConfiguration with its spec kept generic.
type felixConfigurationDoc struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              map[string]any `json:"spec,omitempty"`
}

// decodeFelixConfiguration decodes a projectcalico.org/v3 FelixConfiguration. The spec is
// first checked against the official type (so typos and wrong types are reported), then kept
// as a map by JSON field name for field-by-field layering.
func decodeFelixConfiguration(data []byte) Result {
	res := resourceName("FelixConfiguration", data)
	var typed apiv3.FelixConfiguration
	unknown, fatal := decodeCalico(data, &typed)
	if fatal != nil {
		return Result{Resource: res, Errors: fatal}
	}
	var doc felixConfigurationDoc
	if fe := decodeJSON(data, &doc, false); fe != nil {
		return Result{Resource: res, Errors: fe}
	}
	return withErrors(felixConfiguration(res, &doc.ObjectMeta, doc.Spec), unknown)
}

// FelixConfiguration converts a typed FelixConfiguration; its spec is re-encoded to a map by
// JSON field name (values as encoding/json renders them, e.g. durations "1m0s"; empty
// strings dropped as unset).
func FelixConfiguration(f *apiv3.FelixConfiguration) Result {
	res := resourceText("FelixConfiguration", "", f.Name)
	var spec map[string]any
	raw, err := json.Marshal(f.Spec)
	if err == nil {
		err = json.Unmarshal(raw, &spec)
	}
	if err != nil {
		return Result{Resource: res, Errors: []FieldError{{Field: "spec", Reason: "cannot re-encode: " + err.Error()}}}
	}
	for k, v := range spec {
		if v == "" {
			delete(spec, k) // a few spec strings lack omitempty; empty means unset
		}
	}
	return felixConfiguration(res, &f.ObjectMeta, spec)
}

// felixConfiguration validates the name and builds the model object.
func felixConfiguration(res string, meta *metav1.ObjectMeta, spec map[string]any) Result {
	var e errs
	checkName(meta, nameRegex, 253, false, &e)
	if spec == nil {
		spec = map[string]any{}
	}
	return e.result(res, &model.FelixConfiguration{Meta: key(model.KindFelixConfiguration, "", meta.Name), Spec: spec})
}

// decodeBGPConfiguration decodes a projectcalico.org/v3 BGPConfiguration.
func decodeBGPConfiguration(data []byte) Result {
	var b apiv3.BGPConfiguration
	unknown, fatal := decodeCalico(data, &b)
	if fatal != nil {
		return Result{Resource: resourceName("BGPConfiguration", data), Errors: fatal}
	}
	return withErrors(BGPConfiguration(&b), unknown)
}

// BGPConfiguration converts a BGPConfiguration (felis reads only its service CIDRs).
func BGPConfiguration(b *apiv3.BGPConfiguration) Result {
	var e errs
	res := resourceText("BGPConfiguration", "", b.Name)
	checkName(&b.ObjectMeta, nameRegex, 253, false, &e)
	out := &model.BGPConfiguration{Meta: key(model.KindBGPConfiguration, "", b.Name)}
	blocks := func(field string, cidrs []string) []netip.Prefix {
		var ps []netip.Prefix
		for i, c := range cidrs {
			p, err := parseCIDROrIP(c)
			if err != nil {
				e.add(idx(field, i)+".cidr", "invalid CIDR %q", c)
				continue
			}
			ps = append(ps, p)
		}
		return ps
	}
	var ci, ex, lb []string
	for _, c := range b.Spec.ServiceClusterIPs {
		ci = append(ci, c.CIDR)
	}
	for _, c := range b.Spec.ServiceExternalIPs {
		ex = append(ex, c.CIDR)
	}
	for _, c := range b.Spec.ServiceLoadBalancerIPs {
		lb = append(lb, c.CIDR)
	}
	out.ServiceClusterIPs = blocks("spec.serviceClusterIPs", ci)
	out.ServiceExternalIPs = blocks("spec.serviceExternalIPs", ex)
	out.ServiceLoadBalancerIPs = blocks("spec.serviceLoadBalancerIPs", lb)
	return e.result(res, out)
}

// decodeBlockAffinity decodes a projectcalico.org/v3 BlockAffinity.
func decodeBlockAffinity(data []byte) Result {
	var b apiv3.BlockAffinity
	unknown, fatal := decodeCalico(data, &b)
	if fatal != nil {
		return Result{Resource: resourceName("BlockAffinity", data), Errors: fatal}
	}
	return withErrors(BlockAffinity(&b), unknown)
}

// BlockAffinity converts a BlockAffinity (node, CIDR, state).
func BlockAffinity(b *apiv3.BlockAffinity) Result {
	var e errs
	res := resourceText("BlockAffinity", "", b.Name)
	checkName(&b.ObjectMeta, nameRegex, 253, false, &e)
	out := &model.BlockAffinity{Meta: key(model.KindBlockAffinity, "", b.Name), Node: b.Spec.Node, State: string(b.Spec.State)}
	if b.Spec.Node == "" {
		e.add("spec.node", "missing node")
	}
	switch b.Spec.State {
	case apiv3.StateConfirmed, apiv3.StatePending, apiv3.StatePendingDeletion, "":
	default:
		e.add("spec.state", "invalid state %q; expected confirmed, pending or pendingDeletion", b.Spec.State)
	}
	if c, err := netip.ParsePrefix(b.Spec.CIDR); err != nil {
		e.add("spec.cidr", "invalid CIDR %q", b.Spec.CIDR)
	} else {
		out.CIDR = c.Masked()
	}
	return e.result(res, out)
}

// ipamBlockDoc mirrors the crd.projectcalico.org/v1 IPAMBlock (the part felis reads).
type ipamBlockDoc struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		CIDR     string  `json:"cidr"`
		Affinity *string `json:"affinity"`
		Deleted  bool    `json:"deleted"`
	} `json:"spec"`
}

// decodeIPAMBlock decodes a crd.projectcalico.org/v1 IPAMBlock: affinity "host:NODE" gives
// the node; the key name is Calico's block name for the CIDR (see blockName).
func decodeIPAMBlock(data []byte) Result {
	var b ipamBlockDoc
	if fe := decodeJSON(data, &b, false); fe != nil {
		return Result{Resource: resourceName("IPAMBlock", data), Errors: fe}
	}
	var e errs
	res := resourceText("IPAMBlock", "", b.Name)
	out := &model.IPAMBlock{Deleted: b.Spec.Deleted}
	c, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		e.add("spec.cidr", "invalid CIDR %q", b.Spec.CIDR)
	} else {
		out.CIDR = c.Masked()
		out.Meta = key(model.KindIPAMBlock, "", blockName(out.CIDR))
	}
	if a := b.Spec.Affinity; a != nil && *a != "" {
		node, ok := strings.CutPrefix(*a, "host:")
		if ok {
			out.AffinityNode = node
		}
	}
	return e.result(res, out)
}

// blockName is Calico's CIDRToName: the CIDR with its dots, colons and slash turned into
// dashes ("10.0.0.0/26" -> "10-0-0-0-26").
func blockName(p netip.Prefix) string {
	name := strings.Replace(p.String(), ".", "-", 3)
	name = strings.Replace(name, ":", "-", 7)
	return strings.Replace(name, "/", "-", 1)
}
