package convert

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	apiv3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"

	"github.com/felis-dev/felis/model"
)

func TestCalicoKinds(t *testing.T) {
	tests := []struct {
		kind, json string
		want       model.Object // nil: no object (not an error)
	}{
		{"WorkloadEndpoint", `{"metadata":{"name":"node1-k8s-pod1-eth0","namespace":"ns","labels":{"app":"a","pcns.x":"y","pcsa.z":"w"}},"spec":{
			"node":"node1","orchestrator":"k8s","pod":"pod1","endpoint":"eth0","interfaceName":"cali12345678901","mac":"EE:EE:EE:EE:EE:EE",
			"ipNetworks":["10.0.0.1/32","10.0.0.2"],"ipNATs":[{"internalIP":"10.0.0.1","externalIP":"1.1.1.1"}],"profiles":["kns.ns","ksa.ns.sa"],
			"serviceAccountName":"sa","ports":[{"name":"http","protocol":"TCP","port":80},{"name":"","protocol":"UDP","port":53,"hostPort":53}],
			"allowSpoofedSourcePrefixes":["192.168.5.0/24"],"containerID":"abc","qosControls":{"ingressBandwidth":1000}}}`,
			&model.WorkloadEndpoint{Meta: meta(model.KindWorkloadEndpoint, "ns", "node1-k8s-pod1-eth0"), Node: "node1", Orchestrator: "k8s",
				Workload: "pod1", Endpoint: "eth0", InterfaceName: "cali12345678901", MAC: "ee:ee:ee:ee:ee:ee",
				IPNetworks: pfxs("10.0.0.1/32", "10.0.0.2/32"), IPNATs: []model.IPNAT{{InternalIP: addr("10.0.0.1"), ExternalIP: addr("1.1.1.1")}},
				Profiles: []string{"kns.ns", "ksa.ns.sa"}, Labels: model.Labels{"app": "a", "projectcalico.org/serviceaccount": "sa"},
				Ports: []model.NamedPort{{Name: "http", Protocol: 6, Port: 80}}, ServiceAccount: "sa",
				AllowSpoofedSourcePrefixes: pfxs("192.168.5.0/24")}},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","interfaceName":"cali1"}}`, nil},
		{"HostEndpoint", `{"metadata":{"name":"n1-eth0","labels":{"role":"gw"}},"spec":{"node":"n1","interfaceName":"eth0","expectedIPs":["192.168.1.1","fd00::1"],"profiles":["p"],"ports":[{"name":"ssh","protocol":"TCP","port":22}]}}`,
			&model.HostEndpoint{Meta: meta(model.KindHostEndpoint, "", "n1-eth0"), Node: "n1", InterfaceName: "eth0",
				ExpectedIPs: []netipAddr{addr("192.168.1.1"), addr("fd00::1")}, Profiles: []string{"p"}, Labels: model.Labels{"role": "gw"},
				Ports: []model.NamedPort{{Name: "ssh", Protocol: 6, Port: 22}}}},
		{"HostEndpoint", `{"metadata":{"name":"all"},"spec":{"node":"n1","interfaceName":"*"}}`,
			&model.HostEndpoint{Meta: meta(model.KindHostEndpoint, "", "all"), Node: "n1", InterfaceName: "*"}},
		{"NetworkSet", `{"metadata":{"name":"ext","namespace":"prod","labels":{"k":"v"}},"spec":{"nets":["10.1.2.3/16","1.1.1.1"]}}`,
			&model.NetworkSet{Meta: meta(model.KindNetworkSet, "prod", "ext"), Labels: model.Labels{"k": "v", "projectcalico.org/namespace": "prod"}, Nets: pfxs("10.1.0.0/16", "1.1.1.1/32")}},
		{"GlobalNetworkSet", `{"metadata":{"name":"world","labels":{"k":"v"}},"spec":{"nets":["0.0.0.0/0","::/0"]}}`,
			&model.NetworkSet{Meta: meta(model.KindGlobalNetworkSet, "", "world"), Labels: model.Labels{"k": "v"}, Nets: pfxs("0.0.0.0/0", "::/0")}},
		{"IPPool", `{"metadata":{"name":"v4"},"spec":{"cidr":"10.244.0.0/16","vxlanMode":"CrossSubnet","natOutgoing":true,"nodeSelector":"zone == 'a'"}}`,
			&model.IPPool{Meta: meta(model.KindIPPool, "", "v4"), CIDR: pfx("10.244.0.0/16"), VXLANMode: model.EncapCrossSubnet, IPIPMode: model.EncapNever,
				NATOutgoing: true, BlockSize: 26, NodeSelector: sel("zone == 'a'")}},
		{"IPPool", `{"metadata":{"name":"v6"},"spec":{"cidr":"fd00:244::/48","disabled":true}}`,
			&model.IPPool{Meta: meta(model.KindIPPool, "", "v6"), CIDR: pfx("fd00:244::/48"), VXLANMode: model.EncapNever, IPIPMode: model.EncapNever,
				Disabled: true, BlockSize: 122, NodeSelector: sel("all()")}},
		{"IPPool", `{"metadata":{"name":"ipip"},"spec":{"cidr":"10.0.0.0/8","ipipMode":"Always","blockSize":24}}`,
			&model.IPPool{Meta: meta(model.KindIPPool, "", "ipip"), CIDR: pfx("10.0.0.0/8"), VXLANMode: model.EncapNever, IPIPMode: model.EncapAlways,
				BlockSize: 24, NodeSelector: sel("all()")}},
		{"IPPool", `{"metadata":{"name":"tiny-off"},"spec":{"cidr":"10.0.0.0/28","disabled":true}}`,
			&model.IPPool{Meta: meta(model.KindIPPool, "", "tiny-off"), CIDR: pfx("10.0.0.0/28"), VXLANMode: model.EncapNever, IPIPMode: model.EncapNever,
				Disabled: true, BlockSize: 26, NodeSelector: sel("all()")}},
		{"Node", `{"metadata":{"name":"n1","labels":{"a":"b"}},"spec":{"bgp":{"ipv4Address":"192.168.1.10/24","ipv6Address":"fd00::10/64"},
			"ipv4VXLANTunnelAddr":"10.244.0.1","vxlanTunnelMACAddr":"66:aa:bb:cc:dd:ee","ipv6VXLANTunnelAddr":"fd10::1","vxlanTunnelMACAddrV6":"66:aa:bb:cc:dd:ff",
			"addresses":[{"address":"192.168.1.10","type":"InternalIP"}],"orchRefs":[{"orchestrator":"k8s","nodeName":"n1"}]}}`,
			&model.Node{Meta: meta(model.KindNode, "", "n1"), Labels: model.Labels{"a": "b"}, IPv4Address: pfx("192.168.1.10/24"), IPv6Address: pfx("fd00::10/64"),
				VXLANTunnelAddr: addr("10.244.0.1"), VXLANTunnelMAC: "66:aa:bb:cc:dd:ee", VXLANTunnelAddrV6: addr("fd10::1"), VXLANTunnelMACV6: "66:aa:bb:cc:dd:ff"}},
		{"FelixConfiguration", `{"metadata":{"name":"node.n1"},"spec":{"bpfEnabled":true,"logSeverityScreen":"Info","failsafeInboundHostPorts":[{"protocol":"TCP","port":22}]}}`,
			&model.FelixConfiguration{Meta: meta(model.KindFelixConfiguration, "", "node.n1"), Spec: map[string]any{
				"bpfEnabled": true, "logSeverityScreen": "Info", "failsafeInboundHostPorts": []any{map[string]any{"protocol": "TCP", "port": float64(22)}}}}},
		{"FelixConfiguration", `{"metadata":{"name":"default"}}`,
			&model.FelixConfiguration{Meta: meta(model.KindFelixConfiguration, "", "default"), Spec: map[string]any{}}},
		{"BGPConfiguration", `{"metadata":{"name":"default"},"spec":{"asNumber":64512,"serviceClusterIPs":[{"cidr":"10.96.0.0/12"}],"serviceExternalIPs":[{"cidr":"203.0.113.0/24"}],"serviceLoadBalancerIPs":[{"cidr":"198.51.100.0/24"}]}}`,
			&model.BGPConfiguration{Meta: meta(model.KindBGPConfiguration, "", "default"), ServiceClusterIPs: pfxs("10.96.0.0/12"),
				ServiceExternalIPs: pfxs("203.0.113.0/24"), ServiceLoadBalancerIPs: pfxs("198.51.100.0/24")}},
		{"BlockAffinity", `{"metadata":{"name":"n1-10-244-0-0-26"},"spec":{"state":"confirmed","node":"n1","cidr":"10.244.0.0/26"}}`,
			&model.BlockAffinity{Meta: meta(model.KindBlockAffinity, "", "n1-10-244-0-0-26"), Node: "n1", CIDR: pfx("10.244.0.0/26"), State: "confirmed"}},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			r := decodeOK(t, "projectcalico.org/v3", tc.kind, tc.json)
			if tc.want == nil {
				if len(r.Objects) != 0 {
					t.Fatalf("want no object, got %+v", r.Objects[0])
				}
				return
			}
			if d := cmp.Diff(tc.want, only(t, r), cmpOpts); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestTypedFelixConfiguration(t *testing.T) {
	on := true
	f := &apiv3.FelixConfiguration{}
	f.Name = "default"
	f.Spec.BPFEnabled = &on
	got := only(t, FelixConfiguration(f)).(*model.FelixConfiguration)
	if d := cmp.Diff(map[string]any{"bpfEnabled": true}, got.Spec); d != "" {
		t.Errorf("spec (-want +got):\n%s", d)
	}
}

func TestIPAMBlock(t *testing.T) {
	tests := []struct {
		json string
		want *model.IPAMBlock
	}{
		{`{"metadata":{"name":"10-244-0-0-26"},"spec":{"cidr":"10.244.0.0/26","affinity":"host:node-1","allocations":[0,null],"unallocated":[1,2],"attributes":[]}}`,
			&model.IPAMBlock{Meta: meta(model.KindIPAMBlock, "", "10-244-0-0-26"), CIDR: pfx("10.244.0.0/26"), AffinityNode: "node-1"}},
		{`{"metadata":{"name":"fd00-244---122"},"spec":{"cidr":"fd00:244::/122","affinity":null,"deleted":true}}`,
			&model.IPAMBlock{Meta: meta(model.KindIPAMBlock, "", "fd00-244---122"), CIDR: pfx("fd00:244::/122"), Deleted: true}},
		{`{"metadata":{"name":"x"},"spec":{"cidr":"10.0.0.0/26","affinity":"virtual:vm1"}}`,
			&model.IPAMBlock{Meta: meta(model.KindIPAMBlock, "", "10-0-0-0-26"), CIDR: pfx("10.0.0.0/26")}},
	}
	for _, tc := range tests {
		got := only(t, decodeOK(t, "crd.projectcalico.org/v1", "IPAMBlock", tc.json))
		if d := cmp.Diff(tc.want, got, cmpOpts); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
	}
	if r := Decode("crd.projectcalico.org/v1", "IPAMBlock", []byte(`{"spec":{"cidr":"10.0.0.0"}}`)); !slices.Contains(fieldsOf(r.Errors), "spec.cidr") {
		t.Errorf("want cidr error, got %v", r.Errors)
	}
}

func TestCalicoKindValidation(t *testing.T) {
	tests := []struct{ kind, json, field string }{
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"ipNetworks":["10.0.0.1"]}}`, "spec.node"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","ipNetworks":["10.0.0.1/40"]}}`, "spec.ipNetworks[0]"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","ipNetworks":["10.0.0.1"],"mac":"xx"}}`, "spec.mac"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","ipNetworks":["10.0.0.0/24"]}}`, "spec.ipNetworks[0]"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","ipNetworks":["10.0.0.1"],"ipNATs":[{"internalIP":"10.0.0.2","externalIP":"1.1.1.1"}]}}`, "spec.ipNATs[0].internalIP"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","ipNetworks":["10.0.0.1"],"interfaceName":"much-too-long-interface"}}`, "spec.interfaceName"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w","namespace":"ns"},"spec":{"node":"n","ipNetworks":["10.0.0.1"],"ports":[{"name":"p","protocol":"ICMP","port":1}]}}`, "spec.ports[0].protocol"},
		{"WorkloadEndpoint", `{"metadata":{"name":"w"},"spec":{"node":"n","ipNetworks":["10.0.0.1"]}}`, "metadata.namespace"},
		{"HostEndpoint", `{"metadata":{"name":"h"},"spec":{"interfaceName":"eth0"}}`, "spec.node"},
		{"HostEndpoint", `{"metadata":{"name":"h"},"spec":{"node":"n"}}`, "spec.interfaceName"},
		{"HostEndpoint", `{"metadata":{"name":"h"},"spec":{"node":"n","expectedIPs":["1.2.3"]}}`, "spec.expectedIPs[0]"},
		{"HostEndpoint", `{"metadata":{"name":"h"},"spec":{"node":"n","interfaceName":"eth0","ports":[{"name":"x","protocol":"TCP","port":0}]}}`, "spec.ports[0].port"},
		{"NetworkSet", `{"metadata":{"name":"s","namespace":"n"},"spec":{"nets":["300.0.0.0/8"]}}`, "spec.nets[0]"},
		{"NetworkSet", `{"metadata":{"name":"s","namespace":"n","labels":{"projectcalico.org/namespace":"x"}},"spec":{}}`, "metadata.labels.projectcalico.org/namespace"},
		{"GlobalNetworkSet", `{"metadata":{"name":"S"},"spec":{}}`, "metadata.name"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{}}`, "spec.cidr"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.1/16"}}`, "spec.cidr"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","vxlanMode":"Sometimes"}}`, "spec.vxlanMode"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","vxlanMode":"Always","ipipMode":"Always"}}`, "spec.vxlanMode"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","blockSize":33}}`, "spec.blockSize"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/28","blockSize":26}}`, "spec.blockSize"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"fd00::/64","ipipMode":"Always"}}`, "spec.ipipMode"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"169.254.0.0/16"}}`, "spec.cidr"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"fe80::/64"}}`, "spec.cidr"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","nodeSelector":"global()"}}`, "spec.nodeSelector"},
		{"IPPool", `{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","nodeSelector":"a =="}}`, "spec.nodeSelector"},
		{"Node", `{"metadata":{"name":"n"},"spec":{"bgp":{"ipv4Address":"fd00::1/64"}}}`, "spec.bgp.ipv4Address"},
		{"Node", `{"metadata":{"name":"n"},"spec":{"ipv4VXLANTunnelAddr":"x"}}`, "spec.ipv4VXLANTunnelAddr"},
		{"Node", `{"metadata":{"name":"n"},"spec":{"vxlanTunnelMACAddr":"x"}}`, "spec.vxlanTunnelMACAddr"},
		{"FelixConfiguration", `{"metadata":{"name":"default"},"spec":{"bpfEnabld":true}}`, "spec.bpfEnabld"},
		{"FelixConfiguration", `{"metadata":{"name":"default"},"spec":{"bpfEnabled":"yes"}}`, "spec.bpfEnabled"},
		{"BGPConfiguration", `{"metadata":{"name":"default"},"spec":{"serviceClusterIPs":[{"cidr":"x"}]}}`, "spec.serviceClusterIPs[0].cidr"},
		{"BlockAffinity", `{"metadata":{"name":"b"},"spec":{"state":"confirmed","cidr":"10.0.0.0/26"}}`, "spec.node"},
		{"BlockAffinity", `{"metadata":{"name":"b"},"spec":{"state":"maybe","node":"n","cidr":"10.0.0.0/26"}}`, "spec.state"},
		{"BlockAffinity", `{"metadata":{"name":"b"},"spec":{"state":"confirmed","node":"n","cidr":"x"}}`, "spec.cidr"},
	}
	for _, tc := range tests {
		t.Run(tc.kind+" "+tc.field, func(t *testing.T) {
			r := Decode("projectcalico.org/v3", tc.kind, []byte(tc.json))
			if !slices.Contains(fieldsOf(r.Errors), tc.field) || len(r.Objects) != 0 {
				t.Errorf("want error at %s, got %v", tc.field, r.Errors)
			}
		})
	}
}
