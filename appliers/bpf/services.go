//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/bpf/render"
	"github.com/felis-dev/felis/snapshot"
)

// services is the service maps' state as last committed: what each service rendered to, the
// services claiming each frontend (the first by ID owns it), and the frontend entries written.
type services struct {
	node     string
	addrs    render.NodeAddrs
	rendered map[string]renderedService
	claims   map[render.FrontendKey][]string
	fronts   map[render.FrontendKey]render.Frontend
}

// renderedService is one service's entries and the content hash they were rendered from.
type renderedService struct {
	hash string
	render.ServiceEntries
}

// servicePlan is the service map operations, in apply order: backends written, frontends
// written (switching to complete groups), frontends deleted, backends deleted.
type servicePlan struct {
	bePut []render.BackendKey
	beVal []render.Backend
	fePut []render.FrontendKey
	feVal []render.Frontend
	feDel []render.FrontendKey
	beDel []render.BackendKey
	// staleUDP are the UDP (frontend, backend) pairs whose backend left the frontend's group:
	// their NAT flows are flushed after the apply, as kube-proxy clears UDP conntrack entries
	// (a UDP client reusing its port would otherwise keep sending to the gone backend).
	staleUDP []staleFlow
}

// staleFlow is a frontend and a backend that no longer serves it.
type staleFlow struct {
	frontend render.FrontendKey
	backend  render.Backend
}

func (p *servicePlan) empty() bool {
	return len(p.bePut)+len(p.fePut)+len(p.feDel)+len(p.beDel) == 0
}

func (p *servicePlan) strings() []string {
	var out []string
	for i, k := range p.bePut {
		v := p.beVal[i]
		out = append(out, fmt.Sprintf("backend-put %s %s:%d flags %d", k, addrOf(v.Family, v.Addr), v.Port, v.Flags))
	}
	for i, k := range p.fePut {
		v := p.feVal[i]
		line := fmt.Sprintf("frontend-put %s group %016x count %d flags %d affinity %d", k, v.Group, v.Count, v.Flags, v.Affinity)
		if v.Flags&render.FrontendLocal != 0 {
			line += fmt.Sprintf(" cluster %d", v.Cluster)
		}
		out = append(out, line)
	}
	for _, k := range p.feDel {
		out = append(out, "frontend-del "+k.String())
	}
	for _, k := range p.beDel {
		out = append(out, "backend-del "+k.String())
	}
	return out
}

// renderServices renders every service of the snapshot.
func renderServices(snap *snapshot.Snapshot) (map[string]renderedService, []string) {
	addrs := render.NodeAddrsOf(snap)
	out := make(map[string]renderedService, len(snap.Services))
	var warns []string
	for i := range snap.Services {
		s := &snap.Services[i]
		e, w := renderService(s, snap.Node, addrs)
		warns = append(warns, w...)
		out[s.ID] = renderedService{hash: s.Hash, ServiceEntries: e}
	}
	return out, warns
}

// renderService renders one service; an invalid one (a frontend or backend without address
// or port) gets a warning and no entries, so the other services keep working.
func renderService(s *snapshot.Service, node string, addrs render.NodeAddrs) (render.ServiceEntries, []string) {
	e, w, err := render.Service(s, node, addrs)
	if err != nil {
		return render.ServiceEntries{}, append(w, err.Error()+"; not programmed")
	}
	return e, w
}

// newServices builds the state of a full render.
func newServices(snap *snapshot.Snapshot, rendered map[string]renderedService) *services {
	s := &services{node: snap.Node, addrs: render.NodeAddrsOf(snap), rendered: rendered,
		claims: map[render.FrontendKey][]string{}, fronts: map[render.FrontendKey]render.Frontend{}}
	ids := make([]string, 0, len(rendered))
	for id := range rendered {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		for k, v := range rendered[id].Frontends {
			if len(s.claims[k]) == 0 {
				s.fronts[k] = v
			}
			s.claims[k] = append(s.claims[k], id)
		}
	}
	return s
}

