//go:build linux

package main

import (
	"context"
	"fmt"
	"os"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/bpf"
	"github.com/felis-dev/felis/appliers/iptables"
	nl "github.com/felis-dev/felis/appliers/netlink"
	"github.com/felis-dev/felis/appliers/nftables"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

func init() {
	hostInterfaces = nl.HostInterfaces
	policyDataplanes["nftables"] = func() (appliers.Dataplane, error) {
		// Switching from the iptables dataplane: remove what it left (felis chains, hook rules,
		// ipsets) before nftables takes over.
		if err := iptables.Cleanup(context.Background()); err != nil {
			return nil, fmt.Errorf("removing the iptables dataplane's state: %w", err)
		}
		if err := bpf.Cleanup(context.Background(), os.Getenv("FELIS_BPF_PIN_ROOT")); err != nil {
			return nil, fmt.Errorf("removing the bpf dataplane's state: %w", err)
		}
		k, err := nftables.NewKernel()
		if err != nil {
			return nil, err
		}
		return &nftDataplane{kernel: k, applier: nftables.NewApplier(k), renderer: render.NewRenderer()}, nil
	}
}

// nftDataplane drives the nftables applier from snapshots: render, then sync the felis table.
type nftDataplane struct {
	kernel  *nftables.Kernel
	applier *nftables.Applier
	// renderer remembers what it rendered for each service, so a cycle re-renders only the
	// services that changed.
	renderer *render.Renderer
}

func (d *nftDataplane) Name() string { return "nftables" }

func (d *nftDataplane) Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (appliers.Result, error) {
	table, err := d.renderer.Render(*desired)
	if err != nil {
		return appliers.Result{}, fmt.Errorf("render: %w", err)
	}
	if full {
		if err := d.applier.Resync(ctx); err != nil {
			return appliers.Result{}, err
		}
	}
	ops, err := d.applier.Sync(ctx, table)
	if err != nil {
		return appliers.Result{}, err
	}
	return nftResult(ops), nil
}

func (d *nftDataplane) Pending(ctx context.Context, desired *snapshot.Snapshot) ([]string, error) {
	table, err := d.renderer.Render(*desired)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	observed, err := d.kernel.Observe(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, op := range nftables.Plan(table, observed) {
		out = append(out, op.String())
	}
	return out, nil
}

func nftResult(ops []nftables.Op) appliers.Result {
	r := appliers.Result{Counts: map[string]int{}}
	for _, op := range ops {
		r.Ops = append(r.Ops, op.String())
		r.Counts[string(op.Verb)]++
	}
	return r
}
