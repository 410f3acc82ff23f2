//go:build linux

package fv_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/tools/netns"
)

// Services across nodes: felis agent runs on two nodes of an underlay (routes, VXLAN or direct,
// programmed by felis), the web service has one backend on node1 and two on node2, and an
// outside client sits on the underlay. Every backend runs a TCP echo server on svcTarget.

const (
	mnClusterIP         = "10.96.0.60" // web: externalTrafficPolicy Cluster
	mnLocalClusterIP    = "10.96.0.61" // web-local: externalTrafficPolicy Local
	mnStickyClusterIP   = "10.96.0.62" // web-sticky: sessionAffinity ClientIP
	mnInternalClusterIP = "10.96.0.63" // web-internal: internalTrafficPolicy Local
	// Addresses the outside host routes to node1: web's external IP and load-balancer IP, and
	// web-local's load-balancer IP.
	mnClusterIP6          = "fd00:96::60" // web's IPv6 cluster IP
	multiNodePool6        = "fd00:66::/32"
	mnExternalIP          = "192.0.2.60"
	mnLoadBalancerIP      = "192.0.2.61"
	mnLocalLoadBalancerIP = "192.0.2.62"
	mnNodePort            = 30080
	mnLocalNodePort       = 30081
)

// mnPod is a pod of the multi-node services specs: its node (1 or 2) and address in that
// node's block.
type mnPod struct {
	name string
	node int
	addr netip.Addr
}

// addr6 is the pod's IPv6 address: fd00:66:NODE::HOST for 10.66.NODE.HOST.
func (p mnPod) addr6() netip.Addr {
	b := p.addr.As4()
	return netip.MustParseAddr(fmt.Sprintf("fd00:66:%d::%d", b[2], b[3]))
}

var mnPods = []mnPod{
	{"client", 1, netip.MustParseAddr("10.66.1.2")},
	{"web-1a", 1, netip.MustParseAddr("10.66.1.3")},
	{"web-2a", 2, netip.MustParseAddr("10.66.2.2")},
	{"web-2b", 2, netip.MustParseAddr("10.66.2.3")},
	{"client2", 2, netip.MustParseAddr("10.66.2.4")},
}

// mnBackends are the web pods, node1's first.
var mnBackends = []string{"web-1a", "web-2a", "web-2b"}

// mnCluster is one spec's two-node world.
type mnCluster struct {
	dataplane string
	nodes     []*netns.Node // node1, node2
	outside   *netns.Node   // a host on the underlay that runs no agent
	pods      map[string]*netns.Pod
	backends  map[string]*netns.Listener // TCP echo servers on svcTarget
	udp       map[string]*netns.Listener // UDP echo servers on svcTarget
	dir       string
	agents    []*env // one per node: the agent process, for its programmed cycles
}

