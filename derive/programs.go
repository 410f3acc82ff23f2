package derive

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// defaultTierOrder is the order Calico gives the "default" tier it always creates.
const defaultTierOrder = 1_000_000

// tierInfo is a tier as policy ordering sees it.
type tierInfo struct {
	Name          string
	Exists        bool // a Tier resource exists; policies may name a tier that does not
	Order         *float64
	DefaultAction snapshot.Action
}

// tiers returns every tier by name. Calico always has a "default" tier (order 1,000,000,
// default action Deny); it is supplied when the input does not contain it.
func tiers(v *store.View) map[string]tierInfo {
	m := map[string]tierInfo{}
	for t := range store.List[*model.Tier](v, model.KindTier) {
		m[t.Key.Name] = tierInfo{Name: t.Key.Name, Exists: true, Order: t.Order, DefaultAction: defaultAction(t.DefaultAction)}
	}
	if _, ok := m["default"]; !ok {
		o := float64(defaultTierOrder)
		m["default"] = tierInfo{Name: "default", Exists: true, Order: &o, DefaultAction: snapshot.Deny}
	}
	return m
}

// defaultAction is what happens at the end of a tier when no policy decided: Pass only if the
// tier says so, Deny otherwise (also for a tier that does not exist).
func defaultAction(a model.Action) snapshot.Action {
	if a == model.ActionPass {
		return snapshot.Pass
	}
	return snapshot.Deny
}

// compareTiers is Felix's tier order: existing tiers before missing ones, then by order with
// a missing order last, then by name.
func compareTiers(a, b tierInfo) int {
	if a.Exists != b.Exists {
		if a.Exists {
			return -1
		}
		return 1
	}
	return cmp.Or(compareOrder(a.Order, b.Order), strings.Compare(a.Name, b.Name))
}

func compareOrder(a, b *float64) int {
	return cmp.Compare(orderValue(a), orderValue(b))
}

// orderValue maps a missing order to +Inf, so it sorts after every explicit order.
func orderValue(o *float64) float64 {
	if o == nil {
		return math.Inf(1)
	}
	return *o
}

// rankedPolicy is a policy with its place in the global evaluation order.
type rankedPolicy struct {
	Policy *model.Policy
	ID     string
	Tier   tierInfo
	Sort   string // Felix's tie-break name (see backendName)
}

// backendName is the name Felix sees for a policy and breaks order ties with: Calico's backend
// stores a default-tier policy "NAME" as "default.NAME" (Kubernetes-derived and OpenStack
// policy names excepted), and a namespaced policy as "NAMESPACE/" followed by that.
func backendName(p *model.Policy) string {
	name := p.Key.Name
	formatted := false
	for _, prefix := range []string{"knp.default.", "kanp.adminnetworkpolicy.", "kbanp.baselineadminnetworkpolicy.", "ossg."} {
		formatted = formatted || strings.HasPrefix(name, prefix)
	}
	if !formatted && !strings.Contains(name, ".") {
		name = "default." + name
	}
	if p.Key.Namespace != "" {
		name = p.Key.Namespace + "/" + name
	}
	return name
}

// comparePolicies is Felix's evaluation order of two policies: tier, then policy order
// (missing last), then backend name. Sort is computed when a caller left it empty.
func comparePolicies(a, b *rankedPolicy) int {
	sa, sb := a.Sort, b.Sort
	if sa == "" {
		sa = backendName(a.Policy)
	}
	if sb == "" {
		sb = backendName(b.Policy)
	}
	return cmp.Or(compareTiers(a.Tier, b.Tier), compareOrder(a.Policy.Order, b.Policy.Order),
		strings.Compare(sa, sb), strings.Compare(a.ID, b.ID))
}

// governs reports whether a policy applies in a direction: no types means both.
func governs(p *model.Policy, t model.PolicyType) bool {
	if len(p.Types) == 0 {
		return true
	}
	for _, pt := range p.Types {
		if strings.EqualFold(string(pt), string(t)) {
			return true
		}
	}
	return false
}

// assumedNeeded reports Calico's AssumeNeededOnEveryNode performance hint.
func assumedNeeded(p *model.Policy) bool {
	return slices.Contains(p.PerformanceHints, "AssumeNeededOnEveryNode")
}

// program selects which of an endpoint's policies go into one of its policy programs.
type program int

const (
	programNormal    program = iota // filter: neither doNotTrack nor preDNAT; workload endpoints get only this
	programUntracked                // doNotTrack policies (raw table); tiers default to Pass
	programPreDNAT                  // preDNAT policies, ingress only; tiers default to Pass
	programForward                  // applyOnForward policies that are neither doNotTrack nor preDNAT
)

// inProgram is Felix's split of an endpoint's policies between its programs.
func inProgram(p *model.Policy, prog program) bool {
	switch prog {
	case programUntracked:
		return p.DoNotTrack
	case programPreDNAT:
		return !p.DoNotTrack && p.PreDNAT
	case programForward:
		return !p.DoNotTrack && !p.PreDNAT && p.ApplyOnForward
	}
	return !p.DoNotTrack && !p.PreDNAT
}

// direction builds one direction of one program from the endpoint's matching policies (in
// evaluation order): tiers that have a policy for this direction, each with its default
// action, then the profiles. Pure: depends only on its arguments.
func direction(matched []*rankedPolicy, prog program, dir model.PolicyType, profiles []string) snapshot.Direction {
	var d snapshot.Direction
	if prog == programPreDNAT && dir == model.PolicyTypeEgress {
		return d
	}
	for _, rp := range matched {
		if !inProgram(rp.Policy, prog) || !governs(rp.Policy, dir) {
			continue
		}
		if n := len(d.Tiers); n == 0 || d.Tiers[n-1].Tier != rp.Tier.Name {
			act := rp.Tier.DefaultAction
			if prog == programUntracked || prog == programPreDNAT {
				// Untracked and pre-DNAT tiers fall through to the normal program.
				act = snapshot.Pass
			}
			d.Tiers = append(d.Tiers, snapshot.TierPolicies{Tier: rp.Tier.Name, DefaultAction: act})
		}
		t := &d.Tiers[len(d.Tiers)-1]
		t.Policies = append(t.Policies, rp.ID)
	}
	// Only the normal program consults profiles; untracked, pre-DNAT and forward programs end
	// after their tiers (a forward program with no tier allows).
	if prog == programNormal && len(profiles) > 0 {
		d.Profiles = slices.Clone(profiles)
	}
	return d
}
