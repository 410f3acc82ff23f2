package store

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

func TestBatchIsOneRevision(t *testing.T) {
	s := New()
	mustWrite(t, s, Batch{Upserts: []model.Object{wep("a", "old", "n1")}})
	rev := mustWrite(t, s, Batch{
		Upserts: []model.Object{wep("a", "w1", "n1"), wep("a", "w2", "n2"), gnp("p1", "file")},
		Deletes: []model.Key{wepKey("a", "old"), wepKey("a", "never-existed")},
	})
	if rev != 2 || s.Revision() != 2 {
		t.Fatalf("batch revision %d, store revision %d; want 2, 2", rev, s.Revision())
	}
	want := map[model.Key]uint64{
		wepKey("a", "w1"): 2,
		wepKey("a", "w2"): 2,
		{Kind: model.KindGlobalNetworkPolicy, Name: "p1"}: 2,
	}
	if diff := cmp.Diff(want, revisions(s.View())); diff != "" {
		t.Errorf("store after batch (-want +got):\n%s", diff)
	}
}

func TestBatchDeleteThenUpsertSameKey(t *testing.T) {
	s := New()
	mustWrite(t, s, Batch{Upserts: []model.Object{labelled("a", "w", "file", "1")}})
	mustWrite(t, s, Batch{
		Upserts: []model.Object{labelled("a", "w", "file", "2")},
		Deletes: []model.Key{wepKey("a", "w")},
	})
	got, ok := Get[*model.WorkloadEndpoint](s.View(), wepKey("a", "w"))
	if !ok || got.Labels["v"] != "2" || got.Revision != 2 {
		t.Fatalf("after delete+upsert in one batch: %+v, %v; want v=2 at revision 2", got, ok)
	}
}

func TestRejectedBatchWritesAndStampsNothing(t *testing.T) {
	tests := []struct {
		name  string
		batch func(fresh model.Object) Batch
		want  error
	}{
		{"nil upsert", func(fresh model.Object) Batch { return Batch{Upserts: []model.Object{fresh, nil}} }, ErrInvalidObject},
		{"empty name", func(fresh model.Object) Batch { return Batch{Upserts: []model.Object{fresh, wep("a", "", "n")}} }, ErrInvalidObject},
		{"unknown kind upsert", func(fresh model.Object) Batch {
			return Batch{Upserts: []model.Object{fresh, &model.Tier{Meta: model.Meta{Key: model.Key{Kind: "Bogus", Name: "x"}}}}}
		}, ErrUnknownKind},
		{"unknown kind delete", func(fresh model.Object) Batch {
			return Batch{Upserts: []model.Object{fresh}, Deletes: []model.Key{{Kind: "Bogus", Name: "x"}}}
		}, ErrUnknownKind},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			mustWrite(t, s, Batch{Upserts: []model.Object{wep("a", "keep", "n1")}})
			changed := s.Changed()
			fresh := wep("a", "fresh", "n1")
			_, err := s.Write(tt.batch(fresh))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Write error %v, want %v", err, tt.want)
			}
			if fresh.Revision != 0 {
				t.Errorf("rejected batch stamped revision %d on an object", fresh.Revision)
			}
			if s.Revision() != 1 || s.View().Count(model.KindWorkloadEndpoint) != 1 || closed(changed) {
				t.Errorf("rejected batch changed the store: revision %d, %d endpoints, notified %v",
					s.Revision(), s.View().Count(model.KindWorkloadEndpoint), closed(changed))
			}
		})
	}
}

func TestNoOpBatch(t *testing.T) {
	s := New()
	stored := wep("a", "w", "n1")
	mustWrite(t, s, Batch{Upserts: []model.Object{stored}})
	changed := s.Changed()
	for _, b := range []Batch{
		{},
		{Deletes: []model.Key{wepKey("a", "missing")}},
		{Upserts: []model.Object{stored}}, // the object already stored: nothing to do
	} {
		if rev := mustWrite(t, s, b); rev != 1 {
			t.Errorf("no-op batch %+v returned revision %d, want 1", b, rev)
		}
	}
	if closed(changed) {
		t.Errorf("no-op batches notified")
	}
	if stored.Revision != 1 {
		t.Errorf("stored object re-stamped to %d", stored.Revision)
	}
}

