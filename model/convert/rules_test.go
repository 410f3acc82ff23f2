package convert

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiv3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"

	"github.com/felis-dev/felis/model"
)

// canon parses and re-renders a selector ("" stays "").
func canon(t *testing.T, s string) string {
	t.Helper()
	if s == "" {
		return ""
	}
	return sel(s).String()
}

// TestEndpointSelectorFolding covers Calico's getEndpointSelector (and parseServiceAccounts)
// cases, the expected expressions written out by hand from Calico's rules.
func TestEndpointSelectorFolding(t *testing.T) {
	tests := []struct {
		name                   string
		nsSel, sel, notSel, ns string
		sa                     *apiv3.ServiceAccountMatch
		want                   string
	}{
		{name: "nothing, global", want: ""},
		{name: "nothing, namespaced: no constraint at all", ns: "ns1", want: ""},
		{name: "selector, global", sel: "a == 'b'", want: "a == 'b'"},
		{name: "selector, namespaced", sel: "a == 'b'", ns: "ns1", want: "projectcalico.org/namespace == 'ns1' && a == 'b'"},
		{name: "notSelector only, namespaced: scope only", notSel: "x == 'y'", ns: "ns1", want: "projectcalico.org/namespace == 'ns1'"},
		{name: "notSelector only, global", notSel: "x == 'y'", want: ""},
		{name: "namespaceSelector all()", nsSel: "all()", want: "has(projectcalico.org/namespace)"},
		{name: "namespaceSelector all() overrides policy namespace", nsSel: "all()", ns: "ns1", sel: "a == 'b'", want: "has(projectcalico.org/namespace) && a == 'b'"},
		{name: "namespaceSelector global()", nsSel: "global()", ns: "ns1", want: "!has(projectcalico.org/namespace)"},
		{name: "namespaceSelector labels get pcns.", nsSel: "team == 'a' && has(env)", sel: "app == 'x'", want: "(pcns.team == 'a' && has(pcns.env)) && app == 'x'"},
		{name: "service account names", sa: &apiv3.ServiceAccountMatch{Names: []string{"a", "b"}}, want: "projectcalico.org/serviceaccount in {'a', 'b'}"},
		{name: "service account selector gets pcsa.", sa: &apiv3.ServiceAccountMatch{Selector: "role == 'x'"}, ns: "ns1", want: "projectcalico.org/namespace == 'ns1' && pcsa.role == 'x'"},
		{name: "service account names and selector with endpoint selector", sa: &apiv3.ServiceAccountMatch{Names: []string{"a"}, Selector: "role == 'x'"}, sel: "app == 'y'",
			want: "(pcsa.role == 'x' && projectcalico.org/serviceaccount in {'a'}) && app == 'y'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sa := ""
			if tc.sa != nil {
				sa = serviceAccountSelector(tc.sa)
			}
			got := canon(t, endpointSelector(tc.nsSel, tc.sel, sa, tc.notSel, tc.ns))
			if want := canon(t, tc.want); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// TestRuleConversion checks each rule field end to end through Decode.
func TestRuleConversion(t *testing.T) {
	js := `{"metadata":{"name":"p","namespace":"ns1"},"spec":{"selector":"app == 'x'","ingress":[
	  {"action":"Allow","protocol":"TCP","source":{"nets":["10.1.2.3/8","10.9.9.9"],"notNets":["10.2.0.0/16"],"selector":"role == 'fe'","notSelector":"bad == 'yes'","ports":["1000:2000"],"notPorts":[22]},"destination":{"ports":[80,"http"],"notPorts":["metrics"]}},
	  {"action":"Deny","ipVersion":6,"protocol":"ICMPv6","icmp":{"type":128,"code":0},"notICMP":{"type":1}},
	  {"action":"Log","notProtocol":"UDPLite","protocol":17},
	  {"action":"Pass","protocol":"SCTP","destination":{"ports":[9]}}],
	 "egress":[{"action":"Allow","destination":{"services":{"name":"kube-dns"}}},
	  {"action":"Allow","destination":{"services":{"name":"api","namespace":"other"}}}]}}`
	p := only(t, decodeOK(t, "projectcalico.org/v3", "NetworkPolicy", js)).(*model.Policy)
	want := &model.Policy{
		Meta:     meta(model.KindNetworkPolicy, "ns1", "p"),
		Tier:     "default",
		Selector: sel("app == 'x' && projectcalico.org/namespace == 'ns1'"),
		Types:    []model.PolicyType{model.PolicyTypeIngress, model.PolicyTypeEgress},
		Ingress: []model.Rule{
			{Action: model.ActionAllow, Protocol: u8(6),
				Source: model.EntityRule{Nets: pfxs("10.0.0.0/8", "10.9.9.9/32"), NotNets: pfxs("10.2.0.0/16"),
					Selector:    sel("projectcalico.org/namespace == 'ns1' && role == 'fe'"),
					NotSelector: sel("bad == 'yes'"),
					Ports:       []model.Port{{Min: 1000, Max: 2000}}, NotPorts: []model.Port{{Min: 22, Max: 22}}},
				Destination: model.EntityRule{Ports: []model.Port{{Min: 80, Max: 80}, {Name: "http"}}, NotPorts: []model.Port{{Name: "metrics"}}}},
			{Action: model.ActionDeny, IPVersion: 6, Protocol: u8(58), ICMP: &model.ICMPMatch{Type: u8(128), Code: u8(0)}, NotICMP: &model.ICMPMatch{Type: u8(1)}},
			{Action: model.ActionLog, Protocol: u8(17), NotProtocol: u8(136)},
			{Action: model.ActionPass, Protocol: u8(132), Destination: model.EntityRule{Ports: []model.Port{{Min: 9, Max: 9}}}},
		},
		Egress: []model.Rule{
			{Action: model.ActionAllow, Destination: model.EntityRule{Services: &model.ServiceMatch{Name: "kube-dns", Namespace: "ns1"}}},
			{Action: model.ActionAllow, Destination: model.EntityRule{Services: &model.ServiceMatch{Name: "api", Namespace: "other"}}},
		},
	}
	if d := cmp.Diff(want, p, cmpOpts); d != "" {
		t.Errorf("policy (-want +got):\n%s", d)
	}
}

// TestRuleValidation covers what Calico's validator rejects in rules.
func TestRuleValidation(t *testing.T) {
	tests := []struct {
		name, rule string
		wantField  string
		wantReason string
	}{
		{"missing action", `{"protocol":"TCP"}`, "spec.ingress[0].action", "missing"},
		{"bad action", `{"action":"allow"}`, "spec.ingress[0].action", `invalid action "allow"`},
		{"ip version", `{"action":"Allow","ipVersion":5}`, "spec.ingress[0].ipVersion", "expected 4 or 6"},
		{"unknown protocol name", `{"action":"Allow","protocol":"tcpx"}`, "spec.ingress[0].protocol", `unknown protocol "tcpx"`},
		{"protocol names are case-sensitive", `{"action":"Allow","protocol":"tcp"}`, "spec.ingress[0].protocol", `unknown protocol "tcp"`},
		{"protocol zero", `{"action":"Allow","protocol":0}`, "spec.ingress[0].protocol", "expected 1-255"},
		{"bad notProtocol", `{"action":"Allow","notProtocol":"foo"}`, "spec.ingress[0].notProtocol", "unknown protocol"},
		{"ports without protocol", `{"action":"Allow","destination":{"ports":[80]}}`, "spec.ingress[0].destination.ports", "must set protocol to TCP, UDP or SCTP"},
		{"ports with ICMP", `{"action":"Allow","protocol":"ICMP","source":{"notPorts":[80]}}`, "spec.ingress[0].source.notPorts", "must set protocol"},
		{"port zero", `{"action":"Allow","protocol":"TCP","destination":{"ports":[0]}}`, "spec.ingress[0].destination.ports[0]", "expected a number 1-65535"},
		{"icmp code without type", `{"action":"Allow","protocol":"ICMP","icmp":{"code":1}}`, "spec.ingress[0].icmp.code", "without an ICMP type"},
		{"icmp type range", `{"action":"Allow","protocol":"ICMP","icmp":{"type":255}}`, "spec.ingress[0].icmp.type", "expected 0-254"},
		{"icmp with TCP", `{"action":"Allow","protocol":"TCP","icmp":{"type":8}}`, "spec.ingress[0].icmp", "must set protocol to ICMP"},
		{"icmp without protocol", `{"action":"Allow","icmp":{"type":8}}`, "spec.ingress[0].icmp", "must set protocol to ICMP"},
		{"icmp with ipVersion 6", `{"action":"Allow","protocol":"ICMP","ipVersion":6}`, "spec.ingress[0].ipVersion", "must be 4"},
		{"icmpv6 with ipVersion 4", `{"action":"Allow","notProtocol":"ICMPv6","ipVersion":4}`, "spec.ingress[0].ipVersion", "must be 6"},
		{"bad CIDR", `{"action":"Allow","source":{"nets":["10.0.0.0/33"]}}`, "spec.ingress[0].source.nets[0]", "invalid CIDR"},
		{"bad address", `{"action":"Allow","destination":{"notNets":["banana"]}}`, "spec.ingress[0].destination.notNets[0]", "invalid CIDR"},
		{"mixed families", `{"action":"Allow","source":{"nets":["10.0.0.0/8"]},"destination":{"nets":["fd00::/8"]}}`, "spec.ingress[0].destination.nets", "both IPv4 and IPv6"},
		{"ip version vs nets", `{"action":"Allow","ipVersion":6,"source":{"nets":["10.0.0.0/8"]}}`, "spec.ingress[0].source.nets", "doesn't match CIDR version"},
		{"catch-all negation", `{"action":"Allow","source":{"notNets":["0.0.0.0/0"]}}`, "spec.ingress[0].source.notNets[0]", "matches no traffic"},
		{"bad selector", `{"action":"Allow","source":{"selector":"a == "}}`, "spec.ingress[0].source.selector", "invalid selector"},
		{"global() in selector", `{"action":"Allow","source":{"selector":"global()"}}`, "spec.ingress[0].source.selector", "only be used in a namespaceSelector"},
		{"global() combined", `{"action":"Allow","source":{"namespaceSelector":"global() && a == 'b'"}}`, "spec.ingress[0].source.namespaceSelector", "cannot be combined"},
		{"bad namespaceSelector", `{"action":"Allow","source":{"namespaceSelector":"(("}}`, "spec.ingress[0].source.namespaceSelector", "invalid selector"},
		{"bad notSelector", `{"action":"Allow","destination":{"notSelector":"!"}}`, "spec.ingress[0].destination.notSelector", "invalid selector"},
		{"SA name that cannot be quoted", `{"action":"Allow","source":{"serviceAccounts":{"names":["it's"]}}}`, "spec.ingress[0].source.serviceAccounts.names[0]", "invalid service account name"},
		{"bad SA selector", `{"action":"Allow","source":{"serviceAccounts":{"selector":"a =="}}}`, "spec.ingress[0].source.serviceAccounts.selector", "invalid selector"},
		{"service without name", `{"action":"Allow","source":{"services":{"namespace":"x"}}}`, "spec.ingress[0].source.services.name", "must specify a service name"},
		{"service with selector", `{"action":"Allow","source":{"services":{"name":"s"},"selector":"a == 'b'"}}`, "spec.ingress[0].source.services", "selector/notSelector and services"},
		{"service with nets", `{"action":"Allow","source":{"services":{"name":"s"},"nets":["10.0.0.0/8"]}}`, "spec.ingress[0].source.services", "nets/notNets and services"},
		{"service in ingress destination", `{"action":"Allow","destination":{"services":{"name":"s","namespace":"n"}}}`, "spec.ingress[0].destination.services", "not allowed in an ingress rule's destination"},
		{"service in global policy needs namespace", `{"action":"Allow","source":{"services":{"name":"s"}}}`, "spec.ingress[0].source.services.namespace", "must specify a namespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := `{"metadata":{"name":"p"},"spec":{"ingress":[` + tc.rule + `]}}`
			r := Decode("projectcalico.org/v3", "GlobalNetworkPolicy", []byte(js))
			if len(r.Objects) != 0 {
				t.Errorf("invalid rule produced objects")
			}
			found := slices.ContainsFunc(r.Errors, func(e FieldError) bool {
				return e.Field == tc.wantField && strings.Contains(e.Reason, tc.wantReason)
			})
			if !found {
				t.Errorf("want error at %s containing %q, got %v", tc.wantField, tc.wantReason, r.Errors)
			}
		})
	}
}
