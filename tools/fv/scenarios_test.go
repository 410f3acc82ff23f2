//go:build linux

package fv_test

import (
	. "github.com/onsi/ginkgo/v2"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// scenario is one policy set-up whose every pod pair, port and family is probed and must agree
// with felis reach.
type scenario struct {
	// Namespaces maps each Kubernetes namespace of the pods to its labels.
	Namespaces map[string]map[string]string
	Pods       []podSpec
	// Resources are the scenario's YAML documents (templates: see env.write).
	Resources []string
	// Ports are the probed TCP/UDP ports (every pod listens on all of them); ICMP echo is
	// always probed too. Empty means 8080/TCP and 8080/UDP.
	Ports []port
	// Wants pin down what the scenario means (checked against felis reach, both families).
	Wants []want
}

var (
	tcp8080 = port{netns.TCP, 8080}
	udp8080 = port{netns.UDP, 8080}
)

const (
	allow = snapshot.Allow
	deny  = snapshot.Deny
)

func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// ns1Pods are the usual three pods: a client, a server and a bystander.
var ns1Pods = []podSpec{
	{Namespace: "ns1", Name: "client", Labels: labels("app", "client")},
	{Namespace: "ns1", Name: "server", Labels: labels("app", "server")},
	{Namespace: "ns1", Name: "other", Labels: labels("app", "other")},
}

var ns1 = map[string]map[string]string{"ns1": labels("team", "one")}

// runScenario builds the scenario on dataplane and checks every probed flow against felis reach.
func runScenario(dataplane string, sc scenario) {
	ports := sc.Ports
	if len(ports) == 0 {
		ports = []port{tcp8080, udp8080}
	}
	e := newEnv(dataplane, false)
	e.addPods(ports, sc.Pods...)
	e.writeCluster(sc.Namespaces)
	e.writePods()
	if len(sc.Resources) > 0 {
		e.write("policy.yaml", sc.Resources...)
	}
	flows := e.flowsAmong(ports)
	verdicts := e.oracle(flows)
	expectVerdicts(flows, verdicts, sc.Wants)
	e.startAgent()
	e.expectPacketsAgree(flows)
}

// policyScenarios are issue 4's scenarios that are a datastore and a probe matrix.
var policyScenarios = []TableEntry{
	Entry("no policy: everything is allowed", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/server", "ns1/other", udp8080, allow},
			{"ns1/other", "ns1/client", icmpEcho, allow},
		},
	}),
	Entry("deny-all NetworkPolicy: TCP, UDP and ICMP denied", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Resources: []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: ns1}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, deny},
			{"ns1/server", "ns1/other", udp8080, deny},
			{"ns1/other", "ns1/client", icmpEcho, deny},
		},
	}),
	Entry("Kubernetes NetworkPolicy ingress isolation", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Resources: []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}]`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/client", "ns1/server", udp8080, deny},
			{"ns1/client", "ns1/server", icmpEcho, deny},
			{"ns1/other", "ns1/server", tcp8080, deny},
			{"ns1/server", "ns1/client", tcp8080, allow},
			{"ns1/other", "ns1/client", icmpEcho, allow},
		},
	}),
	Entry("Kubernetes NetworkPolicy egress isolation", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Resources: []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: server}}}]
    ports: [{protocol: TCP, port: 8080}]`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/client", "ns1/server", udp8080, deny},
			{"ns1/client", "ns1/other", tcp8080, deny},
			{"ns1/client", "ns1/other", icmpEcho, deny},
			{"ns1/other", "ns1/client", tcp8080, allow},
			{"ns1/server", "ns1/other", udp8080, allow},
		},
	}),
	Entry("namespaceSelector combined with podSelector", scenario{
		Namespaces: map[string]map[string]string{"prod": labels("env", "prod"), "dev": labels("env", "dev")},
		Pods: []podSpec{
			{Namespace: "prod", Name: "server", Labels: labels("app", "server")},
			{Namespace: "prod", Name: "client", Labels: labels("app", "client")},
			{Namespace: "dev", Name: "client", Labels: labels("app", "client")},
			{Namespace: "dev", Name: "other", Labels: labels("app", "other")},
		},
		Resources: []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-dev-clients, namespace: prod}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {env: dev}}
      podSelector: {matchLabels: {app: client}}`},
		Wants: []want{
			{"dev/client", "prod/server", tcp8080, allow},
			{"dev/client", "prod/server", icmpEcho, allow},
			{"dev/other", "prod/server", tcp8080, deny},
			{"prod/client", "prod/server", udp8080, deny},
			{"prod/server", "dev/other", tcp8080, allow},
		},
	}),
	Entry("ipBlock with except", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Resources: []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-block, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: 10.65.0.0/24, except: ["{{ip4 "ns1/other"}}/32"]}
    - ipBlock: {cidr: "fd00:65::/64", except: ["{{ip6 "ns1/other"}}/128"]}`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/client", "ns1/server", icmpEcho, allow},
			{"ns1/other", "ns1/server", tcp8080, deny},
			{"ns1/other", "ns1/server", udp8080, deny},
		},
	}),
	Entry("named ports", scenario{
		Namespaces: ns1,
		Pods: []podSpec{
			{Namespace: "ns1", Name: "client", Labels: labels("app", "client")},
			{Namespace: "ns1", Name: "server", Labels: labels("app", "server"), Ports: []namedPort{
				{"http", 8080, netns.TCP}, {"dns", 5353, netns.UDP},
			}},
		},
		Ports: []port{tcp8080, {netns.TCP, 9090}, {netns.UDP, 5353}, udp8080},
		Resources: []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-named-ports, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{protocol: TCP, port: http}, {protocol: UDP, port: dns}]`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/client", "ns1/server", port{netns.UDP, 5353}, allow},
			{"ns1/client", "ns1/server", port{netns.TCP, 9090}, deny},
			{"ns1/client", "ns1/server", udp8080, deny},
			{"ns1/server", "ns1/client", port{netns.TCP, 9090}, allow},
		},
	}),
	Entry("a tier with Allow, Pass and Deny before the default tier", scenario{
		Namespaces: ns1,
		Pods:       append(ns1Pods[:3:3], podSpec{Namespace: "ns1", Name: "monitor", Labels: labels("app", "monitor")}),
		Resources: []string{`
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100, defaultAction: Deny}`, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.server-ingress}
spec:
  tier: security
  order: 10
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: app == 'monitor'}
  - action: Pass
    source: {selector: app == 'client'}
  - action: Deny
    source: {selector: app == 'other'}`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}]`},
		Wants: []want{
			{"ns1/monitor", "ns1/server", udp8080, allow}, // tier security rule 0
			{"ns1/client", "ns1/server", tcp8080, allow},  // passed, then the NetworkPolicy
			{"ns1/client", "ns1/server", udp8080, deny},   // passed, then end of the default tier
			{"ns1/other", "ns1/server", tcp8080, deny},    // tier security rule 2
			{"ns1/server", "ns1/client", tcp8080, allow},  // client has no policy: its profiles
		},
	}),
	Entry("a tier whose default action is Pass", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Resources: []string{`
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: audit}
spec: {order: 50, defaultAction: Pass}`, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: audit.no-udp-from-other}
spec:
  tier: audit
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: UDP
    source: {selector: app == 'other'}`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]`},
		Wants: []want{
			{"ns1/other", "ns1/server", udp8080, deny},   // tier audit rule 0
			{"ns1/other", "ns1/server", tcp8080, allow},  // end of tier audit passes; the NetworkPolicy
			{"ns1/other", "ns1/server", icmpEcho, allow}, // likewise
			{"ns1/client", "ns1/server", tcp8080, deny},  // passes, then end of the default tier
		},
	}),
	Entry("Calico v3 NetworkPolicy: ICMP type, notPorts, serviceAccounts", scenario{
		Namespaces: ns1,
		Pods: []podSpec{
			{Namespace: "ns1", Name: "client", Labels: labels("app", "client")},
			{Namespace: "ns1", Name: "server", Labels: labels("app", "server")},
			{Namespace: "ns1", Name: "other", Labels: labels("app", "other"), ServiceAccount: "backend"},
		},
		Ports: []port{tcp8080, {netns.TCP, 9090}, udp8080},
		Resources: []string{`
