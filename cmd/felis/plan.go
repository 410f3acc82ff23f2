package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/datastore/file"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

func init() { rootCmd.AddCommand(newPlanCmd()) }

type planFlags struct {
	datastore    string
	node         string
	allNodes     bool
	with         []string
	without      []string
	against      string
	dataplane    string
	output       string
	detailedExit bool
	maxFlows     int
}

func newPlanCmd() *cobra.Command {
	f := &planFlags{}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Preview what a change would do on each node before rolling it out",
		Long: `plan derives every affected node's snapshot before and after a proposed change (--with files
holding new or changed resources, --without resources to delete) and prints, per node, the
snapshot changes in words, the kernel operations the dataplane would emit, the flows that
flip between Allow and Deny with the rule responsible, the blast radius, and capacity
warnings. Invalid proposed resources are reported with file:line and field; the plan still
covers the valid ones.

With --detailed-exitcode the exit status is 0 for no change, 2 for changes, 1 for an error.`,
		Example: `  felis plan --datastore file:examples/cluster --all-nodes --with new-policy.yaml
  felis plan --node node-1 --without NetworkPolicy/backend/allow-frontend -o json --detailed-exitcode`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runPlan(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.datastore, "datastore", "file:examples/cluster", "datastore: file:PATH, kubernetes or etcd:URL")
	fl.StringVar(&f.node, "node", "", "plan for this node")
	fl.BoolVar(&f.allNodes, "all-nodes", false, "plan for every node of the cluster")
	fl.StringArrayVar(&f.with, "with", nil, "file or directory of new or changed resources (repeatable)")
	fl.StringArrayVar(&f.without, "without", nil, "resource to delete: KIND/NAMESPACE/NAME or KIND/NAME (repeatable)")
	fl.StringVar(&f.against, "against", "", `compare kernel operations with "kernel" (the live dataplane) instead of the current snapshot`)
	fl.StringVar(&f.dataplane, "dataplane", "nftables", "policy dataplane whose operations to show: nftables or iptables (routing operations are always shown)")
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	fl.BoolVar(&f.detailedExit, "detailed-exitcode", false, "exit 0 for no change, 2 for changes, 1 for errors")
	fl.IntVar(&f.maxFlows, "max-flows", 2_000_000, "evaluate at most this many flows for connectivity changes")
	return cmd
}

// Plan is the JSON document felis plan prints; its shape is stable for CI gates.
type Plan struct {
	Nodes        []NodePlan   `json:"nodes"`
	Connectivity []FlowChange `json:"connectivity"`
	BlastRadius  BlastRadius  `json:"blastRadius"`
	Warnings     []string     `json:"warnings"`
	Problems     []string     `json:"problems"`
	Truncated    bool         `json:"connectivityTruncated,omitempty"`
}

// NodePlan is one node's part of a plan.
type NodePlan struct {
	Node       string            `json:"node"`
	Changes    []snapshot.Change `json:"changes"`
	Operations []Operation       `json:"operations"`
}

// Operation is one kernel operation a dataplane applier would emit, in its canonical text.
type Operation struct {
	Dataplane string `json:"dataplane"`
	Op        string `json:"op"`
}

// FlowChange is a flow whose verdict flips.
type FlowChange struct {
	From     string           `json:"from"`
	To       string           `json:"to"`
	Port     uint16           `json:"port"`
	Protocol string           `json:"protocol"`
	Before   snapshot.Action  `json:"before"`
	After    snapshot.Action  `json:"after"`
	Egress   snapshot.Verdict `json:"egress"`
	Ingress  snapshot.Verdict `json:"ingress"`
}

// BlastRadius lists what the change touches.
type BlastRadius struct {
	Nodes     []string `json:"nodes"`
	Endpoints []string `json:"endpoints"`
}

func runPlan(cmd *cobra.Command, f *planFlags) error {
	err := planMain(cmd, f)
	var ee exitError
	if errors.As(err, &ee) {
		return err
	}
	if err != nil && f.detailedExit {
		fmt.Fprintln(cmd.ErrOrStderr(), "felis plan:", err)
		return exitError{code: 1}
	}
	return err
}

func planMain(cmd *cobra.Command, f *planFlags) error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("-o %q: want text or json", f.output)
	}
	if (f.node == "") == !f.allNodes {
		return fmt.Errorf("give exactly one of --node NAME or --all-nodes")
	}
	if f.against != "" && f.against != "kernel" {
		return fmt.Errorf("--against %q: the only value is kernel", f.against)
	}
	st, _, err := openStore(cmd.Context(), f.datastore)
	if err != nil {
		return err
	}
	batch, problems, err := proposed(st.View(), f.with, f.without)
	if err != nil {
		return err
	}
	plan, err := computePlan(cmd, st, batch, problems, f)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if f.output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(plan); err != nil {
			return err
		}
	} else {
		writePlanText(out, plan)
	}
	if f.detailedExit && plan.changed() {
		return exitError{code: 2}
	}
	return nil
}

