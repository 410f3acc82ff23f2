package store

import (
	"iter"

	"github.com/hashicorp/go-memdb"

	"github.com/felis-dev/felis/model"
)

// View is an immutable, consistent read of the store at one revision. It is safe for use
// by many goroutines and never changes, whatever is written afterwards.
type View struct {
	txn      *memdb.Txn
	revision uint64
	inSync   bool
}

// Revision is the store revision this view reads.
func (v *View) Revision() uint64 { return v.revision }

// InSync reports whether every registered source was in sync when the view was taken (and
// at least one was registered): only then is the view complete enough to act on. Unlike
// calling Store.InSync next to Store.View, it cannot pair a complete mark with an older,
// incomplete view.
func (v *View) InSync() bool { return v.inSync }

// Get returns the object with the given key.
func (v *View) Get(k model.Key) (model.Object, bool) {
	o, err := v.txn.First(string(k.Kind), indexID, k.ID())
	if err != nil || o == nil {
		return nil, false
	}
	return o.(model.Object), true
}

// All iterates every object of a kind in ID order.
func (v *View) All(k model.Kind) iter.Seq[model.Object] {
	return v.iterate(string(k), indexID)
}

// OnNode iterates the objects of a node-bound kind (WorkloadEndpoint, HostEndpoint,
// IPAMBlock, BlockAffinity) that belong to node, in no particular order.
func (v *View) OnNode(k model.Kind, node string) iter.Seq[model.Object] {
	return v.iterate(string(k), indexNode, node)
}

// Count returns the number of objects of a kind.
func (v *View) Count(k model.Kind) int {
	n := 0
	for range v.All(k) {
		n++
	}
	return n
}

// bySource iterates the objects of a kind that source wrote. It scans the kind: a source
// index would hold nearly every object in practice (one datastore writes almost all of
// them) and cost each write a quarter of its time and the store a quarter of its memory;
// only Replace, a resync, needs this.
func (v *View) bySource(k model.Kind, source string) iter.Seq[model.Object] {
	return func(yield func(model.Object) bool) {
		for o := range v.All(k) {
			if o.GetMeta().Source.Name == source && !yield(o) {
				return
			}
		}
	}
}

func (v *View) iterate(table, index string, args ...any) iter.Seq[model.Object] {
	return func(yield func(model.Object) bool) {
		it, err := v.txn.Get(table, index, args...)
		if err != nil {
			return
		}
		for o := it.Next(); o != nil; o = it.Next() {
			if !yield(o.(model.Object)) {
				return
			}
		}
	}
}

// List iterates every object of a kind as its concrete type, in ID order.
func List[T model.Object](v *View, k model.Kind) iter.Seq[T] {
	return func(yield func(T) bool) {
		for o := range v.All(k) {
			if t, ok := o.(T); ok && !yield(t) {
				return
			}
		}
	}
}

// ListOnNode is OnNode with the concrete type.
func ListOnNode[T model.Object](v *View, k model.Kind, node string) iter.Seq[T] {
	return func(yield func(T) bool) {
		for o := range v.OnNode(k, node) {
			if t, ok := o.(T); ok && !yield(t) {
				return
			}
		}
	}
}

// Get returns the object with the given key as its concrete type.
func Get[T model.Object](v *View, k model.Key) (T, bool) {
	var zero T
	o, ok := v.Get(k)
	if !ok {
		return zero, false
	}
	t, ok := o.(T)
	return t, ok
}

// Change is one entry of the change feed: the key and revision of an upsert or a delete.
type Change struct {
	Key      model.Key
	Revision uint64
	Deleted  bool
	Object   model.Object // the new object; nil when Deleted
}

// ChangesSince iterates, per kind in model.Kinds order and by revision within a kind, every
// change with a revision greater than rev that this view can see, then the deletions. It
// reports the net effect, one entry per key: its current object if it changed, or its latest
// deletion if it is gone (a key deleted and re-created shows as an upsert). Applied in order
// to the state at rev, the changes give this view's state. Deletions are reported only while
// their tombstone is kept: a consumer registered with RegisterConsumer keeps them until it
// acknowledges a later revision.
func (v *View) ChangesSince(rev uint64) iter.Seq[Change] {
	return func(yield func(Change) bool) {
		for _, k := range model.Kinds {
			it, err := v.txn.LowerBound(string(k), indexRevision, rev+1)
			if err != nil {
				return
			}
			for o := it.Next(); o != nil; o = it.Next() {
				obj := o.(model.Object)
				m := obj.GetMeta()
				if !yield(Change{Key: m.Key, Revision: m.Revision, Object: obj}) {
					return
				}
			}
		}
		it, err := v.txn.LowerBound(tableGraveyard, indexRevision, rev+1)
		if err != nil {
			return
		}
		for o := it.Next(); o != nil; o = it.Next() {
			ts := o.(*tombstone)
			// A key deleted and then re-created is reported by its live object only.
			if cur, ok := v.Get(ts.Meta.Key); ok && cur.GetMeta().Revision >= ts.Meta.Revision {
				continue
			}
			if !yield(Change{Key: ts.Meta.Key, Revision: ts.Meta.Revision, Deleted: true}) {
				return
			}
		}
	}
}
