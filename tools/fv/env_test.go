//go:build linux

package fv_test

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/felis-dev/felis/tools/netns"
)

// probeTimeout bounds one probe: traffic between namespaces on one machine answers in
// milliseconds, so a second of silence is a drop.
const probeTimeout = time.Second

// agentRouting says whether felis agent programs the host side of the pod wiring (routes to
// the pods, proxy-ARP/NDP) itself, through its netlink applier, as on a real node. When false
// the harness wires the host side as a CNI plugin would and the agent runs with --no-routing,
// so the two never fight over the same routes (useful to tell a policy bug from a routing one).
const agentRouting = true

// podSpec is one pod of a scenario; its addresses follow its position in env.pods.
type podSpec struct {
	Namespace, Name string
	Labels          map[string]string
	// Ports are named container ports ("http" 8080/TCP ...).
	Ports []namedPort
	// ServiceAccount is the pod's service account; empty means "default" (which writeCluster
	// creates in every namespace; the scenario's resources create any other).
	ServiceAccount string
	// NotAPod leaves the pod out of pods.yaml: the scenario describes it itself (as a
	// projectcalico.org/v3 WorkloadEndpoint, say).
	NotAPod bool
}

// namedPort is a named container port.
type namedPort struct {
	Name     string
	Port     uint16
	Protocol netns.Protocol
}

// key is the pod's NAMESPACE/NAME.
func (p podSpec) key() string { return p.Namespace + "/" + p.Name }

// port is one probed destination port.
type port struct {
	Protocol netns.Protocol
	Number   uint16
}

func (p port) String() string { return fmt.Sprintf("%d/%s", p.Number, p.Protocol) }

// env is one spec's world: a harness, the node felis programs (and, for host-endpoint specs, a
// second node on the same underlay), the pods, the datastore directory and the agent.
type env struct {
	dataplane string
	h         *netns.Harness
	node      *netns.Node
	peer      *netns.Node // second node on the underlay, or nil
	pods      map[string]*netns.Pod
	order     []string // pod keys in creation order
	specs     map[string]podSpec
	dir       string
	agent     *netns.Process
}

// newEnv builds a harness with one node (two on an underlay when withPeer), registers its
// removal with DeferCleanup, and makes an empty datastore directory. On failure it prints the
// agent's log and the felis table to the spec's output.
func newEnv(dataplane string, withPeer bool) *env {
	h, err := netns.NewHarness(netns.Options{ProbeTimeout: probeTimeout})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		Expect(h.Close()).To(Succeed(), "removing the spec's namespaces")
	})
	e := &env{dataplane: dataplane, h: h, pods: map[string]*netns.Pod{}, specs: map[string]podSpec{}}
	if withPeer {
		u, err := h.NewUnderlay("underlay")
		Expect(err).NotTo(HaveOccurred())
		e.node, err = u.NewNode("node1")
		Expect(err).NotTo(HaveOccurred())
		e.peer, err = u.NewNode("node2")
		Expect(err).NotTo(HaveOccurred())
	} else {
		e.node, err = h.NewNode("node1")
		Expect(err).NotTo(HaveOccurred())
	}
	e.dir = GinkgoT().TempDir()
	// Registered after h.Close, so it runs before it (cleanups run in reverse).
	DeferCleanup(func() {
		if !CurrentSpecReport().Failed() {
			return
		}
		if e.agent != nil {
			GinkgoWriter.Printf("--- felis agent output:\n%s\n", e.agent.Output())
		}
		out, err := e.nft("list", "table", "inet", "felis")
		GinkgoWriter.Printf("--- nft list table inet felis (err %v):\n%s\n", err, out)
	})
	return e
}

// podAddrs returns the addresses of the i-th pod: 10.65.0.(10+i) and fd00:65::(10+i).
func podAddrs(i int) (netip.Addr, netip.Addr) {
	return netip.AddrFrom4([4]byte{10, 65, 0, byte(10 + i)}), netip.MustParseAddr(fmt.Sprintf("fd00:65::%d", 10+i))
}

