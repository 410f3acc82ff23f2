//go:build linux

package bpf

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestDottedInterfaceNames: the service program goes on a data interface whose name has a dot
// (vxlan.calico, a VLAN's eth0.100), though bpffs refuses dots in pin names; a restarted
// dataplane adopts the pinned link instead of attaching a second one, and Cleanup removes it.
func TestDottedInterfaceNames(t *testing.T) {
	_, dir := openTest(t) // root check and a private bpffs
	h := netns.New(t)
	node, err := h.NewNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	const dotted = "vxlan.calico"
	if err := node.Do(func() error {
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: dotted}, VxlanId: 4096, Port: 4789}
		if err := netlink.LinkAdd(vx); err != nil {
			return err
		}
		return netlink.LinkSetUp(vx)
	}); err != nil {
		t.Fatal(err)
	}
	snap := &snapshot.Snapshot{Node: "node1"}
	snap.Finalize()
	opts := Options{PinDir: dir + "/dots", DataIfacePattern: regexp.MustCompile(`^vxlan\.calico$`)}
	sync := func() map[string]int {
		t.Helper()
		var counts map[string]int
		if err := node.Do(func() error {
			d, err := Open(opts)
			if err != nil {
				return err
			}
			defer d.Close()
			res, err := d.Sync(context.Background(), snap, true)
			counts = res.Counts
			return err
		}); err != nil {
			t.Fatalf("sync with a data interface named %s: %v", dotted, err)
		}
		return counts
	}
	if got := sync(); got["data-link-attach"] != 1 {
		t.Fatalf("first sync: counts %v, want one data-link-attach", got)
	}
	pins, _ := os.ReadDir(filepath.Join(opts.PinDir, dataLinksDir))
	if len(pins) != 1 {
		t.Fatalf("pins in %s: %v, want one", dataLinksDir, pins)
	}
	if got := sync(); got["data-link-adopt"] != 1 || got["data-link-attach"] != 0 {
		t.Errorf("second sync (a restart): counts %v, want the pinned link adopted, none attached", got)
	}
	if err := node.Do(func() error { return Cleanup(context.Background(), opts.PinDir) }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(opts.PinDir, dataLinksDir)); !os.IsNotExist(err) {
		left, _ := os.ReadDir(filepath.Join(opts.PinDir, dataLinksDir))
		t.Errorf("pins left after Cleanup: %v", left)
	}
}
