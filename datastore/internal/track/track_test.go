package track

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/convert"
	"github.com/felis-dev/felis/model/store"
)

// pool returns a valid conversion result with one IP pool of the given name.
func pool(name string) convert.Result {
	return convert.Result{Resource: "IPPool " + name, Objects: []model.Object{&model.IPPool{Meta: model.Meta{Key: model.Key{Kind: model.KindIPPool, Name: name}}}}}
}

// none is a valid result without objects (a pod that does not qualify for an endpoint).
func none(name string) convert.Result { return convert.Result{Resource: "Pod ns/" + name} }

// invalid is a result with one field error.
func invalid(name string) convert.Result {
	return convert.Result{Resource: "IPPool " + name, Errors: []convert.FieldError{{Field: "spec.cidr", Reason: "bad"}}}
}

func res(id, version string) Resource { return Resource{ID: id, Where: "test:" + id, Version: version} }

// state renders the store: each key with the resource it came from and its revision.
func state(st *store.Store) []string {
	var out []string
	v := st.View()
	for _, k := range model.Kinds {
		for o := range v.All(k) {
			m := o.GetMeta()
			out = append(out, fmt.Sprintf("%s from %s@%d", m.Key, m.Source.File, m.Revision))
		}
	}
	slices.Sort(out)
	return out
}

func check(t *testing.T, what string, st *store.Store, want ...string) {
	t.Helper()
	slices.Sort(want)
	if d := cmp.Diff(want, state(st)); d != "" {
		t.Fatalf("%s: store (-want +got):\n%s", what, d)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestUpdateRemoveAndLastKnownGood(t *testing.T) {
	st := store.New()
	tr := New("api", st)
	must(t, tr.Update(res("a", "1"), pool("a")))
	check(t, "add", st, "IPPool a from test:a@1")

	// The same version again writes nothing.
	must(t, tr.Update(res("a", "1"), pool("a")))
	check(t, "same version", st, "IPPool a from test:a@1")

	// An invalid version keeps the last valid objects and is reported.
	must(t, tr.Update(res("a", "2"), invalid("a")))
	check(t, "invalid update", st, "IPPool a from test:a@1")
	problems, changed := tr.TakeProblems()
	want := datastore.Problems{{Where: "test:a", Resource: "IPPool a", Field: "spec.cidr", Reason: "bad (keeping its last valid version)"}}
	if d := cmp.Diff(want, problems); d != "" || !changed {
		t.Fatalf("problems (changed %v) (-want +got):\n%s", changed, d)
	}
	if _, changed := tr.TakeProblems(); changed {
		t.Fatal("problems reported as changed twice")
	}

	// A valid version replaces them and clears the problem.
	must(t, tr.Update(res("a", "3"), pool("a")))
	check(t, "fixed", st, "IPPool a from test:a@2")
	if p, changed := tr.TakeProblems(); len(p) != 0 || !changed {
		t.Fatalf("problems after fix: %q (changed %v)", p, changed)
	}

	// A resource that stops producing objects deletes them.
	must(t, tr.Update(res("a", "4"), none("a")))
	check(t, "no longer qualifies", st)

	// Invalid from the start: nothing stored, reported without "keeping".
	must(t, tr.Update(res("b", "1"), invalid("b")))
	check(t, "invalid new", st)
	if p, _ := tr.TakeProblems(); len(p) != 1 || strings.Contains(p[0].Reason, "keeping") {
		t.Fatalf("problems: %q", p)
	}
	must(t, tr.Remove("b"))
	if p, changed := tr.TakeProblems(); len(p) != 0 || !changed {
		t.Fatalf("problems after remove: %q (changed %v)", p, changed)
	}

	must(t, tr.Update(res("c", "1"), pool("c")))
	must(t, tr.Remove("c"))
	must(t, tr.Remove("never-seen"))
	check(t, "removed", st)
}

func TestSharedKeyIsDeletedOnlyByItsOwner(t *testing.T) {
	st := store.New()
	tr := New("api", st)
	must(t, tr.Update(res("first", "1"), pool("x")))
	must(t, tr.Update(res("second", "1"), pool("x"))) // takes the key over
	check(t, "taken over", st, "IPPool x from test:second@2")
	must(t, tr.Remove("first"))
	check(t, "old owner removed", st, "IPPool x from test:second@2")
	must(t, tr.Remove("second"))
	check(t, "owner removed", st)
}

func TestListReplacesAndKeepsUnchangedRevisions(t *testing.T) {
	st := store.New()
	tr := New("api", st)
	other := &model.IPPool{Meta: model.Meta{Key: model.Key{Kind: model.KindIPPool, Name: "other"}, Source: model.Source{Name: "file"}}}
	st.RegisterSource("file")
	if _, err := st.Write(store.Batch{Upserts: []model.Object{other}}); err != nil {
		t.Fatal(err)
	}

	tr.BeginList()
	must(t, tr.Update(res("a", "1"), pool("a")))
	must(t, tr.Update(res("b", "1"), pool("b")))
	must(t, tr.Update(res("gone", "1"), pool("gone")))
	must(t, tr.Remove("gone")) // deleted during the list
	check(t, "nothing written during a list", st, "IPPool other from @1")
	if !tr.Listing() {
		t.Fatal("Listing() false during a list")
	}
	must(t, tr.CommitList())
	check(t, "first list", st, "IPPool other from @1", "IPPool a from test:a@2", "IPPool b from test:b@2")

	// A re-list: a unchanged, b invalid now (kept), c new, and a removal by absence.
	must(t, tr.Update(res("d", "1"), pool("d")))
	tr.BeginList()
	must(t, tr.Update(res("a", "1"), pool("a")))
	must(t, tr.Update(res("b", "2"), invalid("b")))
	must(t, tr.Update(res("c", "1"), pool("c")))
	must(t, tr.CommitList())
	check(t, "re-list", st, "IPPool other from @1", "IPPool a from test:a@2", "IPPool b from test:b@2", "IPPool c from test:c@4")
	if p, _ := tr.TakeProblems(); len(p) != 1 || p[0].Where != "test:b" {
		t.Fatalf("problems: %q", p)
	}

	// Live updates after the list write at once; a problem of a resource missing from the
	// next list is forgotten.
	must(t, tr.Update(res("a", "2"), pool("a")))
	check(t, "live update", st, "IPPool other from @1", "IPPool a from test:a@5", "IPPool b from test:b@2", "IPPool c from test:c@4")
	tr.BeginList()
	must(t, tr.CommitList())
	check(t, "empty list", st, "IPPool other from @1")
	if p, changed := tr.TakeProblems(); len(p) != 0 || !changed {
		t.Fatalf("problems after an empty list: %q (changed %v)", p, changed)
	}
	if err := tr.CommitList(); err == nil {
		t.Fatal("CommitList without BeginList succeeded")
	}
}

func TestSkippedKinds(t *testing.T) {
	st := store.New()
	tr := New("api", st)
	must(t, tr.Update(res("peer", "1"), convert.Result{Resource: "BGPPeer p", Skipped: true}))
	if tr.Skipped() != 1 {
		t.Fatalf("Skipped() = %d, want 1", tr.Skipped())
	}
	if p, _ := tr.TakeProblems(); len(p) != 0 {
		t.Fatalf("a skipped kind is a problem: %q", p)
	}
	must(t, tr.Remove("peer"))
	if tr.Skipped() != 0 {
		t.Fatalf("Skipped() = %d after remove, want 0", tr.Skipped())
	}
	check(t, "skipped", st)
}