// computePlan applies batch to st and works out what it changes on the planned nodes.
func computePlan(cmd *cobra.Command, st *store.Store, batch store.Batch, problems datastore.Problems, f *planFlags) (*Plan, error) {
	before := st.View()
	plan := &Plan{Connectivity: []FlowChange{}, Warnings: []string{}, Problems: []string{}, Nodes: []NodePlan{}}
	for _, p := range problems {
		plan.Problems = append(plan.Problems, p.String())
	}
	nodes := []string{f.node}
	if f.allNodes {
		nodes = clusterNodes(before)
	}
	// Each node's snapshot before the change; its Deriver then derives the after snapshot
	// incrementally, at the cost of the change.
	derivers := map[string]*derive.Deriver{}
	snapsBefore := map[string]*snapshot.Snapshot{}
	for _, n := range nodes {
		d := derive.NewDeriver(st, n, derive.Options{})
		defer d.Close()
		b, err := d.Derive(before)
		if err != nil {
			return nil, fmt.Errorf("derive node %s before the change: %w", n, err)
		}
		derivers[n], snapsBefore[n] = d, b
	}
	if _, err := st.Write(batch); err != nil {
		return nil, fmt.Errorf("applying the proposed change: %w", err)
	}
	after := st.View()
	if f.allNodes {
		nodes = union(nodes, clusterNodes(after))
	}
	var snapsB, snapsA []*snapshot.Snapshot
	for _, n := range nodes {
		d, ok := derivers[n]
		if !ok { // a node the change creates
			d = derive.NewDeriver(st, n, derive.Options{})
			defer d.Close()
			b, err := derive.Derive(before, n, derive.Options{})
			if err != nil {
				return nil, fmt.Errorf("derive node %s before the change: %w", n, err)
			}
			snapsBefore[n] = b
		}
		a, err := d.Derive(after)
		if err != nil {
			return nil, fmt.Errorf("derive node %s after the change: %w", n, err)
		}
		b := snapsBefore[n]
		snapsB, snapsA = append(snapsB, b), append(snapsA, a)
		np := NodePlan{Node: n, Changes: snapshot.Compare(b, a), Operations: []Operation{}}
		ops, err := kernelOps(cmd, f.against == "kernel", f.dataplane, b, a)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		np.Operations = append(np.Operations, ops...)
		if np.Changes == nil {
			np.Changes = []snapshot.Change{}
		}
		plan.Nodes = append(plan.Nodes, np)
		plan.Warnings = append(plan.Warnings, capacityWarnings(a)...)
		plan.Warnings = append(plan.Warnings, unplacedHostEndpoints(a)...)
	}
	plan.BlastRadius = blastRadius(plan.Nodes, snapsB, snapsA)
	// Flows cross nodes: evaluate them against every node's snapshots when that is cheap,
	// otherwise only among the planned nodes' endpoints (and say so).
	connB, connA := snapsB, snapsA
	if !f.allNodes {
		// Node resources alone tell a large cluster; only a small one is scanned for nodes its
		// endpoints name.
		others := union(nodeResources(before), nodeResources(after))
		if len(others) <= maxNodesForConnectivity {
			others = union(clusterNodes(before), clusterNodes(after))
		}
		if len(others) <= maxNodesForConnectivity {
			connB, connA = nil, nil
			for _, n := range others {
				b, err := derive.Derive(before, n, derive.Options{})
				if err != nil {
					return nil, fmt.Errorf("derive node %s before the change: %w", n, err)
				}
				a, err := derive.Derive(after, n, derive.Options{})
				if err != nil {
					return nil, fmt.Errorf("derive node %s after the change: %w", n, err)
				}
				connB, connA = append(connB, b), append(connA, a)
			}
		} else {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("connectivity: only flows among the endpoints of the planned nodes were evaluated (the cluster has %d nodes; use --all-nodes for all flows)", len(others)))
		}
	}
	plan.Connectivity, plan.Truncated = connectivityChanges(connB, connA, plan.BlastRadius.Endpoints, f.maxFlows)
	return plan, nil
}

func (p *Plan) changed() bool {
	for _, n := range p.Nodes {
		if len(n.Changes) > 0 || len(n.Operations) > 0 {
			return true
		}
	}
	return false
}

