package derive

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
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