// addPods creates the pods (dual-stack) with echo listeners on every port in listen.
func (e *env) addPods(listen []port, pods ...podSpec) {
	for _, spec := range pods {
		v4, v6 := podAddrs(len(e.order))
		p, err := e.node.NewPod(netns.PodOptions{
			Namespace: spec.Namespace, Name: spec.Name, IPv4: v4, IPv6: v6,
			SkipHostWiring: agentRouting,
		})
		Expect(err).NotTo(HaveOccurred())
		for _, l := range listen {
			if l.Protocol == netns.ICMP {
				continue
			}
			_, err := p.Listen(l.Protocol, l.Number)
			Expect(err).NotTo(HaveOccurred())
		}
		e.pods[spec.key()] = p
		e.specs[spec.key()] = spec
		e.order = append(e.order, spec.key())
	}
}

// pod returns the pod NAMESPACE/NAME.
func (e *env) pod(key string) *netns.Pod {
	p, ok := e.pods[key]
	Expect(ok).To(BeTrue(), "no pod %s in this spec", key)
	return p
}

// write expands the YAML documents as templates ({{ip4 "ns/pod"}}, {{ip6 ...}}, {{iface ...}},
// {{node4}}, {{node6}}, {{peer4}}, {{peer6}}) and replaces datastore file name with them atomically, so a watching agent never
// reads half a file.
func (e *env) write(name string, docs ...string) {
	funcs := template.FuncMap{
		"ip4":   func(key string) string { return e.pod(key).IPv4.String() },
		"ip6":   func(key string) string { return e.pod(key).IPv6.String() },
		"iface": func(key string) string { return e.pod(key).HostInterface },
		"node4": func() string { return e.node.IPv4.String() },
		"node6": func() string { return e.node.IPv6.String() },
		"peer4": func() string { return e.peer.IPv4.String() },
		"peer6": func() string { return e.peer.IPv6.String() },
	}
	var b strings.Builder
	for i, d := range docs {
		t, err := template.New(name).Funcs(funcs).Parse(d)
		Expect(err).NotTo(HaveOccurred(), "template of document %d of %s", i, name)
		b.WriteString("---\n")
		Expect(t.Execute(&b, nil)).To(Succeed())
		b.WriteString("\n")
	}
	tmp := filepath.Join(e.dir, "."+name+".tmp")
	Expect(os.WriteFile(tmp, []byte(b.String()), 0o644)).To(Succeed())
	Expect(os.Rename(tmp, filepath.Join(e.dir, name))).To(Succeed())
}

// remove deletes datastore file name.
func (e *env) remove(name string) {
	Expect(os.Remove(filepath.Join(e.dir, name))).To(Succeed())
}

// writeCluster writes the node and the namespaces (name -> labels).
func (e *env) writeCluster(namespaces map[string]map[string]string) {
	docs := []string{nodeYAML(e.node)}
	for _, ns := range sortedKeys(namespaces) {
		docs = append(docs, namespaceYAML(ns, namespaces[ns]), serviceAccountYAML(ns, "default"))
	}
	e.write("cluster.yaml", docs...)
}

// writePods writes the pods of the spec still listed in keys (all of them when keys is nil).
func (e *env) writePods(keys ...string) {
	if keys == nil {
		keys = e.order
	}
	var docs []string
	for _, k := range keys {
		if e.specs[k].NotAPod {
			continue
		}
		docs = append(docs, podYAML(e.specs[k], e.pods[k], e.node.NodeName))
	}
	e.write("pods.yaml", docs...)
}

// startAgent starts felis agent in the node namespace and waits for its first programmed cycle.
func (e *env) startAgent(extraArgs ...string) cycle {
	args := []string{"agent", "--datastore", "file:" + e.dir, "--node", e.node.NodeName, "--dataplane", e.dataplane}
	if !agentRouting {
		args = append(args, "--no-routing")
	}
	p, err := e.node.Start(context.Background(), felisBin, append(args, extraArgs...)...)
	Expect(err).NotTo(HaveOccurred())
	e.agent = p
	return e.waitCycle(0, func(cycle) bool { return true })
}

