package render

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/felis-dev/felis/snapshot"
)

// Services are rendered as kube-proxy's nftables mode does it, into the services table
// (felis-svc), which the applier commits in the same transaction as the policy table, so
// policy and load balancing still change together and the same chain-hash diff applies:
// static base chains at the dstnat hooks look every packet's destination up in a frontend
// verdict map; each service port has a chain that picks an endpoint at random (after an
// affinity check) with a cascade of random draws and jumps to that endpoint's chain, which
// marks hairpin traffic for masquerade, records affinity and DNATs. DNAT happens at priority
// -100, after the preDNAT policies (-150) and before every filter chain,
// so policy sees the chosen backend, as in Calico. The masquerade the services ask for with
// MasqMark (external frontends, and hairpin: a backend reaching its own service) stays in
// the policy table's nat-postrouting, beside NAT-outgoing: a packet mark crosses tables.

// MasqMark is the packet-mark bit that asks nat-postrouting to masquerade: set for traffic
// arriving on an external frontend whose service does not keep the client's address
// (externalTrafficPolicy Cluster), so replies from a backend on another node come back
// through this one, and for a backend reaching its own service (hairpin), whose reply would
// otherwise skip the reverse DNAT.
const MasqMark uint32 = 0x02000000

// PriorityDstNAT is the nat hook priority of the service dispatch chains.
const PriorityDstNAT = -100

// MapServices is the stem of the frontend verdict maps svc-4 and svc-6.
const MapServices = "svc"

// ServiceMap is the frontend verdict map of one family.
func ServiceMap(family int) string { return fmt.Sprintf("%s-%d", MapServices, family) }

// servicePort identifies one service port of one family: the unit that owns a service chain.
type servicePort struct {
	name     string // chain name stem: svc ID / port name / protocol / family
	portName string
	proto    uint8
	family   int
}

// Renderer is Render with a memory of the services it rendered: a service whose content
// hash (and node) did not change since the last call keeps its chains, sets and map elements
// without being rendered again, and the sorted lists they live in are patched rather than
// rebuilt, so one changed service among thousands costs about what it costs. Its result is
// always the same as Render's. A Renderer is not safe for concurrent use.
type Renderer struct {
	// oneTable puts every service in the first services table (RenderEndpointChains).
	oneTable bool
	gen      uint64 // map diffs run, to find the services that went
	// last lists the services the last Render had, sorted by ID, for diffSorted; valid
	// (lastOK) only after a Render that succeeded, for lastScope.
	last      []renderedService
	lastScope string
	lastOK    bool
	entries   map[string]*serviceEntry // by service ID
	chains    []Chain                  // every service's chains, by table and name
	sets      []Set                    // every service's affinity sets, by table and name
	elems     []frontendElement        // every service's map elements, by key then owner
	// frontends holds each table's and family's frontend map elements as last handed out,
	// nil after a rebuild: while no service changes, every Render returns the same (never
	// written) slices, which lets Plan see an unchanged map at once; a few changed services
	// copy and patch only the lists they touch.
	frontends map[shardFamily][]MapElement
}

// shardFamily names one services table's map or set of one family.
type shardFamily struct {
	table  TableID
	family int
}

// serviceEntry is what one service rendered to.
type serviceEntry struct {
	hash, scope string // what the rendering depends on: the service's content hash and its scope (serviceScope)
	gen         uint64 // the last render that had this service
	chains      []Chain
	sets        []Set
	elems       []frontendElement
}

// frontendElement is a frontend map element with the service that wants it: when two
// services claim one key, the first by ID keeps it.
type frontendElement struct {
	MapElement
	owner string
	table TableID // the owner's services table, whose map gets the element if it wins
}

func compareFrontendElement(a, b frontendElement) int {
	return cmp.Or(a.MapElement.Compare(b.MapElement), strings.Compare(a.owner, b.owner))
}

// NewRenderer returns a Renderer with nothing remembered.
func NewRenderer() *Renderer { return &Renderer{entries: map[string]*serviceEntry{}} }

