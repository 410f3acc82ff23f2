package diff

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// object is a test object: a content string, a rank and the keys it depends on (all of a
// lower rank), so the tests can check that every intermediate state is consistent.
type object struct {
	Rank    int
	Deps    []string
	Content string
}

func equalObject(a, b object) bool      { return cmp.Equal(a, b) }
func rankObject(_ string, o object) int { return o.Rank }

// randomObjects builds a consistent object graph: keys "r<rank>-<n>", deps on lower ranks.
func randomObjects(r *rand.Rand) map[string]object {
	out := map[string]object{}
	for rank := range 4 {
		for range r.IntN(6) {
			k := fmt.Sprintf("r%d-%d", rank, r.IntN(8))
			var deps []string
			for dk, d := range out {
				if d.Rank < rank && r.IntN(3) == 0 {
					deps = append(deps, dk)
				}
			}
			slices.Sort(deps)
			out[k] = object{Rank: rank, Deps: deps, Content: fmt.Sprint(r.IntN(3))}
		}
	}
	return out
}

// consistent reports the first object whose dependency is missing.
func consistent(m map[string]object) error {
	for k, o := range m {
		for _, d := range o.Deps {
			if _, ok := m[d]; !ok {
				return fmt.Errorf("%s depends on missing %s", k, d)
			}
		}
	}
	return nil
}

func TestPlanProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		desired, observed := randomObjects(r), randomObjects(r)
		ops := Plan(desired, observed, equalObject, rankObject)

		got, err := Apply(observed, ops)
		if err != nil {
			t.Fatalf("case %d: apply: %v", i, err)
		}
		if diff := cmp.Diff(desired, got); diff != "" {
			t.Fatalf("case %d: apply(plan(desired, observed), observed) != desired (-want +got):\n%s", i, diff)
		}
		if again := Plan(desired, got, equalObject, rankObject); len(again) != 0 {
			t.Fatalf("case %d: plan after apply not empty: %v", i, again)
		}
		if self := Plan(observed, observed, equalObject, rankObject); len(self) != 0 {
			t.Fatalf("case %d: plan(x, x) not empty: %v", i, self)
		}
		// Every intermediate state must be consistent: dependencies before dependants.
		state := observed
		for j, op := range ops {
			state, err = Apply(state, ops[j:j+1])
			if err != nil {
				t.Fatalf("case %d op %d: %v", i, j, err)
			}
			if err := consistent(state); err != nil {
				t.Fatalf("case %d: after op %d (%s): %v\nops: %v", i, j, op, err, ops)
			}
		}
		// Shape: adds/replaces by ascending rank, then deletes by descending rank.
		seenDelete := false
		for j := 1; j < len(ops); j++ {
			a, b := ops[j-1], ops[j]
			if b.Kind == Delete {
				if a.Kind == Delete && a.Rank < b.Rank {
					t.Fatalf("case %d: deletes not in descending rank: %v", i, ops)
				}
				seenDelete = true
			} else if seenDelete || a.Rank > b.Rank {
				t.Fatalf("case %d: add/replace out of order: %v", i, ops)
			}
		}
	}
}

func TestPlanOneChangeIsOneReplace(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		observed := randomObjects(r)
		if len(observed) == 0 {
			continue
		}
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range observed {
				if !yield(k) {
					return
				}
			}
		})
		k := keys[r.IntN(len(keys))]
		desired := map[string]object{}
		for kk, v := range observed {
			desired[kk] = v
		}
		changed := desired[k]
		changed.Content += "-changed"
		desired[k] = changed

		ops := Plan(desired, observed, equalObject, rankObject)
		want := []Op[string, object]{{Kind: Replace, Key: k, Rank: changed.Rank, Old: observed[k], New: changed}}
		if diff := cmp.Diff(want, ops); diff != "" {
			t.Fatalf("case %d: (-want +got):\n%s", i, diff)
		}
	}
}

