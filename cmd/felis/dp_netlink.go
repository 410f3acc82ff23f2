//go:build linux

package main

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/netlink"
	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/snapshot"
)

func init() {
	routingDataplane = func(string) (appliers.Dataplane, error) {
		k, err := netlink.NewNetlink(netns.None())
		if err != nil {
			return nil, err
		}
		rp, err := k.DefaultRPFilter()
		if err != nil {
			rp = "" // leave rp_filter alone when it cannot be read
		}
		return &netlinkDataplane{kernel: k, rpFilter: rp}, nil
	}
}

// netlinkDataplane programs routes, the VXLAN devices, their neighbour and FDB entries and
// workload interface settings from snapshots.
type netlinkDataplane struct {
	kernel   *netlink.Netlink
	rpFilter string
	applier  *netlink.Applier
	protocol int // the route protocol the applier was built for
}

func (d *netlinkDataplane) Name() string { return "netlink" }

func (d *netlinkDataplane) render(snap *snapshot.Snapshot) (render.State, []string) {
	st, err := render.Render(*snap, render.Options{DefaultRPFilter: d.rpFilter})
	var warnings []string
	if err != nil {
		// Render leaves invalid pieces out and programs the rest.
		warnings = strings.Split(err.Error(), "\n")
	}
	return st, warnings
}

func (d *netlinkDataplane) Sync(ctx context.Context, snap *snapshot.Snapshot, full bool) (appliers.Result, error) {
	desired, warnings := d.render(snap)
	if d.applier == nil || d.protocol != snap.Config.RouteProtocol {
		// A new applier observes the kernel on its first sync.
		d.applier, d.protocol = netlink.New(d.kernel, netlink.Options{Protocol: snap.Config.RouteProtocol}), snap.Config.RouteProtocol
		full = false
	}
	var res netlink.Result
	var err error
	if full {
		if _, err = d.applier.Sync(ctx, desired); err == nil {
			res, err = d.applier.Resync(ctx)
		}
	} else {
		res, err = d.applier.Sync(ctx, desired)
	}
	out := appliers.Result{Counts: map[string]int{}, Warnings: warnings}
	for _, op := range res.Ops {
		out.Ops = append(out.Ops, op.String())
		out.Counts[fmt.Sprintf("%s %s", op.Kind, objectKind(op.Object))]++
	}
	if len(res.Pending) > 0 {
		out.Counts["pending"] = len(res.Pending)
	}
	return out, err
}

func (d *netlinkDataplane) Pending(ctx context.Context, snap *snapshot.Snapshot) ([]string, error) {
	desired, _ := d.render(snap)
	if d.applier == nil {
		return nil, fmt.Errorf("nothing synced yet")
	}
	// Observe reads what the last Sync asked for; it changes nothing.
	observed, err := d.applier.Observe(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, op := range render.Plan(desired, observed) {
		out = append(out, op.String())
	}
	return out, nil
}

// objectKind names an object's type for op counts ("Route", "Link", ...).
func objectKind(o render.Object) string {
	if o == nil {
		return "?"
	}
	return reflect.TypeOf(o).Name()
}