func TestRewritingACopyOfAStoredObject(t *testing.T) {
	// Derivation benchmarks and sources copy a stored object, change it and write the copy.
	s := New()
	orig := labelled("a", "w", "file", "1")
	mustWrite(t, s, Batch{Upserts: []model.Object{orig}})
	v1 := s.View()
	cp := *orig
	cp.Labels = model.Labels{"v": "2"}
	if rev := mustWrite(t, s, Batch{Upserts: []model.Object{&cp}}); rev != 2 {
		t.Fatalf("revision %d, want 2", rev)
	}
	if orig.Revision != 1 {
		t.Errorf("original object re-stamped to %d", orig.Revision)
	}
	if got := changes(s.View(), 1); len(got) != 1 || got[0].Object != &cp || got[0].Revision != 2 {
		t.Errorf("changes since 1: %+v; want the copy at revision 2", got)
	}
	if got := changes(v1, 0); len(got) != 1 || got[0].Object != orig {
		t.Errorf("old view's changes since 0: %+v; want the original", got)
	}
}

func TestRewriteStoredObjectInBatchWithItsDelete(t *testing.T) {
	// Deleting a key and upserting the very object stored under it leaves it as it is.
	s := New()
	stored := wep("a", "w", "n1")
	mustWrite(t, s, Batch{Upserts: []model.Object{stored}})
	if rev := mustWrite(t, s, Batch{Upserts: []model.Object{stored}, Deletes: []model.Key{wepKey("a", "w")}}); rev != 1 {
		t.Errorf("revision %d, want 1 (no change)", rev)
	}
	if got, ok := s.View().Get(wepKey("a", "w")); !ok || got != stored || stored.Revision != 1 {
		t.Errorf("Get = %v, %v; want the stored object at revision 1", got, ok)
	}
}

func TestReplaceWithEquality(t *testing.T) {
	s := New()
	equal := func(a, b model.Object) bool {
		return a.(*model.WorkloadEndpoint).Labels["v"] == b.(*model.WorkloadEndpoint).Labels["v"]
	}
	mustWrite(t, s, Batch{Upserts: []model.Object{
		labelled("a", "same", "file", "1"),
		labelled("a", "edited", "file", "1"),
		labelled("a", "gone", "file", "1"),
		labelled("a", "other-source", "k8s", "1"),
	}})
	rev, err := s.Replace("file", []model.Object{
		labelled("a", "same", "file", "1"),
		labelled("a", "edited", "file", "2"),
		labelled("a", "new", "file", "1"),
	}, equal)
	if err != nil || rev != 2 {
		t.Fatalf("Replace: revision %d, error %v; want 2, nil", rev, err)
	}
	want := map[model.Key]uint64{
		wepKey("a", "same"):         1, // equal: kept with its revision
		wepKey("a", "edited"):       2,
		wepKey("a", "new"):          2,
		wepKey("a", "other-source"): 1, // another source's object is not touched
	}
	if diff := cmp.Diff(want, revisions(s.View())); diff != "" {
		t.Errorf("after Replace (-want +got):\n%s", diff)
	}
	// Replacing with identical content changes nothing and keeps the revision.
	changed := s.Changed()
	rev, err = s.Replace("file", []model.Object{
		labelled("a", "same", "file", "1"),
		labelled("a", "edited", "file", "2"),
		labelled("a", "new", "file", "1"),
	}, equal)
	if err != nil || rev != 2 || closed(changed) {
		t.Errorf("identical Replace: revision %d, error %v, notified %v; want 2, nil, false", rev, err, closed(changed))
	}
	// Without equal every object is rewritten.
	rev, _ = s.Replace("file", []model.Object{labelled("a", "same", "file", "1")}, nil)
	want = map[model.Key]uint64{wepKey("a", "same"): 3, wepKey("a", "other-source"): 1}
	if diff := cmp.Diff(want, revisions(s.View())); diff != "" || rev != 3 {
		t.Errorf("Replace without equal: revision %d (-want +got):\n%s", rev, diff)
	}
	// Replace with nothing empties the source.
	if _, err := s.Replace("file", nil, equal); err != nil {
		t.Fatal(err)
	}
	want = map[model.Key]uint64{wepKey("a", "other-source"): 1}
	if diff := cmp.Diff(want, revisions(s.View())); diff != "" {
		t.Errorf("empty Replace (-want +got):\n%s", diff)
	}
}

