//go:build linux

package bpf

import (
	"cmp"
	"fmt"
	"slices"
)

// extent is a run of consecutive blocks of the instruction array.
type extent struct {
	start, n uint32
}

func (e extent) end() uint32 { return e.start + e.n }

func (e extent) String() string { return fmt.Sprintf("blocks %d+%d", e.start, e.n) }

// freeList is the allocator of the instruction array: the extents no program occupies,
// sorted by start and never adjacent, handed out first fit. It is derived from the regions
// in use (rather than kept across syncs), so whatever the kernel holds after a restart or
// a failed apply, a new program can never land on blocks an endpoint still points at.
type freeList struct {
	free []extent
}

// newFreeList returns the free extents of an array of size blocks given the extents in use
// (in any order; they may overlap, and may reach past the end when read from a damaged map).
func newFreeList(size uint32, used []extent) *freeList {
	used = slices.Clone(used)
	slices.SortFunc(used, func(a, b extent) int { return cmp.Compare(a.start, b.start) })
	f := &freeList{}
	next := uint32(0) // first block not known to be in use
	for _, u := range used {
		if u.n == 0 || u.start >= size {
			continue
		}
		if u.start > next {
			f.free = append(f.free, extent{next, u.start - next})
		}
		next = max(next, min(u.end(), size))
	}
	if next < size {
		f.free = append(f.free, extent{next, size - next})
	}
	return f
}

// alloc takes n blocks from the first extent that holds them; ok is false when none does.
func (f *freeList) alloc(n uint32) (start uint32, ok bool) {
	for i, e := range f.free {
		if e.n < n {
			continue
		}
		if e.n == n {
			f.free = slices.Delete(f.free, i, i+1)
		} else {
			f.free[i] = extent{e.start + n, e.n - n}
		}
		return e.start, true
	}
	return 0, false
}

// blocks is the number of free blocks and the longest free run.
func (f *freeList) blocks() (total, longest uint32) {
	for _, e := range f.free {
		total += e.n
		longest = max(longest, e.n)
	}
	return total, longest
}
