//go:build linux

package bpf

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
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
	// limbo are the regions of programs endpoints stopped using in the last sync: not reused
	// before the next one, so a walk that read the old endpoint entry never sees them rewritten.
	limbo []extent
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
	endpoints map[uint32]policyEndpoint
	hosts     map[uint32]policyHepProgs // host endpoint stage programs (fhep_v2)
	// programs is the content (render.ContentKey) of each region endpoints and host stages
	// point at; a region that cannot be read (past the array's end) has none.
	programs map[region]string
}

// regions calls f for every region the entries point at: endpoints' then host stages', in
// ifindex order.
func (o *observed) regions(f func(region)) {
	for _, idx := range slices.Sorted(maps.Keys(o.endpoints)) {
		ep := o.endpoints[idx]
		for dir := range ep.Len {
			if ep.Len[dir] > 0 {
				f(region{ep.Base[dir], ep.Len[dir]})
			}
		}
	}
	for _, idx := range slices.Sorted(maps.Keys(o.hosts)) {
		hp := o.hosts[idx]
		for stage := range hp.Len {
			if hp.Len[stage] > 0 {
				f(region{hp.Base[stage], hp.Len[stage]})
			}
		}
	}
}

// wanted is the desired contents of the maps, before programs are placed in the array.
type wanted struct {
	sets      map[render.SetKey]struct{}
	endpoints map[uint32]render.Endpoint
	hosts     map[uint32]render.HostPrograms
	programs  map[uint32][]render.Insn
}

// region is where a program lives: its first block and its length in instructions.
type region struct {
	base, len uint32
}

// extent is the blocks the region occupies.
func (r region) extent() extent {
	return extent{r.base, (r.len + blockInsns - 1) / blockInsns}
}

// blockInsns and progBlocks are BLOCK_INSNS and PROG_BLOCKS in policy.c.
const (
	blockInsns = uint32(len(policyBlock{}.Insn))
	progBlocks = 32768
)

// retiredMaps are pins of earlier map layouts. An agent upgraded from them removes the pins
// at start; the maps live on while the previous programs (still attached) use them, and go
// when the links are switched to this agent's programs.
var retiredMaps = []string{"fprog_v1", "feps_v1", "fhep_v1", "fct_v1"}

// scratchMaps hold nothing across packets (per-CPU working memory of one walk): never pinned,
// each agent's programs get their own.
var scratchMaps = map[string]bool{"fmemo": true}

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
	for name, m := range spec.Maps {
		if !scratchMaps[name] {
			m.Pinning = ebpf.PinByName
		}
	}
	if got := spec.Maps["fprog_v2"].MaxEntries; got != progBlocks {
		return nil, fmt.Errorf("internal: fprog_v2 has %d blocks, the applier assumes %d", got, progBlocks)
	}
	d := &Dataplane{opts: opts, links: map[string]attached{}, clsact: map[string]int{}}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}}); err != nil {
		return nil, fmt.Errorf("loading the bpf policy program (pins in %s): %w", opts.PinDir, err)
	}
	// The old conntrack map's flows are carried over before its pin goes with the others.
	if err := migrateCT(opts.PinDir, d.objs.FctV2); err != nil {
		d.Close()
		return nil, err
	}
	for _, name := range retiredMaps {
		if err := os.Remove(filepath.Join(opts.PinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.Close()
			return nil, fmt.Errorf("removing the pin of retired map %s: %w", name, err)
		}
	}
	return d, nil
}