func TestReplaceRejectsForeignAndNilObjects(t *testing.T) {
	s := New()
	for _, objs := range [][]model.Object{
		{labelled("a", "w", "k8s", "1")},
		{nil},
	} {
		if _, err := s.Replace("file", objs, nil); !errors.Is(err, ErrInvalidObject) {
			t.Errorf("Replace(%v) error %v, want ErrInvalidObject", objs, err)
		}
	}
	if s.Revision() != 0 {
		t.Errorf("rejected Replace wrote revision %d", s.Revision())
	}
}

func TestChangeFeedDeleteAndRecreate(t *testing.T) {
	s := New()
	s.RegisterConsumer("keep-everything")
	k := wepKey("a", "w")
	r1 := mustWrite(t, s, Batch{Upserts: []model.Object{labelled("a", "w", "file", "1")}})
	// Across revisions: delete at r2, re-create at r3.
	r2 := mustWrite(t, s, Batch{Deletes: []model.Key{k}})
	v2 := s.View()
	r3 := mustWrite(t, s, Batch{Upserts: []model.Object{labelled("a", "w", "file", "2")}})
	// Within one revision: delete and re-create at r4.
	r4 := mustWrite(t, s, Batch{Deletes: []model.Key{k}, Upserts: []model.Object{labelled("a", "w", "file", "3")}})

	type entry struct {
		Rev     uint64
		Deleted bool
		V       string
	}
	flatten := func(cs []Change) []entry {
		var out []entry
		for _, c := range cs {
			if c.Key != k {
				t.Fatalf("unexpected key %v in feed", c.Key)
			}
			e := entry{Rev: c.Revision, Deleted: c.Deleted}
			if !c.Deleted {
				e.V = c.Object.(*model.WorkloadEndpoint).Labels["v"]
			}
			out = append(out, e)
		}
		return out
	}
	v := s.View()
	for _, tt := range []struct {
		since uint64
		want  []entry
	}{
		{0, []entry{{Rev: r4, V: "3"}}},
		{r1, []entry{{Rev: r4, V: "3"}}},
		{r3, []entry{{Rev: r4, V: "3"}}},
		{r4, nil},
	} {
		if diff := cmp.Diff(tt.want, flatten(changes(v, tt.since))); diff != "" {
			t.Errorf("ChangesSince(%d) at r4 (-want +got):\n%s", tt.since, diff)
		}
	}
	if n := s.Tombstones(); n != 0 {
		t.Errorf("%d tombstones kept for a key that is live again, want 0", n)
	}
	// The view at r2 still shows the delete it saw.
	r5 := mustWrite(t, s, Batch{Deletes: []model.Key{k}})
	v5 := s.View()
	for _, tt := range []struct {
		since uint64
		want  []entry
	}{
		{0, []entry{{Rev: r5, Deleted: true}}}, // one tombstone per key: the latest
		{r1, []entry{{Rev: r5, Deleted: true}}},
		{r4, []entry{{Rev: r5, Deleted: true}}},
		{r5, nil},
	} {
		if diff := cmp.Diff(tt.want, flatten(changes(v5, tt.since))); diff != "" {
			t.Errorf("ChangesSince(%d) at r5 (-want +got):\n%s", tt.since, diff)
		}
	}
	if diff := cmp.Diff([]entry{{Rev: r2, Deleted: true}}, flatten(changes(v2, r1))); diff != "" {
		t.Errorf("view at r2, ChangesSince(r1) (-want +got):\n%s", diff)
	}
}

