package store

import (
	"maps"
	"slices"
	"testing"

	"github.com/felis-dev/felis/model"
)

func wepKey(ns, name string) model.Key {
	return model.Key{Kind: model.KindWorkloadEndpoint, Namespace: ns, Name: name}
}

// labelled is a workload endpoint whose "v" label carries a test value.
func labelled(ns, name, source, v string) *model.WorkloadEndpoint {
	w := wep(ns, name, "n1")
	w.Source.Name = source
	w.Labels = model.Labels{"v": v}
	return w
}

func gnp(name, source string) *model.Policy {
	return &model.Policy{Meta: model.Meta{Key: model.Key{Kind: model.KindGlobalNetworkPolicy, Name: name}, Source: model.Source{Name: source}}, Tier: "default"}
}

// revisions returns key -> revision for every object of every kind in a view.
func revisions(v *View) map[model.Key]uint64 {
	m := map[model.Key]uint64{}
	for _, k := range model.Kinds {
		for o := range v.All(k) {
			m[o.GetMeta().Key] = o.GetMeta().Revision
		}
	}
	return m
}

func changes(v *View, since uint64) []Change {
	return slices.Collect(v.ChangesSince(since))
}

func mustWrite(t testing.TB, s *Store, b Batch) uint64 {
	t.Helper()
	rev, err := s.Write(b)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return rev
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func keysOf(m map[model.Key]uint64) []model.Key {
	return slices.SortedFunc(maps.Keys(m), func(a, b model.Key) int {
		if a.String() < b.String() {
			return -1
		}
		if a.String() > b.String() {
			return 1
		}
		return 0
	})
}
