package derive

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/model/store"
)

// The property tests run Derive over a small random cluster universe: every object is
// identified by a key and generated deterministically from (key, version), so the same state
// can be rebuilt fresh at any time, and a "label flip" or "update" is a version change.

var (
	propNodes  = []string{"n0", "n1", "n2"}
	propNS     = []string{"ns0", "ns1", "ns2"}
	propApps   = []string{"web", "db", "cache", "batch"}
	propTiers  = []string{"security", "platform", "default"}
	propSelect = []string{"all()", "app == 'web'", "app in {'db', 'cache'}", "has(tier)", "!has(app)", "pcns.env == 'prod'",
		"app == 'db' || role == 'edge'", "kind == 'ext'", "global()", "app starts with 'c'"}
)

// propKey names one object of the universe.
type propKey struct {
	Kind  model.Kind
	Index int
}

// propUniverse lists every key of the universe.
func propUniverse() []propKey {
	var keys []propKey
	add := func(k model.Kind, n int) {
		for i := range n {
			keys = append(keys, propKey{k, i})
		}
	}
	add(model.KindProfile, len(propNS))
	add(model.KindWorkloadEndpoint, 12)
	add(model.KindHostEndpoint, 3)
	add(model.KindNetworkSet, 2)
	add(model.KindGlobalNetworkSet, 2)
	add(model.KindTier, 2)
	add(model.KindGlobalNetworkPolicy, 6)
	add(model.KindNetworkPolicy, 6)
	return keys
}

func propRand(k propKey, version int) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d/%d", k.Kind, k.Index, version)
	return rand.New(rand.NewPCG(h.Sum64(), 7))
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// propObject generates the object for key at version: a new value every call.
func propObject(k propKey, version int) model.Object {
	r := propRand(k, version)
	i := k.Index
	switch k.Kind {
	case model.KindProfile:
		l := model.Labels{"pcns.projectcalico.org/name": propNS[i]}
		if r.IntN(2) == 0 {
			l["pcns.env"] = "prod"
		}
		p := profile("kns."+propNS[i], l, propRules(r, "ingress"), propRules(r, "egress"))
		return p
	case model.KindWorkloadEndpoint:
		labels := model.Labels{}
		if r.IntN(5) > 0 {
			labels["app"] = pick(r, propApps)
		}
		if r.IntN(3) == 0 {
			labels["tier"] = "x"
		}
		ips := []string{fmt.Sprintf("10.0.%d.%d/32", i/8, i%8+1)}
		if r.IntN(2) == 0 {
			ips = append(ips, fmt.Sprintf("fd00::%x/128", i+1))
		}
		w := wep(propNS[i%len(propNS)], fmt.Sprintf("w%d", i), propNodes[i%len(propNodes)], labels, ips...)
		if r.IntN(2) == 0 {
			w.Ports = []model.NamedPort{{Name: "http", Protocol: model.ProtoTCP, Port: uint16(8000 + r.IntN(3))}}
		}
		return w
	case model.KindHostEndpoint:
		labels := model.Labels{"role": pick(r, []string{"edge", "core"})}
		return hep(fmt.Sprintf("h%d", i), propNodes[i], pick(r, []string{"eth0", "*"}), labels, fmt.Sprintf("192.168.0.%d", i+1))
	case model.KindNetworkSet, model.KindGlobalNetworkSet:
		ns := ""
		if k.Kind == model.KindNetworkSet {
			ns = propNS[i]
		}
		return netset(ns, fmt.Sprintf("set%d", i), model.Labels{"kind": pick(r, []string{"ext", "int"})},
			fmt.Sprintf("203.0.%d.0/24", r.IntN(4)), "2001:db8::/32")
	case model.KindTier:
		var order *float64
		if r.IntN(3) > 0 {
			order = f64(float64(r.IntN(3) * 10))
		}
		return tier(propTiers[i], order, pick(r, []model.Action{"", model.ActionPass, model.ActionDeny}))
	case model.KindGlobalNetworkPolicy, model.KindNetworkPolicy:
		var order *float64
		if r.IntN(3) > 0 {
			order = f64(float64(r.IntN(4)))
		}
		var types []model.PolicyType
		switch r.IntN(4) {
		case 1:
			types = []model.PolicyType{model.PolicyTypeIngress}
		case 2:
			types = []model.PolicyType{model.PolicyTypeEgress}
		case 3:
			types = []model.PolicyType{model.PolicyTypeIngress, model.PolicyTypeEgress}
		}
		name := fmt.Sprintf("p%d", i)
		t := pick(r, propTiers)
		var p *model.Policy
		if k.Kind == model.KindNetworkPolicy {
			p = np(propNS[i%len(propNS)], name, t, order, pick(r, propSelect), propRules(r, "ingress"), propRules(r, "egress"), types...)
		} else {
			p = gnp(name, t, order, pick(r, propSelect), propRules(r, "ingress"), propRules(r, "egress"), types...)
			p.DoNotTrack = r.IntN(6) == 0
			p.PreDNAT = !p.DoNotTrack && r.IntN(6) == 0
			p.ApplyOnForward = p.DoNotTrack || p.PreDNAT || r.IntN(3) == 0
			if r.IntN(8) == 0 {
				p.PerformanceHints = []string{"AssumeNeededOnEveryNode"}
			}
		}
		return p
	}
	panic("unknown kind " + k.Kind)
}

