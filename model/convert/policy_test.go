package convert

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

func TestGlobalNetworkPolicySelectorFolding(t *testing.T) {
	tests := []struct {
		name, spec string
		want       string
	}{
		{"empty selects all", `{}`, "all()"},
		{"selector only", `{"selector":"app == 'x'"}`, "app == 'x'"},
		{"namespaceSelector pcns-prefixed", `{"selector":"app == 'x'","namespaceSelector":"team == 'a'"}`, "(app == 'x') && pcns.team == 'a'"},
		{"namespaceSelector all() means namespaced endpoints", `{"namespaceSelector":"all()"}`, "has(projectcalico.org/namespace)"},
		{"serviceAccountSelector pcsa-prefixed", `{"selector":"app == 'x'","serviceAccountSelector":"role == 'r'"}`, "(app == 'x') && pcsa.role == 'r'"},
		{"serviceAccountSelector all()", `{"serviceAccountSelector":"all()"}`, "has(projectcalico.org/serviceaccount)"},
		{"both", `{"selector":"a == 'b'","namespaceSelector":"has(env)","serviceAccountSelector":"x == 'y'"}`, "((a == 'b') && has(pcns.env)) && pcsa.x == 'y'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := only(t, decodeOK(t, "projectcalico.org/v3", "GlobalNetworkPolicy", `{"metadata":{"name":"p"},"spec":`+tc.spec+`}`)).(*model.Policy)
			if got, want := p.Selector.String(), sel(tc.want).String(); got != want {
				t.Errorf("selector %q, want %q", got, want)
			}
		})
	}
}

func TestNetworkPolicySelectorScoping(t *testing.T) {
	tests := []struct {
		name, spec string
		want       string
	}{
		{"empty selector: whole namespace", `{}`, "projectcalico.org/namespace == 'ns1'"},
		{"selector", `{"selector":"app == 'x'"}`, "(app == 'x') && projectcalico.org/namespace == 'ns1'"},
		{"serviceAccountSelector", `{"selector":"app == 'x'","serviceAccountSelector":"role == 'r'"}`, "((app == 'x') && projectcalico.org/namespace == 'ns1') && pcsa.role == 'r'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := only(t, decodeOK(t, "projectcalico.org/v3", "NetworkPolicy", `{"metadata":{"name":"p","namespace":"ns1"},"spec":`+tc.spec+`}`)).(*model.Policy)
			if got, want := p.Selector.String(), sel(tc.want).String(); got != want {
				t.Errorf("selector %q, want %q", got, want)
			}
		})
	}
}

func TestPolicyTierAndName(t *testing.T) {
	tests := []struct {
		name, kind, meta, tier string
		wantName, wantTier     string
		wantErr                string
	}{
		{"default tier plain", "GlobalNetworkPolicy", `{"name":"allow"}`, ``, "allow", "default", ""},
		{"default tier prefixed is the same policy", "GlobalNetworkPolicy", `{"name":"default.allow"}`, ``, "allow", "default", ""},
		{"explicit default tier", "GlobalNetworkPolicy", `{"name":"allow"}`, `default`, "allow", "default", ""},
		{"named tier", "GlobalNetworkPolicy", `{"name":"sec.allow"}`, `sec`, "sec.allow", "sec", ""},
		{"named tier missing prefix", "GlobalNetworkPolicy", `{"name":"allow"}`, `sec`, "", "", "metadata.name"},
		{"prefix of another tier", "GlobalNetworkPolicy", `{"name":"ops.allow"}`, `sec`, "", "", "metadata.name"},
		{"dotted name in default tier", "GlobalNetworkPolicy", `{"name":"sec.allow"}`, ``, "", "", "metadata.name"},
		{"two dots", "GlobalNetworkPolicy", `{"name":"sec.a.b"}`, `sec`, "", "", "metadata.name"},
		{"upper case", "GlobalNetworkPolicy", `{"name":"Allow"}`, ``, "", "", "metadata.name"},
		{"missing name", "GlobalNetworkPolicy", `{}`, ``, "", "", "metadata.name"},
		{"bad tier name", "GlobalNetworkPolicy", `{"name":"a.b"}`, `A`, "", "", "spec.tier"},
		{"namespaced", "NetworkPolicy", `{"name":"sec.allow","namespace":"n"}`, `sec`, "sec.allow", "sec", ""},
		{"namespace missing", "NetworkPolicy", `{"name":"allow"}`, ``, "", "", "metadata.namespace"},
		{"global with namespace", "GlobalNetworkPolicy", `{"name":"allow","namespace":"n"}`, ``, "", "", "metadata.namespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := `{}`
			if tc.tier != "" {
				spec = `{"tier":"` + tc.tier + `"}`
			}
			r := Decode("projectcalico.org/v3", tc.kind, []byte(`{"metadata":`+tc.meta+`,"spec":`+spec+`}`))
			if tc.wantErr != "" {
				if !slices.Contains(fieldsOf(r.Errors), tc.wantErr) || len(r.Objects) != 0 {
					t.Fatalf("want error at %s, got %v", tc.wantErr, r.Errors)
				}
				return
			}
			p := only(t, decodeOK(t, "projectcalico.org/v3", tc.kind, `{"metadata":`+tc.meta+`,"spec":`+spec+`}`)).(*model.Policy)
			if p.Key.Name != tc.wantName || p.Tier != tc.wantTier {
				t.Errorf("got name %q tier %q, want %q %q", p.Key.Name, p.Tier, tc.wantName, tc.wantTier)
			}
		})
	}
}

