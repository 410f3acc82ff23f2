package derive

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

// TestPostingMatchesSet: random adds and removes (IDs reused, appended, inserted below the
// last, many enough to trigger compaction) leave a posting holding exactly the IDs a plain
// set holds, each listed once.
func TestPostingMatchesSet(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewPCG(seed, 3))
		p := &posting{}
		want := map[holderID]bool{}
		// A first build appends in order.
		for id := holderID(0); id < 300; id += holderID(1 + rng.IntN(3)) {
			p.ids = append(p.ids, id)
			want[id] = true
		}
		for step := range 1000 {
			id := holderID(rng.IntN(400))
			if want[id] {
				p.remove(id)
				delete(want, id)
			} else {
				p.add(id)
				want[id] = true
			}
			var got []holderID
			p.each(func(id holderID) { got = append(got, id) })
			slices.Sort(got)
			var exp []holderID
			for id := range want {
				exp = append(exp, id)
			}
			slices.Sort(exp)
			if diff := cmp.Diff(exp, got); diff != "" {
				t.Fatalf("seed %d step %d: posting differs from the set (-want +got):\n%s", seed, step, diff)
			}
			if p.size() != len(want) {
				t.Fatalf("seed %d step %d: size %d, want %d", seed, step, p.size(), len(want))
			}
			if !slices.IsSorted(p.ids) {
				t.Fatalf("seed %d step %d: ids not ascending: %v", seed, step, p.ids)
			}
		}
	}
}

// TestHolderKeyOrder: compareIDs is the order of the IDs it avoids building, and
// holderKeyOrder puts kinds in the first build's order.
func TestHolderKeyOrder(t *testing.T) {
	names := []string{"", "a", "a/b", "a.b", "ab", "a-b", "b", "a0", "z/z", "a/"}
	var keys []model.Key
	for _, ns := range names[:6] {
		for _, n := range names[1:] {
			keys = append(keys, model.Key{Kind: model.KindWorkloadEndpoint, Namespace: ns, Name: n})
		}
	}
	for _, a := range keys {
		for _, b := range keys {
			if got, want := compareIDs(a, b), strings.Compare(a.ID(), b.ID()); got != want {
				t.Errorf("compareIDs(%q, %q) = %d, want %d", a.ID(), b.ID(), got, want)
			}
		}
	}
	kinds := []model.Kind{model.KindWorkloadEndpoint, model.KindHostEndpoint, model.KindNetworkSet, model.KindGlobalNetworkSet}
	for i := range kinds {
		for j := range kinds {
			a, b := model.Key{Kind: kinds[i], Name: "z"}, model.Key{Kind: kinds[j], Name: "a"}
			if got := holderKeyOrder(a, b); (i < j && got >= 0) || (i > j && got <= 0) || (i == j && got <= 0) {
				t.Errorf("holderKeyOrder(%s z, %s a) = %d", kinds[i], kinds[j], got)
			}
		}
	}
}
