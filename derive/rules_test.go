package derive

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/snapshot"
)

// TestUniqueIDMatchesCalico pins the ID scheme to Calico's: the selector package's own
// UniqueID for "s:" sets, and the same construction for derived IDs.
func TestUniqueIDMatchesCalico(t *testing.T) {
	s := sel("app == 'web'")
	if got, want := uniqueID("s", s.String()), s.UniqueID(); got != want {
		t.Errorf("uniqueID(s, %q) = %q, Calico's UniqueID = %q", s.String(), got, want)
	}
	np := namedPortSet(s, "http", model.ProtoTCP)
	if want := uniqueID("n", s.UniqueID()+",tcp,http"); np.ID != want {
		t.Errorf("named port set ID = %q, want %q", np.ID, want)
	}
	if np.ID[:2] != "n:" || serviceSet("ns/svc", true).ID[:4] != "svc:" || serviceSet("ns/svc", false).ID[:10] != "svcnoport:" {
		t.Errorf("ID prefixes wrong: %q %q %q", np.ID, serviceSet("ns/svc", true).ID, serviceSet("ns/svc", false).ID)
	}
}

// TestConvertRule checks the rule IR against Felix's rule scanner and per-family filter.
func TestConvertRule(t *testing.T) {
	web := sel("app == 'web'")
	db := sel("app == 'db'")
	webNotDB := sel("(app == 'web') && (!(app == 'db'))")
	origin := snapshot.RuleOrigin{Kind: "GlobalNetworkPolicy", Name: "p", Direction: "ingress", Index: 3}
	ctx := ruleContext{Kind: model.KindGlobalNetworkPolicy, Name: "p", Direction: "ingress", Index: 3}
	tests := []struct {
		name     string
		rule     model.Rule
		want     snapshot.Rule
		dropped  bool
		wantSets []string
	}{
		{
			name: "allow all",
			rule: model.Rule{Action: model.ActionAllow},
			want: snapshot.Rule{Action: snapshot.Allow, Origin: origin},
		},
		{
			name:     "selector becomes a selector set",
			rule:     model.Rule{Action: model.ActionAllow, Source: model.EntityRule{Selector: web}},
			want:     snapshot.Rule{Action: snapshot.Allow, SrcIPSets: []string{web.UniqueID()}, Origin: origin},
			wantSets: []string{web.UniqueID()},
		},
		{
			name:     "notSelector with a selector folds into one set",
			rule:     model.Rule{Action: model.ActionDeny, Destination: model.EntityRule{Selector: web, NotSelector: db}},
			want:     snapshot.Rule{Action: snapshot.Deny, DstIPSets: []string{webNotDB.UniqueID()}, Origin: origin},
			wantSets: []string{webNotDB.UniqueID()},
		},
		{
			name:     "notSelector alone is a negated set",
			rule:     model.Rule{Action: model.ActionAllow, Source: model.EntityRule{NotSelector: db}},
			want:     snapshot.Rule{Action: snapshot.Allow, NotSrcIPSets: []string{db.UniqueID()}, Origin: origin},
			wantSets: []string{db.UniqueID()},
		},
		{
			name: "named port only: the named-port set replaces the selector set",
			rule: model.Rule{Action: model.ActionAllow, Protocol: u8(6), Destination: model.EntityRule{Selector: web, Ports: []model.Port{{Name: "http"}}}},
			want: snapshot.Rule{Action: snapshot.Allow, Protocol: u8(6),
				DstNamedPortIPSets: []string{namedPortSet(web, "http", 6).ID}, Origin: origin},
			wantSets: []string{namedPortSet(web, "http", 6).ID},
		},
		{
			name: "named and numeric ports keep the selector set",
			rule: model.Rule{Action: model.ActionAllow, Protocol: u8(17), Destination: model.EntityRule{Selector: web,
				Ports: []model.Port{{Name: "dns"}, {Min: 53, Max: 53}, {Min: 1000, Max: 2000}}}},
			want: snapshot.Rule{Action: snapshot.Allow, Protocol: u8(17),
				DstIPSets:          []string{web.UniqueID()},
				DstPorts:           []snapshot.PortRange{{Min: 53, Max: 53}, {Min: 1000, Max: 2000}},
				DstNamedPortIPSets: []string{namedPortSet(web, "dns", 17).ID}, Origin: origin},
			wantSets: []string{web.UniqueID(), namedPortSet(web, "dns", 17).ID},
		},
		{
			name: "named port without selector filters on all(); no protocol means TCP",
			rule: model.Rule{Action: model.ActionAllow, Destination: model.EntityRule{NotPorts: []model.Port{{Name: "metrics"}}}},
			want: snapshot.Rule{Action: snapshot.Allow,
				NotDstNamedPortIPSets: []string{namedPortSet(allSelector, "metrics", 6).ID}, Origin: origin},
			wantSets: []string{namedPortSet(allSelector, "metrics", 6).ID},
		},
		{
			name: "ICMP type and code, not-protocol",
			rule: model.Rule{Action: model.ActionAllow, IPVersion: 4, Protocol: u8(1), ICMP: &model.ICMPMatch{Type: u8(8), Code: u8(0)}, NotICMP: &model.ICMPMatch{Type: u8(3)}},
			want: snapshot.Rule{Action: snapshot.Allow, IPVersion: 4, Protocol: u8(1), ICMP: &snapshot.ICMPMatch{Type: 8, Code: u8(0)}, NotICMP: &snapshot.ICMPMatch{Type: 3}, Origin: origin},
		},
		{
			name: "ipVersion 6 keeps only IPv6 nets",
			rule: model.Rule{Action: model.ActionAllow, IPVersion: 6, Source: model.EntityRule{Nets: prefixes("10.0.0.0/8", "fd00::/8")}},
			want: snapshot.Rule{Action: snapshot.Allow, IPVersion: 6, SrcNets: prefixes("fd00::/8"), Origin: origin},
		},
		{
			name: "nets all IPv4 make the rule IPv4-only",
			rule: model.Rule{Action: model.ActionAllow, Source: model.EntityRule{Nets: prefixes("10.0.0.0/8")}},
			want: snapshot.Rule{Action: snapshot.Allow, IPVersion: 4, SrcNets: prefixes("10.0.0.0/8"), Origin: origin},
		},
		{
			name: "notNets all IPv6 make the rule IPv6-only (Felix drops it for IPv4)",
			rule: model.Rule{Action: model.ActionAllow, Destination: model.EntityRule{NotNets: prefixes("fd00::/8")}},
			want: snapshot.Rule{Action: snapshot.Allow, IPVersion: 6, NotDstNets: prefixes("fd00::/8"), Origin: origin},
		},
		{
			name: "mixed nets keep both families",
			rule: model.Rule{Action: model.ActionAllow, Source: model.EntityRule{Nets: prefixes("10.1.2.3/8", "fd00::/8")}},
			want: snapshot.Rule{Action: snapshot.Allow, SrcNets: prefixes("10.0.0.0/8", "fd00::/8"), Origin: origin},
		},
		{
			name: "negated IPv4 catch-all drops the IPv4 rule",
			rule: model.Rule{Action: model.ActionAllow, Source: model.EntityRule{NotNets: prefixes("0.0.0.0/0", "fd00::/8")}},
			want: snapshot.Rule{Action: snapshot.Allow, IPVersion: 6, NotSrcNets: prefixes("fd00::/8"), Origin: origin},
		},
		{
			name:    "source IPv4 and destination IPv6 matches nothing",
			rule:    model.Rule{Action: model.ActionAllow, Source: model.EntityRule{Nets: prefixes("10.0.0.0/8")}, Destination: model.EntityRule{Nets: prefixes("fd00::/8")}},
			dropped: true,
		},
		{
			name:    "ipVersion 4 with only IPv6 nets matches nothing",
			rule:    model.Rule{Action: model.ActionAllow, IPVersion: 4, Source: model.EntityRule{Nets: prefixes("fd00::/8")}},
			dropped: true,
		},
		{
			name: "a dropped rule still activates its IP sets",
			rule: model.Rule{Action: model.ActionAllow, IPVersion: 6, Source: model.EntityRule{Selector: web},
				Destination: model.EntityRule{Nets: prefixes("10.0.0.0/8")}},
			dropped:  true,
			wantSets: []string{web.UniqueID()},
		},
		{
			name: "services: destination with ports, source without",
			rule: model.Rule{Action: model.ActionAllow,
				Source:      model.EntityRule{Services: &model.ServiceMatch{Namespace: "a", Name: "client"}},
				Destination: model.EntityRule{Services: &model.ServiceMatch{Namespace: "b", Name: "api"}}},
			want: snapshot.Rule{Action: snapshot.Allow,
				SrcIPSets:        []string{serviceSet("a/client", false).ID},
				DstServiceIPSets: []string{serviceSet("b/api", true).ID}, Origin: origin},
			wantSets: []string{serviceSet("b/api", true).ID, serviceSet("a/client", false).ID},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, keep, sets, err := convertRule(&tt.rule, ctx)
			if err != nil {
				t.Fatalf("convertRule: %v", err)
			}
			if keep == tt.dropped {
				t.Fatalf("keep = %v, want %v", keep, !tt.dropped)
			}
			if keep {
				if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
					t.Errorf("rule IR (-want +got):\n%s", diff)
				}
			}
			var gotSets []string
			for _, s := range sets {
				gotSets = append(gotSets, s.ID)
			}
			if diff := cmp.Diff(tt.wantSets, gotSets); diff != "" {
				t.Errorf("IP sets (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIPSetMembers checks set contents: workload endpoints cluster-wide, host endpoints'
// expected IPs, network sets (namespaced ones inherit their namespace's labels), named ports.
func TestIPSetMembers(t *testing.T) {
	a := wep("ns1", "a", "n1", model.Labels{"app": "web"}, "10.0.0.1/32", "fd00::1/128")
	a.Ports = []model.NamedPort{{Name: "http", Protocol: 6, Port: 8080}, {Name: "http", Protocol: 17, Port: 8081}}
	b := wep("ns2", "b", "n2", model.Labels{"app": "web"}, "10.0.1.1/32")
	b.Ports = []model.NamedPort{{Name: "http", Port: 80}} // no protocol: TCP
	c := wep("ns1", "c", "n2", model.Labels{"app": "db"}, "10.0.1.2/32")
	h := hep("h", "n3", "eth0", model.Labels{"app": "web"}, "192.168.0.3")
	nsNet := netset("ns1", "ext", model.Labels{"app": "web"}, "203.0.113.0/24")
	gNet := netset("", "gext", model.Labels{"kind": "ext"}, "198.51.100.0/24", "2001:db8::/32")
	objs := []model.Object{nsProfile("ns1", model.Labels{"env": "prod"}), nsProfile("ns2", nil), a, b, c, h, nsNet, gNet}

	v := newStore(t, objs...).View()
	hs := holders(v, listAll[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint), profileLabels(v), nil).items
	member := func(p string) snapshot.Member { return snapshot.Member{Prefix: pfx(p)} }
	tests := []struct {
		def  ipSetDef
		want []snapshot.Member
	}{
		{selectorSet(sel("app == 'web'")), []snapshot.Member{member("10.0.0.1/32"), member("10.0.1.1/32"), member("192.168.0.3/32"), member("203.0.113.0/24"), member("fd00::1/128")}},
		{selectorSet(sel("pcns.env == 'prod'")), []snapshot.Member{member("10.0.0.1/32"), member("10.0.1.2/32"), member("203.0.113.0/24"), member("fd00::1/128")}},
		{selectorSet(sel("kind == 'ext'")), []snapshot.Member{member("198.51.100.0/24"), member("2001:db8::/32")}},
		{namedPortSet(sel("app == 'web'"), "http", 6), []snapshot.Member{
			{Prefix: pfx("10.0.0.1/32"), Protocol: 6, Port: 8080},
			{Prefix: pfx("10.0.1.1/32"), Protocol: 6, Port: 80},
			{Prefix: pfx("fd00::1/128"), Protocol: 6, Port: 8080},
		}},
		{namedPortSet(allSelector, "http", 17), []snapshot.Member{
			{Prefix: pfx("10.0.0.1/32"), Protocol: 17, Port: 8081},
			{Prefix: pfx("fd00::1/128"), Protocol: 17, Port: 8081},
		}},
	}
	var sels []*selector.Selector
	for _, tt := range tests {
		sels = append(sels, tt.def.Selector)
	}
	set := holders(v, listAll[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint), profileLabels(v), sels)
	for _, tt := range tests {
		got := ipSetMembers(tt.def, hs, nil)
		if diff := cmp.Diff(tt.want, got, cmpOpts); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.def.source(), diff)
		}
		if diff := cmp.Diff(tt.want, indexedMembers(tt.def, set, nil), cmpOpts); diff != "" {
			t.Errorf("%s through the label index (-want +got):\n%s", tt.def.source(), diff)
		}
	}

	slices := []*model.EndpointSlice{
		{Meta: model.Meta{Key: model.Key{Kind: model.KindEndpointSlice, Namespace: "b", Name: "api-x"}}, ServiceName: "api",
			Ports:     []model.EndpointSlicePort{{Name: "https", Protocol: 6, Port: 443}, {Name: "none"}},
			Endpoints: []model.SliceEndpoint{{Addresses: []netip.Addr{addr("10.0.5.1")}}, {Addresses: []netip.Addr{addr("10.0.5.2")}, Ready: true}}},
		{Meta: model.Meta{Key: model.Key{Kind: model.KindEndpointSlice, Namespace: "other", Name: "api-y"}}, ServiceName: "api",
			Ports: []model.EndpointSlicePort{{Port: 1}}, Endpoints: []model.SliceEndpoint{{Addresses: []netip.Addr{addr("10.9.9.9")}}}},
	}
	if diff := cmp.Diff([]snapshot.Member{{Prefix: pfx("10.0.5.1/32"), Protocol: 6, Port: 443}, {Prefix: pfx("10.0.5.2/32"), Protocol: 6, Port: 443}},
		ipSetMembers(serviceSet("b/api", true), nil, slices), cmpOpts); diff != "" {
		t.Errorf("service set with ports (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]snapshot.Member{member("10.0.5.1/32"), member("10.0.5.2/32")},
		ipSetMembers(serviceSet("b/api", false), nil, slices), cmpOpts); diff != "" {
		t.Errorf("service set without ports (-want +got):\n%s", diff)
	}
}
