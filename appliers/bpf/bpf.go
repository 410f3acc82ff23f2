//go:build linux

package bpf

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	"github.com/felis-dev/felis/snapshot"
)

// DefaultPinRoot is the bpffs directory under which felis pins its maps and links, one
// subdirectory per node.
const DefaultPinRoot = "/sys/fs/bpf/felis"

// Options configure a Dataplane.
type Options struct {
	// PinDir is where maps and links are pinned; it must be on a bpffs mount (Open mounts
	// one on /sys/fs/bpf when the default is used and none is mounted).
	PinDir string
	// Ifindex resolves an interface name (defaults to the current netns's interfaces).
	Ifindex func(name string) (int, error)
	// NoAttach skips attaching programs (map-only use: tests with BPF_PROG_TEST_RUN).
	NoAttach bool
	// Interfaces lists the interface names a `*` host endpoint goes on (defaults to the
	// current netns's interfaces; called at each Sync while there is one).
	Interfaces func() ([]string, error)
	// Clsact attaches with the legacy clsact qdisc and a direct-action cls_bpf filter instead
	// of TCX (which is also the fallback when the kernel lacks TCX).
	Clsact bool
	// DataIfacePattern picks the data interfaces the service program is attached to (nil:
	// DefaultDataIfacePattern).
	DataIfacePattern *regexp.Regexp
}

// Dataplane is the BPF policy applier: pinned maps, programs attached per workload interface.
type Dataplane struct {
	opts      Options
	objs      policyObjects
	committed *observed                   // nil: read the maps at the next Sync; its sets hold only rendered sets' keys
	members   map[string]render.MemberSet // snapshot sets as last committed (members copied)
	links     map[string]attached
	clsact    map[string]int // interfaces (and their ifindex) with the clsact filters of this run's programs
	svc       *services      // service maps as last committed; nil: read them at the next Sync
	data      dataIfaces     // data interfaces with the service program attached
}

// attached is one interface's two TCX links and the ifindex they were made on (a workload
// recreated under the same name gets a new interface, and needs new links).
type attached struct {
	ifindex int
	links   [2]link.Link
}

// observed is the maps' contents, as read back or last committed.
type observed struct {
	sets      map[render.SetKey]struct{}
	insns     map[render.InsnKey]render.Insn
	endpoints map[uint32]render.Endpoint
	hosts     map[uint32]render.HostPrograms // host endpoint stage programs (fhep_v1)
}

// Open loads the program and adopts (or creates and pins) its maps under opts.PinDir.
func Open(opts Options) (*Dataplane, error) {
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinRoot
		if err := ensureBPFFS("/sys/fs/bpf"); err != nil {
			return nil, err
		}
	}
	if opts.Ifindex == nil {
		opts.Ifindex = func(name string) (int, error) {
			i, err := net.InterfaceByName(name)
			if err != nil {
				return 0, err
			}
			return i.Index, nil
		}
	}
	if opts.Interfaces == nil {
		opts.Interfaces = listInterfaces
	}
	if err := os.MkdirAll(filepath.Join(opts.PinDir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("bpf pin directory %s: %w", opts.PinDir, err)
	}
	spec, err := loadPolicy()
	if err != nil {
		return nil, err
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
	d := &Dataplane{opts: opts, links: map[string]attached{}, clsact: map[string]int{}}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}}); err != nil {
		return nil, fmt.Errorf("loading the bpf policy program (pins in %s): %w", opts.PinDir, err)
	}
	return d, nil
}

// ensureBPFFS mounts bpffs on dir unless it already is one.
func ensureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs on %s: %w", dir, err)
	}
	return nil
}

// Close releases the program and map handles; pinned maps and links stay in the kernel.
func (d *Dataplane) Close() error {
	for _, a := range d.links {
		for _, x := range a.links {
			if x != nil {
				x.Close()
			}
		}
	}
	for _, a := range d.data {
		if a.link != nil {
			a.link.Close()
		}
	}
	return d.objs.Close()
}

// Name is "bpf".
func (d *Dataplane) Name() string { return "bpf" }

// Programs returns the two TC programs (to the workload, from the workload).
func (d *Dataplane) Programs() (toWorkload, fromWorkload *ebpf.Program) {
	return d.objs.FelisToWep, d.objs.FelisFromWep
}

// CTMap returns the conntrack map.
func (d *Dataplane) CTMap() *ebpf.Map { return d.objs.FctV1 }

// SetsMap returns the IP-set LPM trie.
func (d *Dataplane) SetsMap() *ebpf.Map { return d.objs.FsetsV1 }