apiVersion: v1
kind: ServiceAccount
metadata: {name: backend, namespace: ns1}`, `
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: server-v3, namespace: ns1}
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
  - action: Allow
    protocol: ICMPv6
    icmp: {type: 128}
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {notPorts: [9090]}
  - action: Allow
    protocol: UDP
    source: {serviceAccounts: {names: [backend]}}`},
		Wants: []want{
			{"ns1/client", "ns1/server", icmpEcho, allow},
			{"ns1/other", "ns1/server", icmpEcho, allow},
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/client", "ns1/server", port{netns.TCP, 9090}, deny},
			{"ns1/other", "ns1/server", tcp8080, deny},
			{"ns1/other", "ns1/server", udp8080, allow},
			{"ns1/client", "ns1/server", udp8080, deny},
		},
	}),
	Entry("profile fallback after a Pass (v3 WorkloadEndpoint with its own profile)", scenario{
		Namespaces: ns1,
		Pods: []podSpec{
			{Namespace: "ns1", Name: "client", Labels: labels("app", "client")},
			{Namespace: "ns1", Name: "server", NotAPod: true},
			{Namespace: "ns1", Name: "other", Labels: labels("app", "other")},
		},
		Resources: []string{`
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-server-eth0
  namespace: ns1
  labels: {app: server}
