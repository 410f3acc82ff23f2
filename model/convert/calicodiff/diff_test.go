package calicodiff

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiv3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	libapiv3 "github.com/projectcalico/calico/libcalico-go/lib/apis/v3"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/k8s/conversion"
	cmodel "github.com/projectcalico/calico/libcalico-go/lib/backend/model"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/syncersv1/updateprocessors"
	cnet "github.com/projectcalico/calico/libcalico-go/lib/net"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/convert"
	"github.com/felis-dev/felis/model/selector"
)

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.ErrorLevel) // Calico's converter warns about egress rules without the Egress type
	m.Run()
}

// Normalised forms both sides are reduced to.
type nRule struct {
	Action, Proto, NotProto                      string
	IPVersion                                    int
	SrcSel, DstSel, NotSrcSel, NotDstSel         string
	SrcNets, DstNets, NotSrcNets, NotDstNets     []string
	SrcPorts, DstPorts, NotSrcPorts, NotDstPorts []string
	ICMPType, ICMPCode                           string
}
type nPolicy struct {
	Selector string
	Types    []string
	Order    string
	In, Out  []nRule
}

func canon(s string) string {
	if s == "" {
		return ""
	}
	p, err := selector.Parse(s)
	if err != nil {
		return "UNPARSABLE(" + s + ")"
	}
	return p.String()
}
func fsel(s *selector.Selector) string {
	if s == nil {
		return ""
	}
	return s.String()
}
func cnets(ns []*cnet.IPNet) []string {
	var out []string
	for _, n := range ns {
		p := netip.MustParsePrefix(n.String())
		out = append(out, p.Masked().String())
	}
	return out
}
func fnets(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Masked().String())
	}
	return out
}
func cports(ps []numorstring.Port) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
func fports(ps []model.Port) []string {
	var out []string
	for _, p := range ps {
		switch {
		case p.Name != "":
			out = append(out, p.Name)
		case p.Min == p.Max:
			out = append(out, strconv.Itoa(int(p.Min)))
		default:
			out = append(out, fmt.Sprintf("%d:%d", p.Min, p.Max))
		}
	}
	return out
}

var protoNums = map[string]int{"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136}

func cproto(p *numorstring.Protocol) string {
	if p == nil {
		return ""
	}
	if n, err := p.NumValue(); err == nil {
		return strconv.Itoa(int(n))
	}
	return strconv.Itoa(protoNums[strings.ToLower(p.StrVal)])
}
func fproto(p *uint8) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(int(*p))
}
func ip(p *int) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(*p)
}
func u(p *uint8) string {
	if p == nil {
		return ""
	}
	return strconv.Itoa(int(*p))
}

var actions = map[string]string{"allow": "Allow", "deny": "Deny", "log": "Log", "next-tier": "Pass"}

func fromCalico(p *cmodel.Policy) nPolicy {
	out := nPolicy{Selector: canon(p.Selector)}
	if out.Selector == "" {
		out.Selector = canon("all()")
	}
	for _, t := range p.Types {
		out.Types = append(out.Types, strings.ToUpper(t[:1])+t[1:])
	}
	if p.Order != nil {
		out.Order = fmt.Sprint(*p.Order)
	}
	conv := func(r cmodel.Rule) nRule {
		v := 0
		if r.IPVersion != nil {
			v = *r.IPVersion
		}
		return nRule{Action: actions[r.Action], Proto: cproto(r.Protocol), NotProto: cproto(r.NotProtocol), IPVersion: v,
			SrcSel: canon(r.SrcSelector), DstSel: canon(r.DstSelector), NotSrcSel: canon(r.NotSrcSelector), NotDstSel: canon(r.NotDstSelector),
			SrcNets: cnets(r.SrcNets), DstNets: cnets(r.DstNets), NotSrcNets: cnets(r.NotSrcNets), NotDstNets: cnets(r.NotDstNets),
			SrcPorts: cports(r.SrcPorts), DstPorts: cports(r.DstPorts), NotSrcPorts: cports(r.NotSrcPorts), NotDstPorts: cports(r.NotDstPorts),
			ICMPType: ip(r.ICMPType), ICMPCode: ip(r.ICMPCode)}
	}
	for _, r := range p.InboundRules {
		out.In = append(out.In, conv(r))
	}
	for _, r := range p.OutboundRules {
		out.Out = append(out.Out, conv(r))
	}
	return out
}

