package convert

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/felis-dev/felis/model"
)

// K8sNetworkPolicy converts a Kubernetes NetworkPolicy as Calico's K8sNetworkPolicyToCalico
// does, then scopes it as the NetworkPolicy update processor does: policy knp.default.NAME
// in tier default at order 1000, one rule per (protocol, peer), types defaulted to Ingress.
func K8sNetworkPolicy(np *networkingv1.NetworkPolicy) Result {
	var e errs
	res := resourceText("NetworkPolicy", np.Namespace, np.Name)
	requireNamespacedName(&e, np.Namespace, np.Name)
	podSel, ok := k8sSelector("spec.podSelector", &np.Spec.PodSelector, true, &e)

	var ingress, egress []model.Rule
	for i, r := range np.Spec.Ingress {
		ingress = append(ingress, k8sRules(idx("spec.ingress", i), "from", r.From, r.Ports, true, np.Namespace, &e)...)
	}
	for i, r := range np.Spec.Egress {
		egress = append(egress, k8sRules(idx("spec.egress", i), "to", r.To, r.Ports, false, np.Namespace, &e)...)
	}

	var in, eg bool
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			in = true
		case networkingv1.PolicyTypeEgress:
			eg = true
		default:
			e.add(idx("spec.policyTypes", i), "unknown policy type %q; expected Ingress or Egress", t)
		}
	}
	types := []model.PolicyType{}
	if in {
		types = append(types, model.PolicyTypeIngress)
	}
	if eg {
		types = append(types, model.PolicyTypeEgress)
	}
	if len(types) == 0 {
		// Calico: no types means a pre-policyTypes cluster, where policies are ingress-only.
		types = append(types, model.PolicyTypeIngress)
	}

	order := 1000.0
	out := &model.Policy{
		Meta:    key(model.KindNetworkPolicy, np.Namespace, k8sPolicyPrefix+np.Name),
		Tier:    defaultTier,
		Order:   &order,
		Types:   types,
		Ingress: ingress,
		Egress:  egress,
	}
	if ok && np.Namespace != "" {
		out.Selector = policySelector(namespacedPolicySelector(podSel, "", np.Namespace), &e)
	}
	return e.result(res, out)
}

// k8sSelector renders a Kubernetes label selector in Calico syntax as k8sSelectorToCalico
// does: pod selectors start with the orchestrator == 'k8s' term; an empty namespace selector
// is all(); matchLabels sorted by key, then matchExpressions in order.
func k8sSelector(field string, s *metav1.LabelSelector, pod bool, e *errs) (string, bool) {
	var terms []string
	if pod {
		terms = append(terms, labelOrchestrator+" == 'k8s'")
	}
	if s == nil {
		return strings.Join(terms, " && "), true
	}
	if !pod && len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
		return "all()", true
	}
	ok := true
	keys := make([]string, 0, len(s.MatchLabels))
	for k := range s.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		terms = append(terms, fmt.Sprintf("%s == '%s'", k, s.MatchLabels[k]))
	}
	for i, x := range s.MatchExpressions {
		values := strings.Join(x.Values, "', '")
		switch x.Operator {
		case metav1.LabelSelectorOpIn:
			terms = append(terms, fmt.Sprintf("%s in { '%s' }", x.Key, values))
		case metav1.LabelSelectorOpNotIn:
			terms = append(terms, fmt.Sprintf("%s not in { '%s' }", x.Key, values))
		case metav1.LabelSelectorOpExists:
			terms = append(terms, fmt.Sprintf("has(%s)", x.Key))
		case metav1.LabelSelectorOpDoesNotExist:
			terms = append(terms, fmt.Sprintf("! has(%s)", x.Key))
		default:
			e.add(idx(field+".matchExpressions", i)+".operator", "unknown operator %q; expected In, NotIn, Exists or DoesNotExist", x.Operator)
			ok = false
		}
	}
	expr := strings.Join(terms, " && ")
	if ok && expr != "" {
		ok = checkSelector(field, expr, e)
	}
	return expr, ok
}

