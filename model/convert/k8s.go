package convert

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/felis-dev/felis/model"
)

// Calico's pod annotations.
const (
	annotationPodIP          = "cni.projectcalico.org/podIP"
	annotationPodIPs         = "cni.projectcalico.org/podIPs"
	annotationAWSPodIPs      = "vpc.amazonaws.com/pod-ips"
	annotationFloatingIPs    = "cni.projectcalico.org/floatingIPs"
	annotationSourcePrefixes = "cni.projectcalico.org/allowedSourcePrefixes"
	defaultInterfacePrefix   = "cali"
)

// InterfaceName is the host-side veth name Calico's CNI gives a pod: prefix + the first 11
// hex digits of SHA-1("NAMESPACE.PODNAME") (Calico's VethNameForWorkload).
func InterfaceName(prefix, namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(sum[:])[:11]
}

// WorkloadEndpointName is Calico's WEP name for a Kubernetes pod: NODE-k8s-POD-eth0 with
// every "-" inside a segment doubled (Calico's CalculateWorkloadEndpointName).
func WorkloadEndpointName(node, pod, endpoint string) string {
	esc := func(s string) string { return strings.ReplaceAll(s, "-", "--") }
	return esc(node) + "-" + orchestratorK8s + "-" + esc(pod) + "-" + esc(endpoint)
}

// Pod converts a pod to its WorkloadEndpoint as Calico's Kubernetes backend does. Pods that
// are host-networked, unscheduled, without an IP or finished give no object (not an error).
func Pod(p *corev1.Pod) Result {
	var e errs
	res := resourceText("Pod", p.Namespace, p.Name)
	requireNamespacedName(&e, p.Namespace, p.Name)
	if !e.ok() {
		return e.result(res)
	}
	// Calico's IsReadyCalicoPod: not host-networked, scheduled, with an IP; IsFinished drops
	// the IPs of succeeded/failed pods and of deleted pods whose CNI cleared the IP annotation.
	if p.Spec.HostNetwork || p.Spec.NodeName == "" || !hasIPAddress(p) || isFinished(p) {
		return Result{Resource: res}
	}
	if strings.HasPrefix(p.Spec.NodeName, "-") || strings.HasSuffix(p.Spec.NodeName, "-") {
		e.add("spec.nodeName", "must not begin or end with '-' (Calico cannot name the endpoint)")
	}
	if strings.HasPrefix(p.Name, "-") || strings.HasSuffix(p.Name, "-") {
		e.add("metadata.name", "must not begin or end with '-' (Calico cannot name the endpoint)")
	}
	ips := podIPs(p, &e)
	if len(ips) == 0 && e.ok() {
		return Result{Resource: res}
	}

	labels := model.Labels{}
	for k, v := range p.Labels {
		// The WEP update processor drops pcns./pcsa. labels: those only come from profiles.
		if strings.HasPrefix(k, prefixNamespace) || strings.HasPrefix(k, prefixSA) {
			continue
		}
		labels[k] = v
	}
	labels[labelNamespace] = p.Namespace
	labels[labelOrchestrator] = orchestratorK8s
	sa := p.Spec.ServiceAccountName
	profiles := []string{profileNSPrefix + p.Namespace}
	if sa != "" {
		labels[labelServiceAccount] = sa
		profiles = append(profiles, profileSAPrefix+p.Namespace+"."+sa)
	}

	w := &model.WorkloadEndpoint{
		Meta:           key(model.KindWorkloadEndpoint, p.Namespace, WorkloadEndpointName(p.Spec.NodeName, p.Name, "eth0")),
		Node:           p.Spec.NodeName,
		Orchestrator:   orchestratorK8s,
		Workload:       p.Name,
		Endpoint:       "eth0",
		InterfaceName:  InterfaceName(defaultInterfacePrefix, p.Namespace, p.Name),
		IPNetworks:     ips,
		Profiles:       profiles,
		Labels:         labels,
		ServiceAccount: sa,
		Ports:          containerPorts(p),
	}
	w.IPNATs = floatingIPs(p, ips, &e)
	w.AllowSpoofedSourcePrefixes = sourcePrefixes(p.Annotations, &e)
	return e.result(res, w)
}

