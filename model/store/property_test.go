package store

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

// modelEntry is what the reference model knows about one stored object.
type modelEntry struct {
	Value    string
	Source   string
	Revision uint64
}

type refModel map[model.Key]modelEntry

var propKeys = func() []model.Key {
	var ks []model.Key
	for i := range 12 {
		ks = append(ks, wepKey(fmt.Sprintf("ns%d", i%3), fmt.Sprintf("w%d", i)))
	}
	for i := range 6 {
		ks = append(ks, model.Key{Kind: model.KindGlobalNetworkPolicy, Name: fmt.Sprintf("p%d", i)})
	}
	return ks
}()

func propObject(k model.Key, source, value string) model.Object {
	meta := model.Meta{Key: k, Source: model.Source{Name: source}}
	if k.Kind == model.KindWorkloadEndpoint {
		return &model.WorkloadEndpoint{Meta: meta, Node: "n" + value, Labels: model.Labels{"v": value}}
	}
	return &model.Policy{Meta: meta, Tier: value}
}

func propValue(o model.Object) string {
	switch v := o.(type) {
	case *model.WorkloadEndpoint:
		return v.Labels["v"]
	case *model.Policy:
		return v.Tier
	}
	panic(fmt.Sprintf("unexpected %T", o))
}

func propEqual(a, b model.Object) bool { return propValue(a) == propValue(b) }

// storeState reads a view into the reference model's shape.
func storeState(v *View) refModel {
	m := refModel{}
	for _, k := range model.Kinds {
		for o := range v.All(k) {
			meta := o.GetMeta()
			m[meta.Key] = modelEntry{Value: propValue(o), Source: meta.Source.Name, Revision: meta.Revision}
		}
	}
	return m
}

// step applies one random operation to both the store and the model and returns the
// model's new state.
func step(t *testing.T, rng *rand.Rand, s *Store, m refModel) refModel {
	t.Helper()
	next := maps.Clone(m)
	rev := s.Revision() + 1
	sources := []string{"file", "k8s"}
	value := func() string { return fmt.Sprint(rng.IntN(3)) }
	if rng.IntN(5) == 0 {
		// Replace one source's objects.
		source := sources[rng.IntN(2)]
		var objs []model.Object
		want := map[model.Key]bool{}
		for _, k := range propKeys {
			if rng.IntN(3) == 0 {
				objs = append(objs, propObject(k, source, value()))
				want[k] = true
			}
		}
		changed := false
		for k, e := range m {
			if e.Source == source && !want[k] {
				delete(next, k)
				changed = true
			}
		}
		for _, o := range objs {
			k := o.GetMeta().Key
			if e, ok := m[k]; ok && e.Source == source && e.Value == propValue(o) {
				continue
			}
			next[k] = modelEntry{Value: propValue(o), Source: source, Revision: rev}
			changed = true
		}
		got, err := s.Replace(source, objs, propEqual)
		if err != nil {
			t.Fatalf("Replace: %v", err)
		}
		if !changed {
			rev--
		}
		if got != rev {
			t.Fatalf("Replace returned revision %d, model expects %d", got, rev)
		}
		if !changed {
			return m
		}
		return next
	}
	var b Batch
	changed := false
	for range rng.IntN(4) {
		k := propKeys[rng.IntN(len(propKeys))]
		b.Deletes = append(b.Deletes, k)
		if _, ok := next[k]; ok {
			delete(next, k)
			changed = true
		}
	}
	for range rng.IntN(5) {
		k := propKeys[rng.IntN(len(propKeys))]
		o := propObject(k, sources[rng.IntN(2)], value())
		b.Upserts = append(b.Upserts, o)
		next[k] = modelEntry{Value: propValue(o), Source: o.GetMeta().Source.Name, Revision: rev}
		changed = true
	}
	got, err := s.Write(b)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !changed {
		rev--
		next = m
	}
	if got != rev {
		t.Fatalf("Write returned revision %d, model expects %d", got, rev)
	}
	return next
}

// replay applies a change feed to a state.
func replay(state refModel, feed func(func(Change) bool)) refModel {
	out := maps.Clone(state)
	for c := range feed {
		if c.Deleted {
			delete(out, c.Key)
			continue
		}
		meta := c.Object.GetMeta()
		out[c.Key] = modelEntry{Value: propValue(c.Object), Source: meta.Source.Name, Revision: c.Revision}
	}
	return out
}

// TestStoreMatchesModel applies random batches and Replaces to the store and to a plain map
// model: after each step the store equals the model, and replaying ChangesSince(r) on the
// state at r gives the final state, for every r a consumer still holds.
func TestStoreMatchesModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			s := New()
			// "all" never acks, so every tombstone is kept; "half" acks half-way, and after
			// that only revisions it acked remain replayable for it alone.
			s.RegisterConsumer("all")
			half := s.RegisterConsumer("half")
			m := refModel{}
			states := map[uint64]refModel{0: {}}
			views := map[uint64]*View{0: s.View()}
			for i := range 150 {
				m = step(t, rng, s, m)
				v := s.View()
				if diff := cmp.Diff(m, storeState(v)); diff != "" {
					t.Fatalf("step %d (revision %d): store differs from model (-model +store):\n%s", i, v.Revision(), diff)
				}
				states[v.Revision()], views[v.Revision()] = m, v
				if i == 75 {
					half.Ack(v.Revision())
				}
			}
			final := s.View()
			for r, st := range states {
				if diff := cmp.Diff(m, replay(st, final.ChangesSince(r))); diff != "" {
					t.Fatalf("replaying ChangesSince(%d) on the state at %d (-final +replayed):\n%s", r, r, diff)
				}
				// Every older view still reads its own state.
				if diff := cmp.Diff(st, storeState(views[r])); diff != "" {
					t.Fatalf("view at %d changed (-then +now):\n%s", r, diff)
				}
			}
		})
	}
}

// TestFeedAfterCollection checks replay from a consumer's acked revision once tombstones
// older than every ack have been dropped.
func TestFeedAfterCollection(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := New()
		c := s.RegisterConsumer("c")
		m := refModel{}
		var acked uint64
		ackedState := refModel{}
		for i := range 200 {
			m = step(t, rng, s, m)
			if i%17 == 0 {
				// The consumer catches up: replay from its last ack must give the current state.
				v := s.View()
				if diff := cmp.Diff(m, replay(ackedState, v.ChangesSince(acked))); diff != "" {
					t.Fatalf("seed %d step %d: replay from acked %d (-model +replayed):\n%s", seed, i, acked, diff)
				}
				acked, ackedState = v.Revision(), m
				c.Ack(acked)
				if v := s.View(); v.Revision() == acked && s.Tombstones() != 0 {
					t.Fatalf("seed %d: %d tombstones kept after the only consumer acked the head", seed, s.Tombstones())
				}
			}
		}
	}
}
