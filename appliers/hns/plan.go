package hns

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Observed is HNS's state as felis reads it.
type Observed struct {
	Endpoints []ObservedEndpoint // by ID
	Routes    []RemoteSubnetRoute
}

// ObservedEndpoint is an HNS endpoint with its decoded ACL list.
type ObservedEndpoint struct {
	ID    string
	Name  string
	Addrs []netip.Addr
	Rules []Rule
	// Undecodable is set when some ACL could not be decoded (not felis's form); the
	// endpoint then never matches a desired list and is rewritten.
	Undecodable bool
}

// Observe reads HNS through c.
func Observe(ctx context.Context, c Client) (Observed, error) {
	eps, err := c.Endpoints(ctx)
	if err != nil {
		return Observed{}, fmt.Errorf("list HNS endpoints: %w", err)
	}
	routes, err := c.RemoteSubnetRoutes(ctx)
	if err != nil {
		return Observed{}, fmt.Errorf("list HNS remote subnet routes: %w", err)
	}
	var o Observed
	for _, e := range eps {
		oe := ObservedEndpoint{ID: e.ID, Name: e.Name, Addrs: e.Addrs}
		for _, s := range e.ACLs {
			r, err := s.Parse()
			if err != nil {
				oe.Undecodable = true
				continue
			}
			oe.Rules = append(oe.Rules, r)
		}
		o.Endpoints = append(o.Endpoints, oe)
	}
	slices.SortFunc(o.Endpoints, func(a, b ObservedEndpoint) int { return strings.Compare(a.ID, b.ID) })
	o.Routes = slices.Clone(routes)
	return o, nil
}

// OpKind names an HNS operation.
type OpKind string

// HNS operation kinds.
const (
	OpSetACLs     OpKind = "set-acls"     // replace one endpoint's whole ACL list
	OpRouteAdd    OpKind = "route-add"    // add a RemoteSubnetRoute network policy
	OpRouteRemove OpKind = "route-remove" // remove one
)

// Op is one HNS call.
type Op struct {
	Kind       OpKind
	EndpointID string // HNS endpoint GUID (set-acls)
	Endpoint   string // felis endpoint ID (set-acls)
	Rules      []Rule // the endpoint's complete new list (set-acls)
	Route      RemoteSubnetRoute
}

// String is the op's canonical text: one header line, then one line per rule for set-acls.
func (o Op) String() string {
	switch o.Kind {
	case OpSetACLs:
		var b strings.Builder
		fmt.Fprintf(&b, "set-acls %s (hns %s): %d rules", o.Endpoint, o.EndpointID, len(o.Rules))
		for _, r := range o.Rules {
			b.WriteString("\n  " + r.String())
		}
		return b.String()
	default:
		return string(o.Kind) + " " + o.Route.String()
	}
}

// Plan is the outcome of planning: the ops to run and what could not be planned.
type Plan struct {
	Ops []Op
	// Missing lists felis endpoints with no HNS endpoint holding their address yet (the CNI
	// plugin has not created it); they are planned once it appears.
	Missing []string
	// Kept lists endpoints whose policy cannot be rendered (EndpointACL.Err): HNS keeps
	// what it has, or gets a block-all list if it has nothing (an empty list allows all).
	Kept []error
}

// failClosed is the list for an endpoint felis must police but cannot render.
func failClosed() []Rule {
	return []Rule{
		{Direction: In, Priority: PolicyRuleBasePriority, Action: Block, Type: Switch, Protocol: AnyProtocol},
		{Direction: Out, Priority: PolicyRuleBasePriority, Action: Block, Type: Switch, Protocol: AnyProtocol},
	}
}