func fromFelis(p *model.Policy) nPolicy {
	out := nPolicy{Selector: fsel(p.Selector)}
	for _, t := range p.Types {
		out.Types = append(out.Types, string(t))
	}
	if p.Order != nil {
		out.Order = fmt.Sprint(*p.Order)
	}
	conv := func(r model.Rule) nRule {
		n := nRule{Action: string(r.Action), Proto: fproto(r.Protocol), NotProto: fproto(r.NotProtocol), IPVersion: r.IPVersion,
			SrcSel: fsel(r.Source.Selector), DstSel: fsel(r.Destination.Selector), NotSrcSel: fsel(r.Source.NotSelector), NotDstSel: fsel(r.Destination.NotSelector),
			SrcNets: fnets(r.Source.Nets), DstNets: fnets(r.Destination.Nets), NotSrcNets: fnets(r.Source.NotNets), NotDstNets: fnets(r.Destination.NotNets),
			SrcPorts: fports(r.Source.Ports), DstPorts: fports(r.Destination.Ports), NotSrcPorts: fports(r.Source.NotPorts), NotDstPorts: fports(r.Destination.NotPorts)}
		if r.ICMP != nil {
			n.ICMPType, n.ICMPCode = u(r.ICMP.Type), u(r.ICMP.Code)
		}
		return n
	}
	for _, r := range p.Ingress {
		out.In = append(out.In, conv(r))
	}
	for _, r := range p.Egress {
		out.Out = append(out.Out, conv(r))
	}
	return out
}

// ---- random generators ----

var keys = []string{"app", "role", "team", "env", "k8s-app"}
var vals = []string{"a", "b", "web", "db"}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randLabelSelector(r *rand.Rand) *metav1.LabelSelector {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return &metav1.LabelSelector{}
	}
	s := &metav1.LabelSelector{}
	for range r.IntN(3) {
		if s.MatchLabels == nil {
			s.MatchLabels = map[string]string{}
		}
		s.MatchLabels[pick(r, keys)] = pick(r, vals)
	}
	ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
	for range r.IntN(3) {
		e := metav1.LabelSelectorRequirement{Key: pick(r, keys), Operator: pick(r, ops)}
		if e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpNotIn {
			for range 1 + r.IntN(2) {
				e.Values = append(e.Values, pick(r, vals))
			}
		}
		s.MatchExpressions = append(s.MatchExpressions, e)
	}
	return s
}

var cidrs = []string{"10.0.0.0/8", "10.1.0.0/16", "192.168.1.7/24", "172.16.0.0/12", "fd00::/8", "fd00:1::/32", "1.2.3.4/32"}

func randPeers(r *rand.Rand) []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for range r.IntN(4) {
		if r.IntN(3) == 0 {
			b := &networkingv1.IPBlock{CIDR: pick(r, cidrs)}
			for range r.IntN(2) {
				b.Except = append(b.Except, pick(r, cidrs))
			}
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: b})
			continue
		}
		p := networkingv1.NetworkPolicyPeer{PodSelector: randLabelSelector(r), NamespaceSelector: randLabelSelector(r)}
		if p.PodSelector == nil && p.NamespaceSelector == nil {
			p.PodSelector = &metav1.LabelSelector{}
		}
		out = append(out, p)
	}
	return out
}

func randPorts(r *rand.Rand) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	protos := []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
	for range r.IntN(4) {
		var p networkingv1.NetworkPolicyPort
		if r.IntN(3) > 0 {
			pr := pick(r, protos)
			p.Protocol = &pr
		}
		switch r.IntN(5) {
		case 0:
		case 1:
			v := intstr.FromString(pick(r, []string{"http", "dns", "metrics"}))
			p.Port = &v
		case 2:
			v := intstr.FromString(strconv.Itoa(80 + r.IntN(5)))
			p.Port = &v
		default:
			v := intstr.FromInt32(int32(80 + r.IntN(8)))
			p.Port = &v
			if r.IntN(3) == 0 {
				e := v.IntVal + int32(r.IntN(4))
				p.EndPort = &e
			}
		}
		out = append(out, p)
	}
	return out
}

