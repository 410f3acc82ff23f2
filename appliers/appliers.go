package appliers

import (
	"context"

	"github.com/felis-dev/felis/snapshot"
)

// Dataplane is one applier as the agent drives it (nftables, iptables, bpf, netlink, hns).
type Dataplane interface {
	// Name is the applier's short name, used in logs, metrics and plan output.
	Name() string
	// Sync makes the kernel match desired. With full it first reads the kernel's state (at
	// start, periodically, after any failure) and repairs drift; otherwise it diffs against
	// what it last committed. The kernel changes atomically where the kernel allows; on
	// error the previous state stays in place and the next call should be full.
	Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (Result, error)
	// Pending reads the kernel and returns the operations still needed to reach desired;
	// empty means the kernel matches.
	Pending(ctx context.Context, desired *snapshot.Snapshot) ([]string, error)
}

// Result says what one Sync did.
type Result struct {
	// Ops are the operations applied, in their canonical text (nft syntax, `ip route`
	// syntax, map entries in hex), in the order they were applied.
	Ops []string
	// Counts breaks the operations down by kind (e.g. "element-add", "chain-replace").
	Counts map[string]int
	// Warnings are parts of the snapshot the applier could not program and left out (each
	// naming the snapshot field); the rest was programmed. The agent logs them.
	Warnings []string
}