func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// proposed reads the --with files and resolves the --without resources into one batch.
func proposed(v *store.View, with, without []string) (store.Batch, datastore.Problems, error) {
	var b store.Batch
	var problems datastore.Problems
	for _, path := range with {
		objs, p, _, err := file.LoadPath(path)
		if err != nil {
			return b, nil, fmt.Errorf("--with %s: %w", path, err)
		}
		problems = append(problems, p...)
		b.Upserts = append(b.Upserts, objs...)
	}
	for _, spec := range without {
		keys, err := resolveResource(v, spec)
		if err != nil {
			return b, nil, fmt.Errorf("--without %s: %w", spec, err)
		}
		b.Deletes = append(b.Deletes, keys...)
	}
	return b, problems, nil
}

// kindAliases maps what users write (API kinds, lower-case, plurals) to stored kinds.
var kindAliases = map[string]model.Kind{
	"pod": model.KindWorkloadEndpoint, "namespace": model.KindProfile, "serviceaccount": model.KindProfile,
	"node": model.KindNode, "service": model.KindService, "endpointslice": model.KindEndpointSlice,
	"ipamblock": model.KindIPAMBlock,
}

// resolveResource turns KIND/NAMESPACE/NAME or KIND/NAME into stored keys, knowing how
// Kubernetes objects are stored: a Pod is its workload endpoint, a Namespace the profile
// kns.NAME, a ServiceAccount ksa.NS.NAME, a Kubernetes NetworkPolicy knp.default.NAME.
func resolveResource(v *store.View, spec string) ([]model.Key, error) {
	parts := strings.Split(spec, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return nil, fmt.Errorf("want KIND/NAMESPACE/NAME or KIND/NAME")
	}
	kindIn := strings.ToLower(strings.TrimSuffix(parts[0], "s"))
	ns, name := "", parts[len(parts)-1]
	if len(parts) == 3 {
		ns = parts[1]
	}
	var candidates []model.Key
	switch kindIn {
	case "pod":
		for w := range store.List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint) {
			if w.Key.Namespace == ns && w.Workload == name {
				candidates = append(candidates, w.Key)
			}
		}
	case "namespace":
		candidates = append(candidates, model.Key{Kind: model.KindProfile, Name: "kns." + name})
	case "serviceaccount":
		candidates = append(candidates, model.Key{Kind: model.KindProfile, Name: "ksa." + ns + "." + name})
	case "networkpolicy":
		candidates = append(candidates, model.Key{Kind: model.KindNetworkPolicy, Namespace: ns, Name: name},
			model.Key{Kind: model.KindNetworkPolicy, Namespace: ns, Name: "knp.default." + name})
	default:
		kind, ok := kindAliases[kindIn]
		if !ok {
			for _, k := range model.Kinds {
				if strings.EqualFold(string(k), kindIn) || strings.EqualFold(strings.TrimSuffix(string(k), "s"), kindIn) {
					kind, ok = k, true
				}
			}
		}
		if !ok {
			return nil, fmt.Errorf("unknown kind %q", parts[0])
		}
		candidates = append(candidates, model.Key{Kind: kind, Namespace: ns, Name: name})
	}
	for _, k := range candidates {
		if _, ok := v.Get(k); ok {
			if kindIn == "pod" {
				return candidates, nil
			}
			return []model.Key{k}, nil
		}
	}
	return nil, fmt.Errorf("no such resource in the datastore")
}

// Capacity limits felis warns about.
const (
	maxNodesForConnectivity = 20        // with --node, derive every node for flows only up to this size
	defaultIPSetMaxSize     = 1_048_576 // Felix's default MaxIPSetSize
	rulesPerChainWarn       = 1_000     // very long chains slow every packet that walks them
	bpfIPSetMapEntries      = 1_048_576 // felis's BPF IP-set LPM map size
)

func capacityWarnings(s *snapshot.Snapshot) []string {
	var w []string
	limit := s.Config.IPSetsMaxSize
	if limit == 0 {
		limit = defaultIPSetMaxSize
	}
	total := 0
	for _, set := range s.IPSets {
		total += len(set.Members)
		if len(set.Members) > limit {
			w = append(w, fmt.Sprintf("node %s: IP set %s has %d members, over the maximum %d (ipsetsMaxSize)", s.Node, set.ID, len(set.Members), limit))
		}
	}
	if total > bpfIPSetMapEntries {
		w = append(w, fmt.Sprintf("node %s: %d IP set members in all, over the BPF IP-set map's %d entries", s.Node, total, bpfIPSetMapEntries))
	}
	for _, p := range s.Policies {
		if n := max(len(p.Inbound), len(p.Outbound)); n > rulesPerChainWarn {
			w = append(w, fmt.Sprintf("node %s: policy %s has %d rules in one direction (over %d per chain)", s.Node, p.ID, n, rulesPerChainWarn))
		}
	}
	return w
}