// syncServices brings the service maps to the snapshot's services: at a full sync by reading
// both maps and diffing everything; otherwise only the services whose content hash changed
// (or that came or went) are rendered and diffed against their last committed entries.
func (d *Dataplane) syncServices(snap *snapshot.Snapshot, full bool, res *appliers.Result) error {
	var p servicePlan
	var next *services
	old := d.svc
	d.svc = nil // unknown until the apply succeeds
	if full || old == nil || old.node != snap.Node || old.addrs != render.NodeAddrsOf(snap) {
		rendered, warns := renderServices(snap)
		res.Warnings = append(res.Warnings, warns...)
		next = newServices(snap, rendered)
		obs, err := d.observeServices()
		if err != nil {
			return err
		}
		p = diffServices(next, obs)
	} else {
		next, p = old.update(snap, res)
	}
	if err := d.applyServices(&p, res); err != nil {
		return err
	}
	d.svc = next
	if err := d.flushStaleUDP(p.staleUDP, res); err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	if full {
		if _, err := d.sweepNAT(); err != nil {
			res.Warnings = append(res.Warnings, err.Error())
		}
	}
	return nil
}

// natTimeout is NAT_TIMEOUT_NS of nat.h: an entry idle longer is ignored by the programs.
const natTimeout = 600 * time.Second

