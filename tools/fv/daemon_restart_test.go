//go:build linux

package fv_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/felis-dev/felis/tools/netns"
)

// serverFromClientAll admits app=client to app=server on every protocol (ICMP too) and
// isolates the server from everyone else.
const serverFromClientAll = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-ingress, namespace: ns1}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]`

// invalidDenyAll would deny every workload's ingress if it were valid; its rule selector does
// not parse, so felis must reject it and keep enforcing the rest.
const invalidDenyAll = `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: broken-deny-all}
spec:
  selector: all()
  order: 1
  types: [Ingress]
  ingress:
  - action: Deny
    source: {selector: "app == "}`

// daemonStream is a long-lived TCP connection from a pod that sends a numbered message every
// 20 ms and reads its echo back within a second.
type daemonStream struct {
	mu     sync.Mutex
	rounds int
	errs   []error
	stop   chan struct{}
	done   chan struct{}
}

// startDaemonStream connects from pod to dst and starts the exchange.
func startDaemonStream(pod *netns.Pod, dst netip.AddrPort) *daemonStream {
	var conn net.Conn
	Expect(pod.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", dst.String(), time.Second)
		return err
	})).To(Succeed(), "connecting the stream %s -> %s", pod.Name, dst)
	s := &daemonStream{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer conn.Close()
		out, in := make([]byte, 8), make([]byte, 8)
		for i := uint64(0); ; i++ {
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			binary.BigEndian.PutUint64(out, i)
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			_, err := conn.Write(out)
			if err == nil {
				_, err = io.ReadFull(conn, in)
			}
			if err == nil && binary.BigEndian.Uint64(in) != i {
				err = fmt.Errorf("message %d echoed as %d", i, binary.BigEndian.Uint64(in))
			}
			s.mu.Lock()
			if err != nil {
				s.errs = append(s.errs, fmt.Errorf("message %d at %s: %w", i, time.Now().Format("15:04:05.000"), err))
			} else {
				s.rounds++
			}
			s.mu.Unlock()
			if err != nil {
				return // a broken connection stays broken
			}
		}
	}()
	return s
}

// finish stops the stream and returns its successful rounds and errors.
func (s *daemonStream) finish() (int, []error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds, s.errs
}

// daemonPinger pings dst from a pod every 50 ms (each ping answered within 500 ms or lost).
type daemonPinger struct {
	mu   sync.Mutex
	ok   int
	lost []string
	stop chan struct{}
	done chan struct{}
}

func startDaemonPinger(pod *netns.Pod, dst netip.Addr) *daemonPinger {
	p := &daemonPinger{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			r := pod.ProbeTimeout(netns.ICMP, netip.AddrPortFrom(dst, 0), 500*time.Millisecond)
			p.mu.Lock()
			if r.Allowed() == nil {
				p.ok++
			} else {
				p.lost = append(p.lost, time.Now().Format("15:04:05.000")+" "+r.String())
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *daemonPinger) finish() (int, []string) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok, p.lost
}

// daemonKill9 kills the agent with SIGKILL (no shutdown code runs) and waits for it to go.
func (e *env) daemonKill9() {
	Expect(syscall.Kill(-e.agent.Cmd.Process.Pid, syscall.SIGKILL)).To(Succeed())
	Eventually(e.agent.Done()).WithTimeout(5 * time.Second).Should(BeClosed())
}

// daemonStartAgent starts felis agent as startAgent does, without waiting for a cycle.
func (e *env) daemonStartAgent(extraArgs ...string) {
	args := []string{"agent", "--datastore", "file:" + e.dir, "--node", e.node.NodeName, "--dataplane", e.dataplane}
	if !agentRouting {
		args = append(args, "--no-routing")
	}
	p, err := e.node.Start(context.Background(), felisBin, append(args, extraArgs...)...)
	Expect(err).NotTo(HaveOccurred())
	e.agent = p
}

// daemonFirstProgrammed returns the agent's first "programmed" log line for dataplane ("" if none).
func (e *env) daemonFirstProgrammed(dataplane string) string {
	for l := range strings.Lines(e.agent.Output()) {
		kv := parseLogLine(l)
		if kv["msg"] == "programmed" && kv["dataplane"] == dataplane {
			return l
		}
	}
	return ""
}

// daemonRoutes lists every route of the node namespace, both families, all tables.
func (e *env) daemonRoutes() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		out, err := e.node.Exec(ctx, "ip", fam, "route", "show", "table", "all")
		Expect(err).NotTo(HaveOccurred())
		b.Write(out)
	}
	return b.String()
}

// daemonHTTP fetches url inside the node namespace; it returns the HTTP status and body, or
// 0 and the error when nothing answers (the agent is not listening yet).
func (e *env) daemonHTTP(url string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := e.node.Exec(ctx, "curl", "-s", "-w", "\n%{http_code}", url)
	if err != nil {
		return 0, err.Error()
	}
	text := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(text, '\n')
	var code int
	_, _ = fmt.Sscan(text[i+1:], &code)
	return code, text[:max(i, 0)]
}

// daemonEndpointStates runs `felis status -o json` in the node namespace: workload (NAMESPACE/POD) -> state.
func (e *env) daemonEndpointStates() map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.node.Command(ctx, felisBin, "status", "-o", "json").Output()
	Expect(err).NotTo(HaveOccurred(), "felis status: %s", out)
	var r struct {
		Endpoints []struct{ Workload, State, Reason string }
	}
	Expect(json.Unmarshal(out, &r)).To(Succeed(), "felis status -o json printed:\n%s", out)
	states := map[string]string{}
	for _, ep := range r.Endpoints {
		states[ep.Workload] = ep.State
	}
	return states
}

// daemonBasics builds client/server/other in ns1 under serverFromClientAll and starts the agent.
func daemonBasics(dp string, agentArgs ...string) *env {
	e := newEnv(dp, false)
	e.addPods([]port{tcp8080}, ns1Pods...)
	e.writeCluster(ns1)
	e.writePods()
	e.write("policy.yaml", serverFromClientAll)
	e.startAgent(agentArgs...)
	// The first cycle also wires the pods' host side (routes, proxy-ARP): give neighbour
	// resolution a moment before the first packets must pass.
	Eventually(e.daemonCheckEnforced).WithTimeout(10 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	return e
}

// daemonExpectEnforced checks the policy with real packets: client reaches server (TCP and ICMP),
// other does not.
func (e *env) daemonExpectEnforced() {
	e.daemonCheckEnforced(Default)
}

func (e *env) daemonCheckEnforced(g Gomega) {
	server := e.pod("ns1/server").IPv4
	g.Expect(e.pod("ns1/client").Probe(netns.TCP, netip.AddrPortFrom(server, 8080)).Allowed()).To(Succeed())
	g.Expect(e.pod("ns1/client").Probe(netns.ICMP, netip.AddrPortFrom(server, 0)).Allowed()).To(Succeed())
	g.Expect(e.pod("ns1/other").Probe(netns.TCP, netip.AddrPortFrom(server, 8080)).Denied()).To(Succeed())
	g.Expect(e.pod("ns1/other").Probe(netns.ICMP, netip.AddrPortFrom(server, 0)).Denied()).To(Succeed())
}

var _ = Describe("felis agent as a node daemon", func() {
	// The daemon's behaviour does not depend on the dataplane, but these specs read the
	// kernel's state as nftables (nft monitor, the felis table): they run on nftables only.
	for _, dp := range []string{"nftables"} {
		Describe("dataplane "+dp, Label(dp), func() {
			It("keeps a TCP stream and pings flowing across kill -9 and restart, touching no rule", func() {
				e := daemonBasics(dp)
				e.daemonExpectEnforced()
				Eventually(e.daemonEndpointStates).Should(HaveKeyWithValue("ns1/server", "programmed"))
				before := e.listTable()

				By("watching the kernel's nftables and route events across the restart")
				mon, err := e.node.Start(context.Background(), "nft", "monitor")
				Expect(err).NotTo(HaveOccurred())
				routeMon, err := e.node.Start(context.Background(), "ip", "monitor", "route")
				Expect(err).NotTo(HaveOccurred())
				routesBefore := e.daemonRoutes()
				time.Sleep(300 * time.Millisecond) // the monitors subscribe at start

				server := e.pod("ns1/server").IPv4
				s := startDaemonStream(e.pod("ns1/client"), netip.AddrPortFrom(server, 8080))
				p := startDaemonPinger(e.pod("ns1/client"), server)
				time.Sleep(time.Second)

				By("killing the agent with SIGKILL and leaving the node without it for a second")
				e.daemonKill9()
				time.Sleep(time.Second)

				By("restarting it: the first sync reads the kernel and applies nothing")
				first := e.startAgent()
				Expect(first.Full).To(BeTrue(), "the restarted agent's first sync must read the kernel: %s", first.Line)
				Expect(first.Ops).To(Equal(0), "the restarted agent changed the table: %s", first.Line)
				if agentRouting {
					Expect(e.daemonFirstProgrammed("netlink")).To(ContainSubstring(" ops=0 "), "the restarted agent changed routes or links")
				}
				time.Sleep(time.Second)

				rounds, streamErrs := s.finish()
				pings, lost := p.finish()
				Expect(mon.Stop()).To(Succeed())
				Expect(routeMon.Stop()).To(Succeed())
				Expect(strings.TrimSpace(routeMon.Output())).To(BeEmpty(), "route events across kill -9 and restart")
				Expect(e.daemonRoutes()).To(Equal(routesBefore), "the node's routes changed across the restart")
				Expect(streamErrs).To(BeEmpty(), "the TCP stream broke")
				Expect(lost).To(BeEmpty(), "pings were lost")
				Expect(rounds).To(BeNumerically(">", 50), "the stream barely ran")
				Expect(pings).To(BeNumerically(">", 20), "the pinger barely ran")
				var felisEvents []string
				for l := range strings.Lines(mon.Output()) {
					if strings.Contains(l, " felis") {
						felisEvents = append(felisEvents, strings.TrimSpace(l))
					}
				}
				Expect(felisEvents).To(BeEmpty(), "nftables events on the felis table across kill -9 and restart")
				Expect(e.listTable()).To(Equal(before), "the felis table changed across the restart")
				e.daemonExpectEnforced()
				Eventually(e.daemonEndpointStates).Should(And(HaveKeyWithValue("ns1/server", "programmed"), HaveKeyWithValue("ns1/client", "programmed")))
				code, body := e.daemonHTTP("http://127.0.0.1:9099/readiness")
				Expect(code).To(Equal(200), "readiness after restart: %s", body)
			})

			It("keeps the dataplane programmed through a datastore outage, then follows it again", func() {
				e := daemonBasics(dp, "--resync-interval", "500ms")
				e.daemonExpectEnforced()
				before := e.listTable()

				By("moving the datastore directory away: the watch fails")
				away := e.dir + ".away"
				Expect(os.Rename(e.dir, away)).To(Succeed())
				Eventually(e.agent.Output).WithTimeout(10 * time.Second).Should(ContainSubstring("datastore watch failed"))
				Eventually(func() string { _, body := e.daemonHTTP("http://127.0.0.1:9099/readiness"); return body }).
					WithTimeout(10 * time.Second).Should(ContainSubstring("datastore unavailable"))
				code, _ := e.daemonHTTP("http://127.0.0.1:9099/readiness")
				Expect(code).To(Equal(503))

				By("several periodic resyncs later the table is unchanged and still enforces")
				n := len(e.cycles())
				e.waitCycle(n+2, func(c cycle) bool { return c.Full })
				Expect(e.listTable()).To(Equal(before))
				e.daemonExpectEnforced()
				code, body := e.daemonHTTP("http://127.0.0.1:9099/liveness")
				Expect(code).To(Equal(200), "liveness during the outage: %s", body)

				By("bringing the directory back: the watch resumes and follows an edit")
				Expect(os.Rename(away, e.dir)).To(Succeed())
				Eventually(func() int { c, _ := e.daemonHTTP("http://127.0.0.1:9099/readiness"); return c }).
					WithTimeout(40 * time.Second).Should(Equal(200))
				n = len(e.cycles())
				e.write("policy.yaml", serverFromOtherUDP)
				e.waitCycle(n, func(c cycle) bool { return c.Ops > 0 })
				server := e.pod("ns1/server").IPv4
				Eventually(func() error {
					return e.pod("ns1/client").Probe(netns.TCP, netip.AddrPortFrom(server, 8080)).Denied()
				}).WithTimeout(5 * time.Second).Should(Succeed())
			})

			It("restarts during a datastore outage without touching the dataplane, and adopts it when the datastore returns", func() {
				e := daemonBasics(dp)
				e.daemonExpectEnforced()
				before := e.listTable()

				By("killing the agent and taking the datastore away, then starting a new agent")
				e.daemonKill9()
				away := e.dir + ".away"
				Expect(os.Rename(e.dir, away)).To(Succeed())
				e.daemonStartAgent()
				Eventually(func() string { _, body := e.daemonHTTP("http://127.0.0.1:9099/readiness"); return body }).
					WithTimeout(10 * time.Second).Should(ContainSubstring("datastore unavailable"))
				code, body := e.daemonHTTP("http://127.0.0.1:9099/liveness")
				Expect(code).To(Equal(200), "liveness while the datastore is unavailable: %s", body)
				Expect(e.agent.Output()).To(ContainSubstring("datastore load failed"))
				Expect(e.cycles()).To(BeEmpty(), "the agent programmed without a datastore")
				Expect(e.listTable()).To(Equal(before))
				e.daemonExpectEnforced()

				By("bringing the datastore back: the agent loads, and its first sync applies nothing")
				Expect(os.Rename(away, e.dir)).To(Succeed())
				first := e.waitCycle(0, func(cycle) bool { return true })
				Expect(first.Full).To(BeTrue())
				Expect(first.Ops).To(Equal(0), "the agent changed the table after the outage: %s", first.Line)
				Expect(e.listTable()).To(Equal(before))
				Eventually(func() int { c, _ := e.daemonHTTP("http://127.0.0.1:9099/readiness"); return c }).
					WithTimeout(10 * time.Second).Should(Equal(200))
			})

			It("reports an invalid policy (log, metric, felis validate) and keeps enforcing the rest", func() {
				e := daemonBasics(dp)
				e.daemonExpectEnforced()
				before := e.listTable()

				By("adding a deny-all policy whose rule selector does not parse")
				e.write("broken.yaml", invalidDenyAll)
				Eventually(e.agent.Output).WithTimeout(10 * time.Second).Should(
					MatchRegexp(`invalid resource rejected.*GlobalNetworkPolicy broken-deny-all: spec.ingress\[0\].source.selector`))
				Eventually(func() string { _, body := e.daemonHTTP("http://127.0.0.1:9091/metrics"); return body }).
					WithTimeout(10 * time.Second).Should(MatchRegexp(`(?m)^felis_invalid_resources 1$`))

				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, felisBin, "validate", "--datastore", "file:"+e.dir).Output()
				var exitErr *exec.ExitError
				Expect(errors.As(err, &exitErr)).To(BeTrue(), "felis validate must exit non-zero: %v", err)
				Expect(exitErr.ExitCode()).To(Equal(1))
				Expect(string(out)).To(ContainSubstring("GlobalNetworkPolicy broken-deny-all: spec.ingress[0].source.selector"))

				By("everything else stays enforced and the table is untouched")
				e.daemonExpectEnforced()
				Expect(e.listTable()).To(Equal(before))
				Expect(e.daemonEndpointStates()).To(HaveKeyWithValue("ns1/server", "programmed"))
			})
		})
	}
})