// PlanOps computes the minimal ops that turn observed into desired: an endpoint whose list
// already matches is not touched (each ACL update disrupts its traffic); routes are removed
// before they are added. HNS endpoints that hold no felis endpoint's address are not felis's
// and are left alone; every RemoteSubnetRoute on felis's network is felis's (as in Calico).
func PlanOps(desired Desired, observed Observed) Plan {
	var p Plan
	byAddr := map[netip.Addr]*ObservedEndpoint{}
	for i := range observed.Endpoints {
		for _, a := range observed.Endpoints[i].Addrs {
			if _, dup := byAddr[a]; !dup {
				byAddr[a] = &observed.Endpoints[i]
			}
		}
	}
	for _, d := range desired.Endpoints {
		var o *ObservedEndpoint
		for _, a := range d.Addrs {
			if o = byAddr[a]; o != nil {
				break
			}
		}
		if o == nil {
			p.Missing = append(p.Missing, d.Endpoint)
			continue
		}
		want := d.Rules
		if d.Err != nil {
			p.Kept = append(p.Kept, d.Err)
			if len(o.Rules) > 0 || o.Undecodable {
				continue
			}
			want = failClosed()
		}
		if !o.Undecodable && sameRules(want, o.Rules) {
			continue
		}
		p.Ops = append(p.Ops, Op{Kind: OpSetACLs, EndpointID: o.ID, Endpoint: d.Endpoint, Rules: want})
	}
	want := map[netip.Prefix]RemoteSubnetRoute{}
	for _, r := range desired.Routes {
		want[r.DestinationPrefix] = r
	}
	have := map[netip.Prefix]bool{}
	var removes, adds []Op
	for _, r := range observed.Routes {
		if w, ok := want[r.DestinationPrefix]; ok && w == r && !have[r.DestinationPrefix] {
			have[r.DestinationPrefix] = true
			continue
		}
		removes = append(removes, Op{Kind: OpRouteRemove, Route: r})
	}
	for _, r := range desired.Routes {
		if !have[r.DestinationPrefix] {
			adds = append(adds, Op{Kind: OpRouteAdd, Route: r})
		}
	}
	byPrefix := func(a, b Op) int { return snapshot.ComparePrefix(a.Route.DestinationPrefix, b.Route.DestinationPrefix) }
	slices.SortFunc(removes, byPrefix)
	slices.SortFunc(adds, byPrefix)
	p.Ops = append(append(removes, adds...), p.Ops...)
	return p
}

// sameRules compares two lists as HNS holds them: by direction and priority; rules sharing a
// priority (runs of equal action in very long lists) may come back in any order.
func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	order := func(x, y Rule) int {
		if c := strings.Compare(string(x.Direction), string(y.Direction)); c != 0 {
			return c
		}
		return cmp.Compare(x.Priority, y.Priority)
	}
	sa, sb := slices.Clone(a), slices.Clone(b)
	slices.SortStableFunc(sa, order)
	slices.SortStableFunc(sb, order)
	if slices.EqualFunc(sa, sb, equalRule) {
		return true
	}
	// Only a shared priority can make equal lists differ in order: compare those as text.
	for i := 1; i < len(sa); i++ {
		if order(sa[i-1], sa[i]) == 0 {
			key := func(r Rule) string { return fmt.Sprintf("%s %05d %s", r.Direction, r.Priority, r) }
			ka, kb := make([]string, len(sa)), make([]string, len(sb))
			for j := range sa {
				ka[j], kb[j] = key(sa[j]), key(sb[j])
			}
			slices.Sort(ka)
			slices.Sort(kb)
			return slices.Equal(ka, kb)
		}
	}
	return false
}

func equalRule(x, y Rule) bool {
	return x.Direction == y.Direction && x.Priority == y.Priority && x.Action == y.Action && x.Type == y.Type &&
		x.Protocol == y.Protocol && slices.Equal(x.LocalAddresses, y.LocalAddresses) &&
		slices.Equal(x.RemoteAddresses, y.RemoteAddresses) && slices.Equal(x.LocalPorts, y.LocalPorts) &&
		slices.Equal(x.RemotePorts, y.RemotePorts)
}
