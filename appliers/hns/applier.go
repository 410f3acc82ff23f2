package hns

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/snapshot"
)

// Applier keeps what it last committed to HNS so the hot path plans in memory; Resync reads
// HNS again (at start, periodically, after any failure, and when a desired endpoint has no
// HNS endpoint yet) and so repairs drift.
type Applier struct {
	c      Client
	opts   Options
	last   Observed
	synced bool
}

var _ appliers.Dataplane = (*Applier)(nil)

// NewApplier returns an applier for c. It reads nothing until the first Resync or Sync.
func NewApplier(c Client, opts Options) *Applier { return &Applier{c: c, opts: opts} }

// Name implements appliers.Dataplane.
func (a *Applier) Name() string { return "hns" }

// Resync reads HNS and makes it the base of the next Plan.
func (a *Applier) Resync(ctx context.Context) error {
	o, err := Observe(ctx, a.c)
	if err != nil {
		a.synced = false
		return err
	}
	a.last, a.synced = o, true
	return nil
}

// Plan returns the ops that turn the last committed (or observed) state into desired; it
// returns ErrNotSynced before the first Resync and after a failed Apply.
func (a *Applier) Plan(desired Desired) (Plan, error) {
	if !a.synced {
		return Plan{}, ErrNotSynced
	}
	return PlanOps(desired, a.last), nil
}

// Apply runs ops in order. HNS has no multi-call transaction: on the first failure Apply
// stops, forgets its model (the next Sync re-reads HNS) and returns an error naming the op.
func (a *Applier) Apply(ctx context.Context, ops []Op) error {
	for _, op := range ops {
		var err error
		switch op.Kind {
		case OpSetACLs:
			settings := make([]ACLSetting, len(op.Rules))
			for i, r := range op.Rules {
				settings[i] = r.Setting()
			}
			err = a.c.SetACLs(ctx, op.EndpointID, settings)
		case OpRouteAdd:
			err = a.c.AddRemoteSubnetRoute(ctx, op.Route)
		case OpRouteRemove:
			err = a.c.RemoveRemoteSubnetRoute(ctx, op.Route)
		default:
			err = fmt.Errorf("unknown op kind %q", op.Kind)
		}
		if err != nil {
			a.synced = false
			return fmt.Errorf("hns %s %s%s: %w", op.Kind, op.Endpoint, op.Route.DestinationPrefix, err)
		}
		a.commit(op)
	}
	return nil
}

// commit records a successful op in the model of HNS.
func (a *Applier) commit(op Op) {
	switch op.Kind {
	case OpSetACLs:
		for i := range a.last.Endpoints {
			if a.last.Endpoints[i].ID == op.EndpointID {
				a.last.Endpoints[i].Rules = slices.Clone(op.Rules)
				a.last.Endpoints[i].Undecodable = false
			}
		}
	case OpRouteAdd:
		a.last.Routes = append(a.last.Routes, op.Route)
	case OpRouteRemove:
		if i := slices.Index(a.last.Routes, op.Route); i >= 0 {
			a.last.Routes = slices.Delete(a.last.Routes, i, i+1)
		}
	}
}

// Sync implements appliers.Dataplane: render, plan against the last committed state (reading
// HNS first when full, when not yet synced, or when a desired endpoint is missing from the
// model), apply. After a successful apply it still returns an error joining the problems that
// kept parts of desired out of HNS (unrenderable endpoints, bad routes).
func (a *Applier) Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (appliers.Result, error) {
	d := Render(desired, a.opts)
	if full || !a.synced {
		if err := a.Resync(ctx); err != nil {
			return appliers.Result{}, err
		}
	}
	p, err := a.Plan(d)
	if err != nil {
		return appliers.Result{}, err
	}
	if len(p.Missing) > 0 && !full {
		// A new pod's HNS endpoint appears outside felis's view: look again once.
		if err := a.Resync(ctx); err != nil {
			return appliers.Result{}, err
		}
		p = PlanOps(d, a.last)
	}
	res := appliers.Result{Counts: map[string]int{}}
	for _, op := range p.Ops {
		res.Ops = append(res.Ops, op.String())
		res.Counts[string(op.Kind)]++
	}
	if len(p.Missing) > 0 {
		res.Counts["endpoint-missing"] = len(p.Missing)
	}
	if len(p.Kept) > 0 {
		res.Counts["endpoint-unrenderable"] = len(p.Kept)
	}
	if err := a.Apply(ctx, p.Ops); err != nil {
		return res, err
	}
	// Everything that could be applied was; report what could not (the agent logs it and
	// retries, which changes nothing until the input changes).
	return res, errors.Join(append(slices.Clone(d.Errs), p.Kept...)...)
}

// Pending implements appliers.Dataplane: it reads HNS and returns the ops still needed.
func (a *Applier) Pending(ctx context.Context, desired *snapshot.Snapshot) ([]string, error) {
	o, err := Observe(ctx, a.c)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, op := range PlanOps(Render(desired, a.opts), o).Ops {
		out = append(out, op.String())
	}
	return out, nil
}