// blastRadius lists the nodes with any change and the endpoints whose program, or a policy,
// profile or IP set their program uses, changed.
func blastRadius(nodes []NodePlan, before, after []*snapshot.Snapshot) BlastRadius {
	br := BlastRadius{Nodes: []string{}, Endpoints: []string{}}
	seen := map[string]bool{}
	for i, np := range nodes {
		if len(np.Changes) == 0 {
			continue
		}
		br.Nodes = append(br.Nodes, np.Node)
		changed := map[string]bool{}
		for _, c := range np.Changes {
			changed[c.Kind+"/"+c.ID] = true
		}
		for _, s := range []*snapshot.Snapshot{before[i], after[i]} {
			for _, e := range s.Endpoints {
				if !seen[e.ID] && endpointTouched(s, &e, changed) {
					seen[e.ID] = true
					br.Endpoints = append(br.Endpoints, e.ID)
				}
			}
		}
	}
	sort.Strings(br.Endpoints)
	return br
}

func endpointTouched(s *snapshot.Snapshot, e *snapshot.Endpoint, changed map[string]bool) bool {
	if changed["Endpoint/"+e.ID] {
		return true
	}
	for _, d := range []snapshot.Direction{e.Ingress, e.Egress} {
		for _, t := range d.Tiers {
			for _, p := range t.Policies {
				if changed["Policy/"+p] || policyUsesChangedSet(s, p, changed) {
					return true
				}
			}
		}
		for _, p := range d.Profiles {
			if changed["Profile/"+p] {
				return true
			}
		}
	}
	return false
}

func policyUsesChangedSet(s *snapshot.Snapshot, id string, changed map[string]bool) bool {
	i, ok := slices.BinarySearchFunc(s.Policies, id, func(p snapshot.Policy, id string) int { return strings.Compare(p.ID, id) })
	if !ok {
		return false
	}
	for _, rules := range [][]snapshot.Rule{s.Policies[i].Inbound, s.Policies[i].Outbound} {
		for _, r := range rules {
			for _, sets := range [][]string{r.SrcIPSets, r.NotSrcIPSets, r.DstIPSets, r.NotDstIPSets,
				r.SrcNamedPortIPSets, r.NotSrcNamedPortIPSets, r.DstNamedPortIPSets, r.NotDstNamedPortIPSets} {
				for _, set := range sets {
					if changed["IPSet/"+set] {
						return true
					}
				}
			}
		}
	}
	return false
}

// connectivityChanges evaluates flows touching the blast radius's endpoints before and after
// and returns those that flip. Ports probed: every port the rules of either side name, the
// endpoints' named ports, and one port no rule names (standing for "any other port").
func connectivityChanges(before, after []*snapshot.Snapshot, touched []string, maxFlows int) ([]FlowChange, bool) {
	out := []FlowChange{}
	if len(touched) == 0 {
		return out, false
	}
	cb, ca := snapshot.NewCluster(before), snapshot.NewCluster(after)
	all := unionPeers(cb, ca)
	isTouched := map[string]bool{}
	for _, id := range touched {
		isTouched[id] = true
	}
	ports := probePorts(before, after)
	budget := maxFlows
	truncated := false
	for _, f := range all {
		for _, t := range all {
			if f == t || !isTouched[f.id] && !isTouched[t.id] {
				continue
			}
			if budget -= len(ports); budget < 0 {
				truncated = true
				break
			}
			rb := cb.Reach(f.peer(cb), t.peer(cb), ports)
			ra := ca.Reach(f.peer(ca), t.peer(ca), ports)
			for _, r := range ra {
				prev := snapshot.Deny // a flow that did not exist before (new endpoint) counts as denied
				for _, q := range rb {
					if q.Port == r.Port && q.Protocol == r.Protocol {
						prev = q.Verdict
					}
				}
				if prev != r.Verdict {
					out = append(out, FlowChange{From: r.From, To: r.To, Port: r.Port, Protocol: r.Protocol,
						Before: prev, After: r.Verdict, Egress: r.Egress, Ingress: r.Ingress})
				}
			}
		}
	}
	return out, truncated
}

// namedPeer is an endpoint known before and/or after the change.
type namedPeer struct{ id, name string }