// newMNCluster builds the underlay, both nodes, the outside host and the pods, writes the
// datastore (pool in vxlanMode Always, both services, every backend ready) and starts felis
// agent on both nodes.
func newMNCluster(dataplane string) *mnCluster {
	h, err := netns.NewHarness(netns.Options{ProbeTimeout: probeTimeout})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		Expect(h.Close()).To(Succeed(), "removing the spec's namespaces")
	})
	u, err := h.NewUnderlay("underlay")
	Expect(err).NotTo(HaveOccurred())
	c := &mnCluster{dataplane: dataplane, pods: map[string]*netns.Pod{}, backends: map[string]*netns.Listener{}, udp: map[string]*netns.Listener{}, dir: GinkgoT().TempDir()}
	for i := 1; i <= 2; i++ {
		n, err := u.NewNode(fmt.Sprintf("node%d", i))
		Expect(err).NotTo(HaveOccurred())
		c.nodes = append(c.nodes, n)
	}
	c.outside, err = u.NewNode("outside")
	Expect(err).NotTo(HaveOccurred())
	for _, p := range mnPods {
		pod, err := c.nodes[p.node-1].NewPod(netns.PodOptions{Namespace: "app", Name: p.name, IPv4: p.addr, IPv6: p.addr6(), SkipHostWiring: true})
		Expect(err).NotTo(HaveOccurred())
		c.pods[p.name] = pod
	}
	for _, b := range mnBackends {
		l, err := c.pods[b].Listen(netns.TCP, svcTarget)
		Expect(err).NotTo(HaveOccurred())
		c.backends[b] = l
		if c.udp[b], err = c.pods[b].Listen(netns.UDP, svcTarget); err != nil {
			Expect(err).NotTo(HaveOccurred())
		}
	}

	c.writePool("Always")
	for i, n := range c.nodes {
		docs := []string{vxlanNodeYAML(n, c.block(i+1), c.block(i+1).Addr(), fmt.Sprintf("66:00:00:00:00:%02x", i+1), c.block6(i+1))}
		for _, p := range mnPods {
			if p.node == i+1 {
				app := "client"
				if strings.HasPrefix(p.name, "web-") {
					app = "web"
				}
				docs = append(docs, podYAML(podSpec{Namespace: "app", Name: p.name, Labels: labels("app", app)}, c.pods[p.name], n.NodeName))
			}
		}
		c.write(n.NodeName+".yaml", docs...)
	}
	c.write("services.yaml", c.servicesYAML(nil)...)

	// Registered after h.Close, so it runs before it.
	DeferCleanup(func() {
		if !CurrentSpecReport().Failed() {
			return
		}
		for _, a := range c.agents {
			GinkgoWriter.Printf("--- felis agent output:\n%s\n", a.agent.Output())
		}
		for _, n := range c.nodes {
			for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip", "route"}} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := n.Exec(ctx, cmd[0], cmd[1:]...)
				cancel()
				GinkgoWriter.Printf("--- %s: %s (err %v):\n%s\n", n.NodeName, strings.Join(cmd, " "), err, out)
			}
		}
	})
	for _, n := range c.nodes {
		p, err := n.Start(context.Background(), felisBin, "agent", "--datastore", "file:"+c.dir, "--node", n.NodeName,
			"--dataplane", dataplane, "--coalesce", "20ms")
		Expect(err).NotTo(HaveOccurred())
		a := &env{dataplane: dataplane, agent: p}
		c.agents = append(c.agents, a)
	}
	for _, a := range c.agents {
		a.waitCycle(0, func(cycle) bool { return true })
	}
	return c
}

// block is node i's IPAM block, 10.66.i.0/26; its first address is the node's VXLAN tunnel
// address.
func (c *mnCluster) block(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 66, byte(i), 0}), 26)
}

// block6 is node i's IPv6 IPAM block, fd00:66:i::/122 (the IPv6 pool does not encapsulate).
func (c *mnCluster) block6(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("fd00:66:%d::/122", i))
}

// write replaces datastore file name with the YAML documents, atomically.
func (c *mnCluster) write(name string, docs ...string) {
	Expect(writeAtomic(c.dir, name, "---\n"+strings.Join(docs, "\n---\n"))).To(Succeed())
}

// writePool writes the IP pool with vxlanMode mode, and namespace app.
func (c *mnCluster) writePool(mode string) {
	c.write("cluster.yaml", ipPoolYAML(multiNodePool, mode), ipPool6YAML(multiNodePool6), namespaceYAML("app", nil), serviceAccountYAML("app", "default"))
}

// mnService is a service of the multi-node specs; every one selects the web pods.
type mnService struct {
	name, clusterIP string
	nodePort        int    // 0: type ClusterIP
	externalPolicy  string // externalTrafficPolicy of a NodePort service
	internalLocal   bool   // internalTrafficPolicy Local
	affinity        bool   // sessionAffinity ClientIP
	udp             bool   // a second port: dns, 53/UDP to the pods' 9376/UDP
	dualStack       bool   // also mnClusterIP6, with an IPv6 EndpointSlice
	externalIP      string // spec.externalIPs
	loadBalancerIP  string // type LoadBalancer with this status.loadBalancer.ingress IP
}

