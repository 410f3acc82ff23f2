package convert

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

// knp decodes a Kubernetes NetworkPolicy in namespace "prod" with the given spec.
func knp(t *testing.T, spec string) *model.Policy {
	t.Helper()
	return only(t, decodeOK(t, "networking.k8s.io/v1", "NetworkPolicy", `{"metadata":{"name":"np","namespace":"prod"},"spec":`+spec+`}`)).(*model.Policy)
}

const (
	k8sPods   = "projectcalico.org/orchestrator == 'k8s'"
	inProd    = "projectcalico.org/namespace == 'prod'"
	anyNSPods = "has(projectcalico.org/namespace) && " + k8sPods
)

func TestK8sNetworkPolicyPolicyLevel(t *testing.T) {
	p := knp(t, `{"podSelector":{"matchLabels":{"app":"web","tier":"fe"},"matchExpressions":[{"key":"env","operator":"In","values":["a","b"]},{"key":"x","operator":"NotIn","values":["y"]},{"key":"k","operator":"Exists"},{"key":"d","operator":"DoesNotExist"}]}}`)
	want := &model.Policy{
		Meta:     meta(model.KindNetworkPolicy, "prod", "knp.default.np"),
		Tier:     "default",
		Order:    f64(1000),
		Selector: sel("(" + k8sPods + " && app == 'web' && tier == 'fe' && env in {'a', 'b'} && x not in {'y'} && has(k) && !has(d)) && " + inProd),
		Types:    []model.PolicyType{model.PolicyTypeIngress},
	}
	if d := cmp.Diff(want, p, cmpOpts); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestK8sNetworkPolicyTypes(t *testing.T) {
	in, eg := model.PolicyTypeIngress, model.PolicyTypeEgress
	tests := []struct {
		name, spec string
		want       []model.PolicyType
	}{
		{"none given: ingress only", `{"podSelector":{}}`, []model.PolicyType{in}},
		{"none given, egress rules: still ingress only", `{"podSelector":{},"egress":[{}]}`, []model.PolicyType{in}},
		{"egress only", `{"podSelector":{},"policyTypes":["Egress"]}`, []model.PolicyType{eg}},
		{"both, in Calico's order", `{"podSelector":{},"policyTypes":["Egress","Ingress"]}`, []model.PolicyType{in, eg}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, knp(t, tc.spec).Types); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestK8sNetworkPolicyRules(t *testing.T) {
	tcp, udp, sctp := u8(6), u8(17), u8(132)
	tests := []struct {
		name, spec  string
		wantIngress []model.Rule
		wantEgress  []model.Rule
	}{
		{"empty ingress list denies", `{"podSelector":{},"policyTypes":["Ingress"],"ingress":[]}`, nil, nil},
		{"empty rule allows everything", `{"podSelector":{},"ingress":[{}]}`,
			[]model.Rule{{Action: model.ActionAllow}}, nil},
		{"pod selector peer: same namespace", `{"podSelector":{},"ingress":[{"from":[{"podSelector":{"matchLabels":{"role":"fe"}}}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel(inProd + " && (" + k8sPods + " && role == 'fe')")}}}, nil},
		{"empty pod selector peer: all pods in namespace", `{"podSelector":{},"ingress":[{"from":[{"podSelector":{}}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel(inProd + " && " + k8sPods)}}}, nil},
		{"empty namespace selector: all namespaces", `{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{}}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel(anyNSPods)}}}, nil},
		{"namespace and pod selector combined", `{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"a"}},"podSelector":{"matchLabels":{"app":"db"}}}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel("pcns.team == 'a' && (" + k8sPods + " && app == 'db')")}}}, nil},
		{"namespace selector with expressions", `{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{"matchExpressions":[{"key":"env","operator":"NotIn","values":["dev"]}]}}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel("pcns.env not in {'dev'} && " + k8sPods)}}}, nil},
		{"ipBlock with except", `{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16","10.2.3.4/32"]}}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Nets: pfxs("10.0.0.0/8"), NotNets: pfxs("10.1.0.0/16", "10.2.3.4/32")}}}, nil},
		{"ipBlock host bits masked", `{"podSelector":{},"egress":[{"to":[{"ipBlock":{"cidr":"192.168.1.7/24"}}]}],"policyTypes":["Egress"]}`,
			nil, []model.Rule{{Action: model.ActionAllow, Destination: model.EntityRule{Nets: pfxs("192.168.1.0/24")}}}},
		{"ports default TCP, merged into ranges", `{"podSelector":{},"ingress":[{"ports":[{"port":80},{"port":82},{"port":81},{"port":443}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Protocol: tcp, Destination: model.EntityRule{Ports: []model.Port{{Min: 80, Max: 82}, {Min: 443, Max: 443}}}}}, nil},
		{"named port and endPort", `{"podSelector":{},"ingress":[{"ports":[{"port":"http"},{"port":8000,"endPort":8080}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Protocol: tcp, Destination: model.EntityRule{Ports: []model.Port{{Name: "http"}, {Min: 8000, Max: 8080}}}}}, nil},
		{"numeric string port", `{"podSelector":{},"ingress":[{"ports":[{"port":"53","protocol":"UDP"}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Protocol: udp, Destination: model.EntityRule{Ports: []model.Port{{Min: 53, Max: 53}}}}}, nil},
		{"protocol without port: all ports; absorbs numbered ports", `{"podSelector":{},"ingress":[{"ports":[{"port":80},{"protocol":"TCP"},{"port":90}]}]}`,
			[]model.Rule{{Action: model.ActionAllow, Protocol: tcp}}, nil},
		{"one rule per protocol (sorted) times peer", `{"podSelector":{},"ingress":[{"from":[{"podSelector":{}},{"ipBlock":{"cidr":"10.0.0.0/8"}}],"ports":[{"port":53,"protocol":"UDP"},{"port":53},{"port":9,"protocol":"SCTP"}]}]}`,
			[]model.Rule{
				{Action: model.ActionAllow, Protocol: sctp, Source: model.EntityRule{Selector: sel(inProd + " && " + k8sPods)}, Destination: model.EntityRule{Ports: []model.Port{{Min: 9, Max: 9}}}},
				{Action: model.ActionAllow, Protocol: sctp, Source: model.EntityRule{Nets: pfxs("10.0.0.0/8")}, Destination: model.EntityRule{Ports: []model.Port{{Min: 9, Max: 9}}}},
				{Action: model.ActionAllow, Protocol: tcp, Source: model.EntityRule{Selector: sel(inProd + " && " + k8sPods)}, Destination: model.EntityRule{Ports: []model.Port{{Min: 53, Max: 53}}}},
				{Action: model.ActionAllow, Protocol: tcp, Source: model.EntityRule{Nets: pfxs("10.0.0.0/8")}, Destination: model.EntityRule{Ports: []model.Port{{Min: 53, Max: 53}}}},
				{Action: model.ActionAllow, Protocol: udp, Source: model.EntityRule{Selector: sel(inProd + " && " + k8sPods)}, Destination: model.EntityRule{Ports: []model.Port{{Min: 53, Max: 53}}}},
				{Action: model.ActionAllow, Protocol: udp, Source: model.EntityRule{Nets: pfxs("10.0.0.0/8")}, Destination: model.EntityRule{Ports: []model.Port{{Min: 53, Max: 53}}}},
			}, nil},
		{"egress: peer and ports both in destination", `{"podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"kube-system"}},"podSelector":{"matchLabels":{"k8s-app":"kube-dns"}}}],"ports":[{"port":53,"protocol":"UDP"}]}]}`,
			nil, []model.Rule{{Action: model.ActionAllow, Protocol: udp, Destination: model.EntityRule{
				Selector: sel("pcns.kubernetes.io/metadata.name == 'kube-system' && (" + k8sPods + " && k8s-app == 'kube-dns')"),
				Ports:    []model.Port{{Min: 53, Max: 53}}}}}},
		{"multiple rules keep order", `{"podSelector":{},"ingress":[{"ports":[{"port":1}]},{"ports":[{"port":2}]}]}`,
			[]model.Rule{
				{Action: model.ActionAllow, Protocol: tcp, Destination: model.EntityRule{Ports: []model.Port{{Min: 1, Max: 1}}}},
				{Action: model.ActionAllow, Protocol: tcp, Destination: model.EntityRule{Ports: []model.Port{{Min: 2, Max: 2}}}},
			}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := knp(t, tc.spec)
			if d := cmp.Diff(tc.wantIngress, p.Ingress, cmpOpts); d != "" {
				t.Errorf("ingress (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantEgress, p.Egress, cmpOpts); d != "" {
				t.Errorf("egress (-want +got):\n%s", d)
			}
		})
	}
}

func TestK8sNetworkPolicyValidation(t *testing.T) {
	tests := []struct{ name, spec, field string }{
		{"bad cidr", `{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0"}}]}]}`, "spec.ingress[0].from[0].ipBlock.cidr"},
		{"bad except", `{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["x"]}}]}]}`, "spec.ingress[0].from[0].ipBlock.except[0]"},
		{"ipBlock with selector", `{"podSelector":{},"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/8"},"podSelector":{}}]}]}`, "spec.egress[0].to[0]"},
		{"port zero", `{"podSelector":{},"ingress":[{"ports":[{"port":0}]}]}`, "spec.ingress[0].ports[0].port"},
		{"port too big", `{"podSelector":{},"ingress":[{"ports":[{"port":65536}]}]}`, "spec.ingress[0].ports[0].port"},
		{"endPort below port", `{"podSelector":{},"ingress":[{"ports":[{"port":90,"endPort":80}]}]}`, "spec.ingress[0].ports[0].endPort"},
		{"endPort with named port", `{"podSelector":{},"ingress":[{"ports":[{"port":"http","endPort":80}]}]}`, "spec.ingress[0].ports[0].endPort"},
		{"endPort without port", `{"podSelector":{},"ingress":[{"ports":[{"endPort":80}]}]}`, "spec.ingress[0].ports[0].endPort"},
		{"unknown protocol", `{"podSelector":{},"ingress":[{"ports":[{"protocol":"ICMP","port":1}]}]}`, "spec.ingress[0].ports[0].protocol"},
		{"bad operator", `{"podSelector":{"matchExpressions":[{"key":"a","operator":"Gt","values":["1"]}]}}`, "spec.podSelector.matchExpressions[0].operator"},
		{"bad label key in selector", `{"podSelector":{"matchLabels":{"a b":"c"}}}`, "spec.podSelector"},
		{"bad policy type", `{"podSelector":{},"policyTypes":["Sideways"]}`, "spec.policyTypes[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Decode("networking.k8s.io/v1", "NetworkPolicy", []byte(`{"metadata":{"name":"np","namespace":"prod"},"spec":`+tc.spec+`}`))
			if !slices.Contains(fieldsOf(r.Errors), tc.field) || len(r.Objects) != 0 {
				t.Errorf("want error at %s, got %v", tc.field, r.Errors)
			}
		})
	}
}

func TestSimplifyPorts(t *testing.T) {
	tests := []struct {
		in, want []model.Port
	}{
		{nil, nil},
		{[]model.Port{{Min: 5, Max: 5}}, []model.Port{{Min: 5, Max: 5}}},
		{[]model.Port{{Min: 3, Max: 3}, {Min: 1, Max: 2}, {Name: "x"}, {Min: 2, Max: 2}, {Min: 7, Max: 9}},
			[]model.Port{{Name: "x"}, {Min: 1, Max: 3}, {Min: 7, Max: 9}}},
		{[]model.Port{{Name: "a"}, {Name: "b"}}, []model.Port{{Name: "a"}, {Name: "b"}}},
		{[]model.Port{{Min: 65535, Max: 65535}, {Min: 65534, Max: 65534}}, []model.Port{{Min: 65534, Max: 65535}}},
		{[]model.Port{{Min: 10, Max: 20}, {Min: 5, Max: 30}, {Min: 31, Max: 31}, {Min: 40, Max: 50}}, []model.Port{{Min: 5, Max: 31}, {Min: 40, Max: 50}}},
		{[]model.Port{{Min: 1, Max: 65535}, {Min: 1, Max: 65535}, {Name: "h"}}, []model.Port{{Name: "h"}, {Min: 1, Max: 65535}}},
		{[]model.Port{{Min: 80, Max: 90}, {Name: "h"}}, []model.Port{{Name: "h"}, {Min: 80, Max: 90}}},
		{[]model.Port{{Min: 80, Max: 80}, {Name: "h"}}, []model.Port{{Min: 80, Max: 80}, {Name: "h"}}},
	}
	for _, tc := range tests {
		if d := cmp.Diff(tc.want, simplifyPorts(tc.in), cmpOpts); d != "" {
			t.Errorf("simplifyPorts(%v) (-want +got):\n%s", tc.in, d)
		}
	}
}