// hasIPAddress is Calico's HasIPAddress, also accepting the plural fields: Kubernetes always
// sets podIP with podIPs, but hand-written files may give only the plural form.
func hasIPAddress(p *corev1.Pod) bool {
	return p.Status.PodIP != "" || len(p.Status.PodIPs) > 0 || p.Annotations[annotationPodIP] != "" ||
		p.Annotations[annotationPodIPs] != "" || p.Annotations[annotationAWSPodIPs] != ""
}

// isFinished is Calico's IsFinished.
func isFinished(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		if ip, ok := p.Annotations[annotationPodIP]; ok && ip == "" {
			return true
		}
		if ips, ok := p.Annotations[annotationAWSPodIPs]; ok && ips == "" {
			return true
		}
	}
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded, "Completed":
		return true
	}
	return false
}

// podIPs picks the pod's addresses as Calico's getPodIPs does: status.podIPs, then
// status.podIP, then Calico's podIPs/podIP annotations, then the AWS annotation. Each becomes
// a /32 or /128 (a CIDR is masked to its network, as the WEP processor does).
func podIPs(p *corev1.Pod, e *errs) []netip.Prefix {
	var raw []string
	field := ""
	switch {
	case len(p.Status.PodIPs) > 0:
		for _, ip := range p.Status.PodIPs {
			raw = append(raw, ip.IP)
		}
		field = "status.podIPs"
	case p.Status.PodIP != "":
		raw, field = []string{p.Status.PodIP}, "status.podIP"
	case p.Annotations[annotationPodIPs] != "":
		raw, field = strings.Split(p.Annotations[annotationPodIPs], ","), "metadata.annotations."+annotationPodIPs
	case p.Annotations[annotationPodIP] != "":
		raw, field = []string{p.Annotations[annotationPodIP]}, "metadata.annotations."+annotationPodIP
	case p.Annotations[annotationAWSPodIPs] != "":
		raw, field = strings.Split(p.Annotations[annotationAWSPodIPs], ","), "metadata.annotations."+annotationAWSPodIPs
	}
	var out []netip.Prefix
	for i, s := range raw {
		pfx, err := parseCIDROrIP(strings.TrimSpace(s))
		if err != nil {
			f := field
			if len(raw) > 1 || field == "status.podIPs" {
				f = idx(field, i)
			}
			e.add(f, "invalid pod IP %q; expected an IPv4 or IPv6 address", s)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// containerPorts lists the pod's named container ports (containers then init containers,
// protocol TCP by default; unknown protocols skipped), as Calico's appendEndpointPorts does.
// Unnamed host ports are left out: felis only uses ports by name.
func containerPorts(p *corev1.Pod) []model.NamedPort {
	var out []model.NamedPort
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.ContainerPort <= 0 || cp.ContainerPort > 65535 || cp.Name == "" {
					continue
				}
				proto, ok := k8sProtocol(cp.Protocol)
				if !ok {
					continue
				}
				out = append(out, model.NamedPort{Name: cp.Name, Protocol: proto, Port: uint16(cp.ContainerPort)})
			}
		}
	}
	return out
}

// k8sProtocol maps a Kubernetes protocol (default TCP) to its number.
func k8sProtocol(p corev1.Protocol) (uint8, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return model.ProtoTCP, true
	case corev1.ProtocolUDP:
		return model.ProtoUDP, true
	case corev1.ProtocolSCTP:
		return model.ProtoSCTP, true
	}
	return 0, false
}

// floatingIPs maps Calico's floatingIPs annotation onto the pod's address of the same family.
func floatingIPs(p *corev1.Pod, ips []netip.Prefix, e *errs) []model.IPNAT {
	ann, ok := p.Annotations[annotationFloatingIPs]
	if !ok || len(ips) == 0 {
		return nil
	}
	field := "metadata.annotations." + annotationFloatingIPs
	var list []string
	if err := json.Unmarshal([]byte(ann), &list); err != nil {
		e.add(field, "expected a JSON list of IP addresses")
		return nil
	}
	var v4, v6 netip.Addr
	for _, ip := range ips {
		if ip.Addr().Is4() {
			v4 = ip.Addr()
		} else {
			v6 = ip.Addr()
		}
	}
	var out []model.IPNAT
	for i, s := range list {
		ext, err := parseIP(s)
		if err != nil {
			e.add(idx(field, i), "invalid IP %q", s)
			continue
		}
		switch {
		case ext.Is4() && v4.IsValid():
			out = append(out, model.IPNAT{InternalIP: v4, ExternalIP: ext})
		case ext.Is6() && v6.IsValid():
			out = append(out, model.IPNAT{InternalIP: v6, ExternalIP: ext})
		}
	}
	return out
}