func randK8sPolicy(r *rand.Rand) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "np", Namespace: "prod"}}
	if s := randLabelSelector(r); s != nil {
		np.Spec.PodSelector = *s
	}
	for range r.IntN(3) {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: randPeers(r), Ports: randPorts(r)})
	}
	for range r.IntN(3) {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: randPeers(r), Ports: randPorts(r)})
	}
	for _, t := range []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress} {
		if r.IntN(2) == 0 {
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, t)
		}
	}
	return np
}

func TestDifferentialK8sNetworkPolicy(t *testing.T) {
	conv := conversion.NewConverter()
	r := rand.New(rand.NewPCG(1, 2))
	compared, skipped := 0, 0
	for i := range 5000 {
		np := randK8sPolicy(r)
		kvp, err := conv.K8sNetworkPolicyToCalico(np)
		mine := convert.K8sNetworkPolicy(np)
		if err != nil || len(mine.Errors) > 0 {
			if (err != nil) != (len(mine.Errors) > 0) {
				t.Errorf("case %d: calico err %v, felis errors %v", i, err, mine.Errors)
			}
			skipped++
			continue
		}
		v1, err := updateprocessors.ConvertNetworkPolicyV3ToV1Value(kvp.Value)
		if err != nil {
			t.Fatal(err)
		}
		want := fromCalico(v1.(*cmodel.Policy))
		got := fromFelis(mine.Objects[0].(*model.Policy))
		if d := cmp.Diff(want, got); d != "" {
			js, _ := json.Marshal(np.Spec)
			t.Fatalf("case %d %s: (-calico +felis)\n%s", i, js, d)
		}
		compared++
	}
	t.Logf("k8s NetworkPolicy: %d compared equal, %d invalid on both sides", compared, skipped)
}

// ---- Calico v3 policies ----

func randCalicoSelector(r *rand.Rand) string {
	switch r.IntN(6) {
	case 0, 1:
		return ""
	case 2:
		return "all()"
	case 3:
		return fmt.Sprintf("%s == '%s'", pick(r, keys), pick(r, vals))
	case 4:
		return fmt.Sprintf("has(%s) && %s != '%s'", pick(r, keys), pick(r, keys), pick(r, vals))
	}
	return fmt.Sprintf("%s in {'%s', '%s'} || !has(%s)", pick(r, keys), pick(r, vals), pick(r, vals), pick(r, keys))
}

func randEntity(r *rand.Rand, ports bool) apiv3.EntityRule {
	e := apiv3.EntityRule{Selector: randCalicoSelector(r), NotSelector: randCalicoSelector(r)}
	switch r.IntN(5) {
	case 0:
		e.NamespaceSelector = "global()"
	case 1:
		e.NamespaceSelector = randCalicoSelector(r)
	}
	if r.IntN(3) == 0 {
		sa := &apiv3.ServiceAccountMatch{Selector: randCalicoSelector(r)}
		for range r.IntN(3) {
			sa.Names = append(sa.Names, pick(r, []string{"api", "web", "db-sa"}))
		}
		e.ServiceAccounts = sa
	}
	if r.IntN(3) == 0 {
		e.Nets = []string{pick(r, []string{"10.0.0.0/8", "10.1.2.3/16", "1.1.1.1"})}
	}
	if r.IntN(4) == 0 {
		e.NotNets = []string{pick(r, []string{"10.2.0.0/16", "192.168.0.0/24"})}
	}
	if ports && r.IntN(2) == 0 {
		e.Ports = []numorstring.Port{numorstring.SinglePort(80), {MinPort: 1000, MaxPort: 2000}, numorstring.NamedPort("http")}
	}
	if ports && r.IntN(4) == 0 {
		e.NotPorts = []numorstring.Port{numorstring.SinglePort(22)}
	}
	return e
}

func randRule(r *rand.Rand) apiv3.Rule {
	rule := apiv3.Rule{Action: pick(r, []apiv3.Action{apiv3.Allow, apiv3.Deny, apiv3.Log, apiv3.Pass})}
	ports := false
	switch r.IntN(4) {
	case 0:
		p := numorstring.ProtocolFromString(pick(r, []string{"TCP", "UDP", "SCTP"}))
		rule.Protocol = &p
		ports = true
	case 1:
		p := numorstring.ProtocolFromString("ICMP")
		rule.Protocol = &p
		ty, code := r.IntN(20), r.IntN(5)
		rule.ICMP = &apiv3.ICMPFields{Type: &ty, Code: &code}
	case 2:
		p := numorstring.ProtocolFromInt(uint8(6 + 11*r.IntN(2)))
		rule.Protocol = &p
		ports = true
	}
	if r.IntN(4) == 0 {
		p := numorstring.ProtocolFromString("UDPLite")
		rule.NotProtocol = &p
	}
	rule.Source = randEntity(r, ports)
	rule.Destination = randEntity(r, ports)
	return rule
}