// RenderEndpointChains is Render with every service in the first services table (felis-svc),
// which the iptables dataplane translates into its nat table; the chains (one per service
// port and one per endpoint, as kube-proxy's) are the same.
func RenderEndpointChains(snap snapshot.Snapshot) (Table, error) {
	r := NewRenderer()
	r.oneTable = true
	t, err := r.Render(snap)
	// The other services tables are not used (not created by Plan, not printed).
	t.Missing = slices.Clone(Tables[2:])
	return t, err
}

// services brings the renderer's service objects up to date with the snapshot.
func (r *Renderer) services(snap *snapshot.Snapshot) error {
	changed, gone, ok := r.diffSorted(snap)
	if !ok {
		changed, gone = r.diffByMap(snap)
	}
	wasOK := r.lastOK
	r.lastOK = false // until the entries hold this snapshot
	if len(changed) > 0 || len(gone) > 0 {
		if err := r.apply(snap, changed, gone); err != nil {
			return err
		}
	}
	if ok && wasOK && len(changed)+len(gone) <= 64 {
		// A few changes: patch the list (rewriting 10,000 entries cost more than the rest
		// of the diff).
		for _, id := range gone {
			if i, found := slices.BinarySearchFunc(r.last, id, compareRendered); found {
				r.last = slices.Delete(r.last, i, i+1)
			}
		}
		for _, svc := range changed {
			i, found := slices.BinarySearchFunc(r.last, svc.ID, compareRendered)
			if found {
				r.last[i].hash = svc.Hash
			} else {
				r.last = slices.Insert(r.last, i, renderedService{svc.ID, svc.Hash})
			}
		}
	} else {
		r.last = r.last[:0]
		for i := range snap.Services {
			r.last = append(r.last, renderedService{snap.Services[i].ID, snap.Services[i].Hash})
		}
	}
	r.lastScope, r.lastOK = serviceScope(snap), true
	return nil
}

func compareRendered(s renderedService, id string) int { return strings.Compare(s.id, id) }

// renderedService is a service the last Render had: its ID and content hash.
type renderedService struct{ id, hash string }

// diffSorted finds the changed and gone services by a merge join of the snapshot's services
// with the last Render's (both sorted by ID, as Finalize sorts them), without a map lookup
// per service; ok is false when it cannot (another node, an unsorted snapshot, no last).
func (r *Renderer) diffSorted(snap *snapshot.Snapshot) (changed []*snapshot.Service, gone []string, ok bool) {
	if !r.lastOK || serviceScope(snap) != r.lastScope {
		return nil, nil, false
	}
	svcs, last := snap.Services, r.last
	i, j := 0, 0
	for i < len(svcs) || j < len(last) {
		if i > 0 && i < len(svcs) && svcs[i-1].ID >= svcs[i].ID {
			return nil, nil, false
		}
		switch {
		case j == len(last) || i < len(svcs) && svcs[i].ID < last[j].id:
			changed = append(changed, &svcs[i])
			i++
		case i == len(svcs) || svcs[i].ID > last[j].id:
			gone = append(gone, last[j].id)
			j++
		default:
			if svcs[i].Hash != last[j].hash || svcs[i].Hash == "" {
				changed = append(changed, &svcs[i])
			}
			i++
			j++
		}
	}
	return changed, gone, true
}

// diffByMap finds the changed and gone services through the entries map.
func (r *Renderer) diffByMap(snap *snapshot.Snapshot) (changed []*snapshot.Service, gone []string) {
	r.gen++
	scope := serviceScope(snap)
	for i := range snap.Services {
		s := &snap.Services[i]
		e := r.entries[s.ID]
		if e == nil || e.hash != s.Hash || e.scope != scope || s.Hash == "" {
			changed = append(changed, s)
		} else {
			e.gen = r.gen
		}
	}
	if len(r.entries) > len(snap.Services)-len(changed) {
		for id, e := range r.entries {
			if e.gen != r.gen {
				gone = append(gone, id)
			}
		}
	}
	return changed, gone
}

