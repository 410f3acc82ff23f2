package track

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/convert"
	"github.com/felis-dev/felis/model/store"
)

// Resource identifies one API resource and the version of it an event carries.
type Resource struct {
	ID      string // unique within the source, e.g. "Pod default/web" or an etcd key
	Where   string // the resource URL stamped into model.Source.File and problems
	Version string // resourceVersion or etcd mod revision; "" when unknown
}

// entry is what one API resource contributes to the store.
type entry struct {
	version string         // version of the valid resource the objects come from
	objects []model.Object // last valid objects, stamped with this source
}

// Tracker keeps the objects each API resource of one source produced. It is safe for
// concurrent use; every store write happens under its lock, so the store and the tracker
// never disagree.
type Tracker struct {
	source string
	st     *store.Store

	mu        sync.Mutex
	committed map[string]*entry // what the store holds, per resource ID
	owner     map[model.Key]string
	problems  map[string]datastore.Problems
	staging   map[string]*entry // non-nil during a full list
	skipped   map[string]bool   // resource IDs of kinds felis does not use
	changed   bool              // problems changed since the last TakeProblems
}

// New returns a tracker writing to st as source (registered with the store here).
func New(source string, st *store.Store) *Tracker {
	st.RegisterSource(source)
	return &Tracker{
		source:    source,
		st:        st,
		committed: map[string]*entry{},
		owner:     map[model.Key]string{},
		problems:  map[string]datastore.Problems{},
		skipped:   map[string]bool{},
	}
}

// BeginList starts a full list: until CommitList, updates and removals are collected, not
// written, and CommitList then makes the store hold exactly what the list delivered.
func (t *Tracker) BeginList() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.staging = map[string]*entry{}
}

// Listing reports whether a full list is being collected.
func (t *Tracker) Listing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.staging != nil
}

// Update records the converted current version of r. An invalid version (res.Errors) is
// reported and leaves the resource's last valid objects in place; a valid one replaces them
// (a pod that stops qualifying for an endpoint thus deletes it). A version equal to the one
// already applied writes nothing. It returns the store's error, if any.
func (t *Tracker) Update(r Resource, res convert.Result) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	prev := t.currentLocked(r.ID)
	next := t.entryLocked(r, res, prev)
	if t.staging != nil {
		t.staging[r.ID] = next
		return nil
	}
	if next == prev {
		return nil
	}
	return t.applyLocked(r.ID, prev, next)
}

// Remove records that the resource with this ID is gone: its objects are deleted and its
// problems forgotten.
func (t *Tracker) Remove(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setProblemsLocked(id, nil)
	delete(t.skipped, id)
	if t.staging != nil {
		delete(t.staging, id)
		return nil
	}
	prev := t.committed[id]
	if prev == nil {
		return nil
	}
	return t.applyLocked(id, prev, nil)
}

// CommitList ends a full list: the store's objects of this source become exactly those of
// the listed resources, in one revision, and resources missing from the list lose their
// problems. Objects whose resource version did not change keep their store revision.
func (t *Tracker) CommitList() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.staging == nil {
		return fmt.Errorf("datastore %s: CommitList without BeginList", t.source)
	}
	next := t.staging
	t.staging = nil
	for id := range t.problems {
		if _, ok := next[id]; !ok {
			t.setProblemsLocked(id, nil)
		}
	}
	for id := range t.skipped {
		if _, ok := next[id]; !ok {
			delete(t.skipped, id)
		}
	}
	// Which version of which resource each stored key came from, before and after: an
	// object is unchanged when both are the same.
	before := map[model.Key]string{}
	for id, e := range t.committed {
		for _, o := range e.objects {
			before[o.GetMeta().Key] = id + "@" + e.version
		}
	}
	after := map[model.Key]string{}
	owner := map[model.Key]string{}
	var objs []model.Object
	seen := map[model.Key]int{}
	for _, id := range slices.Sorted(maps.Keys(next)) {
		e := next[id]
		for _, o := range e.objects {
			k := o.GetMeta().Key
			after[k] = id + "@" + e.version
			owner[k] = id
			if i, dup := seen[k]; dup {
				objs[i] = o // two resources giving one key: the later (by ID) wins, as in Update
				continue
			}
			seen[k] = len(objs)
			objs = append(objs, o)
		}
	}
	equal := func(old, cur model.Object) bool {
		k := old.GetMeta().Key
		b, ok := before[k]
		return ok && b == after[k] && old.GetMeta().Source == cur.GetMeta().Source
	}
	if _, err := t.st.Replace(t.source, fresh(objs, before, after), equal); err != nil {
		return fmt.Errorf("datastore %s: %w", t.source, err)
	}
	t.committed = next
	t.owner = owner
	return nil
}

