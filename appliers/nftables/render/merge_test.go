package render

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestMergeByName checks the run-copying merge against sorting the concatenation, on random
// lists of every shape (empty, one long run, interleaved, across tables), and that a name in
// both lists is an error.
func TestMergeByName(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	key := func(s *Set) (TableID, string) { return s.Table, s.Name }
	for round := range 500 {
		seen := map[[2]string]bool{}
		var a, b []Set
		for range rng.IntN(40) {
			s := Set{Table: TableID(rng.IntN(3)), Name: fmt.Sprintf("s%03d", rng.IntN(200))}
			if k := [2]string{s.Table.Name(), s.Name}; seen[k] {
				continue
			} else {
				seen[k] = true
			}
			if rng.IntN(1+round%5) == 0 {
				a = append(a, s)
			} else {
				b = append(b, s)
			}
		}
		slices.SortFunc(a, compareSet)
		slices.SortFunc(b, compareSet)
		want := slices.SortedFunc(slices.Values(slices.Concat(a, b)), compareSet)
		got, err := mergeByName(a, b, key)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("round %d: merge differs from sort (-want +got):\n%s", round, d)
		}
		if len(a) > 0 && len(b) > 0 {
			clash := append(slices.Clone(b), a[rng.IntN(len(a))])
			slices.SortFunc(clash, compareSet)
			if _, err := mergeByName(a, clash, key); err == nil || !strings.Contains(err.Error(), "rendered twice") {
				t.Fatalf("round %d: a name in both lists: err %v, want rendered twice", round, err)
			}
		}
	}
}

// TestPatchSorted checks the in-place patch against deleting and sorting naively, on random
// sorted lists of distinct numbers with random items removed and added.
func TestPatchSorted(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	compare := func(a, b int) int { return a - b }
	for round := range 2000 {
		perm := rng.Perm(60)
		list := slices.Sorted(slices.Values(perm[:rng.IntN(40)]))
		var del []int
		for _, x := range list {
			if rng.IntN(4) == 0 {
				del = append(del, x)
			}
		}
		rng.Shuffle(len(del), func(i, j int) { del[i], del[j] = del[j], del[i] })
		add := slices.Clone(perm[40 : 40+rng.IntN(20)])
		want := slices.Sorted(slices.Values(slices.Concat(slices.DeleteFunc(slices.Clone(list), func(x int) bool { return slices.Contains(del, x) }), add)))
		got := patchSorted(slices.Clone(list), del, add, compare)
		if d := cmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
			t.Fatalf("round %d: list %v, del %v, add %v (-want +got):\n%s", round, list, del, add, d)
		}
	}
}