// apply renders the changed services and updates the entries and sorted lists.
func (r *Renderer) apply(snap *snapshot.Snapshot, changed []*snapshot.Service, gone []string) error {
	fresh := make([]*serviceEntry, len(changed))
	prefixes := workloadPrefixes(snap)
	for i, s := range changed {
		e, err := renderService(s, snap.Node, prefixes, r.oneTable)
		if err != nil {
			r.frontends = nil
			return err
		}
		fresh[i] = e
	}
	// Many changes: rebuild the sorted lists; few: patch them.
	if len(changed)+len(gone) > len(r.entries)/8+16 {
		for _, id := range gone {
			delete(r.entries, id)
		}
		for i, s := range changed {
			r.entries[s.ID] = fresh[i]
		}
		r.rebuild()
		r.frontends = nil
		return nil
	}
	var old, added serviceEntry
	for _, id := range gone {
		collect(&old, r.entries[id])
		delete(r.entries, id)
	}
	for i, s := range changed {
		if e := r.entries[s.ID]; e != nil {
			collect(&old, e)
		}
		r.entries[s.ID] = fresh[i]
		collect(&added, fresh[i])
	}
	r.patch(&old, &added)
	r.patchDerived(&old, &added)
	return nil
}

// patchDerived brings the handed-out frontend lists up to date with a patch of
// a few services: each key those services had or have gets its winner (the first owner in
// the patched lists) in the winner's table, or goes. Only the lists it touches are copied
// (the previous render's table still holds them); the others stay shared, so Plan settles
// their tables at once.
func (r *Renderer) patchDerived(old, added *serviceEntry) {
	if r.frontends != nil {
		next := maps.Clone(r.frontends)
		copied := map[shardFamily]bool{}
		edit := func(k shardFamily) []MapElement {
			if !copied[k] {
				next[k], copied[k] = slices.Clone(next[k]), true
			}
			return next[k]
		}
		for _, e := range slices.Concat(old.elems, added.elems) {
			key, fam := e.MapElement, family(e.Addr)
			for _, id := range serviceTables(r.oneTable) {
				k := shardFamily{id, fam}
				if j, have := slices.BinarySearchFunc(next[k], key, MapElement.Compare); have {
					next[k] = slices.Delete(edit(k), j, j+1)
				}
			}
			if i, ok := slices.BinarySearchFunc(r.elems, key, func(x frontendElement, k MapElement) int { return x.MapElement.Compare(k) }); ok {
				w := r.elems[i]
				k := shardFamily{w.table, fam}
				l := edit(k)
				j, _ := slices.BinarySearchFunc(l, key, MapElement.Compare)
				next[k] = slices.Insert(l, j, w.MapElement)
			}
		}
		r.frontends = next
	}
}

// collect appends one entry's objects to acc.
func collect(acc, e *serviceEntry) {
	acc.chains = append(acc.chains, e.chains...)
	acc.sets = append(acc.sets, e.sets...)
	acc.elems = append(acc.elems, e.elems...)
}

func (r *Renderer) rebuild() {
	r.chains, r.sets, r.elems = r.chains[:0], r.sets[:0], r.elems[:0]
	for _, e := range r.entries {
		r.chains = append(r.chains, e.chains...)
		r.sets = append(r.sets, e.sets...)
		r.elems = append(r.elems, e.elems...)
	}
	slices.SortFunc(r.chains, compareChain)
	slices.SortFunc(r.sets, compareSet)
	slices.SortFunc(r.elems, compareFrontendElement)
}

// patch removes old's objects from the sorted lists and inserts added's, in place: a few
// changed services move memory but allocate nothing.
func (r *Renderer) patch(old, added *serviceEntry) {
	r.chains = patchSorted(r.chains, old.chains, added.chains, compareChain)
	r.sets = patchSorted(r.sets, old.sets, added.sets, compareSet)
	r.elems = patchSorted(r.elems, old.elems, added.elems, compareFrontendElement)
}

func compareChain(a, b Chain) int {
	return cmp.Or(cmp.Compare(a.Table, b.Table), strings.Compare(a.Name, b.Name))
}

