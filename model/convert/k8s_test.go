package convert

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

func TestInterfaceAndEndpointNames(t *testing.T) {
	// Expected interface names computed with `printf %s NS.POD | sha1sum`.
	names := []struct{ ns, pod, want string }{
		{"prod", "web-1", "cali91bef8fbcc9"},
		{"default", "nginx", "calic440f455693"},
		{"kube-system", "coredns-abc", "cali3d5d6ab04b5"},
	}
	for _, n := range names {
		if got := InterfaceName("cali", n.ns, n.pod); got != n.want {
			t.Errorf("InterfaceName(%s, %s) = %s, want %s", n.ns, n.pod, got, n.want)
		}
	}
	weps := []struct{ node, pod, want string }{
		{"node1", "pod1", "node1-k8s-pod1-eth0"},
		{"node-a", "web-1", "node--a-k8s-web--1-eth0"},
		{"ip-10-0-0-1.ec2", "a-b-c", "ip--10--0--0--1.ec2-k8s-a--b--c-eth0"},
	}
	for _, w := range weps {
		if got := WorkloadEndpointName(w.node, w.pod, "eth0"); got != w.want {
			t.Errorf("WorkloadEndpointName(%s, %s) = %s, want %s", w.node, w.pod, got, w.want)
		}
	}
}

const podJSON = `{"metadata":{"name":"web-1","namespace":"prod","labels":{"app":"web","pcns.sneaky":"x"}},
 "spec":{"nodeName":"node-a","serviceAccountName":"api",
  "initContainers":[{"name":"init","ports":[{"name":"sidecar","containerPort":15000,"protocol":"SCTP"}]}],
  "containers":[{"name":"c","ports":[{"name":"http","containerPort":8080},{"name":"dns","containerPort":53,"protocol":"UDP"},{"containerPort":9090,"hostPort":9090},{"name":"weird","containerPort":1,"protocol":"ICMP"}]}]},
 "status":{"phase":"Running","podIP":"10.0.0.5","podIPs":[{"ip":"10.0.0.5"},{"ip":"fd00::5"}]}}`