// cycle is one "programmed" log line of the agent.
type cycle struct {
	Revision int
	Full     bool
	Ops      int
	Counts   map[string]int
	Line     string
}

// cycles parses every "programmed" line the agent has logged so far.
func (e *env) cycles() []cycle {
	var out []cycle
	sc := bufio.NewScanner(strings.NewReader(e.agent.Output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		kv := parseLogLine(sc.Text())
		if kv["msg"] != "programmed" || kv["dataplane"] != e.dataplane {
			continue
		}
		c := cycle{Full: kv["full"] == "true", Counts: map[string]int{}, Line: sc.Text()}
		c.Revision, _ = strconv.Atoi(kv["revision"])
		c.Ops, _ = strconv.Atoi(kv["ops"])
		for part := range strings.SplitSeq(kv["counts"], ",") {
			verb, n, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			c.Counts[verb], _ = strconv.Atoi(n)
		}
		out = append(out, c)
	}
	return out
}

// waitCycle waits until the agent has logged a programmed cycle with index >= from that
// satisfies match, and returns the first such cycle. It fails at once if the agent exits.
func (e *env) waitCycle(from int, match func(cycle) bool) cycle {
	var found cycle
	Eventually(func(g Gomega) {
		select {
		case <-e.agent.Done():
			g.Expect(e.agent.Wait()).To(Succeed(), "felis agent exited:\n%s", e.agent.Output())
			StopTrying("felis agent exited").Now()
		default:
		}
		cs := e.cycles()
		for i := from; i < len(cs); i++ {
			if match(cs[i]) {
				found = cs[i]
				return
			}
		}
		g.Expect(len(cs)).To(BeNumerically(">", from), "no programmed cycle yet; agent output:\n%s", e.agent.Output())
		g.Expect(false).To(BeTrue(), "no matching programmed cycle among %d new ones; agent output:\n%s", len(cs)-from, e.agent.Output())
	}).WithTimeout(15 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	return found
}

// nft runs the nft CLI in the node namespace.
func (e *env) nft(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.node.Exec(ctx, "nft", args...)
	return string(out), err
}

// parseLogLine splits a log/slog text line into its key=value pairs (values may be quoted).
func parseLogLine(line string) map[string]string {
	kv := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsRune(k, ' ') {
			return kv
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && (rest[end] != '"' || rest[end-1] == '\\') {
				end++
			}
			if end >= len(rest) {
				return kv
			}
			if u, err := strconv.Unquote(rest[:end+1]); err == nil {
				v = u
			}
			line = rest[end+1:]
		} else {
			v, line, _ = strings.Cut(rest, " ")
		}
		kv[k] = v
	}
	return kv
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// expectLabelFlipIsTwoSetAdds runs ns1's pods with ns1/server admitting only app=client, then
// labels ns1/other app=client: the cycle that follows must be exactly one set member added per
// family (the dataplane's "set-add" count), and the packets must follow.
func expectLabelFlipIsTwoSetAdds(e *env) {
	ports := []port{tcp8080, udp8080}
	e.addPods(ports, ns1Pods...)
	e.writeCluster(ns1)
	e.writePods()
	e.write("policy.yaml", serverFromClient)
	e.startAgent()
	flows := e.flowsAmong(ports)
	expectVerdicts(flows, e.expectPacketsAgree(flows), []want{{"ns1/other", "ns1/server", tcp8080, deny}})

	By("labelling ns1/other app=client")
	n := len(e.cycles())
	spec := e.specs["ns1/other"]
	spec.Labels = labels("app", "client")
	e.specs["ns1/other"] = spec
	e.writePods()
	c := e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
	Expect(c.Counts).To(Equal(map[string]int{"set-add": 2}), "one member per family; %s", c.Line)
	expectVerdicts(flows, e.expectPacketsAgree(flows), []want{{"ns1/other", "ns1/server", tcp8080, allow}})
}
