package convert

import "testing"

// fuzzKinds are the (apiVersion, kind) pairs the fuzzer picks from by index.
var fuzzKinds = [][2]string{
	{"projectcalico.org/v3", "GlobalNetworkPolicy"}, {"projectcalico.org/v3", "NetworkPolicy"},
	{"projectcalico.org/v3", "Tier"}, {"projectcalico.org/v3", "Profile"},
	{"projectcalico.org/v3", "WorkloadEndpoint"}, {"projectcalico.org/v3", "HostEndpoint"},
	{"projectcalico.org/v3", "NetworkSet"}, {"projectcalico.org/v3", "GlobalNetworkSet"},
	{"projectcalico.org/v3", "IPPool"}, {"projectcalico.org/v3", "Node"},
	{"projectcalico.org/v3", "FelixConfiguration"}, {"projectcalico.org/v3", "BGPConfiguration"},
	{"projectcalico.org/v3", "BlockAffinity"}, {"crd.projectcalico.org/v1", "IPAMBlock"},
	{"v1", "Namespace"}, {"v1", "Pod"}, {"v1", "ServiceAccount"}, {"v1", "Node"}, {"v1", "Service"},
	{"networking.k8s.io/v1", "NetworkPolicy"}, {"discovery.k8s.io/v1", "EndpointSlice"},
	{"apps/v1", "Deployment"},
}

// fuzzSeeds holds one realistic document per kind (same order as fuzzKinds).
var fuzzSeeds = []string{
	`{"metadata":{"name":"sec.p"},"spec":{"tier":"sec","selector":"a == 'b'","namespaceSelector":"all()","serviceAccountSelector":"x == 'y'","ingress":[{"action":"Allow","protocol":"TCP","source":{"namespaceSelector":"global()","serviceAccounts":{"names":["a"],"selector":"r == 's'"},"nets":["10.0.0.0/8"]},"destination":{"ports":[80,"1:2","http"]}}],"egress":[{"action":"Deny","protocol":"ICMP","icmp":{"type":8,"code":0}}]}}`,
	`{"metadata":{"name":"p","namespace":"n"},"spec":{"selector":"app == 'x'","ingress":[{"action":"Allow","source":{"selector":"a == 'b'","notSelector":"c == 'd'"}}],"egress":[{"action":"Allow","destination":{"services":{"name":"s"}}}]}}`,
	`{"metadata":{"name":"sec"},"spec":{"order":10,"defaultAction":"Pass"}}`,
	`{"metadata":{"name":"p"},"spec":{"labelsToApply":{"a":"b"},"ingress":[{"action":"Allow"}]}}`,
	`{"metadata":{"name":"w","namespace":"n","labels":{"a":"b"}},"spec":{"node":"n","ipNetworks":["10.0.0.1/32"],"ipNATs":[{"internalIP":"10.0.0.1","externalIP":"1.1.1.1"}],"ports":[{"name":"p","protocol":"TCP","port":80}],"mac":"ee:ee:ee:ee:ee:ee"}}`,
	`{"metadata":{"name":"h"},"spec":{"node":"n","interfaceName":"eth0","expectedIPs":["1.2.3.4"],"ports":[{"name":"ssh","protocol":"TCP","port":22}]}}`,
	`{"metadata":{"name":"s","namespace":"n"},"spec":{"nets":["10.0.0.0/8","1.1.1.1"]}}`,
	`{"metadata":{"name":"s"},"spec":{"nets":["::/0"]}}`,
	`{"metadata":{"name":"p"},"spec":{"cidr":"10.0.0.0/16","vxlanMode":"Always","blockSize":26,"nodeSelector":"all()"}}`,
	`{"metadata":{"name":"n"},"spec":{"bgp":{"ipv4Address":"10.0.0.1/24"},"ipv4VXLANTunnelAddr":"10.1.0.1","vxlanTunnelMACAddr":"66:aa:bb:cc:dd:ee"}}`,
	`{"metadata":{"name":"default"},"spec":{"bpfEnabled":true,"failsafeInboundHostPorts":[{"protocol":"TCP","port":22}]}}`,
	`{"metadata":{"name":"default"},"spec":{"serviceClusterIPs":[{"cidr":"10.96.0.0/12"}]}}`,
	`{"metadata":{"name":"b"},"spec":{"state":"confirmed","node":"n","cidr":"10.0.0.0/26"}}`,
	`{"metadata":{"name":"b"},"spec":{"cidr":"10.0.0.0/26","affinity":"host:n"}}`,
	`{"metadata":{"name":"n","labels":{"a":"b"}}}`,
	`{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/podIPs":"10.0.0.1,fd00::1","cni.projectcalico.org/floatingIPs":"[\"1.1.1.1\"]"}},"spec":{"nodeName":"x","serviceAccountName":"sa","containers":[{"name":"c","ports":[{"name":"h","containerPort":80}]}]},"status":{"phase":"Running"}}`,
	`{"metadata":{"name":"sa","namespace":"n","labels":{"a":"b"}}}`,
	`{"metadata":{"name":"n","annotations":{"projectcalico.org/IPv4Address":"10.0.0.1/24"}},"spec":{"podCIDRs":["10.1.0.0/24"]},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}}`,
	`{"metadata":{"name":"s","namespace":"n"},"spec":{"clusterIPs":["10.96.0.1"],"ports":[{"port":80,"targetPort":"http"}],"sessionAffinity":"ClientIP"}}`,
	`{"metadata":{"name":"np","namespace":"n"},"spec":{"podSelector":{"matchExpressions":[{"key":"a","operator":"In","values":["b"]}]},"ingress":[{"from":[{"namespaceSelector":{},"podSelector":{}},{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}}],"ports":[{"port":80,"endPort":90},{"port":"http"}]}],"policyTypes":["Ingress","Egress"]}}`,
	`{"metadata":{"name":"s","namespace":"n","labels":{"kubernetes.io/service-name":"svc"}},"addressType":"IPv4","ports":[{"port":80}],"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}}]}`,
	`{"metadata":{"name":"d","namespace":"n"}}`,
}