func propRules(r *rand.Rand, _ string) []model.Rule {
	n := r.IntN(3)
	var out []model.Rule
	for range n {
		rule := model.Rule{Action: pick(r, []model.Action{model.ActionAllow, model.ActionDeny, model.ActionPass, model.ActionLog})}
		switch r.IntN(6) {
		case 0:
			rule.Source.Selector = sel(pick(r, propSelect))
		case 1:
			rule.Source.Selector = sel(pick(r, propSelect))
			rule.Source.NotSelector = sel(pick(r, propSelect))
		case 2:
			rule.Protocol = u8(model.ProtoTCP)
			rule.Destination.Ports = []model.Port{{Name: "http"}}
			if r.IntN(2) == 0 {
				rule.Destination.Selector = sel(pick(r, propSelect))
			}
		case 3:
			rule.Source.Nets = []netip.Prefix{pfx(pick(r, []string{"10.0.0.0/16", "fd00::/64", "0.0.0.0/0"}))}
		case 4:
			rule.Destination.NotSelector = sel(pick(r, propSelect))
			rule.Protocol = u8(model.ProtoUDP)
			rule.Destination.Ports = []model.Port{{Min: 53, Max: 53}}
		}
		out = append(out, rule)
	}
	return out
}

func (k propKey) modelKey() model.Key { return propObject(k, 0).GetMeta().Key }

// encodeDerive derives node from v and returns its canonical YAML.
func encodeDerive(t *testing.T, v *store.View, node string, opts Options) []byte {
	t.Helper()
	s, err := Derive(v, node, opts)
	if err != nil {
		t.Fatalf("Derive(%s): %v", node, err)
	}
	b, err := s.YAML()
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	return b
}

// freshStore loads a state (key -> version) into a new store in one write.
func freshStore(t *testing.T, state map[propKey]int, order []propKey) *store.Store {
	t.Helper()
	var objs []model.Object
	for _, k := range order {
		if v, ok := state[k]; ok {
			objs = append(objs, propObject(k, v))
		}
	}
	return newStore(t, objs...)
}