// k8sRules expands one Kubernetes rule into Calico rules as k8sRuleToCalico does: ports are
// grouped by protocol (a port-less entry makes the whole protocol match any port; an empty
// port entry allows everything), each protocol's ports simplified into ranges, then one rule
// per (protocol, peer). No peers means any peer; no ports means any protocol and port.
func k8sRules(path, peerField string, peers []networkingv1.NetworkPolicyPeer, kports []networkingv1.NetworkPolicyPort, ingress bool, ns string, e *errs) []model.Rule {
	// protocol name -> ports; a nil slice under a present key means "all ports".
	byProto := map[string][]model.Port{}
	allowAll := len(kports) == 0
	for i, kp := range kports {
		f := idx(path+".ports", i)
		proto := corev1.ProtocolTCP
		if kp.Protocol != nil {
			proto = *kp.Protocol
		}
		if _, ok := k8sProtocol(proto); !ok {
			e.add(f+".protocol", "unknown protocol %q; expected TCP, UDP or SCTP", proto)
			continue
		}
		if kp.Port == nil {
			if kp.EndPort != nil {
				e.add(f+".endPort", "endPort requires port")
				continue
			}
			byProto[string(proto)] = nil // a port-less entry: every port of this protocol
			continue
		}
		p, ok := k8sPort(f, kp, e)
		if !ok {
			continue
		}
		if cur, seen := byProto[string(proto)]; seen && cur == nil {
			continue // already all ports for this protocol
		}
		byProto[string(proto)] = append(byProto[string(proto)], p)
	}
	if allowAll {
		byProto = map[string][]model.Port{"": nil}
	}
	protos := make([]string, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, p)
	}
	sort.Strings(protos)

	type peerFields struct {
		ok            bool
		sel, nsSel    string
		nets, notNets []string
		netsOK        bool
	}
	var pf []peerFields
	if len(peers) == 0 {
		pf = append(pf, peerFields{ok: true, netsOK: true})
	}
	for i := range peers {
		pf = append(pf, func() peerFields {
			p := &peers[i]
			f := idx(path+"."+peerField, i)
			out := peerFields{ok: true, netsOK: true}
			if p.IPBlock != nil {
				if p.PodSelector != nil || p.NamespaceSelector != nil {
					e.add(f, "ipBlock cannot be combined with podSelector or namespaceSelector")
					out.ok = false
				}
				out.nets = []string{p.IPBlock.CIDR}
				out.notNets = p.IPBlock.Except
				if _, err := netipParsePrefix(p.IPBlock.CIDR); err != nil {
					e.add(f+".ipBlock.cidr", "invalid CIDR %q; expected address/prefix-length", p.IPBlock.CIDR)
					out.netsOK = false
				}
				for j, x := range p.IPBlock.Except {
					if _, err := netipParsePrefix(x); err != nil {
						e.add(idx(f+".ipBlock.except", j), "invalid CIDR %q; expected address/prefix-length", x)
						out.netsOK = false
					}
				}
				return out
			}
			var ok1, ok2 bool
			out.sel, ok1 = k8sSelector(f+".podSelector", p.PodSelector, true, e)
			out.nsSel, ok2 = "", true
			if p.NamespaceSelector != nil {
				out.nsSel, ok2 = k8sSelector(f+".namespaceSelector", p.NamespaceSelector, false, e)
			}
			out.ok = ok1 && ok2
			return out
		}())
	}

	var rules []model.Rule
	for _, protoName := range protos {
		var proto *uint8
		if protoName != "" {
			n, _ := k8sProtocol(corev1.Protocol(protoName))
			proto = &n
		}
		ports := simplifyPorts(byProto[protoName])
		for _, p := range pf {
			if !p.ok {
				continue
			}
			r := model.Rule{Action: model.ActionAllow, Protocol: proto}
			peer := model.EntityRule{}
			if p.netsOK {
				peer.Nets = masked(p.nets)
				peer.NotNets = masked(p.notNets)
			}
			// The update processor scopes the peer: namespaceSelector or the policy namespace.
			peer.Selector = parsed(path, endpointSelector(p.nsSel, p.sel, "", "", ns), e)
			if ingress {
				r.Source = peer
				r.Destination = model.EntityRule{Ports: ports}
			} else {
				peer.Ports = ports
				r.Destination = peer
			}
			rules = append(rules, r)
		}
	}
	return rules
}

// k8sPort converts one port entry (number, name, or number with endPort).
func k8sPort(field string, kp networkingv1.NetworkPolicyPort, e *errs) (model.Port, bool) {
	if kp.Port.Type == 1 { // intstr.String
		name := kp.Port.StrVal
		if n, err := strconv.Atoi(name); err == nil {
			return portRange(field, n, kp.EndPort, e)
		}
		if kp.EndPort != nil {
			e.add(field+".endPort", "endPort cannot be used with a named port")
			return model.Port{}, false
		}
		if !portNameRegex.MatchString(name) {
			e.add(field+".port", "invalid port name %q", name)
			return model.Port{}, false
		}
		return model.Port{Name: name}, true
	}
	return portRange(field, int(kp.Port.IntVal), kp.EndPort, e)
}

// portRange validates a numeric port with an optional end.
func portRange(field string, n int, end *int32, e *errs) (model.Port, bool) {
	if n < 1 || n > 65535 {
		e.add(field+".port", "port %d out of range; expected 1-65535", n)
		return model.Port{}, false
	}
	p := model.Port{Min: uint16(n), Max: uint16(n)}
	if end != nil {
		if *end < int32(n) || *end > 65535 {
			e.add(field+".endPort", "endPort %d invalid; expected %d-65535", *end, n)
			return model.Port{}, false
		}
		p.Max = uint16(*end)
	}
	return p, true
}

// simplifyPorts merges numeric ports into the fewest ranges (named ports first, in order),
// giving the same result as Calico's SimplifyPorts. Calico expands ranges into single
// numbers; merging sorted intervals instead keeps the cost independent of range sizes.
func simplifyPorts(ports []model.Port) []model.Port {
	if len(ports) <= 1 {
		return ports
	}
	var out, nums []model.Port
	for _, p := range ports {
		if p.Name != "" {
			out = append(out, p)
		} else {
			nums = append(nums, p)
		}
	}
	if len(nums) == 0 || (len(nums) == 1 && nums[0].Min == nums[0].Max) {
		return ports // nothing to combine (Calico short-circuits the same way)
	}
	sort.Slice(nums, func(i, j int) bool {
		if nums[i].Min != nums[j].Min {
			return nums[i].Min < nums[j].Min
		}
		return nums[i].Max < nums[j].Max
	})
	cur := nums[0]
	for _, p := range nums[1:] {
		if int(p.Min) <= int(cur.Max)+1 {
			cur.Max = max(cur.Max, p.Max)
			continue
		}
		out = append(out, cur)
		cur = p
	}
	return append(out, cur)
}