func compareSet(a, b Set) int {
	return cmp.Or(cmp.Compare(a.Table, b.Table), strings.Compare(a.Name, b.Name))
}

// patchSorted returns list (sorted by cmp) without the items of del and with those of add,
// in place: one pass removes del's items, one fills add's in from the back, whatever their
// number (each slices.Insert into 30,000 chains moved half of them).
func patchSorted[T any](list, del, add []T, cmp func(a, b T) int) []T {
	if len(del) > 0 {
		gone := make([]int, 0, len(del))
		for _, x := range del {
			if i, ok := slices.BinarySearchFunc(list, x, cmp); ok {
				gone = append(gone, i)
			}
		}
		slices.Sort(gone)
		gone = slices.Compact(gone)
		w := 0
		for k, i := range gone {
			end := len(list)
			if k+1 < len(gone) {
				end = gone[k+1]
			}
			if k == 0 {
				w = i
			}
			w += copy(list[w:], list[i+1:end])
		}
		if len(gone) > 0 {
			clear(list[w:])
			list = list[:w]
		}
	}
	if len(add) == 0 {
		return list
	}
	add = slices.SortedFunc(slices.Values(add), cmp)
	n := len(list)
	list = slices.Grow(list, len(add))[:n+len(add)]
	// Merge from the back: list[:n] and add into list[:n+len(add)].
	i, j, w := n-1, len(add)-1, n+len(add)-1
	for j >= 0 {
		// The run of list items after add[j] moves up in one copy.
		k, _ := slices.BinarySearchFunc(list[:i+1], add[j], cmp)
		w -= copy(list[w-(i+1-k)+1:w+1], list[k:i+1])
		i = k - 1
		list[w] = add[j]
		w--
		j--
	}
	return list
}

// mergeInto adds the service objects to a sorted table (which must hold the empty frontend
// maps), keeping it sorted; every slice it writes is new or never written again, so the table
// shares nothing mutable with the renderer.
func (r *Renderer) mergeInto(t *Table) error {
	var err error
	t.Chains, err = mergeByName(t.Chains, r.chains, func(c *Chain) (TableID, string) { return c.Table, c.Name })
	if err != nil {
		return err
	}
	if t.Sets, err = mergeByName(t.Sets, r.sets, func(s *Set) (TableID, string) { return s.Table, s.Name }); err != nil {
		return err
	}
	if r.frontends == nil {
		r.deriveLists()
	}
	for i := range t.Maps {
		if m := &t.Maps[i]; m.Table.IsServices() && m.Name == ServiceMap(m.Family) {
			m.Elements = r.frontends[shardFamily{m.Table, m.Family}]
		}
	}
	return nil
}

// deriveLists builds every table's and family's frontend map elements (each key once, the
// first owner by ID winning, in the winner's table) from the sorted list.
func (r *Renderer) deriveLists() {
	r.frontends = map[shardFamily][]MapElement{}
	for i, el := range r.elems {
		if i > 0 && r.elems[i-1].MapElement.Compare(el.MapElement) == 0 {
			continue // a second service on the same address, protocol and port
		}
		k := shardFamily{el.table, family(el.Addr)}
		r.frontends[k] = append(r.frontends[k], el.MapElement)
	}
}

// serviceTables lists the tables services are spread over: all shards, or only the first
// (RenderEndpointChains: the iptables translation has no tables).
func serviceTables(oneTable bool) []TableID {
	if oneTable {
		return Tables[1:2]
	}
	return Tables[1:]
}