func TestPolicyTypes(t *testing.T) {
	in, eg := model.PolicyTypeIngress, model.PolicyTypeEgress
	tests := []struct {
		name, spec string
		want       []model.PolicyType
		wantErr    string
	}{
		{"no rules defaults to ingress", `{}`, []model.PolicyType{in}, ""},
		{"ingress rules", `{"ingress":[{"action":"Allow"}]}`, []model.PolicyType{in}, ""},
		{"egress rules only", `{"egress":[{"action":"Allow"}]}`, []model.PolicyType{eg}, ""},
		{"both", `{"ingress":[{"action":"Allow"}],"egress":[{"action":"Deny"}]}`, []model.PolicyType{in, eg}, ""},
		{"explicit egress with no rules", `{"types":["Egress"]}`, []model.PolicyType{eg}, ""},
		{"explicit kept in order", `{"types":["Egress","Ingress"]}`, []model.PolicyType{eg, in}, ""},
		{"unknown type", `{"types":["Inbound"]}`, nil, "spec.types[0]"},
		{"lower case is unknown", `{"types":["ingress"]}`, nil, "spec.types[0]"},
		{"duplicate", `{"types":["Ingress","Ingress"]}`, nil, "spec.types[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			js := `{"metadata":{"name":"p","namespace":"n"},"spec":` + tc.spec + `}`
			if tc.wantErr != "" {
				r := Decode("projectcalico.org/v3", "NetworkPolicy", []byte(js))
				if !slices.Contains(fieldsOf(r.Errors), tc.wantErr) {
					t.Fatalf("want error at %s, got %v", tc.wantErr, r.Errors)
				}
				return
			}
			p := only(t, decodeOK(t, "projectcalico.org/v3", "NetworkPolicy", js)).(*model.Policy)
			if d := cmp.Diff(tc.want, p.Types); d != "" {
				t.Errorf("types (-want +got):\n%s", d)
			}
		})
	}
}

