package render

import (
	"fmt"
	"slices"
	"strings"

	"github.com/felis-dev/felis/diff"
)

// Object is one kernel object felis manages: a Link, Sysctl, ProxyNeigh, Neigh, FDB or Route.
type Object interface {
	// String renders the object in ip/bridge/sysctl syntax.
	String() string
	isObject()
}

func (Link) isObject()       {}
func (Sysctl) isObject()     {}
func (ProxyNeigh) isObject() {}
func (Neigh) isObject()      {}
func (FDB) isObject()        {}
func (Route) isObject()      {}

// Op is one kernel operation: Add creates Object, Replace turns Old into Object, Delete
// removes Object. Ops are plain data; Apply executes them in order.
type Op struct {
	Kind   diff.Kind
	Object Object
	Old    Object // Replace only: the observed object
}

// String renders the op as the command that does it, e.g. "ip route add 10.0.0.1/32 dev
// cali1 proto 80 scope link", "bridge fdb replace ...", "sysctl -w KEY=VALUE",
// "ip link set vxlan.calico mtu 1400".
func (o Op) String() string {
	switch x := o.Object.(type) {
	case Route:
		return "ip route " + verb(o.Kind) + " " + x.String()
	case Neigh:
		return "ip neigh " + verb(o.Kind) + " " + x.String()
	case FDB:
		return "bridge fdb " + verb(o.Kind) + " " + x.String()
	case Sysctl:
		return "sysctl -w " + x.Key() + "=" + x.Value
	case ProxyNeigh:
		return "ip -6 neigh " + verb(o.Kind) + " proxy " + x.IP.String() + " dev " + x.Dev
	case Link:
		switch o.Kind {
		case diff.Add:
			return "ip link add " + x.String()
		case diff.Delete:
			return "ip link del " + x.Name
		default:
			old, _ := o.Old.(Link)
			return "ip link set " + x.Name + " " + strings.Join(LinkChanges(old, x), " ")
		}
	}
	return fmt.Sprintf("%s %v", o.Kind, o.Object)
}

func verb(k diff.Kind) string {
	if k == diff.Delete {
		return "del"
	}
	return k.String()
}

// LinkChanges lists what turns device old into new in place, in `ip link set` words:
// "mtu N", "address MAC", "up"/"down", "addr add P", "addr del P".
func LinkChanges(old, new Link) []string {
	var out []string
	if new.MTU != 0 && new.MTU != old.MTU {
		out = append(out, fmt.Sprintf("mtu %d", new.MTU))
	}
	if new.MAC != "" && new.MAC != old.MAC {
		out = append(out, "address "+new.MAC)
	}
	adds, dels := diff.Members(new.Addrs, old.Addrs, comparePrefix)
	for _, a := range adds {
		out = append(out, "addr add "+a.String())
	}
	for _, a := range dels {
		out = append(out, "addr del "+a.String())
	}
	if new.Up != old.Up {
		if new.Up {
			out = append(out, "up")
		} else {
			out = append(out, "down")
		}
	}
	return out
}