func FuzzDecode(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add(uint8(i), []byte(s))
	}
	for i := range fuzzKinds {
		f.Add(uint8(i), []byte(`{"metadata":{"name":"x"},"spec":{"selector":"a ==","nets":["x"],"ports":["a:b"]}}`))
		f.Add(uint8(i), []byte(`null`))
		f.Add(uint8(i), []byte(`[]`))
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		k := fuzzKinds[int(kind)%len(fuzzKinds)]
		r := Decode(k[0], k[1], data)
		if len(r.Errors) > 0 && len(r.Objects) > 0 {
			t.Fatalf("%s: errors and objects together: %v", r.Resource, r.Errors)
		}
		if r.Skipped && (len(r.Objects) > 0 || len(r.Errors) > 0) {
			t.Fatalf("%s: skipped with objects or errors", r.Resource)
		}
		for _, e := range r.Errors {
			if e.Reason == "" {
				t.Fatalf("%s: error without a reason at %q", r.Resource, e.Field)
			}
		}
		for _, o := range r.Objects {
			if o.GetMeta().Key.Name == "" && k[1] != "IPAMBlock" {
				t.Fatalf("%s: object without a name", r.Resource)
			}
		}
	})
}

func TestFuzzSeedsAreValid(t *testing.T) {
	if len(fuzzSeeds) != len(fuzzKinds) {
		t.Fatalf("%d seeds for %d kinds", len(fuzzSeeds), len(fuzzKinds))
	}
	for i, s := range fuzzSeeds {
		r := Decode(fuzzKinds[i][0], fuzzKinds[i][1], []byte(s))
		if len(r.Errors) > 0 {
			t.Errorf("seed %d (%s): %v", i, fuzzKinds[i][1], r.Errors)
		}
	}
}