// sweepNAT deletes the NAT entries the programs already ignore (idle over natTimeout), at a
// full sync, as sweepConntrack does for conntrack: the LRU map keeps its room for live
// flows. An entry is re-read before its deletion, so one refreshed meanwhile stays. Not
// counted as operations (the dataplane's behaviour does not change).
func (d *Dataplane) sweepNAT() (int, error) {
	now, err := monotonicNanos()
	if err != nil {
		return 0, err
	}
	var dead []policyNatKey
	if err := batchRead(d.objs.FnatV1, func(k *policyNatKey, v *policyNatVal) {
		if time.Duration(now-v.LastSeen) > natTimeout {
			dead = append(dead, *k)
		}
	}); err != nil {
		return 0, fmt.Errorf("reading fnat_v1: %w", err)
	}
	var v policyNatVal
	n := 0
	for i := range dead {
		if err := d.objs.FnatV1.Lookup(&dead[i], &v); err != nil || time.Duration(now-v.LastSeen) <= natTimeout {
			continue
		}
		if err := d.objs.FnatV1.Delete(&dead[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("deleting an idle NAT entry from fnat_v1: %w", err)
		}
		n++
	}
	return n, nil
}

// staleUDP lists, for each UDP frontend of prev, the backends of its group in prev that the
// frontend no longer balances over in cur (by address and port: indexes shift).
func staleUDP(prev, cur render.ServiceEntries) []staleFlow {
	var out []staleFlow
	for fk, f := range prev.Frontends {
		if fk.Protocol != 17 {
			continue
		}
		keep := map[render.Backend]bool{}
		if c, ok := cur.Frontends[fk]; ok {
			for i := range c.Count {
				b := cur.Backends[render.BackendKey{Group: c.Group, Index: i}]
				b.Flags = 0
				keep[b] = true
			}
		}
		for i := range f.Count {
			b := prev.Backends[render.BackendKey{Group: f.Group, Index: i}]
			b.Flags = 0
			if !keep[b] {
				out = append(out, staleFlow{frontend: fk, backend: b})
			}
		}
	}
	return out
}

// flushStaleUDP deletes the NAT entries (both directions) of UDP flows from a frontend to a
// backend that left it. It walks fnat_v1 only when there is something to flush.
func (d *Dataplane) flushStaleUDP(stale []staleFlow, res *appliers.Result) error {
	if len(stale) == 0 {
		return nil
	}
	type pair struct {
		fe  [16]byte
		fp  uint16
		be  [16]byte
		bp  uint16
		fam uint8
	}
	gone := make(map[pair]bool, len(stale))
	for _, f := range stale {
		gone[pair{f.frontend.Addr, f.frontend.Port, f.backend.Addr, f.backend.Port, f.frontend.Family}] = true
	}
	var k policyNatKey
	var v policyNatVal
	var dels []policyNatKey
	it := d.objs.FnatV1.Iterate()
	for it.Next(&k, &v) {
		if k.Proto != 17 {
			continue
		}
		// A forward entry is keyed by the frontend and rewrites to the backend; a reply entry
		// is keyed by the backend and rewrites to come from the frontend.
		if v.Flags&natFlagReply == 0 && gone[pair{k.Dst, k.Dport, v.Dst, v.Dport, k.Family}] ||
			v.Flags&natFlagReply != 0 && gone[pair{v.Src, v.Sport, k.Src, k.Sport, k.Family}] {
			dels = append(dels, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading map fnat_v1 to flush UDP flows of removed backends: %w", err)
	}
	if len(dels) == 0 {
		return nil
	}
	if err := del(d.objs.FnatV1, dels); err != nil {
		return fmt.Errorf("flushing %d UDP NAT entries of removed backends from map fnat_v1: %w", len(dels), err)
	}
	res.Counts["nat-flush"] += len(dels)
	return nil
}

// natFlagReply is NE_REV of nat.h: a reply-direction NAT entry.
const natFlagReply = 1

// observeServices reads the frontend and backend maps.
func (d *Dataplane) observeServices() (*services, error) {
	o := &services{fronts: map[render.FrontendKey]render.Frontend{}, rendered: map[string]renderedService{"": {
		ServiceEntries: render.ServiceEntries{Backends: map[render.BackendKey]render.Backend{}}}}}
	var fk policyFeKey
	var fv policyFeVal
	it := d.objs.FsvcV1.Iterate()
	for it.Next(&fk, &fv) {
		o.fronts[render.FrontendKey{Family: fk.Family, Protocol: fk.Proto, Port: fk.Port, Addr: fk.Addr}] =
			render.Frontend{Group: fv.Group, Count: fv.Count, Flags: fv.Flags, Affinity: fv.Affinity, Cluster: fv.Cluster, SNAT: fv.Snat}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map fsvc_v1: %w", err)
	}
	var bk policyBeKey
	var bv policyBeVal
	bes := o.rendered[""].Backends
	it = d.objs.FbeV1.Iterate()
	for it.Next(&bk, &bv) {
		bes[render.BackendKey{Group: bk.Group, Index: bk.Index}] = render.Backend{Addr: bv.Addr, Port: bv.Port, Family: bv.Family, Flags: bv.Flags}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading map fbe_v1: %w", err)
	}
	return o, nil
}

// diffServices compares a whole desired state with the maps' contents.
func diffServices(want, have *services) servicePlan {
	var p servicePlan
	p.bePut, p.beVal, p.beDel = mapDelta(allBackends(want), allBackends(have), nil, nil, nil)
	p.fePut, p.feVal, p.feDel = mapDelta(want.fronts, have.fronts, nil, nil, nil)
	return p
}

// allBackends is every rendered service's backend entries in one map.
func allBackends(s *services) map[render.BackendKey]render.Backend {
	all := map[render.BackendKey]render.Backend{}
	for _, r := range s.rendered {
		maps.Copy(all, r.Backends)
	}
	return all
}

// update renders the services that changed since s was committed and returns the new state
// (s, updated in place) and the operations between the two.
func (s *services) update(snap *snapshot.Snapshot, res *appliers.Result) (*services, servicePlan) {
	var p servicePlan
	next := s
	var changed []string
	seen := 0
	for i := range snap.Services {
		sv := &snap.Services[i]
		if r, ok := s.rendered[sv.ID]; ok {
			seen++
			if r.hash == sv.Hash && sv.Hash != "" {
				continue
			}
		}
		changed = append(changed, sv.ID)
	}
	var gone []string
	if seen < len(s.rendered) {
		ids := make(map[string]bool, len(snap.Services))
		for i := range snap.Services {
			ids[snap.Services[i].ID] = true
		}
		for id := range s.rendered {
			if !ids[id] {
				gone = append(gone, id)
			}
		}
	}
	if len(changed) == 0 && len(gone) == 0 {
		return next, p
	}
	// Updated in place: syncServices forgets the state until the apply succeeds, so a failure
	// leads to a full sync.
	addrs := render.NodeAddrsOf(snap)
	touched := map[render.FrontendKey]bool{}
	byID := make(map[string]*snapshot.Service, len(changed))
	for _, id := range changed {
		byID[id] = nil
	}
	for i := range snap.Services {
		if _, ok := byID[snap.Services[i].ID]; ok {
			byID[snap.Services[i].ID] = &snap.Services[i]
		}
	}
	for _, id := range append(changed, gone...) {
		prev := s.rendered[id]
		var cur renderedService
		if sv := byID[id]; sv != nil {
			e, w := renderService(sv, snap.Node, addrs)
			res.Warnings = append(res.Warnings, w...)
			cur = renderedService{hash: sv.Hash, ServiceEntries: e}
			next.rendered[id] = cur
		} else {
			delete(next.rendered, id)
		}
		p.bePut, p.beVal, p.beDel = mapDelta(cur.Backends, prev.Backends, p.bePut, p.beVal, p.beDel)
		p.staleUDP = append(p.staleUDP, staleUDP(prev.ServiceEntries, cur.ServiceEntries)...)
		for k := range prev.Frontends {
			if _, ok := cur.Frontends[k]; !ok {
				next.claims[k] = slices.DeleteFunc(next.claims[k], func(c string) bool { return c == id })
				if len(next.claims[k]) == 0 {
					delete(next.claims, k)
				}
			}
			touched[k] = true
		}
		for k := range cur.Frontends {
			if _, ok := prev.Frontends[k]; !ok {
				c := next.claims[k]
				i, _ := slices.BinarySearch(c, id)
				next.claims[k] = slices.Insert(c, i, id)
			}
			touched[k] = true
		}
	}
	for k := range touched {
		h, had := s.fronts[k]
		c := next.claims[k]
		if len(c) == 0 {
			if had {
				p.feDel = append(p.feDel, k)
				delete(next.fronts, k)
			}
			continue
		}
		v := next.rendered[c[0]].Frontends[k]
		next.fronts[k] = v
		if !had || h != v {
			p.fePut = append(p.fePut, k)
			p.feVal = append(p.feVal, v)
		}
	}
	return next, p
}

func (d *Dataplane) applyServices(p *servicePlan, res *appliers.Result) error {
	if p.empty() {
		return nil
	}
	beKeys := func(ks []render.BackendKey) []policyBeKey {
		out := make([]policyBeKey, len(ks))
		for i, k := range ks {
			out[i] = policyBeKey{Group: k.Group, Index: k.Index}
		}
		return out
	}
	feKeys := func(ks []render.FrontendKey) []policyFeKey {
		out := make([]policyFeKey, len(ks))
		for i, k := range ks {
			out[i] = policyFeKey{Family: k.Family, Proto: k.Protocol, Port: k.Port, Addr: k.Addr}
		}
		return out
	}
	if len(p.bePut) > 0 {
		vals := make([]policyBeVal, len(p.beVal))
		for i, v := range p.beVal {
			vals[i] = policyBeVal{Addr: v.Addr, Port: v.Port, Family: v.Family, Flags: v.Flags}
		}
		if err := update(d.objs.FbeV1, beKeys(p.bePut), vals); err != nil {
			return fmt.Errorf("writing %d backends to map fbe_v1: %w", len(p.bePut), err)
		}
		res.Counts["backend-put"] += len(p.bePut)
	}
	if len(p.fePut) > 0 {
		vals := make([]policyFeVal, len(p.feVal))
		for i, v := range p.feVal {
			vals[i] = policyFeVal{Group: v.Group, Count: v.Count, Flags: v.Flags, Affinity: v.Affinity, Cluster: v.Cluster, Snat: v.SNAT}
		}
		if err := update(d.objs.FsvcV1, feKeys(p.fePut), vals); err != nil {
			return fmt.Errorf("writing %d frontends to map fsvc_v1: %w", len(p.fePut), err)
		}
		res.Counts["frontend-put"] += len(p.fePut)
	}
	if len(p.feDel) > 0 {
		if err := del(d.objs.FsvcV1, feKeys(p.feDel)); err != nil {
			return fmt.Errorf("deleting %d frontends from map fsvc_v1: %w", len(p.feDel), err)
		}
		res.Counts["frontend-del"] += len(p.feDel)
	}
	if len(p.beDel) > 0 {
		if err := del(d.objs.FbeV1, beKeys(p.beDel)); err != nil {
			return fmt.Errorf("deleting %d backends from map fbe_v1: %w", len(p.beDel), err)
		}
		res.Counts["backend-del"] += len(p.beDel)
	}
	res.Ops = append(res.Ops, p.strings()...)
	return nil
}

// pendingServices is the operations still needed to bring the service maps to snap.
func (d *Dataplane) pendingServices(snap *snapshot.Snapshot) ([]string, error) {
	rendered, _ := renderServices(snap)
	obs, err := d.observeServices()
	if err != nil {
		return nil, err
	}
	p := diffServices(newServices(snap, rendered), obs)
	return p.strings(), nil
}

// addrOf prints a map address of the family.
func addrOf(fam uint8, b [16]byte) string {
	if fam == 4 {
		return fmt.Sprintf("%d.%d.%d.%d", b[0], b[1], b[2], b[3])
	}
	var sb strings.Builder
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%x", uint16(b[i])<<8|uint16(b[i+1]))
	}
	return sb.String()
}
