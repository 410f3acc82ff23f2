//go:build linux

package fv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/gomega"

	"github.com/felis-dev/felis/datastore/file"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// flow is one probed connection: from a pod (or the outside client) to a pod, in one address
// family, to one port (or an ICMP echo).
type flow struct {
	From, To string // pod keys NAMESPACE/NAME, or outsideClient
	Family   int    // 4 or 6
	Port     port   // Number 0 for ICMP
}

func (f flow) String() string {
	what := f.Port.String()
	if f.Port.Protocol == netns.ICMP {
		what = "ICMP echo"
	}
	return fmt.Sprintf("%s -> %s IPv%d %s", f.From, f.To, f.Family, what)
}

// verdict is what the oracle says about a flow, and what decided it.
type verdict struct {
	Action snapshot.Action
	Why    string
}

// icmpEcho is the ICMP "port" every flow matrix includes.
var icmpEcho = port{Protocol: netns.ICMP}

// flowsAmong lists every ordered pair of distinct pods among keys (every pod when keys is
// empty), in both families, to each port and as an ICMP echo.
func (e *env) flowsAmong(ports []port, keys ...string) []flow {
	if len(keys) == 0 {
		keys = e.order
	}
	var out []flow
	for _, from := range keys {
		for _, to := range keys {
			if from == to {
				continue
			}
			for _, fam := range []int{4, 6} {
				for _, p := range append(ports[:len(ports):len(ports)], icmpEcho) {
					out = append(out, flow{From: from, To: to, Family: fam, Port: p})
				}
			}
		}
	}
	return out
}

// outsideClient names the second node on the underlay as a flow's source: an address that is
// no felis endpoint.
const outsideClient = "@node2"

// addr returns the address in family of pod key (or of the outside client).
func (e *env) addr(key string, family int) netip.Addr {
	if key == outsideClient {
		if family == 4 {
			return e.peer.IPv4
		}
		return e.peer.IPv6
	}
	if family == 4 {
		return e.pod(key).IPv4
	}
	return e.pod(key).IPv6
}

// source returns the namespace a flow from key is sent from.
func (e *env) source(key string) *netns.Namespace {
	if key == outsideClient {
		Expect(e.peer).NotTo(BeNil(), "flows from the outside client need newEnv(dp, true)")
		return e.peer.Namespace
	}
	return e.pod(key).Namespace
}

// flowsFromOutside lists flows from the outside client to every pod, in both families, to each
// port and as an ICMP echo.
func (e *env) flowsFromOutside(ports []port) []flow {
	var out []flow
	for _, to := range e.order {
		for _, fam := range []int{4, 6} {
			for _, p := range append(ports[:len(ports):len(ports)], icmpEcho) {
				out = append(out, flow{From: outsideClient, To: to, Family: fam, Port: p})
			}
		}
	}
	return out
}

// oracle computes the verdict of every flow from the datastore as it is now: TCP and UDP
// flows with `felis reach -o json` (one call per address pair, peers given as ip:ADDR so both
// families are evaluated), ICMP flows with the evaluators of the derived snapshots that felis
// reach itself uses (reach has no spelling for ICMP).
func (e *env) oracle(flows []flow) []verdict {
	type pair struct{ src, dst netip.Addr }
	type portKey struct {
		number   uint16
		protocol string
	}
	byPair := map[pair][]port{}
	for _, f := range flows {
		if f.Port.Protocol == netns.ICMP {
			continue
		}
		k := pair{e.addr(f.From, f.Family), e.addr(f.To, f.Family)}
		if !containsPort(byPair[k], f.Port) {
			byPair[k] = append(byPair[k], f.Port)
		}
	}
	rows := map[pair]map[portKey]snapshot.Row{}
	for k, ports := range byPair {
		rows[k] = map[portKey]snapshot.Row{}
		for _, r := range e.reach(k.src, k.dst, ports) {
			rows[k][portKey{r.Port, r.Protocol}] = r
		}
	}
	var d *derived
	out := make([]verdict, len(flows))
	for i, f := range flows {
		src, dst := e.addr(f.From, f.Family), e.addr(f.To, f.Family)
		if f.Port.Protocol == netns.ICMP {
			if d == nil {
				d = loadDerived(e.dir)
			}
			out[i] = d.icmp(src, dst)
			continue
		}
		r, ok := rows[pair{src, dst}][portKey{f.Port.Number, string(f.Port.Protocol)}]
		Expect(ok).To(BeTrue(), "felis reach printed no row for %s", f)
		out[i] = verdict{Action: r.Verdict, Why: fmt.Sprintf("egress: %s; ingress: %s", r.Egress, r.Ingress)}
	}
	return out
}

