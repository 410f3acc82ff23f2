//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/bpf"
	"github.com/felis-dev/felis/appliers/iptables"
	"github.com/felis-dev/felis/snapshot"
)

func init() {
	policyDataplanes["bpf"] = func() (appliers.Dataplane, error) {
		// Switching from the nftables or iptables mode: remove their table, chains, hook rules
		// and ipsets before the programs take over.
		if err := iptables.RemoveNFTablesTable(0); err != nil {
			return nil, fmt.Errorf("removing the nftables dataplane's table: %w", err)
		}
		if err := iptables.Cleanup(context.Background()); err != nil {
			return nil, fmt.Errorf("removing the iptables dataplane's state: %w", err)
		}
		return &bpfDataplane{root: os.Getenv("FELIS_BPF_PIN_ROOT"), clsact: os.Getenv("FELIS_BPF_ATTACH") == "clsact"}, nil
	}
}

// bpfDataplane opens the BPF dataplane at the first Sync, when the node name is known: maps
// and links are pinned under <root>/<node> (root defaults to /sys/fs/bpf/felis; the
// FELIS_BPF_PIN_ROOT environment variable points it at another bpffs mount, as tests do).
// FELIS_BPF_ATTACH=clsact attaches with clsact + cls_bpf instead of TCX.
type bpfDataplane struct {
	root   string
	clsact bool
	d      *bpf.Dataplane
}

func (b *bpfDataplane) Name() string { return "bpf" }

func (b *bpfDataplane) open(node string) error {
	if b.d != nil {
		return nil
	}
	opts := bpf.Options{Clsact: b.clsact}
	if b.root != "" {
		opts.PinDir = filepath.Join(b.root, node)
	}
	d, err := bpf.Open(opts)
	if err != nil {
		return err
	}
	b.d = d
	return nil
}

func (b *bpfDataplane) Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (appliers.Result, error) {
	if err := b.open(desired.Node); err != nil {
		return appliers.Result{}, err
	}
	return b.d.Sync(ctx, desired, full)
}

func (b *bpfDataplane) Pending(ctx context.Context, desired *snapshot.Snapshot) ([]string, error) {
	if err := b.open(desired.Node); err != nil {
		return nil, err
	}
	return b.d.Pending(ctx, desired)
}