// mergeByName merges two lists sorted by table and name into a new one; a name in both is an
// error. It copies runs: each step binary-searches how far one list goes before the other's
// next item, so a few policy-table and base chains merged with 30,000 service chains cost a
// few hundred comparisons and bulk copies, not a comparison per chain.
func mergeByName[T any](a, b []T, key func(*T) (TableID, string)) ([]T, error) {
	out := make([]T, 0, len(a)+len(b))
	compare := func(x, y *T) int {
		tx, nx := key(x)
		ty, ny := key(y)
		return cmp.Or(cmp.Compare(tx, ty), strings.Compare(nx, ny))
	}
	// run returns how many items of l come before y.
	run := func(l []T, y *T) int {
		n, _ := slices.BinarySearchFunc(l, y, func(x T, y *T) int { return compare(&x, y) })
		return n
	}
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		n := run(b[j:], &a[i])
		out = append(out, b[j:j+n]...)
		if j += n; j == len(b) {
			break
		}
		if compare(&a[i], &b[j]) == 0 {
			_, name := key(&a[i])
			return nil, fmt.Errorf("%s rendered twice (a service chain or set clashes with another object)", name)
		}
		n = run(a[i:], &b[j])
		out = append(out, a[i:i+n]...)
		i += n
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...), nil
}

// serviceBuilder renders one service.
type serviceBuilder struct {
	table    TableID // the service's table
	s        *snapshot.Service
	node     string
	prefixes []string // workload interface name prefixes: a local pod's packets come in on one
	chains   map[string]bool
	out      serviceEntry
}

// workloadPrefixes are the workload interface name prefixes service chains match local pods
// by (the policy chains' default when the configuration names none).
func workloadPrefixes(snap *snapshot.Snapshot) []string {
	if len(snap.Config.InterfacePrefixes) == 0 {
		return []string{"cali"}
	}
	return snap.Config.InterfacePrefixes
}

// serviceScope is what, beside a service's own content, its rendering depends on: the node
// (which backends are local) and the workload interface prefixes (which clients are local
// pods). A change re-renders every service.
func serviceScope(snap *snapshot.Snapshot) string {
	return scopeOf(snap.Node, workloadPrefixes(snap))
}

func scopeOf(node string, prefixes []string) string {
	return node + "\x00" + strings.Join(prefixes, "\x00")
}