func containsPort(ps []port, p port) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// reach runs `felis reach -o json` for one address pair and the given ports.
func (e *env) reach(src, dst netip.Addr, ports []port) []snapshot.Row {
	args := []string{"reach", "--datastore", "file:" + e.dir, "-o", "json", "--from", "ip:" + src.String(), "--to", "ip:" + dst.String()}
	for _, p := range ports {
		args = append(args, "--port", p.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, felisBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "felis %s:\n%s", strings.Join(args, " "), stderr.String())
	Expect(stderr.String()).To(BeEmpty(), "felis reach reported problems with the spec's datastore")
	var rows []snapshot.Row
	Expect(json.Unmarshal(out, &rows)).To(Succeed(), "felis reach -o json printed:\n%s", out)
	return rows
}

// derived is every node's snapshot derived from the datastore, as felis reach derives them,
// for the questions reach has no spelling for (ICMP, host endpoints).
type derived struct {
	cluster *snapshot.Cluster
	evals   map[string]*snapshot.Evaluator
	snaps   map[string]*snapshot.Snapshot
}

// loadDerived loads the datastore directory and derives every node's snapshot.
func loadDerived(dir string) *derived {
	st := store.New()
	problems, err := file.New(dir).Load(context.Background(), st)
	Expect(err).NotTo(HaveOccurred())
	Expect(problems).To(BeEmpty(), "the spec's datastore has invalid resources")
	v := st.View()
	nodes := map[string]bool{}
	for n := range store.List[*model.Node](v, model.KindNode) {
		nodes[n.Key.Name] = true
	}
	for w := range store.List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint) {
		nodes[w.Node] = true
	}
	d := &derived{evals: map[string]*snapshot.Evaluator{}, snaps: map[string]*snapshot.Snapshot{}}
	var snaps []*snapshot.Snapshot
	for _, n := range sortedKeys(nodes) {
		s, err := derive.Derive(v, n, derive.Options{})
		Expect(err).NotTo(HaveOccurred(), "derive node %s", n)
		snaps = append(snaps, s)
		d.snaps[n] = s
		d.evals[n] = snapshot.NewEvaluator(s)
	}
	d.cluster = snapshot.NewCluster(snaps)
	return d
}

// combine is a flow's verdict from its two sides.
func combine(eg, in snapshot.Verdict) verdict {
	v := verdict{Action: snapshot.Deny, Why: fmt.Sprintf("egress: %s; ingress: %s", eg, in)}
	if eg.Action == snapshot.Allow && in.Action == snapshot.Allow {
		v.Action = snapshot.Allow
	}
	return v
}

var outside = snapshot.Verdict{Action: snapshot.Allow, Decider: "outside"}

// icmp evaluates an ICMP(v6) echo request from src to dst: the source endpoint's egress and
// the destination endpoint's ingress.
func (d *derived) icmp(src, dst netip.Addr) verdict {
	proto, echoType := uint8(1), uint8(8)
	if src.Is6() {
		proto, echoType = 58, 128
	}
	code := uint8(0)
	pkt := snapshot.Packet{Src: src, Dst: dst, Protocol: proto, ICMPType: &echoType, ICMPCode: &code}
	eg, in := outside, outside
	from, err := d.cluster.Resolve("ip:" + src.String())
	Expect(err).NotTo(HaveOccurred())
	to, err := d.cluster.Resolve("ip:" + dst.String())
	Expect(err).NotTo(HaveOccurred())
	if l := from[0].Endpoint; l != nil {
		eg = d.evals[l.Node].Egress(l.Endpoint, pkt)
	}
	if l := to[0].Endpoint; l != nil {
		in = d.evals[l.Node].Ingress(l.Endpoint, pkt)
	}
	return combine(eg, in)
}