// sourcePrefixes parses Calico's allowedSourcePrefixes annotation (a JSON list of CIDRs).
func sourcePrefixes(ann map[string]string, e *errs) []netip.Prefix {
	s, ok := ann[annotationSourcePrefixes]
	if !ok || s == "" {
		return nil
	}
	field := "metadata.annotations." + annotationSourcePrefixes
	var list []string
	if err := json.Unmarshal([]byte(s), &list); err != nil {
		e.add(field, "expected a JSON list of CIDRs")
		return nil
	}
	var out []netip.Prefix
	for i, c := range list {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			e.add(idx(field, i), "invalid CIDR %q", c)
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

// Namespace converts a namespace to profile kns.NAME as Calico's NamespaceToProfile does:
// labels pcns.KEY plus pcns.projectcalico.org/name, and one Allow rule each way.
func Namespace(ns *corev1.Namespace) Result {
	var e errs
	res := resourceText("Namespace", "", ns.Name)
	if ns.Name == "" {
		e.add("metadata.name", "missing name")
		return e.result(res)
	}
	labels := model.Labels{}
	for k, v := range ns.Labels {
		labels[prefixNamespace+k] = v
	}
	labels[prefixNamespace+labelName] = ns.Name
	return e.result(res, &model.Profile{
		Meta:          key(model.KindProfile, "", profileNSPrefix+ns.Name),
		LabelsToApply: labels,
		Ingress:       []model.Rule{{Action: model.ActionAllow}},
		Egress:        []model.Rule{{Action: model.ActionAllow}},
	})
}

// ServiceAccount converts a service account to profile ksa.NS.NAME as Calico's
// ServiceAccountToProfile does: labels pcsa.KEY plus pcsa.projectcalico.org/name, no rules.
func ServiceAccount(sa *corev1.ServiceAccount) Result {
	var e errs
	res := resourceText("ServiceAccount", sa.Namespace, sa.Name)
	if sa.Name == "" {
		e.add("metadata.name", "missing name")
		return e.result(res)
	}
	ns := sa.Namespace
	if ns == "" {
		ns = "default" // Calico's serviceAccountNameToProfileName defaults the namespace
	}
	labels := model.Labels{}
	for k, v := range sa.Labels {
		labels[prefixSA+k] = v
	}
	labels[prefixSA+labelName] = sa.Name
	return e.result(res, &model.Profile{
		Meta:          key(model.KindProfile, "", profileSAPrefix+ns+"."+sa.Name),
		LabelsToApply: labels,
	})
}

// Calico's node annotations on Kubernetes Nodes.
const (
	annotationIPv4        = "projectcalico.org/IPv4Address"
	annotationIPv6        = "projectcalico.org/IPv6Address"
	annotationVXLANAddr   = "projectcalico.org/IPv4VXLANTunnelAddr"
	annotationVXLANMAC    = "projectcalico.org/VXLANTunnelMACAddr"
	annotationVXLANAddrV6 = "projectcalico.org/IPv6VXLANTunnelAddr"
	annotationVXLANMACV6  = "projectcalico.org/VXLANTunnelMACAddrV6"
)

// Node converts a Kubernetes node as Calico's K8sNodeToCalico does: addresses and VXLAN
// tunnel address/MAC from Calico's annotations (invalid values ignored, as Calico does);
// without a valid address annotation, the first InternalIP of that family as a /32 or /128.
func Node(n *corev1.Node) Result {
	var e errs
	res := resourceText("Node", "", n.Name)
	if n.Name == "" {
		e.add("metadata.name", "missing name")
		return e.result(res)
	}
	out := &model.Node{
		Meta:   key(model.KindNode, "", n.Name),
		Labels: copyLabels(n.Labels),
	}
	ann := n.Annotations
	out.IPv4Address = annotatedCIDR(ann, annotationIPv4, true)
	out.IPv6Address = annotatedCIDR(ann, annotationIPv6, false)
	if !out.IPv4Address.IsValid() || !out.IPv6Address.IsValid() {
		for i, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			ip, err := parseIP(a.Address)
			if err != nil {
				e.add(idx("status.addresses", i)+".address", "invalid IP %q", a.Address)
				continue
			}
			pfx := netip.PrefixFrom(ip, ip.BitLen())
			if ip.Is4() && !out.IPv4Address.IsValid() {
				out.IPv4Address = pfx
			} else if ip.Is6() && !out.IPv6Address.IsValid() {
				out.IPv6Address = pfx
			}
		}
	}
	out.VXLANTunnelAddr = annotatedIP(ann, annotationVXLANAddr, true)
	out.VXLANTunnelAddrV6 = annotatedIP(ann, annotationVXLANAddrV6, false)
	out.VXLANTunnelMAC = annotatedMAC(ann, annotationVXLANMAC)
	out.VXLANTunnelMACV6 = annotatedMAC(ann, annotationVXLANMACV6)
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for i, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			e.add(idx("spec.podCIDRs", i), "invalid CIDR %q", c)
			continue
		}
		out.PodCIDRs = append(out.PodCIDRs, p.Masked())
	}
	return e.result(res, out)
}