spec:
  orchestrator: k8s
  node: node1
  pod: server
  endpoint: eth0
  interfaceName: {{iface "ns1/server"}}
  ipNetworks: ["{{ip4 "ns1/server"}}/32", "{{ip6 "ns1/server"}}/128"]
  profiles: [server-profile]`, `
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: server-profile}
spec:
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'client'}
  egress:
  - action: Allow`, `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}`, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.pass-server}
spec:
  tier: security
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Pass`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},  // profile rule 0
			{"ns1/client", "ns1/server", udp8080, deny},   // no profile rule matched
			{"ns1/client", "ns1/server", icmpEcho, deny},  // no profile rule matched
			{"ns1/other", "ns1/server", tcp8080, deny},    // no profile rule matched
			{"ns1/server", "ns1/other", udp8080, allow},   // egress: profile rule 0
			{"ns1/server", "ns1/client", icmpEcho, allow}, // egress: profile rule 0
		},
	}),
	Entry("GlobalNetworkSet as a source", scenario{
		Namespaces: ns1, Pods: ns1Pods,
		Resources: []string{`
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: quarantined, labels: {quarantine: "true"}}
spec:
  nets: ["{{ip4 "ns1/other"}}/32", "{{ip6 "ns1/other"}}/128"]`, `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: block-quarantined}
spec:
  selector: app == 'server'
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: quarantine == 'true'}
  - action: Allow`},
		Wants: []want{
			{"ns1/client", "ns1/server", tcp8080, allow},
			{"ns1/other", "ns1/server", tcp8080, deny},
			{"ns1/other", "ns1/server", icmpEcho, deny},
			{"ns1/other", "ns1/client", udp8080, allow},
		},
	}),
}

var _ = Describe("felis agent against real packets", func() {
	for _, dp := range dataplanes {
		Describe("dataplane "+dp, Label(dp), func() {
			DescribeTable("policy scenarios agree with felis reach",
				func(sc scenario) { runScenario(dp, sc) },
				policyScenarios)
		})
	}
})
