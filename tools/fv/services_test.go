//go:build linux

package fv_test

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/felis-dev/felis/tools/netns"
)

// Services FV: felis agent load-balances a Kubernetes Service on one node, in the nftables and
// the bpf dataplanes.
// The backends run a TCP echo server on 9376; the service answers on 10.96.0.50:80 and on
// NodePort 30080 of the node's address.

const (
	svcClusterIP = "10.96.0.50"
	svcTarget    = 9376
	svcNodePort  = 30080
)

var svcPods = []podSpec{
	{Namespace: "app", Name: "client", Labels: labels("app", "client")},
	{Namespace: "app", Name: "web-a", Labels: labels("app", "web")},
	{Namespace: "app", Name: "web-b", Labels: labels("app", "web")},
	{Namespace: "app", Name: "web-c", Labels: labels("app", "web")},
}

// serviceYAML is the web Service (type NodePort) with a named target port.
const serviceYAML = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  type: NodePort
  selector: {app: web}
  clusterIP: ` + svcClusterIP + `
  clusterIPs: [` + svcClusterIP + `]
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080, protocol: TCP}`

// sliceYAML is the web service's EndpointSlice with web-a, web-b and web-c, each ready or not.
func sliceYAML(ready map[string]bool) string {
	s := `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x1
  namespace: app
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 9376, protocol: TCP}
endpoints:`
	for _, p := range []string{"web-a", "web-b", "web-c"} {
		s += fmt.Sprintf(`