// annotatedCIDR reads an address-with-prefix annotation of the wanted family (a bare
// address is taken as /32 or /128; host bits kept: it is the node's address). Like Calico's
// getAnnotation, an invalid value is ignored rather than rejected.
func annotatedCIDR(ann map[string]string, name string, v4 bool) netip.Prefix {
	p, err := parseAddrPrefix(ann[name])
	if err != nil || p.Addr().Is4() != v4 {
		return netip.Prefix{}
	}
	return p
}

// annotatedIP reads an address annotation of the wanted family; invalid values are ignored.
func annotatedIP(ann map[string]string, name string, v4 bool) netip.Addr {
	a, err := parseIP(ann[name])
	if err != nil || a.Is4() != v4 {
		return netip.Addr{}
	}
	return a
}

// annotatedMAC reads a MAC annotation in canonical form; invalid values are ignored.
func annotatedMAC(ann map[string]string, name string) string {
	m, err := parseMAC(ann[name])
	if err != nil {
		return ""
	}
	return m
}

// Service converts a Kubernetes Service: cluster IPs (spec.clusterIPs, else spec.clusterIP;
// "None" means headless), external IPs, load-balancer ingress IPs (but not those in ipMode
// Proxy, as kube-proxy), ports, traffic policies and session affinity.
func Service(s *corev1.Service) Result {
	var e errs
	res := resourceText("Service", s.Namespace, s.Name)
	requireNamespacedName(&e, s.Namespace, s.Name)
	out := &model.Service{
		Meta:                 key(model.KindService, s.Namespace, s.Name),
		Type:                 string(s.Spec.Type),
		ExternalTrafficLocal: s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		InternalTrafficLocal: s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
		Selector:             copyLabels(s.Spec.Selector),
	}
	if out.Type == "" {
		out.Type = string(corev1.ServiceTypeClusterIP)
	}
	clusterIPs, field := s.Spec.ClusterIPs, "spec.clusterIPs"
	if len(clusterIPs) == 0 && s.Spec.ClusterIP != "" {
		clusterIPs, field = []string{s.Spec.ClusterIP}, "spec.clusterIP"
	}
	for i, c := range clusterIPs {
		if c == corev1.ClusterIPNone || c == "" {
			continue
		}
		a, err := parseIP(c)
		if err != nil {
			e.add(idx(field, i), "invalid IP %q; expected an address or \"None\"", c)
			continue
		}
		out.ClusterIPs = append(out.ClusterIPs, a)
	}
	for i, c := range s.Spec.ExternalIPs {
		a, err := parseIP(c)
		if err != nil {
			e.add(idx("spec.externalIPs", i), "invalid IP %q", c)
			continue
		}
		out.ExternalIPs = append(out.ExternalIPs, a)
	}
	for i, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP == "" {
			continue // hostname-only ingress
		}
		if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
			continue // the load balancer proxies to the nodes itself; kube-proxy leaves these alone
		}
		a, err := parseIP(ing.IP)
		if err != nil {
			e.add(idx("status.loadBalancer.ingress", i)+".ip", "invalid IP %q", ing.IP)
			continue
		}
		out.LoadBalancerIPs = append(out.LoadBalancerIPs, a)
	}
	for i, p := range s.Spec.Ports {
		f := idx("spec.ports", i)
		proto, ok := k8sProtocol(p.Protocol)
		if !ok {
			e.add(f+".protocol", "unknown protocol %q; expected TCP, UDP or SCTP", p.Protocol)
			continue
		}
		if p.Port < 1 || p.Port > 65535 {
			e.add(f+".port", "port %d out of range; expected 1-65535", p.Port)
			continue
		}
		if p.NodePort < 0 || p.NodePort > 65535 {
			e.add(f+".nodePort", "port %d out of range; expected 0-65535", p.NodePort)
			continue
		}
		target := p.TargetPort.String()
		if target == "0" || target == "" {
			target = itoa(int(p.Port)) // Kubernetes defaults targetPort to port
		}
		out.Ports = append(out.Ports, model.ServicePort{Name: p.Name, Protocol: proto, Port: uint16(p.Port), TargetPort: target, NodePort: uint16(p.NodePort)})
	}
	if s.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		out.SessionAffinityClientIP = true
		out.SessionAffinityTimeoutSeconds = 10800 // Kubernetes' default
		if c := s.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			out.SessionAffinityTimeoutSeconds = *c.ClientIP.TimeoutSeconds
		}
	}
	return e.result(res, out)
}