// Sync makes the maps (and attachments) match desired; see appliers.Dataplane.
func (d *Dataplane) Sync(ctx context.Context, desired *snapshot.Snapshot, full bool) (appliers.Result, error) {
	st, err := render.Render(desired)
	if err != nil {
		return appliers.Result{}, fmt.Errorf("render: %w", err)
	}
	if err := d.expandWildcard(st); err != nil {
		return appliers.Result{}, err
	}
	res := appliers.Result{Counts: map[string]int{}, Warnings: st.Warnings}
	want, warns := d.desired(st)
	res.Warnings = append(res.Warnings, warns...)
	var p plan
	if full || d.committed == nil {
		d.committed, d.members = nil, nil
		obs, err := d.observe()
		if err != nil {
			return res, err
		}
		all := *want
		all.sets = st.AllSets()
		p = diff(&all, obs)
	} else {
		// Snapshot sets are diffed set by set against their last committed members (equal
		// slices cost one comparison), so a one-member change in a million-member set does
		// not build a million-key map.
		p = diff(want, d.committed)
		p.setAdd, p.setDel = memberDelta(d.members, st.MemberSets, p.setAdd, p.setDel)
	}
	prev := d.members
	d.committed, d.members = nil, nil // unknown until the apply succeeds
	if err := d.apply(p, &res); err != nil {
		return res, err
	}
	d.committed = want
	d.members = make(map[string]render.MemberSet, len(st.MemberSets))
	for id, m := range st.MemberSets {
		if o, ok := prev[id]; ok && o.ID == m.ID && o.Type == m.Type && slices.Equal(o.Members, m.Members) {
			m.Members = o.Members // unchanged: keep the copy we have
		} else {
			m.Members = slices.Clone(m.Members)
		}
		d.members[id] = m
	}
	if err := d.syncServices(desired, full, &res); err != nil {
		return res, err
	}
	if !d.opts.NoAttach {
		if err := d.attach(ctx, st, &res); err != nil {
			return res, err
		}
		if err := d.attachData(st, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// Pending reads the maps and returns the operations still needed.
func (d *Dataplane) Pending(_ context.Context, desired *snapshot.Snapshot) ([]string, error) {
	st, err := render.Render(desired)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	if err := d.expandWildcard(st); err != nil {
		return nil, err
	}
	want, _ := d.desired(st)
	want.sets = st.AllSets()
	obs, err := d.observe()
	if err != nil {
		return nil, err
	}
	svc, err := d.pendingServices(desired)
	if err != nil {
		return nil, err
	}
	return append(diff(want, obs).strings(), svc...), nil
}

// desired resolves the rendered state's interfaces to ifindexes.
func (d *Dataplane) desired(st *render.State) (*observed, []string) {
	o := &observed{sets: st.Sets, insns: st.Insns, endpoints: map[uint32]render.Endpoint{}}
	var warns []string
	for name, ep := range st.Endpoints {
		idx, err := d.opts.Ifindex(name)
		if err != nil {
			warns = append(warns, fmt.Sprintf("endpoints[interface=%s]: %v; not programmed yet", name, err))
			continue
		}
		o.endpoints[uint32(idx)] = ep
	}
	d.desiredHosts(st, o)
	return o, warns
}

func (d *Dataplane) observe() (*observed, error) {
	o := &observed{sets: map[render.SetKey]struct{}{}, insns: map[render.InsnKey]render.Insn{}, endpoints: map[uint32]render.Endpoint{}}
	var sk policySetKey
	var one uint8
	it := d.objs.FsetsV1.Iterate()
	for it.Next(&sk, &one) {
		o.sets[fromSetKey(sk)] = struct{}{}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map fsets_v1: %w", err)
	}
	var ik policyInsnKey
	var in policyInsn
	it = d.objs.FprogV1.Iterate()
	for it.Next(&ik, &in) {
		o.insns[render.InsnKey{Prog: ik.Prog, PC: ik.Pc}] = fromInsn(in)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map fprog_v1: %w", err)
	}
	var idx uint32
	var ep policyEndpoint
	it = d.objs.FepsV1.Iterate()
	for it.Next(&idx, &ep) {
		o.endpoints[idx] = render.Endpoint{Prog: ep.Prog, Len: ep.Len, SpoofSet: ep.SpoofSet, Flags: ep.Flags}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map feps_v1: %w", err)
	}
	if err := d.observeHosts(o); err != nil {
		return nil, err
	}
	return o, nil
}

// plan is the map operations from one state to another, in apply order: additions first,
// then endpoints (which switch to fully written programs), then deletions.
type plan struct {
	setAdd, setDel []render.SetKey
	insnPut        []render.InsnKey
	insnVal        []render.Insn
	insnDel        []render.InsnKey
	epPut          []uint32
	epVal          []render.Endpoint
	epDel          []uint32
	hostPut        []uint32
	hostVal        []render.HostPrograms
	hostDel        []uint32
}

func diff(want, have *observed) plan {
	var p plan
	for k := range want.sets {
		if _, ok := have.sets[k]; !ok {
			p.setAdd = append(p.setAdd, k)
		}
	}
	for k := range have.sets {
		if _, ok := want.sets[k]; !ok {
			p.setDel = append(p.setDel, k)
		}
	}
	for k, v := range want.insns {
		if h, ok := have.insns[k]; !ok || h != v {
			p.insnPut = append(p.insnPut, k)
			p.insnVal = append(p.insnVal, v)
		}
	}
	for k := range have.insns {
		if _, ok := want.insns[k]; !ok {
			p.insnDel = append(p.insnDel, k)
		}
	}
	for k, v := range want.endpoints {
		if h, ok := have.endpoints[k]; !ok || h != v {
			p.epPut = append(p.epPut, k)
			p.epVal = append(p.epVal, v)
		}
	}
	for k := range have.endpoints {
		if _, ok := want.endpoints[k]; !ok {
			p.epDel = append(p.epDel, k)
		}
	}
	diffHosts(want, have, &p)
	return p
}

// memberDelta appends the member additions and deletions that take the snapshot sets from
// old to new.
func memberDelta(old, new map[string]render.MemberSet, add, del []render.SetKey) ([]render.SetKey, []render.SetKey) {
	all := func(m render.MemberSet, out []render.SetKey) []render.SetKey {
		for i := range m.Members {
			out = append(out, m.Key(i))
		}
		return out
	}
	for id, n := range new {
		o, ok := old[id]
		switch {
		case !ok:
			add = all(n, add)
		case o.ID != n.ID || o.Type != n.Type:
			del = all(o, del)
			add = all(n, add)
		case slices.Equal(o.Members, n.Members):
		case slices.IsSortedFunc(o.Members, cmpMember) && slices.IsSortedFunc(n.Members, cmpMember):
			i, j := 0, 0
			for i < len(o.Members) || j < len(n.Members) {
				c := 0
				switch {
				case i == len(o.Members):
					c = 1
				case j == len(n.Members):
					c = -1
				default:
					c = cmpMember(o.Members[i], n.Members[j])
				}
				switch {
				case c < 0:
					del = append(del, o.Key(i))
					i++
				case c > 0:
					add = append(add, n.Key(j))
					j++
				default:
					i++
					j++
				}
			}
		default:
			have := make(map[render.SetKey]bool, len(o.Members))
			for i := range o.Members {
				have[o.Key(i)] = true
			}
			for j := range n.Members {
				k := n.Key(j)
				if !have[k] {
					add = append(add, k)
				}
				delete(have, k)
			}
			for k := range have {
				del = append(del, k)
			}
		}
	}
	for id, o := range old {
		if _, ok := new[id]; !ok {
			del = all(o, del)
		}
	}
	return add, del
}

func cmpMember(a, b snapshot.Member) int {
	if c := a.Prefix.Compare(b.Prefix); c != 0 {
		return c
	}
	if c := int(a.Protocol) - int(b.Protocol); c != 0 {
		return c
	}
	return int(a.Port) - int(b.Port)
}

func (p plan) strings() []string {
	var out []string
	for _, k := range p.setAdd {
		out = append(out, "set-add "+k.String())
	}
	for i, k := range p.insnPut {
		out = append(out, fmt.Sprintf("insn-put %08x/%d %+v", k.Prog, k.PC, p.insnVal[i]))
	}
	hostPut, hostDel := p.hostStrings()
	out = append(out, hostPut...)
	for i, k := range p.epPut {
		out = append(out, fmt.Sprintf("endpoint-put %d %+v", k, p.epVal[i]))
	}
	for _, k := range p.epDel {
		out = append(out, fmt.Sprintf("endpoint-del %d", k))
	}
	out = append(out, hostDel...)
	for _, k := range p.insnDel {
		out = append(out, fmt.Sprintf("insn-del %08x/%d", k.Prog, k.PC))
	}
	for _, k := range p.setDel {
		out = append(out, "set-del "+k.String())
	}
	return out
}

func (d *Dataplane) apply(p plan, res *appliers.Result) error {
	setKeys := func(ks []render.SetKey) []policySetKey {
		out := make([]policySetKey, len(ks))
		for i, k := range ks {
			out[i] = toSetKey(k)
		}
		return out
	}
	insnKeys := func(ks []render.InsnKey) []policyInsnKey {
		out := make([]policyInsnKey, len(ks))
		for i, k := range ks {
			out[i] = policyInsnKey{Prog: k.Prog, Pc: k.PC}
		}
		return out
	}
	if len(p.setAdd) > 0 {
		vals := make([]uint8, len(p.setAdd))
		if err := update(d.objs.FsetsV1, setKeys(p.setAdd), vals); err != nil {
			return fmt.Errorf("adding %d members to map fsets_v1: %w", len(p.setAdd), err)
		}
		res.Counts["set-add"] += len(p.setAdd)
	}
	if len(p.insnPut) > 0 {
		vals := make([]policyInsn, len(p.insnVal))
		for i, v := range p.insnVal {
			vals[i] = toInsn(v)
		}
		if err := update(d.objs.FprogV1, insnKeys(p.insnPut), vals); err != nil {
			return fmt.Errorf("writing %d instructions to map fprog_v1: %w", len(p.insnPut), err)
		}
		res.Counts["insn-put"] += len(p.insnPut)
	}
	// Stage programs before endpoint entries: a new host endpoint is never seen without them.
	if err := d.putHosts(p, res); err != nil {
		return err
	}
	for i, k := range p.epPut {
		v := p.epVal[i]
		if err := d.objs.FepsV1.Put(k, policyEndpoint{Prog: v.Prog, Len: v.Len, SpoofSet: v.SpoofSet, Flags: v.Flags}); err != nil {
			return fmt.Errorf("map feps_v1 ifindex %d: %w", k, err)
		}
		res.Counts["endpoint-put"]++
	}
	for _, k := range p.epDel {
		if err := d.objs.FepsV1.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("map feps_v1 ifindex %d: %w", k, err)
		}
		res.Counts["endpoint-del"]++
	}
	if err := d.deleteHosts(p, res); err != nil {
		return err
	}
	if len(p.insnDel) > 0 {
		if err := del(d.objs.FprogV1, insnKeys(p.insnDel)); err != nil {
			return fmt.Errorf("deleting %d instructions from map fprog_v1: %w", len(p.insnDel), err)
		}
		res.Counts["insn-del"] += len(p.insnDel)
	}
	if len(p.setDel) > 0 {
		if err := del(d.objs.FsetsV1, setKeys(p.setDel)); err != nil {
			return fmt.Errorf("deleting %d members from map fsets_v1: %w", len(p.setDel), err)
		}
		res.Counts["set-del"] += len(p.setDel)
	}
	res.Ops = append(res.Ops, p.strings()...)
	return nil
}

// update writes keys/values in batches where the map type supports it, else one by one.
func update[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	const chunk = 65536
	for i := 0; i < len(keys); i += chunk {
		j := min(i+chunk, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], vals[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
				return err
			}
			for x := i; x < j; x++ {
				if err := m.Put(keys[x], vals[x]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func del[K any](m *ebpf.Map, keys []K) error {
	const chunk = 65536
	for i := 0; i < len(keys); i += chunk {
		j := min(i+chunk, len(keys))
		if _, err := m.BatchDelete(keys[i:j], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
			for x := i; x < j; x++ {
				if err := m.Delete(keys[x]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return err
				}
			}
		}
	}
	return nil
}

// attach attaches both programs to every endpoint interface that lacks them (adopting pinned
// links from a previous run and pointing them at this run's programs), and removes the pins
// of interfaces no longer desired.
func (d *Dataplane) attach(_ context.Context, st *render.State, res *appliers.Result) error {
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range st.Endpoints {
			if !yield(n) {
				return
			}
		}
	})
	progs := [2]*ebpf.Program{d.objs.FelisToWep, d.objs.FelisFromWep}
	types := [2]ebpf.AttachType{ebpf.AttachTCXEgress, ebpf.AttachTCXIngress}
	suffix := [2]string{"out", "in"}
	for _, name := range names {
		idx, err := d.opts.Ifindex(name)
		if err != nil {
			continue // warned in desired
		}
		if a, ok := d.links[name]; ok {
			if a.ifindex == idx {
				continue
			}
			for i, l := range a.links { // the old interface is gone, and its links with it
				l.Close()
				os.Remove(filepath.Join(d.opts.PinDir, "links", name+"_"+suffix[i]))
			}
			delete(d.links, name)
		}
		if d.opts.Clsact && d.clsact[name] == idx {
			continue
		}
		var ls [2]link.Link
		for i := range 2 {
			pin := filepath.Join(d.opts.PinDir, "links", name+"_"+suffix[i])
			if l, err := link.LoadPinnedLink(pin, nil); err == nil && !d.opts.Clsact {
				if onIfindex(l, idx) && l.Update(progs[i]) == nil {
					ls[i] = l
					res.Counts["link-adopt"]++
					continue
				}
				l.Unpin()
				l.Close()
			}
			var l link.Link
			if !d.opts.Clsact {
				l, err = link.AttachTCX(link.TCXOptions{Interface: idx, Program: progs[i], Attach: types[i]})
				if errors.Is(err, ebpf.ErrNotSupported) {
					d.opts.Clsact = true // no TCX in this kernel: clsact from now on
				}
			}
			if d.opts.Clsact {
				if err := attachClsact(idx, i == 1, progs[i]); err != nil {
					return fmt.Errorf("endpoints[interface=%s]: attaching clsact %s: %w", name, suffix[i], err)
				}
				res.Counts["filter-replace"]++
				res.Ops = append(res.Ops, fmt.Sprintf("filter replace clsact %s %s", suffix[i], name))
				continue
			}
			if err != nil {
				return fmt.Errorf("endpoints[interface=%s]: attaching TCX %s: %w", name, suffix[i], err)
			}
			if err := l.Pin(pin); err != nil {
				l.Close()
				return fmt.Errorf("endpoints[interface=%s]: pinning link: %w", name, err)
			}
			ls[i] = l
			res.Counts["link-attach"]++
			res.Ops = append(res.Ops, fmt.Sprintf("attach tcx %s %s", suffix[i], name))
		}
		if d.opts.Clsact {
			d.clsact[name] = idx
			continue
		}
		d.links[name] = attached{ifindex: idx, links: ls}
	}
	for name := range d.clsact {
		if _, ok := st.Endpoints[name]; !ok {
			delete(d.clsact, name) // the interface went with its workload; nothing to detach
		}
	}
	for name, a := range d.links {
		if _, ok := st.Endpoints[name]; ok {
			continue
		}
		for _, l := range a.links {
			if l != nil {
				l.Unpin()
				l.Close()
			}
		}
		delete(d.links, name)
		res.Counts["link-detach"]++
	}
	// Pins of interfaces gone while no agent ran.
	ents, _ := os.ReadDir(filepath.Join(d.opts.PinDir, "links"))
	for _, e := range ents {
		name := e.Name()
		if i := strings.LastIndex(name, "_"); i > 0 {
			name = name[:i]
		}
		if _, ok := st.Endpoints[name]; !ok {
			os.Remove(filepath.Join(d.opts.PinDir, "links", e.Name()))
		}
	}
	return nil
}

// onIfindex says whether a TCX link is attached to the interface with this index.
func onIfindex(l link.Link, idx int) bool {
	info, err := l.Info()
	if err != nil || info.TCX() == nil {
		return false
	}
	return int(info.TCX().Ifindex) == idx
}

// clsactHandle and clsactPrio identify felis's cls_bpf filter on each clsact hook.
const (
	clsactHandle = 0xfe11
	clsactPrio   = 1
)

// attachClsact makes sure the interface has a clsact qdisc and replaces felis's
// direct-action filter on its ingress (or egress) hook with prog, atomically.
func attachClsact(ifindex int, ingress bool, prog *ebpf.Program) error {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("clsact qdisc: %w", err)
	}
	parent := uint32(netlink.HANDLE_MIN_EGRESS)
	if ingress {
		parent = netlink.HANDLE_MIN_INGRESS
	}
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: clsactHandle, Priority: clsactPrio, Protocol: unix.ETH_P_ALL},
		Fd:           prog.FD(),
		Name:         "felis",
		DirectAction: true,
	}
	return netlink.FilterReplace(f)
}

func toSetKey(k render.SetKey) policySetKey {
	return policySetKey{Prefixlen: 64 + uint32(k.Bits), Set: k.Set, Family: k.Family, Proto: k.Protocol, Port: k.Port, Addr: k.Addr}
}

func fromSetKey(k policySetKey) render.SetKey {
	return render.SetKey{Set: k.Set, Family: k.Family, Protocol: k.Proto, Port: k.Port, Addr: k.Addr, Bits: uint8(k.Prefixlen - 64)}
}

func toInsn(in render.Insn) policyInsn {
	return policyInsn{Kind: in.Kind, Flags: in.Flags, A: in.A, B: in.B, Min: in.Min, Max: in.Max, Set: in.Set, Next: in.Next}
}

func fromInsn(in policyInsn) render.Insn {
	return render.Insn{Kind: in.Kind, Flags: in.Flags, A: in.A, B: in.B, Min: in.Min, Max: in.Max, Set: in.Set, Next: in.Next}
}
