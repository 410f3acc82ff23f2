package iptables

import (
	"context"
	"fmt"
	"slices"
)

// Runner is what programs and reads the dataplane: the kernel's binaries (Kernel) or the
// in-memory Fake, speaking the same text formats.
type Runner interface {
	// Save returns iptables-save (family 4) or ip6tables-save (6) output.
	Save(ctx context.Context, family int) (string, error)
	// Restore runs iptables-restore --noflush (or ip6tables-restore) on one table's script.
	Restore(ctx context.Context, family int, script string) error
	// IPSetSave returns `ipset save` output.
	IPSetSave(ctx context.Context) (string, error)
	// IPSetRestore runs `ipset restore` on script.
	IPSetRestore(ctx context.Context, script string) error
}

// Observe reads felis's sets, chains and hook rules from r.
func Observe(ctx context.Context, r Runner) (*State, error) {
	st := NewState()
	out, err := r.IPSetSave(ctx)
	if err != nil {
		return nil, err
	}
	if err := ParseIPSetSave(st, out); err != nil {
		return nil, err
	}
	for _, fam := range []int{4, 6} {
		out, err := r.Save(ctx, fam)
		if err != nil {
			return nil, err
		}
		if err := ParseSave(st, fam, out); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Apply runs ops on r: ipset changes, one restore per family and table, then set destroys.
// A failure stops at once; what ran stays (the caller resyncs).
func Apply(ctx context.Context, r Runner, ops []Op) error {
	s := Script(ops)
	if s.IPSetBefore != "" {
		if err := r.IPSetRestore(ctx, s.IPSetBefore); err != nil {
			return err
		}
	}
	for _, t := range s.Tables {
		if err := r.Restore(ctx, t.Family, t.Text); err != nil {
			return fmt.Errorf("%s-restore -t %s: %w", binary(t.Family), t.Table, err)
		}
	}
	if s.IPSetAfter != "" {
		if err := r.IPSetRestore(ctx, s.IPSetAfter); err != nil {
			return err
		}
	}
	return nil
}

func sortStrings(s []string) { slices.Sort(s) }