func TestTombstonesKeptUntilEveryConsumerAcks(t *testing.T) {
	s := New()
	fast := s.RegisterConsumer("fast")
	slow := s.RegisterConsumer("slow")
	mustWrite(t, s, Batch{Upserts: []model.Object{wep("a", "w1", "n1"), wep("a", "w2", "n1")}})
	r2 := mustWrite(t, s, Batch{Deletes: []model.Key{wepKey("a", "w1")}})
	r3 := mustWrite(t, s, Batch{Deletes: []model.Key{wepKey("a", "w2")}})
	if n := s.Tombstones(); n != 2 {
		t.Fatalf("%d tombstones, want 2", n)
	}
	fast.Ack(r3)
	if n := s.Tombstones(); n != 2 {
		t.Errorf("after one consumer acked: %d tombstones, want 2", n)
	}
	slow.Ack(r2)
	if n := s.Tombstones(); n != 1 {
		t.Errorf("after the slow consumer acked r2: %d tombstones, want 1", n)
	}
	if got := changes(s.View(), r2); len(got) != 1 || !got[0].Deleted || got[0].Key.Name != "w2" {
		t.Errorf("slow consumer's feed since r2: %+v; want the delete of w2", got)
	}
	slow.Ack(1) // acks never go backwards
	if slow.Acked() != r2 {
		t.Errorf("Acked() = %d after a stale ack, want %d", slow.Acked(), r2)
	}
	slow.Close()
	if n := s.Tombstones(); n != 0 {
		t.Errorf("after the slow consumer closed: %d tombstones, want 0", n)
	}
	// With no consumer left, tombstones go at once.
	fast.Close()
	mustWrite(t, s, Batch{Upserts: []model.Object{wep("a", "w3", "n1")}})
	mustWrite(t, s, Batch{Deletes: []model.Key{wepKey("a", "w3")}})
	if n := s.Tombstones(); n != 0 {
		t.Errorf("no consumers: %d tombstones kept, want 0", n)
	}
	// A consumer registered now starts at the current revision.
	late := s.RegisterConsumer("late")
	if late.Acked() != s.Revision() {
		t.Errorf("new consumer starts at %d, want %d", late.Acked(), s.Revision())
	}
}

func TestInSyncWithSeveralSources(t *testing.T) {
	s := New()
	if s.InSync() {
		t.Fatalf("in sync with no source registered")
	}
	if err := s.MarkInSync("file"); !errors.Is(err, ErrUnknownSource) {
		t.Errorf("MarkInSync(unregistered) = %v, want ErrUnknownSource", err)
	}
	if err := s.MarkOutOfSync("file"); !errors.Is(err, ErrUnknownSource) {
		t.Errorf("MarkOutOfSync(unregistered) = %v, want ErrUnknownSource", err)
	}
	s.RegisterSource("file")
	s.RegisterSource("kubernetes")
	before := s.View()
	defer func() {
		if before.InSync() {
			t.Errorf("a view taken before the sources were in sync reports InSync")
		}
	}()
	steps := []struct {
		do   func() error
		want bool
	}{
		{func() error { return s.MarkInSync("file") }, false},
		{func() error { return s.MarkInSync("kubernetes") }, true},
		{func() error { s.RegisterSource("kubernetes"); return nil }, true}, // re-registering keeps the mark
		{func() error { return s.MarkOutOfSync("kubernetes") }, false},
		{func() error { s.RegisterSource("etcd"); return nil }, false},
		{func() error { return s.MarkInSync("kubernetes") }, false},
		{func() error { return s.MarkInSync("etcd") }, true},
	}
	for i, st := range steps {
		changed := s.Changed()
		if err := st.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := s.InSync(); got != st.want {
			t.Errorf("step %d: InSync() = %v, want %v", i, got, st.want)
		}
		if got := s.View().InSync(); got != st.want {
			t.Errorf("step %d: View().InSync() = %v, want %v", i, got, st.want)
		}
		if !closed(changed) {
			t.Errorf("step %d: no change notification", i)
		}
	}
}