func (n namedPeer) peer(c *snapshot.Cluster) []snapshot.Peer {
	for i, l := range c.Endpoints() {
		if l.Endpoint.ID == n.id {
			return []snapshot.Peer{{Endpoint: &c.Endpoints()[i]}}
		}
	}
	return nil
}

func unionPeers(cs ...*snapshot.Cluster) []namedPeer {
	seen := map[string]bool{}
	var out []namedPeer
	for _, c := range cs {
		for _, l := range c.Endpoints() {
			if !seen[l.Endpoint.ID] {
				seen[l.Endpoint.ID] = true
				out = append(out, namedPeer{id: l.Endpoint.ID, name: l.Name()})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func probePorts(snaps ...[]*snapshot.Snapshot) []snapshot.PortSpec {
	type key struct {
		port  uint16
		proto uint8
	}
	seen := map[key]bool{}
	named := map[string]bool{}
	add := func(proto *uint8, rs []snapshot.PortRange) {
		protos := []uint8{6, 17}
		if proto != nil {
			protos = []uint8{*proto}
		}
		for _, r := range rs {
			for _, p := range protos {
				if p == 6 || p == 17 || p == 132 {
					seen[key{r.Min, p}] = true
				}
			}
		}
	}
	for _, list := range snaps {
		for _, s := range list {
			for _, pol := range s.Policies {
				for _, rules := range [][]snapshot.Rule{pol.Inbound, pol.Outbound} {
					for _, r := range rules {
						add(r.Protocol, r.DstPorts)
						add(r.Protocol, r.NotDstPorts)
					}
				}
			}
			for _, e := range s.Endpoints {
				for _, np := range e.Ports {
					named[np.Name] = true
				}
			}
		}
	}
	// One port that no rule names stands for every other port.
	other := uint16(65535)
	for seen[key{other, 6}] && other > 1 {
		other--
	}
	seen[key{other, 6}] = true
	var out []snapshot.PortSpec
	for k := range seen {
		out = append(out, snapshot.PortSpec{Number: k.port, Protocol: k.proto})
	}
	for n := range named {
		out = append(out, snapshot.PortSpec{Name: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func writePlanText(w io.Writer, p *Plan) {
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "invalid (left out of the plan): %s\n", pr)
	}
	changedNodes := 0
	for _, n := range p.Nodes {
		if len(n.Changes) == 0 && len(n.Operations) == 0 {
			continue
		}
		changedNodes++
		fmt.Fprintf(w, "node %s: %d changes\n", n.Node, len(n.Changes))
		for _, c := range n.Changes {
			sign := map[string]string{"added": "+", "removed": "-", "changed": "~"}[c.Op]
			fmt.Fprintf(w, "  %s %s\n", sign, c.Summary)
		}
		if len(n.Operations) > 0 {
			fmt.Fprintf(w, "  kernel operations (%d):\n", len(n.Operations))
			for _, op := range n.Operations {
				fmt.Fprintf(w, "    [%s] %s\n", op.Dataplane, op.Op)
			}
		}
	}
	if changedNodes == 0 {
		fmt.Fprintln(w, "no changes: the desired dataplane of every planned node stays the same")
	}
	if len(p.Connectivity) > 0 {
		// One line per (from, to, verdict change, reason), listing the ports it applies to.
		type group struct{ from, to, change, why string }
		var order []group
		ports := map[group][]string{}
		for _, c := range p.Connectivity {
			why := c.Ingress
			if c.Egress.Action == snapshot.Deny || c.After == snapshot.Allow && c.Egress.Decider == "rule" && c.Ingress.Decider != "rule" {
				why = c.Egress
			}
			g := group{c.From, c.To, fmt.Sprintf("%s → %s", c.Before, c.After), why.String()}
			if _, ok := ports[g]; !ok {
				order = append(order, g)
			}
			ports[g] = append(ports[g], fmt.Sprintf("%d/%s", c.Port, c.Protocol))
		}
		fmt.Fprintf(w, "connectivity changes (%d flows):\n", len(p.Connectivity))
		for _, g := range order {
			fmt.Fprintf(w, "  %s -> %s %s: %s (%s)\n", g.from, g.to, strings.Join(ports[g], ","), g.change, g.why)
		}
	} else if changedNodes > 0 {
		fmt.Fprintln(w, "connectivity changes: none among the probed flows")
	}
	if p.Truncated {
		fmt.Fprintln(w, "  (connectivity analysis stopped at --max-flows)")
	}
	fmt.Fprintf(w, "blast radius: %d nodes, %d endpoints\n", len(p.BlastRadius.Nodes), len(p.BlastRadius.Endpoints))
	for _, warn := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}