func TestOpString(t *testing.T) {
	tests := []struct {
		op   Op[string, int]
		want string
	}{
		{Op[string, int]{Kind: Add, Key: "set:a", Rank: 0}, "add set:a (rank 0)"},
		{Op[string, int]{Kind: Replace, Key: "chain:b", Rank: 2}, "replace chain:b (rank 2)"},
		{Op[string, int]{Kind: Delete, Key: "map:c", Rank: 4}, "delete map:c (rank 4)"},
		{Op[string, int]{Kind: Kind(9), Key: "x", Rank: 1}, "kind(9) x (rank 1)"},
	}
	for _, tt := range tests {
		if got := tt.op.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestApplyErrors(t *testing.T) {
	base := map[string]int{"a": 1}
	tests := []struct {
		name string
		op   Op[string, int]
		want string
	}{
		{"add existing", Op[string, int]{Kind: Add, Key: "a"}, "already exists"},
		{"replace missing", Op[string, int]{Kind: Replace, Key: "b"}, "does not exist"},
		{"delete missing", Op[string, int]{Kind: Delete, Key: "b"}, "does not exist"},
		{"bad kind", Op[string, int]{Kind: Kind(7), Key: "a"}, "unknown op kind"},
	}
	for _, tt := range tests {
		_, err := Apply(base, []Op[string, int]{tt.op})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
}

func randomSorted(r *rand.Rand) []int {
	var out []int
	for v := range 40 {
		if r.IntN(3) == 0 {
			out = append(out, v)
		}
	}
	return out
}

func TestMembersProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 2000 {
		desired, observed := randomSorted(r), randomSorted(r)
		adds, dels := Members(desired, observed, func(a, b int) int { return a - b })
		var wantAdds, wantDels []int
		for _, v := range desired {
			if !slices.Contains(observed, v) {
				wantAdds = append(wantAdds, v)
			}
		}
		for _, v := range observed {
			if !slices.Contains(desired, v) {
				wantDels = append(wantDels, v)
			}
		}
		if diff := cmp.Diff(wantAdds, adds); diff != "" {
			t.Fatalf("case %d adds (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(wantDels, dels); diff != "" {
			t.Fatalf("case %d dels (-want +got):\n%s", i, diff)
		}
	}
}

func TestMembersOneChange(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 500 {
		observed := randomSorted(r)
		v := r.IntN(40)
		var desired []int
		if j, found := slices.BinarySearch(observed, v); found {
			desired = slices.Delete(slices.Clone(observed), j, j+1)
		} else {
			desired = slices.Insert(slices.Clone(observed), j, v)
		}
		adds, dels := Members(desired, observed, func(a, b int) int { return a - b })
		if n := len(adds) + len(dels); n != 1 {
			t.Fatalf("case %d: one changed member gave %d element ops: adds %v dels %v", i, n, adds, dels)
		}
	}
}

func TestPlanSortedEqualsPlan(t *testing.T) {
	type kv struct {
		K string
		V object
	}
	sorted := func(m map[string]object) []kv {
		var out []kv
		for k, v := range m {
			out = append(out, kv{k, v})
		}
		slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.K, b.K) })
		return out
	}
	r := rand.New(rand.NewPCG(9, 10))
	for i := range 2000 {
		desired, observed := randomObjects(r), randomObjects(r)
		want := Plan(desired, observed, equalObject, rankObject)
		got := PlanSorted(sorted(desired), sorted(observed), func(x kv) string { return x.K },
			func(d, o kv) bool { return equalObject(d.V, o.V) }, func(_ string, x kv) int { return x.V.Rank })
		if len(got) != len(want) {
			t.Fatalf("case %d: PlanSorted gave %d ops, Plan %d", i, len(got), len(want))
		}
		for j := range got {
			if got[j].Kind != want[j].Kind || got[j].Key != want[j].Key || got[j].Rank != want[j].Rank {
				t.Fatalf("case %d op %d: PlanSorted %v, Plan %v", i, j, got[j], want[j])
			}
		}
	}
}
