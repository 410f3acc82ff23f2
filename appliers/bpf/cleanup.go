//go:build linux

package bpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// programNames are the names felis's TC programs have in the kernel.
var programNames = map[string]bool{"felis_to_wep": true, "felis_from_wep": true, "felis_data_in": true, "felis_data_out": true}

// Cleanup removes the BPF dataplane's state so another dataplane can take over: it detaches
// felis's programs from every interface of the current network namespace (TCX links and
// clsact cls_bpf filters), then unpins felis's links and maps under pinRoot and in its
// per-node subdirectories (pinRoot "" means DefaultPinRoot, which is removed when empty).
// A missing pin root or bpffs means there is nothing to remove.
func Cleanup(_ context.Context, pinRoot string) error {
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("bpf cleanup: listing interfaces: %w", err)
	}
	for _, l := range links {
		if err := detachInterface(l); err != nil {
			errs = append(errs, fmt.Errorf("bpf cleanup: interface %s: %w", l.Attrs().Name, err))
		}
	}
	root := pinRoot
	if root == "" {
		root = DefaultPinRoot
	}
	dirs := []string{root}
	if ents, err := os.ReadDir(root); err == nil {
		for _, e := range ents {
			if e.IsDir() && e.Name() != "links" && e.Name() != dataLinksDir && e.Name() != dataOutLinksDir {
				dirs = append(dirs, filepath.Join(root, e.Name()))
			}
		}
	}
	for _, dir := range dirs {
		if err := unpinDir(dir); err != nil {
			errs = append(errs, fmt.Errorf("bpf cleanup: %s: %w", dir, err))
		}
		if dir != root || pinRoot == "" {
			os.Remove(dir) // only succeeds when empty: someone else's pins stay
		}
	}
	return errors.Join(errs...)
}

// detachInterface removes felis's TCX links and clsact filters from one interface.
func detachInterface(l netlink.Link) error {
	idx := l.Attrs().Index
	var errs []error
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: at})
		if err != nil {
			continue // no TCX in this kernel, or nothing attached
		}
		for _, p := range res.Programs {
			if !isFelisProgram(p.ID) {
				continue
			}
			id, ok := p.LinkID()
			if !ok {
				continue
			}
			lk, err := link.NewFromID(id)
			if err != nil {
				errs = append(errs, fmt.Errorf("TCX link %d: %w", id, err))
				continue
			}
			if err := lk.Detach(); err != nil {
				errs = append(errs, fmt.Errorf("detaching TCX link %d: %w", id, err))
			}
			lk.Close()
		}
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			continue // no clsact qdisc
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !(bf.Handle == clsactHandle && bf.Priority == clsactPrio || bf.Handle == clsactDataHandle && bf.Priority == clsactPrio+1) {
				continue
			}
			if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("deleting clsact filter: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// isFelisProgram says whether the program with this ID is one of felis's TC programs.
func isFelisProgram(id ebpf.ProgramID) bool {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false
	}
	defer p.Close()
	info, err := p.Info()
	return err == nil && programNames[info.Name]
}

// unpinDir removes felis's link pins (the links directory) and map pins, of this layout and
// retired ones, from one pin directory.
func unpinDir(dir string) error {
	var errs []error
	for _, sub := range []string{"links", dataLinksDir, dataOutLinksDir} {
		linksDir := filepath.Join(dir, sub)
		ents, _ := os.ReadDir(linksDir)
		for _, e := range ents {
			if err := os.Remove(filepath.Join(linksDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(linksDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	spec, err := loadPolicy()
	if err != nil {
		return err
	}
	for _, name := range append(slices.Collect(maps.Keys(spec.Maps)), retiredMaps...) {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