func TestDifferentialCalicoPolicies(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	compared, skipped := 0, 0
	for i := range 5000 {
		var ingress, egress []apiv3.Rule
		for range r.IntN(3) {
			ingress = append(ingress, randRule(r))
		}
		for range r.IntN(3) {
			egress = append(egress, randRule(r))
		}
		var want *cmodel.Policy
		var mine convert.Result
		if i%2 == 0 {
			p := apiv3.NewGlobalNetworkPolicy()
			p.Name = "p"
			p.Spec = apiv3.GlobalNetworkPolicySpec{Selector: randCalicoSelector(r), NamespaceSelector: randCalicoSelector(r),
				ServiceAccountSelector: randCalicoSelector(r), Ingress: ingress, Egress: egress}
			p.Spec.Types = []apiv3.PolicyType{apiv3.PolicyTypeIngress, apiv3.PolicyTypeEgress}
			mine = convert.GlobalNetworkPolicy(p)
			v1, err := updateprocessors.ConvertGlobalNetworkPolicyV3ToV1Value(p)
			if err != nil {
				t.Fatal(err)
			}
			want = v1.(*cmodel.Policy)
		} else {
			p := apiv3.NewNetworkPolicy()
			p.Name, p.Namespace = "p", "prod"
			p.Spec = apiv3.NetworkPolicySpec{Selector: randCalicoSelector(r), ServiceAccountSelector: randCalicoSelector(r), Ingress: ingress, Egress: egress}
			p.Spec.Types = []apiv3.PolicyType{apiv3.PolicyTypeIngress, apiv3.PolicyTypeEgress}
			mine = convert.NetworkPolicy(p)
			v1, err := updateprocessors.ConvertNetworkPolicyV3ToV1Value(p)
			if err != nil {
				t.Fatal(err)
			}
			want = v1.(*cmodel.Policy)
		}
		if len(mine.Errors) > 0 {
			skipped++ // felis rejects (e.g. mixed-family nets); Calico's validator would too
			continue
		}
		if d := cmp.Diff(fromCalico(want), fromFelis(mine.Objects[0].(*model.Policy))); d != "" {
			t.Fatalf("case %d: (-calico +felis)\n%s", i, d)
		}
		compared++
	}
	t.Logf("Calico v3 policies: %d compared equal, %d rejected by felis validation", compared, skipped)
}

// ---- pods ----

func randPod(r *rand.Rand) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pick(r, []string{"web-1", "db", "a-b-c"}), Namespace: pick(r, []string{"prod", "kube-system"}),
		Labels: map[string]string{}, Annotations: map[string]string{}}}
	if r.IntN(10) > 0 {
		p.Spec.NodeName = pick(r, []string{"node-a", "n1"})
	}
	p.Spec.HostNetwork = r.IntN(10) == 0
	if r.IntN(2) == 0 {
		p.Spec.ServiceAccountName = pick(r, []string{"default", "api"})
	}
	for range r.IntN(3) {
		p.Labels[pick(r, append(keys, "pcns.x", "pcsa.y"))] = pick(r, vals)
	}
	switch r.IntN(6) {
	case 0:
	case 1:
		p.Status.PodIP = "10.0.0.5"
		p.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.5"}, {IP: "fd00::5"}}
	case 2:
		p.Status.PodIP = "10.0.0.6"
	case 3:
		p.Annotations[conversion.AnnotationPodIP] = "10.0.0.7/32"
		p.Annotations[conversion.AnnotationPodIPs] = "10.0.0.7/32,fd00::7/128"
	case 4:
		p.Annotations[conversion.AnnotationPodIP] = "10.0.0.8"
	case 5:
		p.Annotations[conversion.AnnotationAWSPodIPs] = "10.0.0.9"
	}
	if r.IntN(4) == 0 {
		p.Status.Phase = pick(r, []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed, corev1.PodRunning, corev1.PodPending})
	}
	if r.IntN(5) == 0 {
		now := metav1.Now()
		p.DeletionTimestamp = &now
		if r.IntN(2) == 0 {
			p.Annotations[conversion.AnnotationPodIP] = ""
		}
	}
	if r.IntN(3) == 0 {
		p.Annotations["cni.projectcalico.org/floatingIPs"] = `["1.1.1.1","2001:db8::1"]`
	}
	protos := []corev1.Protocol{"", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP, "ICMP"}
	for range r.IntN(3) {
		c := corev1.Container{Name: "c"}
		for range r.IntN(3) {
			cp := corev1.ContainerPort{ContainerPort: int32(r.IntN(3) * 8080), Protocol: pick(r, protos)}
			if r.IntN(3) > 0 {
				cp.Name = pick(r, []string{"http", "dns", "metrics"})
			}
			if r.IntN(4) == 0 {
				cp.HostPort = 9000
			}
			c.Ports = append(c.Ports, cp)
		}
		if r.IntN(2) == 0 {
			p.Spec.Containers = append(p.Spec.Containers, c)
		} else {
			p.Spec.InitContainers = append(p.Spec.InitContainers, c)
		}
	}
	return p
}