// EndpointSlice converts an EndpointSlice. Conditions default as Kubernetes documents: a nil
// ready means ready; a nil serving takes ready's value; a nil terminating means false.
func EndpointSlice(s *discoveryv1.EndpointSlice) Result {
	var e errs
	res := resourceText("EndpointSlice", s.Namespace, s.Name)
	requireNamespacedName(&e, s.Namespace, s.Name)
	out := &model.EndpointSlice{
		Meta:        key(model.KindEndpointSlice, s.Namespace, s.Name),
		ServiceName: s.Labels[discoveryv1.LabelServiceName],
	}
	for i, p := range s.Ports {
		f := idx("ports", i)
		proto := model.ProtoTCP
		if p.Protocol != nil {
			n, ok := k8sProtocol(*p.Protocol)
			if !ok {
				e.add(f+".protocol", "unknown protocol %q; expected TCP, UDP or SCTP", *p.Protocol)
				continue
			}
			proto = n
		}
		var port uint16
		if p.Port != nil {
			if *p.Port < 1 || *p.Port > 65535 {
				e.add(f+".port", "port %d out of range; expected 1-65535", *p.Port)
				continue
			}
			port = uint16(*p.Port)
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		out.Ports = append(out.Ports, model.EndpointSlicePort{Name: name, Protocol: proto, Port: port})
	}
	fqdn := s.AddressType == discoveryv1.AddressTypeFQDN
	for i, ep := range s.Endpoints {
		f := idx("endpoints", i)
		se := model.SliceEndpoint{Ready: true}
		c := ep.Conditions
		if c.Ready != nil {
			se.Ready = *c.Ready
		}
		se.Serving = se.Ready
		if c.Serving != nil {
			se.Serving = *c.Serving
		}
		if c.Terminating != nil {
			se.Terminating = *c.Terminating
		}
		if ep.NodeName != nil {
			se.NodeName = *ep.NodeName
		}
		if !fqdn {
			for j, a := range ep.Addresses {
				ip, err := parseIP(a)
				if err != nil {
					e.add(idx(f+".addresses", j), "invalid IP %q", a)
					continue
				}
				se.Addresses = append(se.Addresses, ip)
			}
		}
		out.Endpoints = append(out.Endpoints, se)
	}
	return e.result(res, out)
}
