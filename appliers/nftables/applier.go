package nftables

import (
	"context"
	"fmt"

	"github.com/felis-dev/felis/appliers/nftables/render"
)

// Dataplane is what an Applier drives: the kernel (Kernel) or the in-memory Fake.
type Dataplane interface {
	// Observe reads the felis tables back: nil when neither exists (Missing lists an absent one).
	Observe(ctx context.Context) (*render.Table, error)
	// Apply commits ops as one atomic batch: all or nothing.
	Apply(ctx context.Context, ops []Op) error
}

// Applier keeps what it last committed so the hot path diffs in memory; Resync re-reads the
// dataplane (at start, periodically, after any failure) and so repairs drift. It is not safe
// for concurrent use.
type Applier struct {
	dp      Dataplane
	last    *render.Table
	synced  bool
	planned *render.Table // the desired table of the last Plan, until Apply commits it
	ops     []Op          // what that Plan returned
}

// NewApplier returns an applier for dp. It observes nothing until the first Resync or Sync.
func NewApplier(dp Dataplane) *Applier { return &Applier{dp: dp} }

// Resync reads the dataplane's state and makes it the base of the next Plan.
func (a *Applier) Resync(ctx context.Context) error {
	a.planned, a.ops = nil, nil
	t, err := a.dp.Observe(ctx)
	if err != nil {
		a.synced = false
		return fmt.Errorf("observe nftables: %w", err)
	}
	a.last, a.synced = t, true
	return nil
}

// Plan returns the ops that turn the last committed (or observed) state into desired. It
// returns ErrNotSynced before the first Resync and after a failed Apply. The applier keeps
// desired (without copying it) as the state Apply will have committed.
func (a *Applier) Plan(desired render.Table) ([]Op, error) {
	if !a.synced {
		return nil, ErrNotSynced
	}
	ops := Plan(desired, a.last)
	a.planned, a.ops = &desired, ops
	return ops, nil
}

// Apply commits ops in one batch. On success the dataplane holds what the last Plan
// desired (or, for ops from elsewhere, the last state with ops applied); on failure the
// applier forgets its state, so the next Sync re-observes.
func (a *Applier) Apply(ctx context.Context, ops []Op) error {
	planned, fromPlan := a.planned, a.planned != nil && sameOps(ops, a.ops)
	a.planned, a.ops = nil, nil
	if len(ops) == 0 {
		return nil
	}
	if err := a.dp.Apply(ctx, ops); err != nil {
		a.synced = false
		return err
	}
	if fromPlan {
		a.last = planned
		return nil
	}
	next, err := applyOps(stateOf(a.last), ops)
	if err != nil {
		a.synced = false
		return fmt.Errorf("applied ops do not fit the last committed state (will resync): %w", err)
	}
	t := next.table()
	a.last = &t
	return nil
}

func sameOps(a, b []Op) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Sync plans desired against the last committed state (observing first if needed) and applies
// the result; it returns the ops it applied.
func (a *Applier) Sync(ctx context.Context, desired render.Table) ([]Op, error) {
	if !a.synced {
		if err := a.Resync(ctx); err != nil {
			return nil, err
		}
	}
	ops, err := a.Plan(desired)
	if err != nil {
		return nil, err
	}
	return ops, a.Apply(ctx, ops)
}

// stateOf indexes a table for applyOps. Observed chains have no rules, so reference checks
// against them are as strong as the kernel's state allows.
func stateOf(t *render.Table) *fakeState {
	if t == nil {
		return nil
	}
	s := &fakeState{tables: map[render.TableID]*fakeTable{}}
	for _, id := range render.Tables {
		if t.Has(id) {
			s.tables[id] = newFakeTable()
		}
	}
	for i := range t.Sets {
		if ft := s.tables[t.Sets[i].Table]; ft != nil {
			ft.sets[t.Sets[i].Name] = &t.Sets[i]
		}
	}
	for i := range t.Maps {
		if ft := s.tables[t.Maps[i].Table]; ft != nil {
			ft.maps[t.Maps[i].Name] = &t.Maps[i]
		}
	}
	for i := range t.Chains {
		if ft := s.tables[t.Chains[i].Table]; ft != nil {
			ft.chains[t.Chains[i].Name] = &t.Chains[i]
		}
	}
	return s
}
