//go:build linux

package bpf

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers/bpf/render"
)

func TestFreeList(t *testing.T) {
	for _, tc := range []struct {
		name string
		used []extent
		want []extent
	}{
		{"empty array", nil, []extent{{0, 100}}},
		{"unsorted, overlapping, empty and out of range", []extent{{50, 10}, {0, 5}, {55, 10}, {70, 0}, {95, 20}, {200, 3}},
			[]extent{{5, 45}, {65, 30}}},
		{"contained", []extent{{10, 50}, {20, 5}}, []extent{{0, 10}, {60, 40}}},
		{"full", []extent{{0, 60}, {60, 40}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, newFreeList(100, tc.used).free, cmp.AllowUnexported(extent{})); d != "" {
				t.Errorf("free extents (-want +got):\n%s", d)
			}
		})
	}
	f := newFreeList(100, []extent{{5, 10}, {20, 70}})
	for _, step := range []struct {
		n, start uint32
		ok       bool
	}{{3, 0, true}, {3, 15, true}, {3, 90, true}, {2, 3, true}, {8, 0, false}, {7, 93, true}, {1, 18, true}, {2, 0, false}} {
		start, ok := f.alloc(step.n)
		if ok != step.ok || (ok && start != step.start) {
			t.Fatalf("alloc(%d) = %d, %v; want %d, %v (free list %v)", step.n, start, ok, step.start, step.ok, f.free)
		}
	}
	if total, longest := f.blocks(); total != 1 || longest != 1 {
		t.Errorf("blocks() = %d, %d; want 1, 1 (free list %v)", total, longest, f.free)
	}
}

// TestFreeListNeverOverlaps: whatever is in use, what alloc hands out lies inside the array,
// outside every used extent and outside everything handed out before, and alloc fails only
// when no free run is long enough.
func TestFreeListNeverOverlaps(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const size = 500
	for range 200 {
		var used []extent
		for range r.IntN(30) {
			used = append(used, extent{uint32(r.IntN(size + 20)), uint32(r.IntN(40))})
		}
		taken := make([]bool, size)
		for _, u := range used {
			for b := u.start; b < u.end() && b < size; b++ {
				taken[b] = true
			}
		}
		f := newFreeList(size, used)
		for range 50 {
			n := uint32(1 + r.IntN(30))
			start, ok := f.alloc(n)
			if !ok {
				if _, longest := f.blocks(); longest >= n {
					t.Fatalf("alloc(%d) failed with a free run of %d", n, longest)
				}
				run := 0
				for _, tk := range taken {
					run++
					if tk {
						run = 0
					}
					if uint32(run) >= n {
						t.Fatalf("alloc(%d) failed though %d consecutive blocks are free", n, run)
					}
				}
				continue
			}
			if start+n > size {
				t.Fatalf("alloc(%d) = %d: past the array's end", n, start)
			}
			for b := start; b < start+n; b++ {
				if taken[b] {
					t.Fatalf("alloc(%d) = %d: block %d is in use (used %v)", n, start, b, used)
				}
				taken[b] = true
			}
		}
	}
}

// TestDiffPlacesPrograms: the program placement of diff, without a kernel. Two endpoints
// share a program; one changes (its new program goes to a fresh region, the shared one
// stays), then the other follows (no program written, the old region freed); regions in
// limbo are not reused.
func TestDiffPlacesPrograms(t *testing.T) {
	prog := func(n int, a uint8) []render.Insn {
		code := make([]render.Insn, n)
		for i := range code {
			code[i] = render.Insn{Kind: render.KindPort, Flags: render.FlagEnd, Min: uint16(i), Max: uint16(i), Next: uint32(i + 1)}
		}
		return append(code, render.Insn{Kind: render.KindAction, A: a})
	}
	a, b, deny := prog(20, render.ActionAllow), prog(3, render.ActionDeny), prog(0, render.ActionDeny)
	ep := func(in, out uint32, code ...[]render.Insn) render.Endpoint {
		return render.Endpoint{Prog: [2]uint32{in, out}, Len: [2]uint32{uint32(len(code[0])), uint32(len(code[1]))}}
	}
	want := &wanted{
		programs:  map[uint32][]render.Insn{1: a, 3: deny},
		endpoints: map[uint32]render.Endpoint{10: ep(1, 3, a, deny), 11: ep(1, 3, a, deny)},
	}
	have := &observed{endpoints: map[uint32]policyEndpoint{}, programs: map[region]string{}}
	p, have, err := diff(want, have, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted by ID: a (21 instructions, 2 blocks) at 0, deny at 2.
	if got, want := p.strings(), []string{
		"prog-put 00000001 blocks 0+2 (21 instructions)",
		"prog-put 00000003 blocks 2+1 (1 instructions)",
	}; !slices.Equal(got[:2], want) || len(p.epPut) != 2 || len(p.progFree) != 0 {
		t.Fatalf("first plan: %q", got)
	}

	want.programs[2] = b
	want.endpoints[10] = ep(2, 3, b, deny)
	p, have, err = diff(want, have, []extent{{3, 1}}) // block 3 in limbo
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.strings(), []string{
		"prog-put 00000002 blocks 4+1 (4 instructions)",
		"endpoint-put 10 {Prog:00000002/00000003 Base:4/2 Len:4/1 SpoofSet:00000000 Flags:0}",
	}; !cmp.Equal(got, want) {
		t.Errorf("one endpoint changes (-want +got):\n%s", cmp.Diff(want, got))
	}

	delete(want.programs, 1)
	want.endpoints[11] = ep(2, 3, b, deny)
	p, _, err = diff(want, have, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.strings(), []string{
		"endpoint-put 11 {Prog:00000002/00000003 Base:4/2 Len:4/1 SpoofSet:00000000 Flags:0}",
		"prog-free blocks 0+2",
	}; !cmp.Equal(got, want) {
		t.Errorf("the other follows (-want +got):\n%s", cmp.Diff(want, got))
	}

	// An array with no run long enough: ErrProgramsFull, nothing planned.
	big := prog(int(progBlocks*blockInsns), render.ActionAllow)
	want.programs[4] = big
	want.endpoints[12] = ep(4, 3, big, deny)
	if _, _, err := diff(want, have, nil); !errors.Is(err, ErrProgramsFull) {
		t.Errorf("a program larger than the array: error %v, want ErrProgramsFull", err)
	}
}
