package calicodiff

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	libapiv3 "github.com/projectcalico/calico/libcalico-go/lib/apis/v3"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/k8s/conversion"
	cmodel "github.com/projectcalico/calico/libcalico-go/lib/backend/model"
	"github.com/projectcalico/calico/libcalico-go/lib/backend/syncersv1/updateprocessors"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/convert"
)

type nProfile struct {
	Name    string
	Labels  map[string]string
	In, Out []string // actions
}

// calicoProfile runs a v3 profile through Calico's profile update processor.
func calicoProfile(t *testing.T, kvp *cmodel.KVPair) nProfile {
	t.Helper()
	out, err := updateprocessors.NewProfileUpdateProcessor().Process(kvp)
	if err != nil {
		t.Fatal(err)
	}
	n := nProfile{Name: kvp.Key.(cmodel.ResourceKey).Name}
	if out[0].Value != nil {
		n.Labels = out[0].Value.(map[string]string)
	}
	rules := out[1].Value.(*cmodel.ProfileRules)
	for _, r := range rules.InboundRules {
		n.In = append(n.In, actions[r.Action])
	}
	for _, r := range rules.OutboundRules {
		n.Out = append(n.Out, actions[r.Action])
	}
	return n
}

func felisProfile(t *testing.T, r convert.Result) nProfile {
	t.Helper()
	if len(r.Errors) > 0 || len(r.Objects) != 1 {
		t.Fatalf("%s: %v", r.Resource, r.Errors)
	}
	p := r.Objects[0].(*model.Profile)
	n := nProfile{Name: p.Key.Name, Labels: p.LabelsToApply}
	for _, r := range p.Ingress {
		n.In = append(n.In, string(r.Action))
	}
	for _, r := range p.Egress {
		n.Out = append(n.Out, string(r.Action))
	}
	return n
}

func randLabels(r *rand.Rand) map[string]string {
	m := map[string]string{}
	for range r.IntN(4) {
		m[pick(r, append(keys, "kubernetes.io/metadata.name", "projectcalico.org/name"))] = pick(r, vals)
	}
	return m
}

// uid is any valid UID: Calico derives the profile UID from it.
const uid = "0d9f5a6e-6a43-4c52-9d3f-3e4b8d1c2a77"

func TestDifferentialProfiles(t *testing.T) {
	conv := conversion.NewConverter()
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 2000 {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pick(r, []string{"prod", "kube-system", "a-b"}), Labels: randLabels(r), UID: uid}}
		kvp, err := conv.NamespaceToProfile(ns)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(calicoProfile(t, kvp), felisProfile(t, convert.Namespace(ns)), cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("namespace case %d: (-calico +felis)\n%s", i, d)
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pick(r, []string{"default", "api"}), Namespace: pick(r, []string{"", "prod"}), Labels: randLabels(r), UID: uid}}
		kvp, err = conv.ServiceAccountToProfile(sa)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(calicoProfile(t, kvp), felisProfile(t, convert.ServiceAccount(sa)), cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("service account case %d: (-calico +felis)\n%s", i, d)
		}
	}
}

func randWEP(r *rand.Rand) *libapiv3.WorkloadEndpoint {
	w := libapiv3.NewWorkloadEndpoint()
	w.Name, w.Namespace = "n1-k8s-p-eth0", "prod"
	w.Labels = randLabels(r)
	if r.IntN(3) == 0 {
		w.Labels["pcns.x"] = "y"
	}
	w.Spec = libapiv3.WorkloadEndpointSpec{Node: "n1", Orchestrator: "k8s", Pod: "p", Endpoint: "eth0", InterfaceName: "cali0123456789a",
		Profiles: []string{"kns.prod"}}
	for range r.IntN(3) {
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, pick(r, []string{"10.0.0.1/32", "10.0.0.2", "fd00::1/128"}))
	}
	if r.IntN(2) == 0 {
		w.Spec.ServiceAccountName = "api"
	}
	if r.IntN(2) == 0 {
		w.Spec.MAC = "EE:EE:EE:EE:EE:EE"
	}
	for range r.IntN(3) {
		w.Spec.Ports = append(w.Spec.Ports, libapiv3.WorkloadEndpointPort{Name: pick(r, []string{"", "http"}), Protocol: numorstring.ProtocolFromString(pick(r, []string{"TCP", "UDP", "SCTP"})), Port: uint16(1 + r.IntN(100))})
	}
	if r.IntN(3) == 0 {
		w.Spec.AllowSpoofedSourcePrefixes = []string{"192.168.5.0/24"}
	}
	if len(w.Spec.IPNetworks) > 0 && r.IntN(3) == 0 {
		w.Spec.IPNATs = []libapiv3.IPNAT{{InternalIP: "10.0.0.1", ExternalIP: "1.1.1.1"}}
		w.Spec.IPNetworks = append(w.Spec.IPNetworks, "10.0.0.1/32")
	}
	return w
}

func TestDifferentialWorkloadEndpointsV3(t *testing.T) {
	proc := updateprocessors.NewWorkloadEndpointUpdateProcessor()
	r := rand.New(rand.NewPCG(9, 10))
	equal := 0
	for i := range 3000 {
		w := randWEP(r)
		out, err := proc.Process(&cmodel.KVPair{Key: cmodel.ResourceKey{Kind: libapiv3.KindWorkloadEndpoint, Name: w.Name, Namespace: w.Namespace}, Value: w})
		if err != nil {
			t.Fatal(err)
		}
		var want *nWEP
		if v, ok := out[0].Value.(*cmodel.WorkloadEndpoint); ok && v != nil {
			n := &nWEP{Name: w.Name, Iface: v.Name, Profiles: v.ProfileIDs}
			for _, x := range append(v.IPv4Nets, v.IPv6Nets...) {
				n.IPs = append(n.IPs, x.String())
			}
			for _, x := range append(v.IPv4NAT, v.IPv6NAT...) {
				n.NATs = append(n.NATs, x.IntIP.String()+">"+x.ExtIP.String())
			}
			lj, _ := json.Marshal(v.Labels)
			_ = json.Unmarshal(lj, &n.Labels)
			for _, p := range v.Ports {
				n.Ports = append(n.Ports, fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol.String(), p.Port))
			}
			want = n
		}
		js, _ := json.Marshal(w)
		res := convert.Decode("projectcalico.org/v3", "WorkloadEndpoint", js)
		if len(res.Errors) > 0 {
			t.Fatalf("case %d: %v", i, res.Errors)
		}
		var got *nWEP
		if len(res.Objects) == 1 {
			fw := res.Objects[0].(*model.WorkloadEndpoint)
			n := &nWEP{Name: fw.Key.Name, Iface: fw.InterfaceName, Profiles: fw.Profiles, Labels: fw.Labels}
			for _, x := range fw.IPNetworks {
				n.IPs = append(n.IPs, x.String())
			}
			for _, x := range fw.IPNATs {
				n.NATs = append(n.NATs, x.InternalIP.String()+">"+x.ExternalIP.String())
			}
			names := map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}
			for _, p := range fw.Ports {
				n.Ports = append(n.Ports, fmt.Sprintf("%s/%s/%d", p.Name, names[p.Protocol], p.Port))
			}
			got = n
		}
		// Calico keeps IPv4 before IPv6 (two lists); felis keeps the given order. Compare as sets.
		if d := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
			t.Fatalf("case %d %s: (-calico +felis)\n%s", i, js, d)
		}
		if want != nil {
			equal++
		}
	}
	t.Logf("v3 workload endpoints: %d equal endpoints", equal)
}