// renderService renders one service's chains (hashed), affinity sets and map elements.
func renderService(s *snapshot.Service, node string, prefixes []string, oneTable bool) (*serviceEntry, error) {
	sb := &serviceBuilder{table: ServicesTable, s: s, node: node, prefixes: prefixes, chains: map[string]bool{}}
	if !oneTable {
		sb.table = ServiceTable(s.ID)
	}
	sb.out.hash, sb.out.scope = s.Hash, scopeOf(node, prefixes)
	for _, f := range s.Frontends {
		if !f.Addr.IsValid() || f.Port == 0 {
			return nil, fmt.Errorf("service %s: frontend %s/%d/%d: invalid address or port", s.ID, f.Addr, f.Protocol, f.Port)
		}
		fam := family(f.Addr)
		sp := servicePort{name: safeName(fmt.Sprintf("%s/%s/%s/%d", s.ID, f.PortName, protoName(f.Protocol), fam)),
			portName: f.PortName, proto: f.Protocol, family: fam}
		target, err := sb.frontendChains(f, sp)
		if err != nil {
			return nil, err
		}
		sb.out.elems = append(sb.out.elems, frontendElement{MapElement: MapElement{Addr: f.Addr.Unmap(), Proto: f.Protocol, Port: f.Port, Chain: target}, owner: s.ID, table: sb.table})
	}
	slices.SortFunc(sb.out.elems, compareFrontendElement)
	sb.out.elems = slices.CompactFunc(sb.out.elems, func(a, b frontendElement) bool { return a.MapElement.Compare(b.MapElement) == 0 })
	slices.SortFunc(sb.out.chains, func(a, b Chain) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(sb.out.sets, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	sb.out.sets = slices.CompactFunc(sb.out.sets, func(a, b Set) bool { return a.Name == b.Name })
	return &sb.out, nil
}

func (sb *serviceBuilder) addChain(c Chain) {
	c.Table = sb.table
	sb.chains[c.Name] = true
	c.Hash = ChainHash(c)
	sb.out.chains = append(sb.out.chains, c)
}

// frontendChains renders the chains a frontend needs and returns the one its map element
// jumps to: the load-balancing chain (a ClusterIP; with internalTrafficPolicy Local the
// local-endpoints one), a chain that marks for masquerade first (external frontends that
// do not keep the client address), or, for an external frontend with
// externalTrafficPolicy Local, kube-proxy's short-circuit: local pods (by workload
// interface) and the node itself (by source address) go to the cluster-wide chain, the
// node's own connections masqueraded as kube-proxy does (their source is a node address,
// often the frontend's own); every other client only to the local endpoints, with its
// address kept.
func (sb *serviceBuilder) frontendChains(f snapshot.Frontend, sp servicePort) (string, error) {
	external := f.Kind != "ClusterIP"
	lb := "svc-" + sp.name
	if f.LocalOnly {
		lb += "-local"
	}
	if err := sb.ensureBalance(f, sp, lb); err != nil {
		return "", err
	}
	if !external {
		return lb, nil
	}
	cluster := "svc-" + sp.name
	if f.LocalOnly {
		clusterWide := f
		clusterWide.LocalOnly = false
		if err := sb.ensureBalance(clusterWide, sp, cluster); err != nil {
			return "", err
		}
		ext := "svc-" + sp.name + "-local-ext"
		if !sb.chains[ext] {
			var rules []Rule
			for _, p := range sb.prefixes {
				rules = append(rules, Rule{Stmts: []Stmt{IfName{Name: p, Prefix: true}, Verdict{Kind: "goto", Chain: cluster}}})
			}
			rules = append(rules,
				Rule{Stmts: []Stmt{LocalAddr{Src: true}, MarkSet{Bits: MasqMark}, Verdict{Kind: "goto", Chain: cluster}}},
				Rule{Stmts: []Stmt{Verdict{Kind: "goto", Chain: lb}}})
			sb.addChain(Chain{Name: ext, Level: LevelEndpoint, Rules: rules})
		}
		return ext, nil
	}
	ext := "svc-" + sp.name + "-ext"
	if !sb.chains[ext] {
		sb.addChain(Chain{Name: ext, Level: LevelEndpoint, Rules: []Rule{
			{Stmts: []Stmt{MarkSet{Bits: MasqMark}}},
			{Stmts: []Stmt{Verdict{Kind: "goto", Chain: cluster}}},
		}})
	}
	return ext, nil
}

// ensureBalance renders (once) the load-balancing chain name over frontend f's backends.
func (sb *serviceBuilder) ensureBalance(f snapshot.Frontend, sp servicePort, name string) error {
	if sb.chains[name] {
		return nil
	}
	return sb.balanceChain(f, sp, name)
}

// balanceChain renders a service port's load-balancing chain over the frontend's backends,
// and their endpoint chains.
func (sb *serviceBuilder) balanceChain(f snapshot.Frontend, sp servicePort, name string) error {
	backends := sb.s.BackendsFor(f, sb.node)
	c := Chain{Name: name, Level: LevelTier}
	if len(backends) == 0 {
		// As kube-proxy does: the client learns at once that nothing serves the port; but a
		// traffic policy Local without local endpoints, while the service has some elsewhere,
		// drops silently (a load balancer's health check takes this node out of rotation).
		c.Rules = []Rule{{Stmts: []Stmt{Reject{}}}}
		clusterWide := f
		clusterWide.LocalOnly = false
		if f.LocalOnly && len(sb.s.BackendsFor(clusterWide, sb.node)) > 0 {
			c.Rules = []Rule{{Stmts: []Stmt{Drop}}}
		}
		sb.addChain(c)
		return nil
	}
	return sb.balanceToChains(c, backends, sp)
}

// balanceToChains finishes a service port's chain c, as kube-proxy's: affinity checks (a
// client an endpoint served recently goes back to it), then a cascade of random draws
// (numgen random mod N-i == 0, for i = 0 … N-2, then the last) that picks one of the N
// endpoint chains uniformly.
func (sb *serviceBuilder) balanceToChains(c Chain, backends []snapshot.Backend, sp servicePort) error {
	chains := make([]string, len(backends))
	for i, be := range backends {
		ep, err := sb.endpointChain(sp, be)
		if err != nil {
			return err
		}
		chains[i] = ep
		if sb.s.AffinitySeconds > 0 {
			c.Rules = append(c.Rules, Rule{Stmts: []Stmt{
				AddrSet{Family: sp.family, Set: chainAffinitySet(ep, sb.s.AffinitySeconds)},
				Verdict{Kind: "goto", Chain: ep},
			}})
		}
	}
	n := len(chains)
	for i, ep := range chains[:n-1] {
		c.Rules = append(c.Rules, Rule{Stmts: []Stmt{RandomOneIn{Mod: uint32(n - i)}, Verdict{Kind: "goto", Chain: ep}}})
	}
	c.Rules = append(c.Rules, Rule{Stmts: []Stmt{Verdict{Kind: "goto", Chain: chains[n-1]}}})
	sb.addChain(c)
	return nil
}

func chainAffinitySet(endpointChain string, seconds int32) string {
	return safeName(fmt.Sprintf("aff-%d-%s", seconds, endpointChain))
}

// endpointChain renders (once) the chain that sends a service port's packet to one backend:
// hairpin masquerade mark (the packet comes from the backend itself), affinity record, DNAT.
func (sb *serviceBuilder) endpointChain(sp servicePort, be snapshot.Backend) (string, error) {
	if !be.Addr.IsValid() || be.Port == 0 {
		return "", fmt.Errorf("service %s: backend %s:%d: invalid address or port", sb.s.ID, be.Addr, be.Port)
	}
	addr := be.Addr.Unmap()
	name := safeName(fmt.Sprintf("sep-%s/%s", sp.name, netip.AddrPortFrom(addr, be.Port)))
	if sb.chains[name] {
		return name, nil
	}
	c := Chain{Name: name, Level: LevelPolicy, Rules: []Rule{
		{Stmts: []Stmt{AddrList{Family: sp.family, Prefixes: []netip.Prefix{netip.PrefixFrom(addr, addr.BitLen())}}, MarkSet{Bits: MasqMark}}},
	}}
	if sb.s.AffinitySeconds > 0 {
		set := chainAffinitySet(name, sb.s.AffinitySeconds)
		sb.out.sets = append(sb.out.sets, Set{Table: sb.table, Name: set, Family: sp.family, Timeout: int(sb.s.AffinitySeconds)})
		c.Rules = append(c.Rules, Rule{Stmts: []Stmt{SetUpdate{Family: sp.family, Set: set}}})
	}
	c.Rules = append(c.Rules, Rule{Stmts: []Stmt{L4Proto{Proto: sp.proto}, DNAT{Addr: addr, Port: be.Port}}})
	sb.addChain(c)
	return name, nil
}

// serviceBaseChains are the static chains of one services table: dispatch at the dstnat hooks
// (packets from workloads and from outside at prerouting, from the host itself at output).
func serviceBaseChains(table TableID) []Chain {
	dispatch := []Rule{
		{Stmts: []Stmt{NfProto{4}, FrontendVmap{Family: 4, Map: ServiceMap(4)}}},
		{Stmts: []Stmt{NfProto{6}, FrontendVmap{Family: 6, Map: ServiceMap(6)}}},
	}
	return []Chain{
		{Table: table, Name: "nat-prerouting", Base: &BaseChain{Type: "nat", Hook: "prerouting", Priority: PriorityDstNAT}, Rules: dispatch},
		{Table: table, Name: "nat-output", Base: &BaseChain{Type: "nat", Hook: "output", Priority: PriorityDstNAT}, Rules: dispatch},
	}
}

// serviceTablesObjects appends every services table's static objects to t: frontend maps and
// base chains.
func (r *Renderer) serviceTablesObjects(t *Table) {
	for _, id := range serviceTables(r.oneTable) {
		for _, fam := range []int{4, 6} {
			t.Maps = append(t.Maps, Map{Table: id, Name: ServiceMap(fam), Family: fam})
		}
		for _, c := range serviceBaseChains(id) {
			c.Level = LevelBase
			c.Hash = ChainHash(c)
			t.Chains = append(t.Chains, c)
		}
	}
}
