package synth

import (
	"testing"

	"github.com/felis-dev/felis/model"
)

func count(objs []model.Object) map[model.Kind]int {
	n := map[model.Kind]int{}
	for _, o := range objs {
		n[o.GetMeta().Key.Kind]++
	}
	return n
}

func TestShapes(t *testing.T) {
	s := PolicyScale()
	s.Endpoints, s.Policies = 2_000, 100
	objs := Generate(s)
	n := count(objs)
	if n[model.KindWorkloadEndpoint] != 2_000 || n[model.KindGlobalNetworkPolicy] != 100 || n[model.KindProfile] != 100 {
		t.Fatalf("counts %v", n)
	}
	local := 0
	seen := map[model.Key]bool{}
	for _, o := range objs {
		k := o.GetMeta().Key
		if seen[k] {
			t.Fatalf("duplicate key %s", k)
		}
		seen[k] = true
		if w, ok := o.(*model.WorkloadEndpoint); ok && w.Node == LocalNode {
			local++
		}
	}
	if local != 200 {
		t.Fatalf("local endpoints %d, want 200", local)
	}
	tobjs := Generate(TenantScale(1000))
	tlocal := 0
	for _, o := range tobjs {
		if w, ok := o.(*model.WorkloadEndpoint); ok && w.Node == LocalNode {
			tlocal++
		}
	}
	if tlocal != 200 {
		t.Fatalf("tenant local endpoints %d, want 200", tlocal)
	}
	tn := count(tobjs)
	if tn[model.KindNetworkPolicy] != 1000 || tn[model.KindWorkloadEndpoint] != 2000 {
		t.Fatalf("tenant counts %v", tn)
	}
	ns := count(Generate(NetworkSetScale(1000)))
	if ns[model.KindGlobalNetworkSet] != 1000 || ns[model.KindGlobalNetworkPolicy] != 1000 {
		t.Fatalf("netset counts %v", ns)
	}
}

func TestDeterministic(t *testing.T) {
	s := NetworkSetScale(10)
	a, b := Generate(s), Generate(s)
	for i := range a {
		if a[i].GetMeta().Key != b[i].GetMeta().Key {
			t.Fatalf("object %d differs: %s vs %s", i, a[i].GetMeta().Key, b[i].GetMeta().Key)
		}
	}
}

func TestAddressesInAffineBlocks(t *testing.T) {
	s := PolicyScale()
	s.Endpoints, s.Policies, s.RemoteNodes = 3_000, 10, 9
	objs := Generate(s)
	blocks := map[string][]model.IPAMBlock{}
	for _, o := range objs {
		if b, ok := o.(*model.IPAMBlock); ok {
			blocks[b.AffinityNode] = append(blocks[b.AffinityNode], *b)
		}
	}
	seen := map[string]bool{}
	for _, o := range objs {
		w, ok := o.(*model.WorkloadEndpoint)
		if !ok {
			continue
		}
		a := w.IPNetworks[0].Addr()
		if seen[a.String()] {
			t.Fatalf("address %s handed out twice", a)
		}
		seen[a.String()] = true
		inside := false
		for _, b := range blocks[w.Node] {
			inside = inside || b.CIDR.Contains(a)
		}
		if !inside {
			t.Fatalf("%s on %s: %s is in no block affine to its node", w.Key, w.Node, a)
		}
	}
}
