//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/bpf/render"
)

// DefaultDataIfacePattern picks the node's data interfaces (where traffic from outside the
// node arrives: NodePorts, external and load-balancer IPs, replies of SNATed flows). It is a
// simplification of Felix's BPFDataIfacePattern default: the usual names of physical and
// virtual NICs, and Calico's VXLAN devices (a reply from a remote backend arrives
// decapsulated on them).
var DefaultDataIfacePattern = regexp.MustCompile(`^((en|wl|ww|sl|ib)[Popsx].*|(eth|wlan|wwan|bond).*|vxlan\.calico|vxlan-v6\.calico)$`)

// dataLinksDir is the pin directory of the data interfaces' links.
const dataLinksDir = "links-data"

// pinName is the bpffs file name for an interface's link pin: bpffs refuses names with a dot
// (EPERM for vxlan.calico or a VLAN's eth0.100), and no interface name holds a colon, so
// swapping the one for the other maps names one to one.
func pinName(iface string) string { return strings.ReplaceAll(iface, ".", ":") }

// ifaceOfPin is the interface a pin file name stands for (pinName's inverse).
func ifaceOfPin(pin string) string { return strings.ReplaceAll(pin, ":", ".") }

// clsactDataHandle is the handle of the service program's cls_bpf filter (ingress only).
const clsactDataHandle = 0xfe12

// dataIfaces is the data interfaces this run attached the service program to, by name.
type dataIfaces map[string]attachedData

// attachedData is one data interface's TCX links (nil when attached with clsact): link runs
// felis_data_in on ingress, out felis_data_out on egress.
type attachedData struct {
	ifindex int
	link    link.Link
	out     link.Link
}

// attachData attaches felis_data_in to TC ingress of every interface matching the data
// interface pattern that is not a workload's, first in the TCX chain (NAT comes before a
// host endpoint's normal policy, which then sees the backend). Links are pinned under
// links-data/ and adopted by the next run; interfaces that stop matching are detached.
func (d *Dataplane) attachData(st *render.State, res *appliers.Result) error {
	pattern := d.opts.DataIfacePattern
	if pattern == nil {
		pattern = DefaultDataIfacePattern
	}
	if d.data == nil {
		d.data = dataIfaces{}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing interfaces for the service program: %w", err)
	}
	for _, sub := range []string{dataLinksDir, dataOutLinksDir} {
		dir := filepath.Join(d.opts.PinDir, sub)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("bpf pin directory %s: %w", dir, err)
		}
	}
	want := map[string]int{}
	for _, l := range links {
		name := l.Attrs().Name
		if !pattern.MatchString(name) {
			continue
		}
		if ep, ok := st.Endpoints[name]; ok && ep.Flags&render.EndpointFlagHost == 0 {
			continue // a workload's interface
		}
		want[name] = l.Attrs().Index
	}
	// lo carries the host's packets to its own addresses: felis_data_out on its egress NATs
	// those to a frontend there (no felis_data_in: nothing arrives on lo from outside).
	if lo, err := netlink.LinkByName("lo"); err == nil {
		want["lo"] = lo.Attrs().Index
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range want {
			if !yield(n) {
				return
			}
		}
	}) {
		idx := want[name]
		if a, ok := d.data[name]; ok && a.ifindex == idx {
			continue
		} else if ok {
			a.close()
		}
		if name == "lo" {
			if err := enableLoAcceptLocal(); err != nil {
				return err
			}
			out, err := d.attachDataHook(name, idx, loOut, res)
			if err != nil {
				return err
			}
			d.data[name] = attachedData{ifindex: idx, out: out}
			continue
		}
		in, err := d.attachDataHook(name, idx, dataIn, res)
		if err != nil {
			return err
		}
		out, err := d.attachDataHook(name, idx, dataOut, res)
		if err != nil {
			if in != nil {
				in.Close()
			}
			return err
		}
		d.data[name] = attachedData{ifindex: idx, link: in, out: out}
	}
	for name, a := range d.data {
		if _, ok := want[name]; ok {
			continue
		}
		a.detach()
		delete(d.data, name)
		res.Counts["data-link-detach"]++
	}
	for _, h := range []dataHook{dataIn, dataOut} {
		dir := filepath.Join(d.opts.PinDir, h.pinDir)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if _, ok := want[ifaceOfPin(e.Name())]; !ok {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return nil
}

// attachClsactData replaces felis's service filter on the interface's clsact ingress hook.
// It has its own handle and runs after a host endpoint's policy filter (priority 2).
func attachClsactData(ifindex int, prog *ebpf.Program, parent uint32) error {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: clsactDataHandle, Priority: clsactPrio + 1, Protocol: unix.ETH_P_ALL},
		Fd:           prog.FD(),
		Name:         "felis-data",
		DirectAction: true,
	}
	return netlink.FilterReplace(f)
}

// detachClsactData removes felis's service filters from the interface (both hooks).
func detachClsactData(l netlink.Link) error {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			return nil // no clsact qdisc
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Handle == clsactDataHandle {
				if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("deleting clsact filter: %w", err)
				}
			}
		}
	}
	return nil
}
