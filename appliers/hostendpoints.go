package appliers

import (
	"context"
	"fmt"

	"github.com/felis-dev/felis/snapshot"
)

// Interfaces lists the host's network interfaces with their addresses (the kernel's, or a
// test's).
type Interfaces func(ctx context.Context) ([]snapshot.Interface, error)

// ResolvingHostEndpoints wraps a policy dataplane so the host endpoints that name no interface
// (expectedIPs only) are placed, before every Sync and Pending, on the interfaces that carry
// their addresses now (snapshot.ResolveHostEndpoints, Felix's rule): the renderers, which do
// no I/O, then see only named host endpoints, and an address moving to another interface
// moves the policy with it at the next Sync. A snapshot without such host endpoints is
// passed through untouched; list is called only for one with them.
func ResolvingHostEndpoints(dp Dataplane, list Interfaces) Dataplane {
	return &resolving{Dataplane: dp, list: list}
}

type resolving struct {
	Dataplane
	list Interfaces
}

func (r *resolving) resolve(ctx context.Context, desired *snapshot.Snapshot) (*snapshot.Snapshot, []string, error) {
	unnamed := false
	for _, h := range desired.HostEndpoints {
		unnamed = unnamed || h.Interface == ""
	}
	if !unnamed {
		return desired, nil, nil
	}
	ifaces, err := r.list(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing interfaces to place host endpoints by their expectedIPs: %w", err)
	}
	prefixes := desired.Config.InterfacePrefixes
	if len(prefixes) == 0 {
		prefixes = []string{"cali"}
	}
	resolved := *desired // the caller's snapshot is shared: replace the slice, never edit it
	var warnings []string
	resolved.HostEndpoints, warnings = snapshot.ResolveHostEndpoints(desired.HostEndpoints, ifaces, prefixes)
	return &resolved, warnings, nil
}

// Sync resolves desired's host endpoints, then syncs the wrapped dataplane; the resolution's
// warnings join its result's.
func (r *resolving) Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (Result, error) {
	s, warnings, err := r.resolve(ctx, desired)
	if err != nil {
		return Result{}, err
	}
	res, err := r.Dataplane.Sync(ctx, s, full)
	res.Warnings = append(warnings, res.Warnings...)
	return res, err
}

// Pending resolves desired's host endpoints, then asks the wrapped dataplane.
func (r *resolving) Pending(ctx context.Context, desired *snapshot.Snapshot) ([]string, error) {
	s, _, err := r.resolve(ctx, desired)
	if err != nil {
		return nil, err
	}
	return r.Dataplane.Pending(ctx, s)
}