// hostIngress evaluates a TCP/UDP packet from an outside address to node's host endpoint on
// iface: failsafe inbound ports first, then the host endpoint's (normal) ingress program.
func (d *derived) hostIngress(node, iface string, src, dst netip.Addr, proto netns.Protocol, port uint16) verdict {
	s, ok := d.snaps[node]
	Expect(ok).To(BeTrue(), "no snapshot for node %s", node)
	ipProto := uint8(6)
	if proto == netns.UDP {
		ipProto = 17
	}
	for _, fs := range s.Config.FailsafeInbound {
		if fs.Protocol == ipProto && fs.Port == port && (!fs.Net.IsValid() || fs.Net.Contains(src)) {
			return combine(outside, snapshot.Verdict{Action: snapshot.Allow, Decider: "failsafe"})
		}
	}
	for i := range s.HostEndpoints {
		hep := &s.HostEndpoints[i]
		if hep.Interface != iface && hep.Interface != "*" {
			continue
		}
		pkt := snapshot.Packet{Src: src, Dst: dst, Protocol: ipProto, SrcPort: 40000, DstPort: port}
		return combine(outside, d.evals[node].Program(hep.Normal.Ingress, true, pkt))
	}
	return combine(outside, snapshot.Verdict{Action: snapshot.Allow, Decider: "no host endpoint"})
}

// agrees checks a probe result against the oracle's verdict: Allow must get through, Deny
// must be dropped or rejected (a Refused probe means no listener, never a policy verdict).
func agrees(v verdict, r netns.Result) error {
	if v.Action == snapshot.Allow {
		return r.Allowed()
	}
	return r.Denied()
}

// expectPacketsAgree computes the oracle's verdicts for flows, then probes every flow (all at
// once) until every result agrees with its verdict, for at most agreeTimeout. It returns the
// verdicts.
func (e *env) expectPacketsAgree(flows []flow) []verdict {
	verdicts := e.oracle(flows)
	Eventually(func() error {
		results := make([]netns.Result, len(flows))
		var wg sync.WaitGroup
		for i, f := range flows {
			wg.Go(func() {
				dst := netip.AddrPortFrom(e.addr(f.To, f.Family), f.Port.Number)
				results[i] = e.source(f.From).Probe(f.Port.Protocol, dst)
			})
		}
		wg.Wait()
		var bad []string
		for i, f := range flows {
			if err := agrees(verdicts[i], results[i]); err != nil {
				bad = append(bad, fmt.Sprintf("  %s: felis reach says %s (%s); the packet: %s", f, verdicts[i].Action, verdicts[i].Why, results[i]))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("%d of %d flows disagree with felis reach:\n%s", len(bad), len(flows), strings.Join(bad, "\n"))
		}
		return nil
	}).WithTimeout(agreeTimeout).WithPolling(100 * time.Millisecond).Should(Succeed())
	return verdicts
}

// agreeTimeout is how long the agent gets to make the kernel agree with the datastore.
const agreeTimeout = 10 * time.Second

// want is a verdict a scenario expects from the oracle for a flow in both families: it pins
// down what the scenario means, so that packets agreeing with a wrong oracle cannot pass.
type want struct {
	From, To string
	Port     port
	Action   snapshot.Action
}

// expectVerdicts checks the oracle's verdicts against the scenario's expectations.
func expectVerdicts(flows []flow, verdicts []verdict, wants []want) {
	got := map[flow]verdict{}
	for i, f := range flows {
		got[f] = verdicts[i]
	}
	for _, w := range wants {
		for _, fam := range []int{4, 6} {
			f := flow{From: w.From, To: w.To, Family: fam, Port: w.Port}
			v, ok := got[f]
			Expect(ok).To(BeTrue(), "scenario expectation for %s, which the spec does not probe", f)
			Expect(v.Action).To(Equal(w.Action), "felis reach verdict for %s (%s)", f, v.Why)
		}
	}
}