func TestPodToWorkloadEndpoint(t *testing.T) {
	got := only(t, decodeOK(t, "v1", "Pod", podJSON))
	want := &model.WorkloadEndpoint{
		Meta:          meta(model.KindWorkloadEndpoint, "prod", "node--a-k8s-web--1-eth0"),
		Node:          "node-a",
		Orchestrator:  "k8s",
		Workload:      "web-1",
		Endpoint:      "eth0",
		InterfaceName: "cali91bef8fbcc9",
		IPNetworks:    pfxs("10.0.0.5/32", "fd00::5/128"),
		Profiles:      []string{"kns.prod", "ksa.prod.api"},
		Labels: model.Labels{"app": "web", "projectcalico.org/namespace": "prod",
			"projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "api"},
		Ports: []model.NamedPort{
			{Name: "http", Protocol: 6, Port: 8080}, {Name: "dns", Protocol: 17, Port: 53}, {Name: "sidecar", Protocol: 132, Port: 15000},
		},
		ServiceAccount: "api",
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestPodIPsAndSkips(t *testing.T) {
	tests := []struct {
		name, json string
		wantIPs    []string // nil: no object
	}{
		{"status.podIPs first", `{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/podIPs":"10.9.9.9/32"}},"spec":{"nodeName":"x"},"status":{"podIP":"10.0.0.1","podIPs":[{"ip":"10.0.0.1"}]}}`, []string{"10.0.0.1/32"}},
		{"status.podIP when no podIPs", `{"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":"x"},"status":{"podIP":"fd00::1"}}`, []string{"fd00::1/128"}},
		{"calico plural annotation", `{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/podIP":"10.0.0.2/32","cni.projectcalico.org/podIPs":"10.0.0.2/32,fd00::2/128"}},"spec":{"nodeName":"x"}}`, []string{"10.0.0.2/32", "fd00::2/128"}},
		{"calico singular annotation", `{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/podIP":"10.0.0.3"}},"spec":{"nodeName":"x"}}`, []string{"10.0.0.3/32"}},
		{"AWS annotation", `{"metadata":{"name":"p","namespace":"n","annotations":{"vpc.amazonaws.com/pod-ips":"10.0.0.4"}},"spec":{"nodeName":"x"}}`, []string{"10.0.0.4/32"}},
		{"no IP", `{"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":"x"},"status":{"phase":"Pending"}}`, nil},
		{"host network", `{"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":"x","hostNetwork":true},"status":{"podIP":"192.168.0.1"}}`, nil},
		{"unscheduled", `{"metadata":{"name":"p","namespace":"n"},"spec":{},"status":{"podIP":"10.0.0.1"}}`, nil},
		{"succeeded", `{"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":"x"},"status":{"phase":"Succeeded","podIP":"10.0.0.1"}}`, nil},
		{"failed", `{"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":"x"},"status":{"phase":"Failed","podIP":"10.0.0.1"}}`, nil},
		{"deleting, CNI released IP", `{"metadata":{"name":"p","namespace":"n","deletionTimestamp":"2026-01-01T00:00:00Z","annotations":{"cni.projectcalico.org/podIP":""}},"spec":{"nodeName":"x"},"status":{"phase":"Running","podIP":"10.0.0.1"}}`, nil},
		{"deleting, still has IP", `{"metadata":{"name":"p","namespace":"n","deletionTimestamp":"2026-01-01T00:00:00Z","annotations":{"cni.projectcalico.org/podIP":"10.0.0.1/32"}},"spec":{"nodeName":"x"},"status":{"phase":"Running","podIP":"10.0.0.1"}}`, []string{"10.0.0.1/32"}},
		{"not deleting, empty annotation ignored", `{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/podIP":""}},"spec":{"nodeName":"x"},"status":{"podIP":"10.0.0.1"}}`, []string{"10.0.0.1/32"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := decodeOK(t, "v1", "Pod", tc.json)
			if tc.wantIPs == nil {
				if len(r.Objects) != 0 {
					t.Fatalf("want no object, got %+v", r.Objects[0])
				}
				return
			}
			w := only(t, r).(*model.WorkloadEndpoint)
			if d := cmp.Diff(pfxs(tc.wantIPs...), w.IPNetworks, cmpOpts); d != "" {
				t.Errorf("IPs (-want +got):\n%s", d)
			}
		})
	}
}

func TestPodAnnotations(t *testing.T) {
	js := `{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/floatingIPs":"[\"1.2.3.4\",\"2001:db8::1\"]","cni.projectcalico.org/allowedSourcePrefixes":"[\"10.8.0.1/16\"]"}},"spec":{"nodeName":"x"},"status":{"podIPs":[{"ip":"10.0.0.1"},{"ip":"fd00::1"}]}}`
	w := only(t, decodeOK(t, "v1", "Pod", js)).(*model.WorkloadEndpoint)
	wantNAT := []model.IPNAT{{InternalIP: addr("10.0.0.1"), ExternalIP: addr("1.2.3.4")}, {InternalIP: addr("fd00::1"), ExternalIP: addr("2001:db8::1")}}
	if d := cmp.Diff(wantNAT, w.IPNATs, cmpOpts); d != "" {
		t.Errorf("NATs (-want +got):\n%s", d)
	}
	if d := cmp.Diff(pfxs("10.8.0.0/16"), w.AllowSpoofedSourcePrefixes, cmpOpts); d != "" {
		t.Errorf("spoof prefixes (-want +got):\n%s", d)
	}
	if w.ServiceAccount != "" || !slices.Equal(w.Profiles, []string{"kns.n"}) {
		t.Errorf("no service account: got SA %q profiles %v", w.ServiceAccount, w.Profiles)
	}
	if _, ok := w.Labels["projectcalico.org/serviceaccount"]; ok {
		t.Errorf("serviceaccount label without a service account")
	}

	bad := []struct{ json, field string }{
		{`{"metadata":{"name":"p","namespace":"n"},"spec":{"nodeName":"x"},"status":{"podIPs":[{"ip":"10.0.0.1"},{"ip":"nope"}]}}`, "status.podIPs[1]"},
		{`{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/floatingIPs":"1.2.3.4"}},"spec":{"nodeName":"x"},"status":{"podIP":"10.0.0.1"}}`, "metadata.annotations.cni.projectcalico.org/floatingIPs"},
		{`{"metadata":{"name":"p","namespace":"n","annotations":{"cni.projectcalico.org/allowedSourcePrefixes":"[\"x\"]"}},"spec":{"nodeName":"x"},"status":{"podIP":"10.0.0.1"}}`, "metadata.annotations.cni.projectcalico.org/allowedSourcePrefixes[0]"},
		{`{"metadata":{"namespace":"n"},"spec":{"nodeName":"x"},"status":{"podIP":"10.0.0.1"}}`, "metadata.name"},
	}
	for _, b := range bad {
		r := Decode("v1", "Pod", []byte(b.json))
		if !slices.Contains(fieldsOf(r.Errors), b.field) || len(r.Objects) != 0 {
			t.Errorf("want error at %s, got %v", b.field, r.Errors)
		}
	}
}

func TestNamespaceAndServiceAccountProfiles(t *testing.T) {
	ns := only(t, decodeOK(t, "v1", "Namespace", `{"metadata":{"name":"prod","labels":{"team":"a","kubernetes.io/metadata.name":"prod"}}}`))
	wantNS := &model.Profile{
		Meta:          meta(model.KindProfile, "", "kns.prod"),
		LabelsToApply: model.Labels{"pcns.team": "a", "pcns.kubernetes.io/metadata.name": "prod", "pcns.projectcalico.org/name": "prod"},
		Ingress:       []model.Rule{{Action: model.ActionAllow}},
		Egress:        []model.Rule{{Action: model.ActionAllow}},
	}
	if d := cmp.Diff(wantNS, ns, cmpOpts); d != "" {
		t.Errorf("namespace (-want +got):\n%s", d)
	}
	sa := only(t, decodeOK(t, "v1", "ServiceAccount", `{"metadata":{"name":"api","namespace":"prod","labels":{"role":"backend"}}}`))
	wantSA := &model.Profile{
		Meta:          meta(model.KindProfile, "", "ksa.prod.api"),
		LabelsToApply: model.Labels{"pcsa.role": "backend", "pcsa.projectcalico.org/name": "api"},
	}
	if d := cmp.Diff(wantSA, sa, cmpOpts); d != "" {
		t.Errorf("service account (-want +got):\n%s", d)
	}
	if p := only(t, decodeOK(t, "v1", "ServiceAccount", `{"metadata":{"name":"api"}}`)).(*model.Profile); p.Key.Name != "ksa.default.api" {
		t.Errorf("namespace-less service account: got %s, want ksa.default.api", p.Key.Name)
	}
}

func TestK8sNode(t *testing.T) {
	tests := []struct {
		name, json string
		want       *model.Node
	}{
		{"annotations win", `{"metadata":{"name":"n1","labels":{"zone":"a"},"annotations":{
			"projectcalico.org/IPv4Address":"192.168.1.10/24","projectcalico.org/IPv6Address":"fd00::10/64",
			"projectcalico.org/IPv4VXLANTunnelAddr":"10.244.0.1","projectcalico.org/VXLANTunnelMACAddr":"66:AA:BB:CC:DD:EE",
			"projectcalico.org/IPv6VXLANTunnelAddr":"fd10::1","projectcalico.org/VXLANTunnelMACAddrV6":"66:aa:bb:cc:dd:ff"}},
			"spec":{"podCIDRs":["10.244.0.0/24","fd10::/64"]},"status":{"addresses":[{"type":"InternalIP","address":"192.168.1.99"}]}}`,
			&model.Node{Meta: meta(model.KindNode, "", "n1"), Labels: model.Labels{"zone": "a"},
				IPv4Address: pfx("192.168.1.10/24"), IPv6Address: pfx("fd00::10/64"),
				VXLANTunnelAddr: addr("10.244.0.1"), VXLANTunnelMAC: "66:aa:bb:cc:dd:ee",
				VXLANTunnelAddrV6: addr("fd10::1"), VXLANTunnelMACV6: "66:aa:bb:cc:dd:ff",
				PodCIDRs: pfxs("10.244.0.0/24", "fd10::/64")}},
		{"InternalIP fallback, first of each family", `{"metadata":{"name":"n2"},"spec":{"podCIDR":"10.1.0.0/24"},"status":{"addresses":[
			{"type":"Hostname","address":"n2"},{"type":"ExternalIP","address":"1.2.3.4"},{"type":"InternalIP","address":"192.168.1.11"},
			{"type":"InternalIP","address":"192.168.1.12"},{"type":"InternalIP","address":"fd00::11"}]}}`,
			&model.Node{Meta: meta(model.KindNode, "", "n2"), IPv4Address: pfx("192.168.1.11/32"), IPv6Address: pfx("fd00::11/128"), PodCIDRs: pfxs("10.1.0.0/24")}},
		{"invalid annotations ignored as Calico does", `{"metadata":{"name":"n3","annotations":{"projectcalico.org/IPv4Address":"garbage","projectcalico.org/VXLANTunnelMACAddr":"zz","projectcalico.org/IPv4VXLANTunnelAddr":"fd00::1"}},
			"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.3"}]}}`,
			&model.Node{Meta: meta(model.KindNode, "", "n3"), IPv4Address: pfx("10.0.0.3/32")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, only(t, decodeOK(t, "v1", "Node", tc.json)), cmpOpts); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	r := Decode("v1", "Node", []byte(`{"metadata":{"name":"n"},"spec":{"podCIDRs":["bad"]}}`))
	if !slices.Contains(fieldsOf(r.Errors), "spec.podCIDRs[0]") {
		t.Errorf("want podCIDRs error, got %v", r.Errors)
	}
}

func TestService(t *testing.T) {
	js := `{"metadata":{"name":"web","namespace":"prod"},"spec":{"type":"LoadBalancer","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10","fd00:96::a"],
	  "externalIPs":["203.0.113.5"],"externalTrafficPolicy":"Local","internalTrafficPolicy":"Local","sessionAffinity":"ClientIP",
	  "selector":{"app":"web"},
	  "ports":[{"name":"http","port":80,"targetPort":"http","nodePort":30080},{"name":"dns","protocol":"UDP","port":53,"targetPort":5353},{"port":443}]},
	  "status":{"loadBalancer":{"ingress":[{"ip":"198.51.100.7"},{"hostname":"lb.example.com"},{"ip":"198.51.100.8","ipMode":"VIP"},{"ip":"198.51.100.9","ipMode":"Proxy"}]}}}`
	got := only(t, decodeOK(t, "v1", "Service", js))
	want := &model.Service{
		Meta: meta(model.KindService, "prod", "web"), Type: "LoadBalancer",
		ClusterIPs: []netipAddr{addr("10.96.0.10"), addr("fd00:96::a")}, ExternalIPs: []netipAddr{addr("203.0.113.5")},
		// An ingress IP in ipMode Proxy is the load balancer's own: kube-proxy leaves it alone.
		LoadBalancerIPs: []netipAddr{addr("198.51.100.7"), addr("198.51.100.8")},
		Ports: []model.ServicePort{
			{Name: "http", Protocol: 6, Port: 80, TargetPort: "http", NodePort: 30080},
			{Name: "dns", Protocol: 17, Port: 53, TargetPort: "5353"},
			{Protocol: 6, Port: 443, TargetPort: "443"},
		},
		ExternalTrafficLocal: true, InternalTrafficLocal: true,
		SessionAffinityClientIP: true, SessionAffinityTimeoutSeconds: 10800,
		Selector: model.Labels{"app": "web"},
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	headless := only(t, decodeOK(t, "v1", "Service", `{"metadata":{"name":"h","namespace":"n"},"spec":{"clusterIP":"None","sessionAffinity":"ClientIP","sessionAffinityConfig":{"clientIP":{"timeoutSeconds":60}}}}`)).(*model.Service)
	if len(headless.ClusterIPs) != 0 || headless.Type != "ClusterIP" || headless.SessionAffinityTimeoutSeconds != 60 {
		t.Errorf("headless: %+v", headless)
	}
	bad := []struct{ json, field string }{
		{`{"metadata":{"name":"s","namespace":"n"},"spec":{"clusterIPs":["10.96.0.300"]}}`, "spec.clusterIPs[0]"},
		{`{"metadata":{"name":"s","namespace":"n"},"spec":{"ports":[{"port":80,"protocol":"ICMP"}]}}`, "spec.ports[0].protocol"},
		{`{"metadata":{"name":"s","namespace":"n"},"spec":{"ports":[{"port":0}]}}`, "spec.ports[0].port"},
		{`{"metadata":{"name":"s","namespace":"n"},"status":{"loadBalancer":{"ingress":[{"ip":"x"}]}}}`, "status.loadBalancer.ingress[0].ip"},
	}
	for _, b := range bad {
		if r := Decode("v1", "Service", []byte(b.json)); !slices.Contains(fieldsOf(r.Errors), b.field) {
			t.Errorf("want error at %s, got %v", b.field, r.Errors)
		}
	}
}

func TestEndpointSlice(t *testing.T) {
	js := `{"metadata":{"name":"web-abc","namespace":"prod","labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4",
	  "ports":[{"name":"http","port":8080},{"name":"dns","port":53,"protocol":"UDP"}],
	  "endpoints":[{"addresses":["10.0.0.5"],"nodeName":"n1"},
	   {"addresses":["10.0.0.6"],"conditions":{"ready":false}},
	   {"addresses":["10.0.0.7"],"conditions":{"ready":false,"serving":true,"terminating":true}}]}`
	got := only(t, decodeOK(t, "discovery.k8s.io/v1", "EndpointSlice", js))
	want := &model.EndpointSlice{
		Meta: meta(model.KindEndpointSlice, "prod", "web-abc"), ServiceName: "web",
		Ports: []model.EndpointSlicePort{{Name: "http", Protocol: 6, Port: 8080}, {Name: "dns", Protocol: 17, Port: 53}},
		Endpoints: []model.SliceEndpoint{
			{Addresses: []netipAddr{addr("10.0.0.5")}, Ready: true, Serving: true, NodeName: "n1"},
			{Addresses: []netipAddr{addr("10.0.0.6")}},
			{Addresses: []netipAddr{addr("10.0.0.7")}, Serving: true, Terminating: true},
		},
	}
	if d := cmp.Diff(want, got, cmpOpts); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	r := Decode("discovery.k8s.io/v1", "EndpointSlice", []byte(`{"metadata":{"name":"s","namespace":"n"},"addressType":"IPv4","endpoints":[{"addresses":["x"]}]}`))
	if !slices.Contains(fieldsOf(r.Errors), "endpoints[0].addresses[0]") {
		t.Errorf("want address error, got %v", r.Errors)
	}
}