// Plan returns the ops that turn observed into desired, in an order the kernel accepts:
// unwanted devices are deleted first (the kernel takes their routes, neighbours and FDB entries
// with them; nothing desired lives on them), as is a device the kernel cannot change in place
// (re-created next); then devices are added or modified, then sysctls, neighbours and FDB
// entries, then routes (a changed route is one replace), then deletes in reverse: routes, FDB,
// neighbours. Sysctls and proxy entries are never deleted: they vanish with their interface.
// Plan(x, x) is empty.
func Plan(desired, observed State) []Op {
	var pre, ops []Op

	gone := map[string]bool{} // devices deleted (for good or for re-creation)
	for _, op := range diff.Plan(byKey(desired.Links, linkName), byKey(observed.Links, linkName),
		func(d, o Link) bool { return d.equal(o) }, func(string, Link) int { return 0 }) {
		switch {
		case op.Kind == diff.Replace && !op.New.sameTunnel(op.Old):
			pre = append(pre, Op{Kind: diff.Delete, Object: op.Old})
			ops = append(ops, Op{Kind: diff.Add, Object: op.New})
			gone[op.Key] = true
		case op.Kind == diff.Delete:
			// First, not last: nothing desired lives on it (Render sees to that), and the
			// kernel removing its routes at once frees their destinations for desired ones.
			pre = append(pre, Op{Kind: diff.Delete, Object: op.Old})
			gone[op.Key] = true
		default:
			ops = append(ops, fromDiff(op))
		}
	}
	obsNeighs, obsFDB, obsRoutes := observed.Neighs, observed.FDB, observed.Routes
	if len(gone) > 0 {
		obsNeighs = slices.DeleteFunc(slices.Clone(obsNeighs), func(n Neigh) bool { return gone[n.Dev] })
		obsFDB = slices.DeleteFunc(slices.Clone(obsFDB), func(f FDB) bool { return gone[f.Dev] })
		obsRoutes = slices.DeleteFunc(slices.Clone(obsRoutes), func(r Route) bool { return gone[r.Dev] })
	}

	for _, op := range diff.Plan(byKey(desired.Sysctls, Sysctl.Key), byKey(observed.Sysctls, Sysctl.Key),
		func(d, o Sysctl) bool { return d.Value == o.Value }, func(string, Sysctl) int { return 0 }) {
		if op.Kind != diff.Delete {
			ops = append(ops, fromDiff(op))
		}
	}
	for _, op := range diff.Plan(byKey(desired.ProxyNeighs, ProxyNeigh.Key), byKey(observed.ProxyNeighs, ProxyNeigh.Key),
		func(d, o ProxyNeigh) bool { return d == o }, func(string, ProxyNeigh) int { return 0 }) {
		if op.Kind != diff.Delete {
			ops = append(ops, fromDiff(op))
		}
	}

	var neighDels, fdbDels []Op
	for _, op := range diff.Plan(byKey(desired.Neighs, Neigh.Key), byKey(obsNeighs, Neigh.Key),
		func(d, o Neigh) bool { return d == o }, func(string, Neigh) int { return 0 }) {
		if op.Kind == diff.Delete {
			neighDels = append(neighDels, fromDiff(op))
		} else {
			ops = append(ops, fromDiff(op))
		}
	}
	for _, op := range diff.Plan(byKey(desired.FDB, FDB.Key), byKey(obsFDB, FDB.Key),
		func(d, o FDB) bool { return d == o }, func(string, FDB) int { return 0 }) {
		if op.Kind == diff.Delete {
			fdbDels = append(fdbDels, fromDiff(op))
		} else {
			ops = append(ops, fromDiff(op))
		}
	}

	ops, routeDels := planRoutes(ops, desired.Routes, obsRoutes)
	for _, r := range observed.StrayRoutes {
		if !gone[r.Dev] {
			routeDels = append(routeDels, Op{Kind: diff.Delete, Object: r})
		}
	}

	out := make([]Op, 0, len(pre)+len(ops)+len(routeDels)+len(fdbDels)+len(neighDels))
	out = append(append(out, pre...), ops...)
	return append(append(append(out, routeDels...), fdbDels...), neighDels...)
}

// planRoutes merges two key-sorted route lists: adds and replaces are appended to ups, deletes
// returned separately. A metric change cannot be a replace (the kernel keys IPv4 routes by
// metric too), so it is a delete of the old route before the add.
func planRoutes(ups []Op, desired, observed []Route) (_, dels []Op) {
	i, j := 0, 0
	for i < len(desired) || j < len(observed) {
		// Fast path: in steady state nearly every pair is identical.
		if i < len(desired) && j < len(observed) && desired[i] == observed[j] {
			i++
			j++
			continue
		}
		var c int
		switch {
		case i == len(desired):
			c = 1
		case j == len(observed):
			c = -1
		default:
			c = desired[i].Key().Compare(observed[j].Key())
		}
		switch {
		case c < 0:
			ups = append(ups, Op{Kind: diff.Add, Object: desired[i]})
			i++
		case c > 0:
			dels = append(dels, Op{Kind: diff.Delete, Object: observed[j]})
			j++
		default:
			d, o := desired[i], observed[j]
			if d != o {
				if d.Metric != o.Metric {
					ups = append(ups, Op{Kind: diff.Delete, Object: o}, Op{Kind: diff.Add, Object: d})
				} else {
					ups = append(ups, Op{Kind: diff.Replace, Object: d, Old: o})
				}
			}
			i++
			j++
		}
	}
	return ups, dels
}