func TestGlobalNetworkPolicyFlags(t *testing.T) {
	js := `{"metadata":{"name":"hep"},"spec":{"order":10,"selector":"has(host)","preDNAT":true,"applyOnForward":true,"types":["Ingress"],"performanceHints":["AssumeNeededOnEveryNode"],"ingress":[{"action":"Deny"}]}}`
	p := only(t, decodeOK(t, "projectcalico.org/v3", "GlobalNetworkPolicy", js)).(*model.Policy)
	want := &model.Policy{
		Meta: meta(model.KindGlobalNetworkPolicy, "", "hep"), Tier: "default", Order: f64(10),
		Selector: sel("has(host)"), Types: []model.PolicyType{model.PolicyTypeIngress},
		Ingress: []model.Rule{{Action: model.ActionDeny}}, PreDNAT: true, ApplyOnForward: true,
		PerformanceHints: []string{"AssumeNeededOnEveryNode"},
	}
	if d := cmp.Diff(want, p, cmpOpts); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}

	bad := []struct{ spec, field, reason string }{
		{`{"preDNAT":true,"doNotTrack":true,"applyOnForward":true}`, "spec.preDNAT", "cannot both be true"},
		{`{"preDNAT":true,"applyOnForward":true,"egress":[{"action":"Allow"}]}`, "spec.egress", "cannot have egress rules"},
		{`{"preDNAT":true,"applyOnForward":true,"types":["Egress"]}`, "spec.types[0]", "cannot have type Egress"},
		{`{"doNotTrack":true}`, "spec.applyOnForward", "must be true"},
		{`{"selector":"global()"}`, "spec.selector", "global()"},
		{`{"namespaceSelector":"a =="}`, "spec.namespaceSelector", "invalid selector"},
		{`{"serviceAccountSelector":"a =="}`, "spec.serviceAccountSelector", "invalid selector"},
		{`{"performanceHints":["Fast"]}`, "spec.performanceHints[0]", "AssumeNeededOnEveryNode"},
		{`{"performanceHints":["AssumeNeededOnEveryNode","AssumeNeededOnEveryNode"]}`, "spec.performanceHints[1]", "twice"},
	}
	for _, b := range bad {
		r := Decode("projectcalico.org/v3", "GlobalNetworkPolicy", []byte(`{"metadata":{"name":"p"},"spec":`+b.spec+`}`))
		ok := slices.ContainsFunc(r.Errors, func(e FieldError) bool { return e.Field == b.field && strings.Contains(e.Reason, b.reason) })
		if !ok || len(r.Objects) != 0 {
			t.Errorf("%s: want %s %q, got %v", b.spec, b.field, b.reason, r.Errors)
		}
	}
}

func TestTier(t *testing.T) {
	tests := []struct {
		name, json string
		want       *model.Tier
		wantErr    string
	}{
		{"order and pass", `{"metadata":{"name":"sec"},"spec":{"order":100,"defaultAction":"Pass"}}`,
			&model.Tier{Meta: meta(model.KindTier, "", "sec"), Order: f64(100), DefaultAction: model.ActionPass}, ""},
		{"default action deny by default, no order", `{"metadata":{"name":"sec"},"spec":{}}`,
			&model.Tier{Meta: meta(model.KindTier, "", "sec"), DefaultAction: model.ActionDeny}, ""},
		{"default tier fixed order", `{"metadata":{"name":"default"},"spec":{"order":1000000}}`,
			&model.Tier{Meta: meta(model.KindTier, "", "default"), Order: f64(1000000), DefaultAction: model.ActionDeny}, ""},
		{"default tier wrong order", `{"metadata":{"name":"default"},"spec":{"order":5}}`, nil, "spec.order"},
		{"bad default action", `{"metadata":{"name":"sec"},"spec":{"defaultAction":"Allow"}}`, nil, "spec.defaultAction"},
		{"dotted tier name", `{"metadata":{"name":"a.b"},"spec":{}}`, nil, "metadata.name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Decode("projectcalico.org/v3", "Tier", []byte(tc.json))
			if tc.wantErr != "" {
				if !slices.Contains(fieldsOf(r.Errors), tc.wantErr) {
					t.Fatalf("want error at %s, got %v", tc.wantErr, r.Errors)
				}
				return
			}
			if d := cmp.Diff(tc.want, only(t, r), cmpOpts); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestProfile(t *testing.T) {
	js := `{"metadata":{"name":"ext"},"spec":{"labelsToApply":{"zone":"dmz"},"ingress":[{"action":"Allow","source":{"selector":"a == 'b'"}}],"egress":[{"action":"Deny"}]}}`
	got := only(t, decodeOK(t, "projectcalico.org/v3", "Profile", js))
	want := &model.Profile{
		Meta:          meta(model.KindProfile, "", "ext"),
		LabelsToApply: model.Labels{"zone": "dmz"},
		Ingress:       []model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel("a == 'b'")}}},
		Egress:        []model.Rule{{Action: model.ActionDeny}},
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	r := Decode("projectcalico.org/v3", "Profile", []byte(`{"metadata":{"name":"p"},"spec":{"labelsToApply":{"bad key!":"v"}}}`))
	if !slices.Contains(fieldsOf(r.Errors), "spec.labelsToApply.bad key!") {
		t.Errorf("want label key error, got %v", r.Errors)
	}
}