func TestChangedNotification(t *testing.T) {
	s := New()
	ch := s.Changed()
	if closed(ch) {
		t.Fatalf("fresh store's Changed() already closed")
	}
	if s.Changed() != ch {
		t.Errorf("Changed() returned a new channel with no write in between")
	}
	mustWrite(t, s, Batch{Upserts: []model.Object{wep("a", "w", "n1")}})
	if !closed(ch) {
		t.Fatalf("write did not close Changed()")
	}
	next := s.Changed()
	if closed(next) {
		t.Fatalf("the next Changed() channel is already closed")
	}
	mustWrite(t, s, Batch{Deletes: []model.Key{wepKey("a", "w")}})
	if !closed(next) {
		t.Errorf("delete did not close Changed()")
	}
}

func TestViewImmutableAfterLaterWrites(t *testing.T) {
	s := New()
	stored := labelled("a", "w1", "file", "1")
	mustWrite(t, s, Batch{Upserts: []model.Object{stored, labelled("a", "w2", "file", "1"), gnp("p", "file")}})
	v := s.View()
	before := revisions(v)
	beforeChanges := changes(v, 0)

	mustWrite(t, s, Batch{Upserts: []model.Object{labelled("a", "w1", "file", "2"), labelled("a", "w3", "file", "1")}})
	mustWrite(t, s, Batch{Deletes: []model.Key{wepKey("a", "w2"), {Kind: model.KindGlobalNetworkPolicy, Name: "p"}}})
	if _, err := s.Write(Batch{Upserts: []model.Object{stored}}); !errors.Is(err, ErrStale) {
		t.Errorf("writing back a replaced object: error %v, want ErrStale", err) // and it must not disturb v
	}

	if v.Revision() != 1 {
		t.Errorf("view revision %d, want 1", v.Revision())
	}
	if diff := cmp.Diff(before, revisions(v)); diff != "" {
		t.Errorf("old view changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(beforeChanges, changes(v, 0)); diff != "" {
		t.Errorf("old view's change feed changed (-before +after):\n%s", diff)
	}
	got, ok := Get[*model.WorkloadEndpoint](v, wepKey("a", "w1"))
	if !ok || got.Labels["v"] != "1" {
		t.Errorf("old view Get(w1) = %+v, %v; want v=1", got, ok)
	}
	if _, ok := Get[*model.Policy](v, model.Key{Kind: model.KindGlobalNetworkPolicy, Name: "p"}); !ok {
		t.Errorf("old view lost the deleted policy")
	}
	if n := len(collect(ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, "n1"))); n != 2 {
		t.Errorf("old view has %d endpoints on n1, want 2", n)
	}
	if diff := cmp.Diff([]model.Key{wepKey("a", "w1"), wepKey("a", "w3")}, keysOf(revisions(s.View()))); diff != "" {
		t.Errorf("new view (-want +got):\n%s", diff)
	}
}

func TestTypedAccessors(t *testing.T) {
	s := New()
	mustWrite(t, s, Batch{Upserts: []model.Object{wep("a", "w1", "n1"), wep("b", "w2", "n2"), wep("a", "w0", "n1"), gnp("p", "file")}})
	v := s.View()
	var names []string
	for w := range List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint) {
		names = append(names, w.Key.ID())
	}
	if diff := cmp.Diff([]string{"a/w0", "a/w1", "b/w2"}, names); diff != "" {
		t.Errorf("List in ID order (-want +got):\n%s", diff)
	}
	if _, ok := Get[*model.Policy](v, wepKey("a", "w1")); ok {
		t.Errorf("Get with the wrong type reported ok")
	}
	if n := len(collect(ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, "n1"))); n != 2 {
		t.Errorf("ListOnNode(n1) = %d endpoints, want 2", n)
	}
	if n := len(collect(ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, "n"))); n != 0 {
		t.Errorf("ListOnNode matched a node name prefix: %d endpoints", n)
	}
}

func collect[T any](seq func(func(T) bool)) []T {
	var out []T
	for x := range seq {
		out = append(out, x)
	}
	return out
}
