//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/felis-dev/felis/appliers"
)

// dataOutLinksDir is the pin directory of the data interfaces' egress links (felis_data_out:
// the host's own connections to service frontends, bpf-programs/hostnat.h).
const dataOutLinksDir = "links-data-out"

// dataHook is one TC hook of the data interfaces: its program, where its links are pinned,
// and the names its operations are counted and printed under.
type dataHook struct {
	name   string // "in-data" / "out-data" in operations
	count  string // counter prefix: "data" (ingress, the historical name) / "data-out"
	pinDir string
	attach ebpf.AttachType
	parent uint32 // clsact hook
	prog   func(*policyObjects) *ebpf.Program
}

var (
	dataIn = dataHook{name: "in-data", count: "data", pinDir: dataLinksDir, attach: ebpf.AttachTCXIngress,
		parent: netlink.HANDLE_MIN_INGRESS, prog: func(o *policyObjects) *ebpf.Program { return o.FelisDataIn }}
	dataOut = dataHook{name: "out-data", count: "data-out", pinDir: dataOutLinksDir, attach: ebpf.AttachTCXEgress,
		parent: netlink.HANDLE_MIN_EGRESS, prog: func(o *policyObjects) *ebpf.Program { return o.FelisDataOut }}
	// loOut is felis_data_out on lo's egress: the host reaching a frontend on one of its own
	// addresses (its NodePort, an external IP assigned to it), whose packets go over lo.
	// Counted apart from the data interfaces ("lo-out-…").
	loOut = dataHook{name: "out-lo", count: "lo-out", pinDir: dataOutLinksDir, attach: ebpf.AttachTCXEgress,
		parent: netlink.HANDLE_MIN_EGRESS, prog: func(o *policyObjects) *ebpf.Program { return o.FelisDataOut }}
)

// loAcceptLocal is the sysctl that lets lo take the host's own replies felis_data_out's
// flows over lo get back (reverse-NATed at a backend's interface and redirected into lo's
// ingress): their source is a node address, which the IPv4 input route check drops as a
// martian source unless accept_local is set on the receiving interface. Written through
// the calling thread's network namespace.
const loAcceptLocal = "/proc/sys/net/ipv4/conf/lo/accept_local"

// enableLoAcceptLocal sets accept_local on lo (see loAcceptLocal), if not set already.
func enableLoAcceptLocal() error {
	b, err := os.ReadFile(loAcceptLocal)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(loAcceptLocal, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("setting %s: %w", loAcceptLocal, err)
	}
	return nil
}

// attachDataHook attaches the hook's program to the interface, first in its TCX chain, and
// pins the link (adopting a pinned link of an earlier run), or, without TCX, replaces
// felis's cls_bpf filter on that clsact hook (then it returns a nil link).
func (d *Dataplane) attachDataHook(name string, idx int, h dataHook, res *appliers.Result) (link.Link, error) {
	prog := h.prog(&d.objs)
	pin := filepath.Join(d.opts.PinDir, h.pinDir, pinName(name))
	if !d.opts.Clsact {
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if onIfindex(l, idx) && l.Update(prog) == nil {
				res.Counts[h.count+"-link-adopt"]++
				return l, nil
			}
			l.Unpin()
			l.Close()
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: h.attach, Anchor: link.Head()})
		if err == nil {
			if err := l.Pin(pin); err != nil {
				l.Close()
				return nil, fmt.Errorf("data interface %s: pinning %s link: %w", name, h.name, err)
			}
			res.Counts[h.count+"-link-attach"]++
			res.Ops = append(res.Ops, "attach tcx "+h.name+" "+name)
			return l, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("data interface %s: attaching TCX %s: %w", name, h.name, err)
		}
		d.opts.Clsact = true
	}
	if err := attachClsactData(idx, prog, h.parent); err != nil {
		return nil, fmt.Errorf("data interface %s: attaching clsact %s: %w", name, h.name, err)
	}
	res.Counts[h.count+"-filter-replace"]++
	res.Ops = append(res.Ops, "filter replace clsact "+h.name+" "+name)
	return nil, nil
}

// close releases the interface's link handles (the pins keep them attached).
func (a attachedData) close() {
	for _, l := range []link.Link{a.link, a.out} {
		if l != nil {
			l.Close()
		}
	}
}

// detach removes the service programs from the interface: unpins and closes its links, or
// deletes its clsact filters.
func (a attachedData) detach() {
	if a.link == nil && a.out == nil {
		if l, err := netlink.LinkByIndex(a.ifindex); err == nil {
			detachClsactData(l)
		}
		return
	}
	for _, l := range []link.Link{a.link, a.out} {
		if l != nil {
			l.Unpin()
			l.Close()
		}
	}
}