func fromDiff[V Object](op diff.Op[string, V]) Op {
	switch op.Kind {
	case diff.Add:
		return Op{Kind: diff.Add, Object: op.New}
	case diff.Replace:
		return Op{Kind: diff.Replace, Object: op.New, Old: op.Old}
	default:
		return Op{Kind: diff.Delete, Object: op.Old}
	}
}

func linkName(l Link) string { return l.Name }

func byKey[V any](vs []V, key func(V) string) map[string]V {
	m := make(map[string]V, len(vs))
	for _, v := range vs {
		m[key(v)] = v
	}
	return m
}

// Simulate returns st with ops applied as the kernel would apply them (deleting a device
// drops its routes, neighbours and FDB entries): what Observe reports after a successful Apply.
// It reports the first op that does not fit the state.
func Simulate(st State, ops []Op) (State, error) {
	out := State{
		Links: slices.Clone(st.Links), Sysctls: slices.Clone(st.Sysctls), ProxyNeighs: slices.Clone(st.ProxyNeighs), Neighs: slices.Clone(st.Neighs),
		FDB: slices.Clone(st.FDB), Routes: slices.Clone(st.Routes), StrayRoutes: slices.Clone(st.StrayRoutes),
	}
	for _, op := range ops {
		var err error
		switch x := op.Object.(type) {
		case Link:
			out.Links, err = apply(out.Links, op, x, func(a, b Link) bool { return a.Name == b.Name })
			if err == nil && op.Kind == diff.Delete {
				out.Neighs = slices.DeleteFunc(out.Neighs, func(n Neigh) bool { return n.Dev == x.Name })
				out.FDB = slices.DeleteFunc(out.FDB, func(f FDB) bool { return f.Dev == x.Name })
				out.Routes = slices.DeleteFunc(out.Routes, func(r Route) bool { return r.Dev == x.Name })
				out.StrayRoutes = slices.DeleteFunc(out.StrayRoutes, func(r Route) bool { return r.Dev == x.Name })
			}
		case Sysctl:
			out.Sysctls, err = apply(out.Sysctls, op, x, func(a, b Sysctl) bool { return a.Key() == b.Key() })
		case ProxyNeigh:
			out.ProxyNeighs, err = apply(out.ProxyNeighs, op, x, func(a, b ProxyNeigh) bool { return a == b })
		case Neigh:
			out.Neighs, err = apply(out.Neighs, op, x, func(a, b Neigh) bool { return a.Key() == b.Key() })
		case FDB:
			out.FDB, err = apply(out.FDB, op, x, func(a, b FDB) bool { return a.Key() == b.Key() })
		case Route:
			if op.Kind == diff.Delete {
				if k := slices.Index(out.StrayRoutes, x); k >= 0 {
					out.StrayRoutes = slices.Delete(out.StrayRoutes, k, k+1)
					continue
				}
			}
			out.Routes, err = apply(out.Routes, op, x, func(a, b Route) bool { return a.Key() == b.Key() })
		default:
			err = fmt.Errorf("unknown object %T", op.Object)
		}
		if err != nil {
			return State{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	out.Sort()
	return out, nil
}

func apply[V any](vs []V, op Op, x V, same func(a, b V) bool) ([]V, error) {
	k := slices.IndexFunc(vs, func(v V) bool { return same(v, x) })
	switch op.Kind {
	case diff.Add:
		if k >= 0 {
			return vs, fmt.Errorf("already exists")
		}
		return append(vs, x), nil
	case diff.Replace:
		if k < 0 {
			return vs, fmt.Errorf("does not exist")
		}
		vs[k] = x
		return vs, nil
	default:
		if k < 0 {
			return vs, fmt.Errorf("does not exist")
		}
		return slices.Delete(vs, k, k+1), nil
	}
}