// TestDeterminism: the encoding is byte-identical across runs and across insertion orders
// (whole-batch permutations and one write per object).
func TestDeterminism(t *testing.T) {
	keys := propUniverse()
	state := map[propKey]int{}
	for _, k := range keys {
		state[k] = 0
	}
	want := map[string][]byte{}
	base := freshStore(t, state, keys).View()
	for _, n := range propNodes {
		want[n] = encodeDerive(t, base, n, Options{})
		if again := encodeDerive(t, base, n, Options{}); !bytes.Equal(want[n], again) {
			t.Fatalf("node %s: two derivations of one view differ:\n%s", n, cmp.Diff(string(want[n]), string(again)))
		}
	}
	if bytes.Count(want["n0"], []byte("\n")) < 50 {
		t.Fatalf("universe too small to test anything:\n%s", want["n0"])
	}
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 40 {
		perm := slices.Clone(keys)
		r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		var st *store.Store
		if trial%2 == 0 {
			st = freshStore(t, state, perm)
		} else {
			st = store.New()
			for _, k := range perm {
				if _, err := st.Write(store.Batch{Upserts: []model.Object{propObject(k, 0)}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, n := range propNodes {
			if got := encodeDerive(t, st.View(), n, Options{}); !bytes.Equal(want[n], got) {
				t.Fatalf("trial %d node %s: insertion order changed the snapshot (-want +got):\n%s", trial, n, cmp.Diff(string(want[n]), string(got)))
			}
		}
	}
}

// TestDeterminismAllOrders inserts a small cluster in every one of its orders (one write per
// object) and requires byte-identical snapshots.
func TestDeterminismAllOrders(t *testing.T) {
	objs := func() []model.Object {
		return []model.Object{
			nsProfile("ns1", model.Labels{"env": "prod"}),
			wep("ns1", "a", "n1", model.Labels{"app": "web"}, "10.0.0.1/32"),
			wep("ns1", "b", "n2", model.Labels{"app": "db"}, "10.0.0.2/32", "fd00::2/128"),
			tier("sec", f64(1), model.ActionPass),
			gnp("g", "sec", nil, "app == 'web'", []model.Rule{{Action: model.ActionAllow, Source: model.EntityRule{Selector: sel("app == 'db'")}}}, nil),
			netset("", "ext", model.Labels{"app": "db"}, "198.51.100.0/24"),
		}
	}
	want := encodeDerive(t, newStore(t, objs()...).View(), "n1", Options{})
	idx := []int{0, 1, 2, 3, 4, 5}
	count := 0
	var permute func(int)
	permute = func(k int) {
		if k == len(idx) {
			count++
			all := objs()
			st := store.New()
			for _, i := range idx {
				if _, err := st.Write(store.Batch{Upserts: []model.Object{all[i]}}); err != nil {
					t.Fatal(err)
				}
			}
			if got := encodeDerive(t, st.View(), "n1", Options{}); !bytes.Equal(want, got) {
				t.Fatalf("order %v changed the snapshot (-want +got):\n%s", idx, cmp.Diff(string(want), string(got)))
			}
			return
		}
		for i := k; i < len(idx); i++ {
			idx[k], idx[i] = idx[i], idx[k]
			permute(k + 1)
			idx[k], idx[i] = idx[i], idx[k]
		}
	}
	permute(0)
	if count != 720 {
		t.Fatalf("tried %d orders, want 720", count)
	}
}

// TestNoHysteresis applies random sequences of adds, updates (label flips and every other
// field), deletes, duplicated updates and reordered batches through store.Write, and checks
// that the snapshot then equals that of the final state loaded into a fresh store.
func TestNoHysteresis(t *testing.T) {
	keys := propUniverse()
	for seq := range 30 {
		r := rand.New(rand.NewPCG(uint64(seq), 99))
		st := store.New()
		state := map[propKey]int{}
		for step := 0; step < 60; step++ {
			var b store.Batch
			touched := map[propKey]bool{}
			for range 1 + r.IntN(4) {
				k := pick(r, keys)
				if touched[k] {
					continue // one operation per key per batch; order inside a batch is random
				}
				touched[k] = true
				v, present := state[k]
				switch op := r.IntN(10); {
				case op < 5: // add or update to a new version
					nv := r.IntN(6)
					state[k] = nv
					b.Upserts = append(b.Upserts, propObject(k, nv))
				case op < 7 && present: // duplicate update: same content again
					b.Upserts = append(b.Upserts, propObject(k, v))
				default: // delete (possibly of a missing key)
					delete(state, k)
					b.Deletes = append(b.Deletes, k.modelKey())
				}
			}
			r.Shuffle(len(b.Upserts), func(i, j int) { b.Upserts[i], b.Upserts[j] = b.Upserts[j], b.Upserts[i] })
			if _, err := st.Write(b); err != nil {
				t.Fatalf("seq %d step %d: %v", seq, step, err)
			}
			if step%15 != 14 {
				continue
			}
			fresh := freshStore(t, state, keys).View()
			for _, n := range propNodes {
				got := encodeDerive(t, st.View(), n, Options{})
				want := encodeDerive(t, fresh, n, Options{})
				if !bytes.Equal(want, got) {
					t.Fatalf("seq %d step %d node %s: snapshot after updates differs from fresh load (-fresh +updated):\n%s",
						seq, step, n, cmp.Diff(string(want), string(got)))
				}
			}
		}
	}
}

// TestViewNotMutated derives every node (with and without AllPoliciesActive) and checks every
// stored object still equals a freshly generated copy.
func TestViewNotMutated(t *testing.T) {
	keys := propUniverse()
	state := map[propKey]int{}
	for i, k := range keys {
		state[k] = i % 3
	}
	v := freshStore(t, state, keys).View()
	for _, n := range append(propNodes, "nowhere") {
		for _, all := range []bool{false, true} {
			if _, err := Derive(v, n, Options{AllPoliciesActive: all}); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts := cmp.Options{
		cmpOpts,
		cmpopts.IgnoreFields(model.Meta{}, "Revision"),
		cmp.Comparer(func(a, b *selector.Selector) bool {
			return (a == nil) == (b == nil) && (a == nil || a.String() == b.String())
		}),
	}
	for _, k := range keys {
		want := propObject(k, state[k])
		got, ok := v.Get(want.GetMeta().Key)
		if !ok {
			t.Fatalf("%s vanished from the view", want.GetMeta().Key)
		}
		if diff := cmp.Diff(want, got, opts); diff != "" {
			t.Errorf("%s changed during Derive (-before +after):\n%s", want.GetMeta().Key, diff)
		}
	}
}

// TestIndexedMembersEqualScan: the label index only narrows the search; every selector set
// and named-port set equals the exhaustive evaluation over all holders.
func TestIndexedMembersEqualScan(t *testing.T) {
	keys := propUniverse()
	state := map[propKey]int{}
	for i, k := range keys {
		state[k] = i % 4
	}
	v := freshStore(t, state, keys).View()
	exprs := append(slices.Clone(propSelect), "app == 'web' && app == 'db'", "app in {'web', 'db'} && has(tier)",
		"!has(app) || app == 'cache'", "kind == 'ext' && has(projectcalico.org/namespace)", "app not in {'web'}",
		"app == 'web' && has(pcns.team)", "pcns.team in {'x', 'y'}", "has(nosuchlabel)", "nosuchlabel == 'x'")
	var sels []*selector.Selector
	for _, e := range exprs {
		sels = append(sels, sel(e))
	}
	// The index planned for every selector, for half of them (the others must still get
	// every match: an unplanned restriction is not used), and for none.
	plans := map[string][]*selector.Selector{"all": sels, "half": sels[:len(sels)/2], "none": nil}
	for plan, planned := range plans {
		hs := holders(v, listAll[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint), profileLabels(v), planned)
		for _, e := range exprs {
			for _, d := range []ipSetDef{selectorSet(sel(e)), namedPortSet(sel(e), "http", model.ProtoTCP)} {
				want := ipSetMembers(d, hs.items, nil)
				if diff := cmp.Diff(want, indexedMembers(d, hs, nil), cmpOpts); diff != "" {
					t.Errorf("plan %s, %s: indexed members differ from a full scan (-scan +indexed):\n%s", plan, d.source(), diff)
				}
			}
		}
	}
}

// TestFullLabelIndexCandidates: the full index (every label) gives every match of every
// selector among its candidates, each at most once.
func TestFullLabelIndexCandidates(t *testing.T) {
	keys := propUniverse()
	state := map[propKey]int{}
	for i, k := range keys {
		state[k] = i % 4
	}
	v := freshStore(t, state, keys).View()
	hs := holders(v, listAll[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint), profileLabels(v), nil)
	labels := make([]*selector.Labels, len(hs.items))
	for i := range hs.items {
		labels[i] = hs.items[i].src.labels(nil)
	}
	idx := newLabelIndex(labels)
	exprs := append(slices.Clone(propSelect), "app == 'web' && app == 'db'", "has(nosuchlabel)", "nosuchlabel in {'a', 'b'}", "pcns.team == 'x'")
	for _, e := range exprs {
		s := sel(e)
		var want, got []int
		for i, l := range labels {
			if s.EvaluateLabels(l) {
				want = append(want, i)
			}
		}
		seen := map[int]bool{}
		c := idx.candidates(s)
		c.each(func(i int) {
			if seen[i] {
				t.Errorf("%s: candidate %d given twice", e, i)
			}
			seen[i] = true
			match := s.EvaluateLabels(labels[i])
			if c.exact && !match {
				t.Errorf("%s: candidate %d does not match, but the index called its candidates exact", e, i)
			}
			if match {
				got = append(got, i)
			}
		})
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: matches among candidates differ from a scan (-scan +index):\n%s", e, diff)
		}
	}
}

// TestAllPoliciesActiveOnlyAddsPolicies: the option activates more policies (and their IP
// sets) but never changes an endpoint's programs, which depend on selectors alone.
func TestAllPoliciesActiveOnlyAddsPolicies(t *testing.T) {
	keys := propUniverse()
	for version := range 4 {
		state := map[propKey]int{}
		for _, k := range keys {
			state[k] = version
		}
		v := freshStore(t, state, keys).View()
		for _, n := range propNodes {
			some, err := Derive(v, n, Options{})
			if err != nil {
				t.Fatal(err)
			}
			all, err := Derive(v, n, Options{AllPoliciesActive: true})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(some.Endpoints, all.Endpoints, cmpOpts); diff != "" {
				t.Errorf("v%d %s: AllPoliciesActive changed endpoint programs (-default +all):\n%s", version, n, diff)
			}
			if diff := cmp.Diff(some.HostEndpoints, all.HostEndpoints, cmpOpts); diff != "" {
				t.Errorf("v%d %s: AllPoliciesActive changed host endpoint programs (-default +all):\n%s", version, n, diff)
			}
			for _, p := range some.Policies {
				q, ok := all.Policy(p.ID)
				if !ok {
					t.Errorf("v%d %s: policy %s active by default but not with AllPoliciesActive", version, n, p.ID)
				} else if diff := cmp.Diff(p, q, cmpOpts); diff != "" {
					t.Errorf("v%d %s: policy %s differs (-default +all):\n%s", version, n, p.ID, diff)
				}
			}
			if got, want := len(all.Policies), len(propUniverseKinds(keys)); got != want {
				t.Errorf("v%d %s: AllPoliciesActive gave %d policies, want every one of %d", version, n, got, want)
			}
		}
	}
}

// propUniverseKinds keeps the policy keys.
func propUniverseKinds(keys []propKey) []propKey {
	var out []propKey
	for _, k := range keys {
		if k.Kind == model.KindGlobalNetworkPolicy || k.Kind == model.KindNetworkPolicy {
			out = append(out, k)
		}
	}
	return out
}
