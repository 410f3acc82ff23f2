package netlink

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

// Kernel is the kernel interface the applier programs: the real one (Netlink) or the Fake.
type Kernel interface {
	// Observe reads what q asks for, everything felis owns: routes marked with q.Protocol in
	// every table, the q.Devices that exist with their permanent neighbour and FDB entries,
	// and those of q.Sysctls and q.ProxyNeighs whose interface exists.
	Observe(ctx context.Context, q Query) (render.State, error)
	// Do executes ops in order, continuing past failures, and returns one error per op (nil
	// for success). An op on a device that does not exist fails with ENODEV.
	Do(ctx context.Context, ops []render.Op) []error
}

// Query says what Kernel.Observe reads.
type Query struct {
	Protocol    int                 // the route protocol that marks felis's routes
	Devices     []string            // felis's device names
	Sysctls     []render.Sysctl     // the settings to read (Value ignored)
	ProxyNeighs []render.ProxyNeigh // the proxy entries to look for
}

// Options configure an Applier.
type Options struct {
	// Protocol is the route protocol number that marks felis's routes (the snapshot's
	// Config.RouteProtocol); 0 means render.DefaultProtocol.
	Protocol int
}

// Result says what one Apply did.
type Result struct {
	// Ops are the ops executed, in order.
	Ops []render.Op
	// Pending are ops that wait for a workload interface that does not exist (or is down)
	// yet; the next Sync retries them. They are not failures.
	Pending []render.Op
	// Failed are the ops the kernel refused, each an *OpError naming the op and errno.
	Failed []error
}

// Err joins the failures (nil if there are none).
func (r Result) Err() error { return errors.Join(r.Failed...) }

// Applier keeps the kernel in line with a desired render.State. The hot path (Sync) plans
// against what it last committed; a full Observe happens on the first Sync, after any
// failure, and on Resync.
type Applier struct {
	k     Kernel
	proto int

	mu        sync.Mutex
	desired   render.State
	haveWant  bool
	committed render.State
	trusted   bool // committed matches the kernel as far as the applier knows
}

// New returns an Applier programming k.
func New(k Kernel, opts Options) *Applier {
	p := opts.Protocol
	if p == 0 {
		p = render.DefaultProtocol
	}
	return &Applier{k: k, proto: p}
}

// devices are the only links felis looks at or touches.
var devices = []string{render.VXLANDevice, render.VXLANDeviceV6}

// Observe reads the felis-owned kernel state: routes with the applier's protocol, the VXLAN
// devices with their neighbours and FDB entries, and the sysctls of the last desired state.
func (a *Applier) Observe(ctx context.Context) (render.State, error) {
	a.mu.Lock()
	q := a.query(a.desired)
	a.mu.Unlock()
	return a.k.Observe(ctx, q)
}

// query asks for felis's routes and devices and for desired's per-interface settings.
func (a *Applier) query(desired render.State) Query {
	return Query{Protocol: a.proto, Devices: devices, Sysctls: desired.Sysctls, ProxyNeighs: desired.ProxyNeighs}
}

// Apply executes ops in order. A failed op does not stop the others (a missing workload
// interface must not hold up every other route); failures are in Result.Failed, ops waiting
// for an interface in Result.Pending. Apply does not update the committed state: Sync and
// Resync do.
func (a *Applier) Apply(ctx context.Context, ops []render.Op) Result {
	res := Result{Ops: ops}
	if len(ops) == 0 {
		return res
	}
	for i, err := range a.k.Do(ctx, ops) {
		switch {
		case err == nil || alreadyGone(ops[i], err):
		case waitsForInterface(ops[i], err):
			res.Pending = append(res.Pending, ops[i])
		default:
			res.Failed = append(res.Failed, &OpError{Op: ops[i], Err: err})
		}
	}
	return res
}

// Sync makes the kernel match desired (sorted, as render.Render returns it): it plans against
// the last committed state (observing the kernel first if there is none it trusts) and
// applies the ops. The returned error joins the failed ops; after a failure the next Sync
// observes the kernel again.
func (a *Applier) Sync(ctx context.Context, desired render.State) (Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.desired, a.haveWant = desired, true
	if !a.trusted {
		obs, err := a.k.Observe(ctx, a.query(desired))
		if err != nil {
			return Result{}, err
		}
		a.committed, a.trusted = obs, true
	}
	return a.syncLocked(ctx)
}

// Resync reads the kernel afresh and repairs any drift from the last desired state.
func (a *Applier) Resync(ctx context.Context) (Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.haveWant {
		return Result{}, ErrNotSynced
	}
	obs, err := a.k.Observe(ctx, a.query(a.desired))
	if err != nil {
		a.trusted = false
		return Result{}, err
	}
	a.committed, a.trusted = obs, true
	return a.syncLocked(ctx)
}

// Plan returns the ops Sync would execute now, without executing them.
func (a *Applier) Plan(desired render.State) []render.Op {
	a.mu.Lock()
	defer a.mu.Unlock()
	return render.Plan(desired, a.committed)
}

func (a *Applier) syncLocked(ctx context.Context) (Result, error) {
	ops := render.Plan(a.desired, a.committed)
	res := a.Apply(ctx, ops)
	if len(res.Failed) > 0 {
		// The kernel refused something unexpected: what it holds is no longer known.
		a.trusted = false
		return res, res.Err()
	}
	// Everything but the pending ops took effect: the kernel holds desired, except that
	// pending objects are still as observed.
	a.committed = withPending(a.desired, res.Pending)
	return res, nil
}

// withPending returns desired with the effect of the pending ops undone: a pending add is
// absent, a pending replace still holds the old object.
func withPending(desired render.State, pending []render.Op) render.State {
	if len(pending) == 0 {
		return desired
	}
	st := desired
	st.Routes = slices.Clone(desired.Routes)
	st.Sysctls = slices.Clone(desired.Sysctls)
	st.ProxyNeighs = slices.Clone(desired.ProxyNeighs)
	for _, op := range pending {
		switch x := op.Object.(type) {
		case render.Route:
			i, found := slices.BinarySearchFunc(st.Routes, x.Key(), func(r render.Route, k render.RouteKey) int { return r.Key().Compare(k) })
			if !found {
				continue
			}
			if op.Kind == diff.Replace {
				st.Routes[i] = op.Old.(render.Route)
			} else {
				st.Routes = slices.Delete(st.Routes, i, i+1)
			}
		case render.Sysctl:
			st.Sysctls = slices.DeleteFunc(st.Sysctls, func(s render.Sysctl) bool { return s.Key() == x.Key() })
		case render.ProxyNeigh:
			st.ProxyNeighs = slices.DeleteFunc(st.ProxyNeighs, func(p render.ProxyNeigh) bool { return p == x })
		}
	}
	return st
}