var mnServices = []mnService{
	{name: "web", clusterIP: mnClusterIP, nodePort: mnNodePort, externalPolicy: "Cluster", udp: true, dualStack: true,
		externalIP: mnExternalIP, loadBalancerIP: mnLoadBalancerIP},
	{name: "web-local", clusterIP: mnLocalClusterIP, nodePort: mnLocalNodePort, externalPolicy: "Local",
		loadBalancerIP: mnLocalLoadBalancerIP},
	{name: "web-sticky", clusterIP: mnStickyClusterIP, affinity: true},
	{name: "web-internal", clusterIP: mnInternalClusterIP, internalLocal: true},
}

// endpointState is a backend's conditions in the EndpointSlices; the zero value is ready.
type endpointState int

const (
	ready       endpointState = iota
	notReady                  // neither ready nor serving
	terminating               // serving and terminating, not ready
)

// servicesYAML is every service of mnServices (target ports named http and dns) and one
// EndpointSlice each with every backend, in the state states gives it (ready if absent).
func (c *mnCluster) servicesYAML(states map[string]endpointState) []string {
	var docs []string
	for _, s := range mnServices {
		ips := s.clusterIP
		if s.dualStack {
			ips += ", " + mnClusterIP6
		}
		spec := fmt.Sprintf("  type: ClusterIP\n  selector: {app: web}\n  clusterIP: %s\n  clusterIPs: [%s]\n", s.clusterIP, ips)
		if s.dualStack {
			spec += "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4, IPv6]\n"
		}
		httpPort := "  - {name: http, port: 80, targetPort: http, protocol: TCP}\n"
		if s.nodePort != 0 {
			spec = strings.Replace(spec, "ClusterIP", "NodePort", 1) + "  externalTrafficPolicy: " + s.externalPolicy + "\n"
			httpPort = fmt.Sprintf("  - {name: http, port: 80, targetPort: http, nodePort: %d, protocol: TCP}\n", s.nodePort)
		}
		if s.externalIP != "" {
			spec += "  externalIPs: [" + s.externalIP + "]\n"
		}
		if s.loadBalancerIP != "" {
			spec = strings.Replace(spec, "type: NodePort", "type: LoadBalancer", 1)
		}
		if s.internalLocal {
			spec += "  internalTrafficPolicy: Local\n"
		}
		if s.affinity {
			spec += "  sessionAffinity: ClientIP\n"
		}
		spec += "  ports:\n" + httpPort
		slicePorts := fmt.Sprintf("- {name: http, port: %d, protocol: TCP}\n", svcTarget)
		if s.udp {
			spec += "  - {name: dns, port: 53, targetPort: dns, protocol: UDP}\n"
			slicePorts += fmt.Sprintf("- {name: dns, port: %d, protocol: UDP}\n", svcTarget)
		}
		svc := fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: app}\nspec:\n%s", s.name, spec)
		if s.loadBalancerIP != "" {
			svc += "status: {loadBalancer: {ingress: [{ip: " + s.loadBalancerIP + "}]}}\n"
		}
		docs = append(docs, svc)
		for _, fam := range []int{4, 6} {
			if fam == 6 && !s.dualStack {
				continue
			}
			slice := fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: %s-v%d
  namespace: app
  labels: {kubernetes.io/service-name: %s}
addressType: IPv%d
ports:
%sendpoints:`, s.name, fam, s.name, fam, slicePorts)
			for _, p := range mnPods {
				if !strings.HasPrefix(p.name, "web-") {
					continue
				}
				addr := p.addr
				if fam == 6 {
					addr = p.addr6()
				}
				st := states[p.name]
				slice += fmt.Sprintf(`
- addresses: ["%s"]
  conditions: {ready: %t, serving: %t, terminating: %t}
  nodeName: node%d`, addr, st == ready, st != notReady, st == terminating, p.node)
			}
			docs = append(docs, slice)
		}
	}
	return docs
}

// programmed runs change and waits until node i's agent has programmed a cycle with operations
// after it.
func (c *mnCluster) programmed(i int, change func()) {
	from := len(c.agents[i-1].cycles())
	change()
	c.agents[i-1].waitCycle(from, func(cy cycle) bool { return cy.Ops > 0 })
}

// directRoutes waits until each node routes the other's block via the other's underlay
// address (the pool no longer encapsulates).
func (c *mnCluster) directRoutes() {
	for i, n := range c.nodes {
		other := c.nodes[1-i]
		Eventually(func() (string, error) {
			out, err := n.Exec(context.Background(), "ip", "-4", "route", "show", "proto", "80", c.block(2-i).String())
			return string(out), err
		}).WithTimeout(15*time.Second).WithPolling(200*time.Millisecond).Should(ContainSubstring("via "+other.IPv4.String()),
			"%s's route to %s's block", n.NodeName, other.NodeName)
	}
}

// sources returns, per backend, how many connections it has served from each source address.
func (c *mnCluster) sources() map[string]map[netip.Addr]int {
	out := map[string]map[netip.Addr]int{}
	for b, l := range c.backends {
		out[b] = l.Sources()
	}
	return out
}

// sourcesSince returns the connections backend has served per source address since before.
func (c *mnCluster) sourcesSince(before map[string]map[netip.Addr]int, backend string) map[netip.Addr]int {
	out := map[netip.Addr]int{}
	for a, n := range c.backends[backend].Sources() {
		if d := n - before[backend][a]; d > 0 {
			out[a] = d
		}
	}
	return out
}

// udpServedBy sends n UDP echo exchanges to dst from pod, each from a new socket (so a new
// conntrack entry and a new backend choice), and returns how many datagrams each backend
// echoed meanwhile; every exchange must succeed. A retried datagram counts twice.
func (c *mnCluster) udpServedBy(from *netns.Namespace, dst netip.AddrPort, n int) map[string]int {
	Eventually(func() error { return from.Probe(netns.UDP, dst).Allowed() }).
		WithTimeout(10*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(), "warm-up exchange with %s", dst)
	before := map[string]int{}
	for b, l := range c.udp {
		before[b] = l.Served()
	}
	for i := range n {
		Expect(from.Probe(netns.UDP, dst).Allowed()).To(Succeed(), "UDP exchange %d of %d with %s", i+1, n, dst)
	}
	out := map[string]int{}
	for b, l := range c.udp {
		out[b] = l.Served() - before[b]
	}
	return out
}

// expectSticky asserts that 20 connections from each client to web-sticky all reach one
// backend.
func (c *mnCluster) expectSticky(clients ...*netns.Namespace) {
	GinkgoHelper()
	sticky := netip.AddrPortFrom(netip.MustParseAddr(mnStickyClusterIP), 80)
	for _, from := range clients {
		seen := servedBy(from, sticky, 20, c.backends)
		hit := 0
		for _, n := range seen {
			if n > 0 {
				hit++
			}
		}
		Expect(hit).To(Equal(1), "connections from %s to the sticky service spread over several backends: %v", from.Name, seen)
	}
}

// expectSNATedBy asserts that a backend saw its connections come from one address of node i
// (1 or 2: its VXLAN tunnel or underlay address) and from nowhere else.
func (c *mnCluster) expectSNATedBy(sources map[netip.Addr]int, i int, backend string) {
	GinkgoHelper()
	Expect(sources).To(HaveLen(1), "sources seen by %s", backend)
	for a := range sources {
		Expect(a).To(BeElementOf(c.block(i).Addr(), c.nodes[i-1].IPv4), "the source %s saw is not an address of node%d", backend, i)
	}
}

// expectServed asserts that each backend in want served at least one connection and the others
// none.
func expectServed(seen map[string]int, want ...string) {
	GinkgoHelper()
	for _, b := range mnBackends {
		if slices.Contains(want, b) {
			Expect(seen[b]).To(BeNumerically(">", 0), "backend %s never answered: %v", b, seen)
		} else {
			Expect(seen[b]).To(Equal(0), "backend %s answered, it should not have: %v", b, seen)
		}
	}
}

var _ = Describe("felis agent load-balances services across two nodes", Label("services", "multinode"), func() {
	for _, cfg := range []struct{ dataplane, iptablesBackend string }{{"nftables", ""}, {"iptables", "legacy"}, {"iptables", "nft"}, {"bpf", ""}} {
		dp := cfg.dataplane
		name, labels := "dataplane "+dp, Label(dp)
		if cfg.iptablesBackend != "" {
			name, labels = name+" backend "+cfg.iptablesBackend, Label(dp, "iptables-"+cfg.iptablesBackend)
		}
		Describe(name, labels, func() {
			var c *mnCluster
			BeforeEach(func() {
				if cfg.iptablesBackend != "" {
					// felis agent takes its --iptables-backend default from here.
					Expect(os.Setenv("FELIS_IPTABLES_BACKEND", cfg.iptablesBackend)).To(Succeed())
					DeferCleanup(os.Unsetenv, "FELIS_IPTABLES_BACKEND")
				}
				if dp == "bpf" {
					// Both agents pin under a bpffs of the spec's own (each in its node's
					// subdirectory), unmounted after the harness has stopped them.
					dir := GinkgoT().TempDir()
					Expect(unix.Mount("bpf", dir, "bpf", 0, "mode=0700")).To(Succeed())
					DeferCleanup(func() { Expect(unix.Unmount(dir, unix.MNT_DETACH)).To(Succeed()) })
					Expect(os.Setenv("FELIS_BPF_PIN_ROOT", dir)).To(Succeed())
					DeferCleanup(os.Unsetenv, "FELIS_BPF_PIN_ROOT")
				}
				c = newMNCluster(dp)
			})

			It("reaches every backend on both nodes through the ClusterIP from a pod, over VXLAN and without encapsulation", func() {
				client := c.pods["client"].Namespace
				cip := netip.AddrPortFrom(netip.MustParseAddr(mnClusterIP), 80)
				expectServed(servedBy(client, cip, 40, c.backends), mnBackends...)
				expectServed(servedBy(c.pods["client2"].Namespace, cip, 40, c.backends), mnBackends...)

				By("switching the pool to no encapsulation")
				c.writePool("Never")
				c.directRoutes()
				expectServed(servedBy(client, cip, 40, c.backends), mnBackends...)
			})

			It("reaches backends on both nodes through node1's NodePort from the underlay, and only node1's with externalTrafficPolicy Local", func() {
				outside := c.outside.Namespace
				np := netip.AddrPortFrom(c.nodes[0].IPv4, mnNodePort)
				before := c.sources()
				expectServed(servedBy(outside, np, 40, c.backends), mnBackends...)
				// A backend on node2 answers only if node1 source-NATed the connection (its reply
				// to the outside address would otherwise leave node2 directly, un-DNATed): node2's
				// backends see an address of node1 (nftables and iptables masquerade to the VXLAN
				// device's), never the outside client's.
				for _, b := range []string{"web-2a", "web-2b"} {
					c.expectSNATedBy(c.sourcesSince(before, b), 1, b)
				}

				By("externalTrafficPolicy Local: only the node's own backends, with the client's address kept")
				before = c.sources()
				local := netip.AddrPortFrom(c.nodes[0].IPv4, mnLocalNodePort)
				expectServed(servedBy(outside, local, 20, c.backends), "web-1a")
				kept := c.sourcesSince(before, "web-1a")
				Expect(kept).To(HaveLen(1), "web-1a's sources")
				Expect(kept).To(HaveKeyWithValue(c.outside.IPv4, BeNumerically(">=", 20)), "web-1a's sources")
				local2 := netip.AddrPortFrom(c.nodes[1].IPv4, mnLocalNodePort)
				expectServed(servedBy(outside, local2, 30, c.backends), "web-2a", "web-2b")

				By("an external IP and load-balancer IPs routed to node1: Cluster everywhere, Local on node1 only")
				for _, a := range []string{mnExternalIP, mnLoadBalancerIP, mnLocalLoadBalancerIP} {
					Expect(c.outside.AddRoute(netip.PrefixFrom(netip.MustParseAddr(a), 32), c.nodes[0].IPv4)).To(Succeed())
				}
				for _, a := range []string{mnExternalIP, mnLoadBalancerIP} {
					before = c.sources()
					expectServed(servedBy(outside, netip.AddrPortFrom(netip.MustParseAddr(a), 80), 40, c.backends), mnBackends...)
					for _, b := range []string{"web-2a", "web-2b"} {
						c.expectSNATedBy(c.sourcesSince(before, b), 1, b)
					}
				}
				before = c.sources()
				expectServed(servedBy(outside, netip.AddrPortFrom(netip.MustParseAddr(mnLocalLoadBalancerIP), 80), 20, c.backends), "web-1a")
				Expect(c.sourcesSince(before, "web-1a")).To(HaveKey(c.outside.IPv4), "web-1a's sources through the Local load-balancer IP")

				By("node2's backends not ready: its Cluster NodePort reaches node1's backend, its Local one drops (as kube-proxy: no local endpoints)")
				c.programmed(2, func() {
					c.write("services.yaml", c.servicesYAML(map[string]endpointState{"web-2a": notReady, "web-2b": notReady})...)
				})
				expectServed(servedBy(outside, netip.AddrPortFrom(c.nodes[1].IPv4, mnNodePort), 20, c.backends), "web-1a")
				r := outside.Probe(netns.TCP, local2)
				Expect(r.Outcome).To(Equal(netns.Timeout), "node2's Local NodePort without local endpoints: %s", r)
				expectServed(servedBy(outside, local, 10, c.backends), "web-1a")
			})

			It("short-circuits externalTrafficPolicy Local for pods: node2's pod reaches every backend through node2's Local NodePort, and node1's when node2 has none ready, keeping its address; outside clients are still dropped", func() {
				client2 := c.pods["client2"]
				local2 := netip.AddrPortFrom(c.nodes[1].IPv4, mnLocalNodePort)
				// kube-proxy sends a pod's connection to an external frontend to the cluster
				// chain: every backend, not only the node's own.
				expectServed(servedBy(client2.Namespace, local2, 40, c.backends), mnBackends...)

				By("node2's backends not ready")
				c.programmed(2, func() {
					c.write("services.yaml", c.servicesYAML(map[string]endpointState{"web-2a": notReady, "web-2b": notReady})...)
				})
				before := c.sources()
				expectServed(servedBy(client2.Namespace, local2, 20, c.backends), "web-1a")
				lb := netip.AddrPortFrom(netip.MustParseAddr(mnLocalLoadBalancerIP), 80)
				expectServed(servedBy(client2.Namespace, lb, 10, c.backends), "web-1a")
				from := c.sourcesSince(before, "web-1a")
				Expect(from).To(HaveLen(1), "sources seen by web-1a")
				Expect(from).To(HaveKey(client2.IPv4), "web-1a should see the pod's own address (no masquerade for pod traffic)")

				By("a client outside the cluster is still held to node2's (absent) local backends")
				r := c.outside.Probe(netns.TCP, local2)
				Expect(r.Outcome).To(Equal(netns.Timeout), "outside to node2's Local NodePort without local endpoints: %s", r)
			})

			It("sends no new connection from node1's pods to a backend on node2 that went not-ready", func() {
				client := c.pods["client"].Namespace
				cip := netip.AddrPortFrom(netip.MustParseAddr(mnClusterIP), 80)
				expectServed(servedBy(client, cip, 40, c.backends), mnBackends...)

				c.programmed(1, func() { c.write("services.yaml", c.servicesYAML(map[string]endpointState{"web-2a": notReady})...) })
				expectServed(servedBy(client, cip, 40, c.backends), "web-1a", "web-2b")

				By("web-2a ready again")
				c.programmed(1, func() { c.write("services.yaml", c.servicesYAML(nil)...) })
				expectServed(servedBy(client, cip, 40, c.backends), mnBackends...)

				By("no backend ready, web-2b terminating but still serving: it alone gets the connections (kube-proxy's fallback)")
				c.programmed(1, func() {
					c.write("services.yaml", c.servicesYAML(map[string]endpointState{"web-1a": notReady, "web-2a": notReady, "web-2b": terminating})...)
				})
				expectServed(servedBy(client, cip, 20, c.backends), "web-2b")
			})

			It("matches Calico's destination.services egress rules on connections to backends on the other node", func() {
				client := c.pods["client"].Namespace
				cip := netip.AddrPortFrom(netip.MustParseAddr(mnClusterIP), 80)
				other, err := c.pods["web-2a"].Listen(netns.TCP, 7000)
				Expect(err).NotTo(HaveOccurred())
				elsewhere := netip.AddrPortFrom(c.pods["web-2a"].IPv4, other.Port)

				By("the client pods may reach only the web service")
				c.programmed(1, func() { c.write("policy.yaml", servicePolicyYAML(true)) })
				expectServed(servedBy(client, cip, 40, c.backends), mnBackends...)
				Expect(client.Probe(netns.TCP, elsewhere).Denied()).To(Succeed(), "egress outside the web service got through")

				By("the client pods may reach anything but the web service")
				c.programmed(1, func() { c.write("policy.yaml", servicePolicyYAML(false)) })
				Expect(client.Probe(netns.TCP, cip).Denied()).To(Succeed(), "the ClusterIP got through a Deny on its service")
				Expect(client.Probe(netns.TCP, netip.AddrPortFrom(c.pods["web-2b"].IPv4, svcTarget)).Denied()).To(Succeed(),
					"web-2b's service port directly got through a Deny on its service")
				Expect(client.Probe(netns.TCP, elsewhere).Allowed()).To(Succeed())
			})

			It("pins a client to one backend with sessionAffinity ClientIP, and keeps internalTrafficPolicy Local traffic on the client's node", func() {
				c.expectSticky(c.pods["client"].Namespace, c.pods["client2"].Namespace)
				internal := netip.AddrPortFrom(netip.MustParseAddr(mnInternalClusterIP), 80)
				expectServed(servedBy(c.pods["client"].Namespace, internal, 20, c.backends), "web-1a")
				expectServed(servedBy(c.pods["client2"].Namespace, internal, 30, c.backends), "web-2a", "web-2b")
			})

			// The bpf dataplane NATs these at TC egress of the interface the route picks
			// (felis_data_out, appliers/bpf README, services).
			It("serves clients on the nodes themselves (host network): ClusterIP across nodes, affinity, internalTrafficPolicy Local", func() {
				cip := netip.AddrPortFrom(netip.MustParseAddr(mnClusterIP), 80)
				expectServed(servedBy(c.nodes[0].Namespace, cip, 40, c.backends), mnBackends...)
				c.expectSticky(c.nodes[0].Namespace, c.nodes[1].Namespace)
				internal := netip.AddrPortFrom(netip.MustParseAddr(mnInternalClusterIP), 80)
				expectServed(servedBy(c.nodes[1].Namespace, internal, 30, c.backends), "web-2a", "web-2b")
			})

			It("short-circuits externalTrafficPolicy Local for the node itself: node2 reaches node1's backend through the Local load-balancer IP when it has none ready", func() {
				c.programmed(2, func() {
					c.write("services.yaml", c.servicesYAML(map[string]endpointState{"web-2a": notReady, "web-2b": notReady})...)
				})
				before := c.sources()
				expectServed(servedBy(c.nodes[1].Namespace, netip.AddrPortFrom(netip.MustParseAddr(mnLocalLoadBalancerIP), 80), 20, c.backends), "web-1a")
				// nftables and iptables masquerade (to the VXLAN device's address), as
				// kube-proxy does; bpf keeps the address the kernel chose (the underlay one).
				c.expectSNATedBy(c.sourcesSince(before, "web-1a"), 2, "web-1a")
			})

			// The bpf dataplane NATs the node's connections to its own address on lo's egress
			// (felis_data_out; appliers/bpf README, services).
			It("short-circuits externalTrafficPolicy Local for the node itself: node2 reaches node1's backend through its own Local NodePort when it has none ready, masqueraded (bpf: from node2's address)", func() {
				c.programmed(2, func() {
					c.write("services.yaml", c.servicesYAML(map[string]endpointState{"web-2a": notReady, "web-2b": notReady})...)
				})
				before := c.sources()
				expectServed(servedBy(c.nodes[1].Namespace, netip.AddrPortFrom(c.nodes[1].IPv4, mnLocalNodePort), 20, c.backends), "web-1a")
				// Masqueraded as it leaves through vxlan.calico: the tunnel address, not the
				// node's underlay address the connection started from. bpf does not
				// masquerade the node's own connections: the address the kernel chose (the
				// NodePort's own, node2's underlay address), as for the load-balancer IP.
				from := c.sourcesSince(before, "web-1a")
				Expect(from).To(HaveLen(1), "sources seen by web-1a")
				if dp == "bpf" {
					Expect(from).To(HaveKey(c.nodes[1].IPv4), "web-1a should see node2's address")
				} else {
					Expect(from).To(HaveKey(c.block(2).Addr()), "web-1a should see node2's tunnel address (masquerade)")
				}
			})

			It("balances a UDP port across nodes, and reaches backends through node2's NodePort from a pod and, without encapsulation, through node1's from the underlay", func() {
				client := c.pods["client"].Namespace
				dns := netip.AddrPortFrom(netip.MustParseAddr(mnClusterIP), 53)
				seen := c.udpServedBy(client, dns, 40)
				for _, b := range mnBackends {
					Expect(seen[b]).To(BeNumerically(">", 0), "backend %s never answered UDP: %v", b, seen)
				}

				// The pod's connection leaves node1 un-NATed; node2 DNATs it, and SNATs it to one of
				// its own addresses when it sends it back to node1's backend.
				before := c.sources()
				expectServed(servedBy(client, netip.AddrPortFrom(c.nodes[1].IPv4, mnNodePort), 40, c.backends), mnBackends...)
				c.expectSNATedBy(c.sourcesSince(before, "web-1a"), 2, "web-1a")

				By("switching the pool to no encapsulation")
				c.writePool("Never")
				c.directRoutes()
				before = c.sources()
				expectServed(servedBy(c.outside.Namespace, netip.AddrPortFrom(c.nodes[0].IPv4, mnNodePort), 40, c.backends), mnBackends...)
				for _, b := range []string{"web-2a", "web-2b"} {
					c.expectSNATedBy(c.sourcesSince(before, b), 1, b)
				}
			})

			It("reaches backends on both nodes over IPv6 (a pool without encapsulation): the ClusterIP from a pod, node1's NodePort from the underlay", func() {
				cip6 := netip.AddrPortFrom(netip.MustParseAddr(mnClusterIP6), 80)
				expectServed(servedBy(c.pods["client"].Namespace, cip6, 40, c.backends), mnBackends...)
				before := c.sources()
				expectServed(servedBy(c.outside.Namespace, netip.AddrPortFrom(c.nodes[0].IPv6, mnNodePort), 40, c.backends), mnBackends...)
				for _, b := range []string{"web-2a", "web-2b"} {
					from := c.sourcesSince(before, b)
					Expect(from).To(HaveLen(1), "sources seen by %s", b)
					Expect(from).To(HaveKey(c.nodes[0].IPv6), "sources seen by %s: node1's IPv6 address (SNAT)", b)
				}
			})
		})
	}
})