// migrateCT carries the flows of an older agent's conntrack map (fct_v1: same key, last
// seen time only) into fct_v2 as established flows, then removes its pin, so an upgrade
// does not send established connections back to policy (their replies would meet the other
// direction's policy). Flows already in fct_v2 are kept.
func migrateCT(pinDir string, to *ebpf.Map) error {
	path := filepath.Join(pinDir, "fct_v1")
	old, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the old conntrack map %s: %w", path, err)
	}
	defer old.Close()
	var k policyCtKey
	var lastSeen uint64
	it := old.Iterate()
	for it.Next(&k, &lastSeen) {
		v := policyCtVal{Created: lastSeen, LastSeen: lastSeen, Flags: ctFlagEstablished}
		if err := to.Update(&k, &v, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("migrating conntrack entries from %s: %w", path, err)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading the old conntrack map %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing the old conntrack map pin: %w", err)
	}
	return nil
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
		a.close()
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
func (d *Dataplane) CTMap() *ebpf.Map { return d.objs.FctV2 }

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
	var next *observed
	if full || d.committed == nil {
		d.committed, d.members = nil, nil
		obs, err := d.observe()
		if err != nil {
			return res, err
		}
		all := *want
		all.sets = st.AllSets()
		if p, next, err = diff(&all, obs, d.limbo); err != nil {
			return res, err
		}
	} else {
		// Snapshot sets are diffed set by set against their last committed members (equal
		// slices cost one comparison), so a one-member change in a million-member set does
		// not build a million-key map.
		if p, next, err = diff(want, d.committed, d.limbo); err != nil {
			return res, err
		}
		p.setAdd, p.setDel = memberDelta(d.members, st.MemberSets, p.setAdd, p.setDel)
	}
	next.sets = want.sets // the rendered sets' keys; snapshot sets are tracked in d.members
	prev := d.members
	d.committed, d.members = nil, nil // unknown until the apply succeeds
	if err := d.apply(p, &res); err != nil {
		// Regions written or released by this plan may or may not be in use: keep them all
		// out of the next allocation.
		for _, w := range p.progPut {
			d.limbo = append(d.limbo, w.at.extent())
		}
		d.limbo = append(d.limbo, p.progFree...)
		return res, err
	}
	d.limbo = p.progFree
	d.committed = next
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
	// The periodic resync also sweeps expired conntrack entries. They are not counted as
	// operations: the program already treats them as gone, so the dataplane does not change.
	if full {
		if _, err := d.sweepConntrack(); err != nil {
			return res, err
		}
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
	p, _, err := diff(want, obs, d.limbo)
	if err != nil {
		return nil, err
	}
	svc, err := d.pendingServices(desired)
	if err != nil {
		return nil, err
	}
	return append(p.strings(), svc...), nil
}

// desired resolves the rendered state's interfaces to ifindexes.
func (d *Dataplane) desired(st *render.State) (*wanted, []string) {
	o := &wanted{sets: st.Sets, programs: st.Programs, endpoints: map[uint32]render.Endpoint{}}
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
	o := &observed{sets: map[render.SetKey]struct{}{}, endpoints: map[uint32]policyEndpoint{}, hosts: map[uint32]policyHepProgs{}, programs: map[region]string{}}
	var sk policySetKey
	var one uint8
	it := d.objs.FsetsV1.Iterate()
	for it.Next(&sk, &one) {
		o.sets[fromSetKey(sk)] = struct{}{}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map fsets_v1: %w", err)
	}
	var idx uint32
	var ep policyEndpoint
	it = d.objs.FepsV2.Iterate()
	for it.Next(&idx, &ep) {
		o.endpoints[idx] = ep
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map feps_v2: %w", err)
	}
	if err := d.observeHosts(o); err != nil {
		return nil, err
	}
	// Only the regions endpoints and stages point at hold programs; every other block is free.
	var err error
	o.regions(func(r region) {
		if _, ok := o.programs[r]; ok || err != nil || r.extent().end() > progBlocks || r.extent().end() < r.base {
			return
		}
		var code []render.Insn
		if code, err = d.readProgram(r); err == nil {
			o.programs[r] = render.ContentKey(code)
		}
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// readProgram reads the instructions of one region of fprog_v2.
func (d *Dataplane) readProgram(r region) ([]render.Insn, error) {
	code := make([]render.Insn, 0, r.len)
	var b policyBlock
	for blk := r.base; uint32(len(code)) < r.len; blk++ {
		if err := d.objs.FprogV2.Lookup(blk, &b); err != nil {
			return nil, fmt.Errorf("reading block %d of map fprog_v2: %w", blk, err)
		}
		for i := 0; i < len(b.Insn) && uint32(len(code)) < r.len; i++ {
			code = append(code, fromInsn(b.Insn[i]))
		}
	}
	return code, nil
}

// plan is the map operations from one state to another, in apply order: additions first
// (set members, programs into free regions), then endpoints (which switch to fully written
// programs), then deletions. Freed regions need no kernel operation.
type plan struct {
	setAdd, setDel []render.SetKey
	progPut        []progWrite
	epPut          []uint32
	epVal          []policyEndpoint
	epDel          []uint32
	hostPut        []uint32
	hostVal        []policyHepProgs
	hostDel        []uint32
	progFree       []extent
}

// progWrite is one program written to a fresh region.
type progWrite struct {
	id   uint32
	at   region
	code []render.Insn
}

// ErrProgramsFull is returned by Sync when the instruction array has no free run of blocks
// long enough for a new program.
var ErrProgramsFull = errors.New("bpf: instruction array fprog_v2 full")

// diff plans the operations from have to want and returns the state they leave. A program
// already in a region some endpoint points at stays there; every other wanted program is
// written to blocks no endpoint points at (nor the regions in limbo), endpoints are then
// switched to their programs' regions, and the regions no endpoint points at any more are
// freed.
func diff(want *wanted, have *observed, limbo []extent) (plan, *observed, error) {
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

	keys := make(map[uint32]string, len(want.programs))
	byKey := make(map[string]bool, len(want.programs))
	for id, code := range want.programs {
		k := render.ContentKey(code)
		keys[id], byKey[k] = k, true
	}
	place := map[string]region{}
	used := slices.Clone(limbo)
	before := map[extent]bool{}
	have.regions(func(r region) {
		used = append(used, r.extent())
		before[r.extent()] = true
		if k, ok := have.programs[r]; ok && byKey[k] {
			if _, placed := place[k]; !placed {
				place[k] = r
			}
		}
	})
	free := newFreeList(progBlocks, used)
	for _, id := range slices.Sorted(maps.Keys(want.programs)) {
		k := keys[id]
		if _, ok := place[k]; ok {
			continue
		}
		code := want.programs[id]
		r := region{len: uint32(len(code))}
		base, ok := free.alloc(r.extent().n)
		if !ok {
			total, longest := free.blocks()
			return p, nil, fmt.Errorf("%w: program %08x needs %d blocks, %d free, longest free run %d", ErrProgramsFull, id, r.extent().n, total, longest)
		}
		r.base = base
		place[k] = r
		p.progPut = append(p.progPut, progWrite{id: id, at: r, code: code})
	}

	next := &observed{endpoints: make(map[uint32]policyEndpoint, len(want.endpoints)), hosts: make(map[uint32]policyHepProgs, len(want.hosts)),
		programs: map[region]string{}}
	after := map[extent]bool{}
	// base places one program: its region's first block (0 for an empty stage).
	base := func(id, n uint32) uint32 {
		if n == 0 {
			return 0
		}
		k := keys[id]
		r := place[k]
		next.programs[r] = k
		after[r.extent()] = true
		return r.base
	}
	for idx, e := range want.endpoints {
		v := policyEndpoint{Prog: e.Prog, Len: e.Len, SpoofSet: e.SpoofSet, Flags: e.Flags}
		for dir := range v.Len {
			v.Base[dir] = base(e.Prog[dir], e.Len[dir])
		}
		next.endpoints[idx] = v
		if h, ok := have.endpoints[idx]; !ok || h != v {
			p.epPut = append(p.epPut, idx)
			p.epVal = append(p.epVal, v)
		}
	}
	for idx := range have.endpoints {
		if _, ok := want.endpoints[idx]; !ok {
			p.epDel = append(p.epDel, idx)
		}
	}
	for idx, h := range want.hosts {
		v := policyHepProgs{Prog: h.Prog, Len: h.Len}
		for stage := range v.Len {
			v.Base[stage] = base(h.Prog[stage], h.Len[stage])
		}
		next.hosts[idx] = v
		if o, ok := have.hosts[idx]; !ok || o != v {
			p.hostPut = append(p.hostPut, idx)
			p.hostVal = append(p.hostVal, v)
		}
	}
	for idx := range have.hosts {
		if _, ok := want.hosts[idx]; !ok {
			p.hostDel = append(p.hostDel, idx)
		}
	}
	for e := range before {
		if !after[e] && e.n > 0 {
			p.progFree = append(p.progFree, e)
		}
	}
	slices.SortFunc(p.progFree, func(a, b extent) int { return cmp.Compare(a.start, b.start) })
	return p, next, nil
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
	for _, w := range p.progPut {
		out = append(out, fmt.Sprintf("prog-put %08x %s (%d instructions)", w.id, w.at.extent(), w.at.len))
	}
	hostPut, hostDel := p.hostStrings()
	out = append(out, hostPut...)
	for i, k := range p.epPut {
		v := p.epVal[i]
		out = append(out, fmt.Sprintf("endpoint-put %d {Prog:%08x/%08x Base:%d/%d Len:%d/%d SpoofSet:%08x Flags:%d}",
			k, v.Prog[0], v.Prog[1], v.Base[0], v.Base[1], v.Len[0], v.Len[1], v.SpoofSet, v.Flags))
	}
	for _, k := range p.epDel {
		out = append(out, fmt.Sprintf("endpoint-del %d", k))
	}
	out = append(out, hostDel...)
	for _, e := range p.progFree {
		out = append(out, "prog-free "+e.String())
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
	if len(p.setAdd) > 0 {
		vals := make([]uint8, len(p.setAdd))
		if err := update(d.objs.FsetsV1, setKeys(p.setAdd), vals); err != nil {
			return fmt.Errorf("adding %d members to map fsets_v1: %w", len(p.setAdd), err)
		}
		res.Counts["set-add"] += len(p.setAdd)
	}
	if len(p.progPut) > 0 {
		var keys []uint32
		var vals []policyBlock
		for _, w := range p.progPut {
			for i, in := range w.code {
				if i%int(blockInsns) == 0 {
					keys = append(keys, w.at.base+uint32(i)/blockInsns)
					vals = append(vals, policyBlock{})
				}
				vals[len(vals)-1].Insn[i%int(blockInsns)] = toInsn(in)
			}
		}
		if err := update(d.objs.FprogV2, keys, vals); err != nil {
			return fmt.Errorf("writing %d programs (%d blocks) to map fprog_v2: %w", len(p.progPut), len(keys), err)
		}
		res.Counts["prog-put"] += len(p.progPut)
		res.Counts["block-put"] += len(keys)
	}
	// Stage programs before endpoint entries: a new host endpoint is never seen without them.
	if err := d.putHosts(p, res); err != nil {
		return err
	}
	for i, k := range p.epPut {
		if err := d.objs.FepsV2.Put(k, p.epVal[i]); err != nil {
			return fmt.Errorf("map feps_v2 ifindex %d: %w", k, err)
		}
		res.Counts["endpoint-put"]++
	}
	for _, k := range p.epDel {
		if err := d.objs.FepsV2.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("map feps_v2 ifindex %d: %w", k, err)
		}
		res.Counts["endpoint-del"]++
	}
	if err := d.deleteHosts(p, res); err != nil {
		return err
	}
	if len(p.progFree) > 0 {
		res.Counts["prog-free"] += len(p.progFree)
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

// mapDelta appends to puts and vals the entries of want that have lacks or holds with another
// value, and to dels the keys of have that want lacks: the map operations from have to want.
func mapDelta[K, V comparable](want, have map[K]V, puts []K, vals []V, dels []K) ([]K, []V, []K) {
	for k, v := range want {
		if h, ok := have[k]; !ok || h != v {
			puts = append(puts, k)
			vals = append(vals, v)
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			dels = append(dels, k)
		}
	}
	return puts, vals, dels
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
				os.Remove(filepath.Join(d.opts.PinDir, "links", pinName(name)+"_"+suffix[i]))
			}
			delete(d.links, name)
		}
		if d.opts.Clsact && d.clsact[name] == idx {
			continue
		}
		var ls [2]link.Link
		for i := range 2 {
			pin := filepath.Join(d.opts.PinDir, "links", pinName(name)+"_"+suffix[i])
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
		if _, ok := st.Endpoints[ifaceOfPin(name)]; !ok {
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