// fresh returns objs with every object that will be written (not equal to the stored one)
// guaranteed unstamped: the store refuses to re-stamp an object that old views may hold.
func fresh(objs []model.Object, before, after map[model.Key]string) []model.Object {
	out := make([]model.Object, len(objs))
	for i, o := range objs {
		k := o.GetMeta().Key
		if b, ok := before[k]; ok && b == after[k] {
			out[i] = o // left alone by Replace's equality
			continue
		}
		out[i] = store.Unstamped(o)
	}
	return out
}

// TakeProblems returns every current problem, sorted, and whether the list changed since
// the last call.
func (t *Tracker) TakeProblems() (datastore.Problems, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var all datastore.Problems
	for _, id := range slices.Sorted(maps.Keys(t.problems)) {
		all = append(all, t.problems[id]...)
	}
	changed := t.changed
	t.changed = false
	return all, changed
}

// Skipped returns how many current resources are of kinds felis does not use.
func (t *Tracker) Skipped() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.skipped)
}

// currentLocked is the entry the next version of a resource is compared with: the staged one
// during a list, else the committed one.
func (t *Tracker) currentLocked(id string) *entry {
	if t.staging != nil {
		if e, ok := t.staging[id]; ok {
			return e
		}
	}
	return t.committed[id]
}

// entryLocked converts an event into the resource's next entry and records its problems.
// It returns prev itself when nothing changes.
func (t *Tracker) entryLocked(r Resource, res convert.Result, prev *entry) *entry {
	if res.Skipped {
		t.skipped[r.ID] = true
		t.setProblemsLocked(r.ID, nil)
		return &entry{version: r.Version}
	}
	delete(t.skipped, r.ID)
	if len(res.Errors) > 0 {
		keep := ""
		if prev != nil && len(prev.objects) > 0 {
			keep = " (keeping its last valid version)"
		}
		ps := make(datastore.Problems, 0, len(res.Errors))
		for _, fe := range res.Errors {
			ps = append(ps, datastore.Problem{Where: r.Where, Resource: res.Resource, Field: fe.Field, Reason: fe.Reason + keep})
		}
		t.setProblemsLocked(r.ID, ps)
		if prev == nil {
			return &entry{version: r.Version}
		}
		return prev
	}
	t.setProblemsLocked(r.ID, nil)
	if prev != nil && r.Version != "" && prev.version == r.Version {
		return prev
	}
	objs := make([]model.Object, 0, len(res.Objects))
	for _, o := range res.Objects {
		o.GetMeta().Source = model.Source{Name: t.source, File: r.Where}
		objs = append(objs, o)
	}
	return &entry{version: r.Version, objects: objs}
}

// setProblemsLocked replaces one resource's problems and notes whether that changed anything.
func (t *Tracker) setProblemsLocked(id string, ps datastore.Problems) {
	old := t.problems[id]
	if slices.Equal(old, ps) {
		return
	}
	if len(ps) == 0 {
		delete(t.problems, id)
	} else {
		t.problems[id] = ps
	}
	t.changed = true
}

// applyLocked writes the difference between a resource's previous and next objects. A key
// another resource has since taken over is neither deleted nor rewritten on its behalf.
func (t *Tracker) applyLocked(id string, prev, next *entry) error {
	var b store.Batch
	keep := map[model.Key]bool{}
	if next != nil {
		for _, o := range next.objects {
			keep[o.GetMeta().Key] = true
		}
	}
	if prev != nil {
		for _, o := range prev.objects {
			k := o.GetMeta().Key
			if !keep[k] && t.owner[k] == id {
				b.Deletes = append(b.Deletes, k)
			}
		}
	}
	if next != nil {
		for _, o := range next.objects {
			b.Upserts = append(b.Upserts, store.Unstamped(o))
		}
	}
	if _, err := t.st.Write(b); err != nil {
		return fmt.Errorf("datastore %s: %s: %w", t.source, id, err)
	}
	for _, k := range b.Deletes {
		delete(t.owner, k)
	}
	if next != nil {
		for _, o := range next.objects {
			t.owner[o.GetMeta().Key] = id
		}
	}
	if next == nil {
		delete(t.committed, id)
	} else {
		t.committed[id] = next
	}
	return nil
}