- addresses: ["{{ip4 "app/%s"}}"]
  conditions: {ready: %t}
  nodeName: node1`, p, ready[p])
	}
	return s
}

// servicePolicyYAML selects the client and allows its egress only to the web service (Calico's
// destination.services) when allow is true, or denies exactly that when false (with an allow
// for everything else).
func servicePolicyYAML(allow bool) string {
	if allow {
		return `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-to-web}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
  - action: Allow
    destination:
      services: {name: web, namespace: app}`
	}
	return `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-to-web}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
  - action: Deny
    destination:
      services: {name: web, namespace: app}
  - action: Allow`
}

// servedBy probes dst n times from pod and returns how many connections each backend listener
// served meanwhile; every probe must get through.
func servedBy(from *netns.Namespace, dst netip.AddrPort, n int, backends map[string]*netns.Listener) map[string]int {
	// The first connection may wait on neighbour resolution when the machine is busy; warm the
	// path up (it must open within seconds) before counting.
	Eventually(func() error { return from.Probe(netns.TCP, dst).Allowed() }).
		WithTimeout(10*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(), "warm-up connection to %s", dst)
	before := map[string]int{}
	for k, l := range backends {
		before[k] = l.Served()
	}
	for i := range n {
		r := from.Probe(netns.TCP, dst)
		Expect(r.Allowed()).To(Succeed(), "probe %d of %d to %s", i+1, n, dst)
	}
	out := map[string]int{}
	for k, l := range backends {
		out[k] = l.Served() - before[k]
	}
	return out
}

var _ = Describe("felis agent load-balances Kubernetes services, dataplane nftables", Label("nftables", "services"), func() {
	servicesSpecs("nftables")
})

var _ = Describe("felis agent load-balances Kubernetes services, dataplane bpf", Label("bpf", "services"), func() {
	BeforeEach(func() { bpfPinRoot() })
	servicesSpecs("bpf")
})

// servicesSpecs are the service specs of one dataplane.
func servicesSpecs(dataplane string) {
	var (
		e        *env
		backends map[string]*netns.Listener
		cip      netip.AddrPort
	)
	BeforeEach(func() {
		e = newEnv(dataplane, true)
		e.addPods(nil, svcPods...)
		backends = map[string]*netns.Listener{}
		for _, p := range []string{"web-a", "web-b", "web-c"} {
			l, err := e.pod("app/"+p).Listen(netns.TCP, svcTarget)
			Expect(err).NotTo(HaveOccurred())
			backends[p] = l
		}
		e.writeCluster(map[string]map[string]string{"app": nil})
		e.writePods()
		e.write("service.yaml", serviceYAML, sliceYAML(map[string]bool{"web-a": true, "web-b": true, "web-c": true}))
		cip = netip.AddrPortFrom(netip.MustParseAddr(svcClusterIP), 80)
		e.startAgent()
	})

	// rewrite replaces a datastore file and waits for the agent to program the change.
	rewrite := func(name string, docs ...string) {
		from := len(e.cycles())
		e.write(name, docs...)
		e.waitCycle(from, func(c cycle) bool { return c.Ops > 0 })
	}

	It("reaches every backend through the ClusterIP from a pod, and the NodePort from the underlay", func() {
		client := e.pod("app/client").Namespace
		seen := servedBy(client, cip, 30, backends)
		for p, n := range seen {
			Expect(n).To(BeNumerically(">", 0), "backend %s never answered the ClusterIP: %v", p, seen)
		}
		Expect(seen["web-a"]+seen["web-b"]+seen["web-c"]).To(Equal(30), "answers %v", seen)

		// A backend reaching its own service (hairpin) works too.
		self := servedBy(e.pod("app/web-a").Namespace, cip, 20, backends)
		Expect(self["web-a"]+self["web-b"]+self["web-c"]).To(Equal(20), "hairpin answers %v", self)
		Expect(self["web-a"]).To(BeNumerically(">", 0), "web-a never reached itself through its service: %v", self)

		np := netip.AddrPortFrom(e.node.IPv4, svcNodePort)
		fromPeer := servedBy(e.peer.Namespace, np, 30, backends)
		for p, n := range fromPeer {
			Expect(n).To(BeNumerically(">", 0), "backend %s never answered the NodePort from node2: %v", p, fromPeer)
		}
	})

	It("stops sending new connections to a backend that goes not-ready", func() {
		rewrite("service.yaml", serviceYAML, sliceYAML(map[string]bool{"web-a": true, "web-b": false, "web-c": true}))
		seen := servedBy(e.pod("app/client").Namespace, cip, 30, backends)
		Expect(seen["web-b"]).To(Equal(0), "not-ready web-b still got connections: %v", seen)
		Expect(seen["web-a"]).To(BeNumerically(">", 0), "%v", seen)
		Expect(seen["web-c"]).To(BeNumerically(">", 0), "%v", seen)

		rewrite("service.yaml", serviceYAML, sliceYAML(map[string]bool{"web-a": true, "web-b": true, "web-c": true}))
		seen = servedBy(e.pod("app/client").Namespace, cip, 30, backends)
		Expect(seen["web-b"]).To(BeNumerically(">", 0), "web-b ready again but unused: %v", seen)
	})

	It("keeps an established ClusterIP connection across an agent restart, even once its backend left the service", func() {
		client := e.pod("app/client").Namespace
		servedBy(client, cip, 1, backends) // the path is warm
		var c net.Conn
		Expect(client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", cip.String(), 2*time.Second)
			return err
		})).To(Succeed())
		DeferCleanup(c.Close)
		Expect(echoOn(c)).To(Succeed(), "echo through the ClusterIP")

		By("killing the agent and, while it is down, taking every backend out of the service")
		e.daemonKill9()
		Expect(echoOn(c)).To(Succeed(), "echo while the agent is down")
		e.write("service.yaml", serviceYAML, sliceYAML(map[string]bool{}))
		first := e.startAgent()
		Expect(first.Full).To(BeTrue(), first.Line)
		e.waitCycle(0, func(cy cycle) bool { return cy.Revision > 0 })
		Expect(echoOn(c)).To(Succeed(), "the established connection after the restart")
		Expect(client.Probe(netns.TCP, cip).Outcome).To(Equal(netns.Refused), "a new connection to the service without endpoints")
	})

	It("matches Calico's destination.services rules on the DNATed traffic", func() {
		client := e.pod("app/client").Namespace
		// Allow only the web service: the ClusterIP works, a pod port outside the service does not.
		rewrite("policy.yaml", servicePolicyYAML(true))
		seen := servedBy(client, cip, 10, backends)
		Expect(seen["web-a"] + seen["web-b"] + seen["web-c"]).To(Equal(10))
		other, err := e.pod("app/web-a").Listen(netns.TCP, 7000)
		Expect(err).NotTo(HaveOccurred())
		Expect(client.Probe(netns.TCP, netip.AddrPortFrom(e.pod("app/web-a").IPv4, other.Port)).Denied()).To(Succeed(),
			"egress outside the allowed service got through")
		Expect(client.Probe(netns.TCP, netip.AddrPortFrom(e.pod("app/web-a").IPv4, svcTarget)).Allowed()).To(Succeed(),
			"a service endpoint's address and port directly (the rule matches endpoints, as in Calico)")

		// Deny the web service: the ClusterIP is dropped, other egress still flows.
		rewrite("policy.yaml", servicePolicyYAML(false))
		Expect(client.Probe(netns.TCP, cip).Denied()).To(Succeed(), "the ClusterIP got through a Deny on its service")
		Expect(client.Probe(netns.TCP, netip.AddrPortFrom(e.pod("app/web-a").IPv4, other.Port)).Allowed()).To(Succeed())
	})
}
