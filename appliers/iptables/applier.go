package iptables

import (
	"context"
	"errors"
	"fmt"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/snapshot"
)

// ErrNotSynced is returned by Plan before the first Resync and after a failed Apply.
var ErrNotSynced = errors.New("iptables applier: not synced with the dataplane (resync first)")

// Applier keeps what it last committed so the hot path diffs in memory; Resync re-reads the
// dataplane and so repairs drift. It is not safe for concurrent use.
type Applier struct {
	run    Runner
	last   *State
	synced bool
}

// NewApplier returns an applier over r; it reads nothing until the first Resync or Sync.
func NewApplier(r Runner) *Applier { return &Applier{run: r} }

// Resync reads the dataplane's state and makes it the base of the next Plan.
func (a *Applier) Resync(ctx context.Context) error {
	st, err := Observe(ctx, a.run)
	if err != nil {
		a.synced = false
		return fmt.Errorf("observe iptables: %w", err)
	}
	a.last, a.synced = st, true
	return nil
}

// Plan returns the ops from the last committed (or observed) state to desired.
func (a *Applier) Plan(desired Ruleset) ([]Op, error) {
	if !a.synced {
		return nil, ErrNotSynced
	}
	return Plan(desired, a.last), nil
}

// Sync plans desired (observing first if needed), applies the ops and returns them. On
// failure the applier forgets its state, so the next Sync observes again.
func (a *Applier) Sync(ctx context.Context, desired Ruleset) ([]Op, error) {
	if !a.synced {
		if err := a.Resync(ctx); err != nil {
			return nil, err
		}
	}
	ops := Plan(desired, a.last)
	if len(ops) == 0 {
		return nil, nil
	}
	if err := Apply(ctx, a.run, ops); err != nil {
		a.synced = false
		return nil, err
	}
	a.last = StateOf(desired)
	return ops, nil
}

// Dataplane is the iptables policy dataplane as the agent drives it (appliers.Dataplane).
type Dataplane struct {
	run     Runner
	applier *Applier
	// BeforeFull runs before every full sync (the agent removes the nftables mode's table).
	BeforeFull func(ctx context.Context) error
}

var _ appliers.Dataplane = (*Dataplane)(nil)

// NewDataplane returns the dataplane over r.
func NewDataplane(r Runner) *Dataplane { return &Dataplane{run: r, applier: NewApplier(r)} }

// Name implements appliers.Dataplane.
func (d *Dataplane) Name() string { return "iptables" }

// Sync implements appliers.Dataplane.
func (d *Dataplane) Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (appliers.Result, error) {
	rs, err := Render(*desired)
	if err != nil {
		return appliers.Result{}, fmt.Errorf("render: %w", err)
	}
	if full {
		if d.BeforeFull != nil {
			if err := d.BeforeFull(ctx); err != nil {
				return appliers.Result{}, err
			}
		}
		if err := d.applier.Resync(ctx); err != nil {
			return appliers.Result{}, err
		}
	}
	ops, err := d.applier.Sync(ctx, rs)
	if err != nil {
		return appliers.Result{}, err
	}
	return Result(ops), nil
}

// Pending implements appliers.Dataplane: the ops from the kernel's state to desired.
func (d *Dataplane) Pending(ctx context.Context, desired *snapshot.Snapshot) ([]string, error) {
	rs, err := Render(*desired)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	st, err := Observe(ctx, d.run)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, op := range Plan(rs, st) {
		out = append(out, op.String())
	}
	return out, nil
}

// Result summarises ops for the agent: their text and a count per verb.
func Result(ops []Op) appliers.Result {
	r := appliers.Result{Counts: map[string]int{}}
	for _, op := range ops {
		r.Ops = append(r.Ops, op.String())
		r.Counts[string(op.Verb)]++
	}
	return r
}

// Remove deletes everything felis owns on r: its hook rules, chains and sets.
func Remove(ctx context.Context, r Runner) error {
	st, err := Observe(ctx, r)
	if err != nil {
		return err
	}
	return Apply(ctx, r, Plan(Ruleset{}, st))
}