type nWEP struct {
	Name, Iface string
	IPs         []string
	NATs        []string
	Profiles    []string
	Labels      map[string]string
	Ports       []string
}

func TestDifferentialPods(t *testing.T) {
	conv := conversion.NewConverter()
	proc := updateprocessors.NewWorkloadEndpointUpdateProcessor()
	r := rand.New(rand.NewPCG(5, 6))
	withObj, without := 0, 0
	for i := range 5000 {
		pod := randPod(r)
		mine := convert.Pod(pod)
		if len(mine.Errors) > 0 {
			t.Fatalf("case %d: felis errors %v", i, mine.Errors)
		}
		var want *nWEP
		if conv.IsReadyCalicoPod(pod) {
			kvps, err := conv.PodToWorkloadEndpoints(pod)
			if err != nil {
				t.Fatal(err)
			}
			wep := kvps[0].Value.(*libapiv3.WorkloadEndpoint)
			out, err := proc.Process(kvps[0])
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := out[0].Value.(*cmodel.WorkloadEndpoint); ok && v != nil {
				n := &nWEP{Name: wep.Name, Iface: v.Name, Profiles: v.ProfileIDs}
				for _, x := range append(v.IPv4Nets, v.IPv6Nets...) {
					n.IPs = append(n.IPs, x.String())
				}
				for _, x := range append(v.IPv4NAT, v.IPv6NAT...) {
					n.NATs = append(n.NATs, x.IntIP.String()+">"+x.ExtIP.String())
				}
				lj, _ := json.Marshal(v.Labels)
				_ = json.Unmarshal(lj, &n.Labels)
				for _, p := range v.Ports {
					n.Ports = append(n.Ports, fmt.Sprintf("%s/%s/%d", p.Name, strings.ToLower(p.Protocol.String()), p.Port))
				}
				want = n
			}
		}
		var got *nWEP
		if len(mine.Objects) == 1 {
			w := mine.Objects[0].(*model.WorkloadEndpoint)
			n := &nWEP{Name: w.Key.Name, Iface: w.InterfaceName, Profiles: w.Profiles, Labels: w.Labels}
			for _, x := range w.IPNetworks {
				n.IPs = append(n.IPs, x.String())
			}
			for _, x := range w.IPNATs {
				n.NATs = append(n.NATs, x.InternalIP.String()+">"+x.ExternalIP.String())
			}
			names := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}
			for _, p := range w.Ports {
				n.Ports = append(n.Ports, fmt.Sprintf("%s/%s/%d", p.Name, names[p.Protocol], p.Port))
			}
			got = n
		}
		if d := cmp.Diff(want, got); d != "" {
			js, _ := json.Marshal(pod)
			t.Fatalf("case %d %s: (-calico +felis)\n%s", i, js, d)
		}
		if want != nil {
			withObj++
		} else {
			without++
		}
	}
	t.Logf("pods: %d endpoints equal, %d pods without endpoint on both sides", withObj, without)
}
