package hns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/felis-dev/felis/snapshot"
)

// FakeMaxPriority is the highest Switch rule priority the Fake accepts. HNS stores priorities
// in 16 bits; felis never uses more than PolicyRuleMaxPriority. The exact HNS ceiling is not
// documented where felis could check it, so the Fake takes the commonly quoted 65500.
const FakeMaxPriority uint16 = 65500

// Fake is an in-memory HNS with the behaviours felis depends on: an ACL update replaces the
// endpoint's whole list and is rejected whole if any rule is malformed or out of the priority
// range; network routes are added and removed one by one, duplicates and unknown removals
// rejected. It counts ACL updates per endpoint, since each one disrupts that endpoint's traffic.
type Fake struct {
	mu        sync.Mutex
	endpoints map[string]*HNSEndpoint
	routes    []RemoteSubnetRoute
	updates   map[string]int
	// Fail, when set, is consulted before every mutating call with the call's canonical text
	// ("set-acls ID", "route-add PREFIX", "route-remove PREFIX"); a non-nil result fails it.
	Fail func(op string) error
}

// NewFake returns an empty fake HNS.
func NewFake() *Fake {
	return &Fake{endpoints: map[string]*HNSEndpoint{}, updates: map[string]int{}}
}

// AddEndpoint creates an endpoint with no ACLs, as the CNI plugin would.
func (f *Fake) AddEndpoint(id, name string, addrs ...netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endpoints[id] = &HNSEndpoint{ID: id, Name: name, Addrs: slices.Clone(addrs)}
}

// RemoveEndpoint deletes an endpoint (its ACLs go with it).
func (f *Fake) RemoveEndpoint(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.endpoints, id)
}

// Updates returns how many ACL replacements the endpoint has received.
func (f *Fake) Updates(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.updates[id]
}

// Endpoints implements Client.
func (f *Fake) Endpoints(context.Context) ([]HNSEndpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]HNSEndpoint, 0, len(f.endpoints))
	for _, e := range f.endpoints {
		out = append(out, HNSEndpoint{ID: e.ID, Name: e.Name, Addrs: slices.Clone(e.Addrs), ACLs: slices.Clone(e.ACLs)})
	}
	slices.SortFunc(out, func(a, b HNSEndpoint) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// SetACLs implements Client: validate everything, then replace the whole list.
func (f *Fake) SetACLs(_ context.Context, id string, acls []ACLSetting) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail("set-acls " + id); err != nil {
			return err
		}
	}
	e, ok := f.endpoints[id]
	if !ok {
		return fmt.Errorf("endpoint %s: %w", id, ErrNotFound)
	}
	for i, s := range acls {
		r, err := s.Parse()
		if err != nil {
			return fmt.Errorf("endpoint %s: ACL %d: %w", id, i, err)
		}
		if r.Type == Switch && (r.Priority == 0 || r.Priority > FakeMaxPriority) {
			return fmt.Errorf("endpoint %s: ACL %d: Priority %d outside 1-%d: %w", id, i, r.Priority, FakeMaxPriority, ErrMalformed)
		}
	}
	e.ACLs = slices.Clone(acls)
	f.updates[id]++
	return nil
}

// RemoteSubnetRoutes implements Client.
func (f *Fake) RemoteSubnetRoutes(context.Context) ([]RemoteSubnetRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.routes), nil
}

// AddRemoteSubnetRoute implements Client.
func (f *Fake) AddRemoteSubnetRoute(_ context.Context, r RemoteSubnetRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail("route-add " + r.DestinationPrefix.String()); err != nil {
			return err
		}
	}
	if !r.DestinationPrefix.IsValid() || r.DestinationPrefix != r.DestinationPrefix.Masked() {
		return fmt.Errorf("route %s: DestinationPrefix is not a network prefix: %w", r.DestinationPrefix, ErrMalformed)
	}
	if !r.ProviderAddress.IsValid() {
		return fmt.Errorf("route %s: no ProviderAddress: %w", r.DestinationPrefix, ErrMalformed)
	}
	if _, err := net.ParseMAC(strings.ReplaceAll(r.DistributedRouterMacAddress, "-", ":")); err != nil || !strings.Contains(r.DistributedRouterMacAddress, "-") {
		return fmt.Errorf("route %s: DistributedRouterMacAddress %q is not a MAC in aa-bb-cc-dd-ee-ff form: %w", r.DestinationPrefix, r.DistributedRouterMacAddress, ErrMalformed)
	}
	for _, x := range f.routes {
		if x.DestinationPrefix == r.DestinationPrefix {
			return fmt.Errorf("route %s: %w", r.DestinationPrefix, ErrExists)
		}
	}
	f.routes = append(f.routes, r)
	return nil
}

// RemoveRemoteSubnetRoute implements Client.
func (f *Fake) RemoveRemoteSubnetRoute(_ context.Context, r RemoteSubnetRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Fail != nil {
		if err := f.Fail("route-remove " + r.DestinationPrefix.String()); err != nil {
			return err
		}
	}
	i := slices.Index(f.routes, r)
	if i < 0 {
		return fmt.Errorf("route %s: %w", r, ErrNotFound)
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

// Evaluate runs a packet through the endpoint's programmed ACLs, as HNS's switch would.
func (f *Fake) Evaluate(id string, dir Direction, p Packet) (Verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.endpoints[id]
	if !ok {
		return Verdict{}, fmt.Errorf("endpoint %s: %w", id, ErrNotFound)
	}
	rules := make([]Rule, 0, len(e.ACLs))
	for _, s := range e.ACLs {
		r, err := s.Parse()
		if err != nil {
			return Verdict{}, err
		}
		rules = append(rules, r)
	}
	return Evaluate(rules, dir, p), nil
}

// Dump lists the fake's state in a stable text form: endpoints by ID with their ACLs in
// stored order, then routes by prefix.
func (f *Fake) Dump() string {
	eps, _ := f.Endpoints(context.Background())
	f.mu.Lock()
	routes := slices.Clone(f.routes)
	f.mu.Unlock()
	var b strings.Builder
	for _, e := range eps {
		fmt.Fprintf(&b, "endpoint %s %s", e.ID, e.Name)
		for _, a := range e.Addrs {
			b.WriteString(" " + a.String())
		}
		b.WriteString("\n")
		for _, s := range e.ACLs {
			if r, err := s.Parse(); err == nil {
				b.WriteString("  " + r.String() + "\n")
			} else {
				fmt.Fprintf(&b, "  %+v\n", s)
			}
		}
	}
	slices.SortFunc(routes, func(a, b RemoteSubnetRoute) int {
		return snapshot.ComparePrefix(a.DestinationPrefix, b.DestinationPrefix)
	})
	for _, r := range routes {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}
