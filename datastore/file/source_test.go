package file

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

func gns(name, net string) string {
	return "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: " + name + "\nspec:\n  nets: [" + net + "]\n"
}

// replaceFile writes a file the way editors and kubectl do: a hidden temporary file renamed
// over the target, so the watcher never sees a half-written file.
func replaceFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// revisions maps every stored object to its revision.
func revisions(st *store.Store) map[string]uint64 {
	v := st.View()
	out := map[string]uint64{}
	for _, k := range model.Kinds {
		for o := range v.All(k) {
			out[o.GetMeta().Key.String()] = o.GetMeta().Revision
		}
	}
	return out
}

// waitFor waits until cond holds for the store's revisions, or fails after 10 s.
func waitFor(t *testing.T, st *store.Store, what string, cond func(map[string]uint64) bool) map[string]uint64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := st.Changed()
		if revs := revisions(st); cond(revs) {
			return revs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; store holds %v", what, revisions(st))
		}
	}
}

// problemLog collects what Watch reports.
type problemLog struct {
	mu   sync.Mutex
	last []string
	ch   chan struct{}
}

func (l *problemLog) report(ps datastore.Problems) {
	l.mu.Lock()
	l.last = nil
	for _, p := range ps {
		l.last = append(l.last, p.String())
	}
	l.mu.Unlock()
	l.ch <- struct{}{}
}

func (l *problemLog) await(t *testing.T) []string {
	t.Helper()
	select {
	case <-l.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a problem report")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// checkStep asserts that the step was exactly one write (revision rev+1 after rev): the keys
// in changed have that revision (or appeared with it), the keys in gone disappeared, and every
// other object kept its revision.
func checkStep(t *testing.T, st *store.Store, rev uint64, before, after map[string]uint64, changed, gone []string) {
	t.Helper()
	if got := st.Revision(); got != rev+1 {
		t.Errorf("store revision %d after the step, want %d (one write)", got, rev+1)
	}
	want := map[string]uint64{}
	for k, r := range before {
		want[k] = r
	}
	for _, k := range gone {
		delete(want, k)
	}
	for _, k := range changed {
		want[k] = rev + 1
	}
	if diff := cmp.Diff(want, after); diff != "" {
		t.Errorf("store after the step (-want +got):\n%s", diff)
	}
}

func TestLoadAndWatch(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"a.yaml":     gns("a1", "10.1.0.0/16") + "---\n" + gns("a2", "10.2.0.0/16"),
		"b.yaml":     "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: nsb\n",
		"sub/c.yaml": gns("c", "10.3.0.0/16"),
	})
	st := store.New()
	src := New(dir)
	src.debounce = 30 * time.Millisecond
	problems, err := src.Load(context.Background(), st)
	if err != nil || len(problems) != 0 {
		t.Fatalf("Load: problems %v, err %v", problems, err)
	}
	if !st.InSync() {
		t.Fatal("store not in sync after Load")
	}
	revs := revisions(st)
	if diff := cmp.Diff(map[string]uint64{"GlobalNetworkSet a1": 1, "GlobalNetworkSet a2": 1, "GlobalNetworkSet c": 1, "Profile kns.nsb": 1}, revs); diff != "" {
		t.Fatalf("after Load (-want +got):\n%s", diff)
	}

	ctx, cancel := context.WithCancel(context.Background())
	log := &problemLog{ch: make(chan struct{}, 16)}
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, st, log.report) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()

	a := filepath.Join(dir, "a.yaml")
	steps := []struct {
		name    string
		do      func()
		changed []string
		gone    []string
	}{{
		name:    "edit one document of a multi-document file",
		do:      func() { replaceFile(t, a, gns("a1", "10.1.0.0/16")+"---\n"+gns("a2", "10.22.0.0/16")) },
		changed: []string{"GlobalNetworkSet a2"},
	}, {
		name: "add a file; reformat another without changing its content or places",
		do: func() {
			replaceFile(t, a, "kind: GlobalNetworkSet\napiVersion: projectcalico.org/v3\nmetadata: {name: a1}  # comment\nspec:\n  nets:\n  - '10.1.0.0/16'\n---\n"+gns("a2", "10.22.0.0/16"))
			replaceFile(t, filepath.Join(dir, "d.yaml"), gns("d", "10.4.0.0/16"))
		},
		changed: []string{"GlobalNetworkSet d"},
	}, {
		name: "remove a file",
		do: func() {
			if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
				t.Fatal(err)
			}
		},
		gone: []string{"Profile kns.nsb"},
	}, {
		name:    "create a new directory tree with a file in it",
		do:      func() { replaceFile(t, filepath.Join(dir, "new/deeper/e.yaml"), gns("e", "10.5.0.0/16")) },
		changed: []string{"GlobalNetworkSet e"},
	}, {
		name: "remove a directory",
		do: func() {
			if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
				t.Fatal(err)
			}
		},
		gone: []string{"GlobalNetworkSet c"},
	}}
	for _, s := range steps {
		before, rev := revisions(st), st.Revision()
		s.do()
		if len(s.changed) == 0 && len(s.gone) == 0 {
			continue
		}
		after := waitFor(t, st, s.name, func(r map[string]uint64) bool {
			for _, k := range s.gone {
				if _, ok := r[k]; ok {
					return false
				}
			}
			for _, k := range s.changed {
				if r[k] == before[k] {
					return false
				}
			}
			return true
		})
		t.Run(s.name, func(t *testing.T) { checkStep(t, st, rev, before, after, s.changed, s.gone) })
	}

	// A file that stops parsing keeps its resources and reports the problem...
	before, rev := revisions(st), st.Revision()
	replaceFile(t, a, gns("a1", "10.1.0.0/16")+"---\nkind: [\n")
	want := []string{a + ":9: invalid YAML: did not find expected node content (keeping the file's previous resources until it parses)"}
	if diff := cmp.Diff(want, log.await(t)); diff != "" {
		t.Errorf("problems for a broken file (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, revisions(st)); diff != "" {
		t.Errorf("a broken file changed the store (-before +after):\n%s", diff)
	}

	// ...and once it parses, an invalid resource is reported and keeps its last valid
	// version (last-known-good: a bad edit never removes it); the rest stays.
	replaceFile(t, a, gns("a1", "10.1.0.0/16")+"---\n"+gns("a2", "10.2.0.0/99"))
	want = []string{a + `:8: GlobalNetworkSet a2: spec.nets[0]: invalid CIDR "10.2.0.0/99"; expected an address or address/prefix-length`}
	if diff := cmp.Diff(want, log.await(t)); diff != "" {
		t.Errorf("problems for an invalid resource (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, revisions(st)); diff != "" {
		t.Errorf("an invalid version changed the store (-before +after):\n%s", diff)
	}
	if st.Revision() != rev {
		t.Errorf("store revision %d after an invalid version, want %d (no write)", st.Revision(), rev)
	}

	// Deleting the invalid resource from the file deletes it.
	replaceFile(t, a, gns("a1", "10.1.0.0/16")+"---\n"+gns("b2", "10.6.0.0/16")+"---\n"+gns("a2", "10.2.0.0/99"))
	_ = log.await(t)
	before, rev = revisions(st), st.Revision()
	replaceFile(t, a, gns("a1", "10.1.0.0/16")+"---\n"+gns("b2", "10.6.0.0/16"))
	after := waitFor(t, st, "a2 removed", func(r map[string]uint64) bool { _, ok := r["GlobalNetworkSet a2"]; return !ok })
	checkStep(t, st, rev, before, after, nil, []string{"GlobalNetworkSet a2"})

	// Fixing it clears the problems.
	replaceFile(t, a, gns("a1", "10.1.0.0/16"))
	if got := log.await(t); len(got) != 0 {
		t.Errorf("problems after the fix: %v", got)
	}
}

func TestWatchSingleFile(t *testing.T) {
	dir := writeTree(t, map[string]string{"one.yaml": gns("x", "10.0.0.0/8"), "other.yaml": gns("y", "10.0.0.0/8")})
	path := filepath.Join(dir, "one.yaml")
	st := store.New()
	src := New(path)
	src.debounce = 30 * time.Millisecond
	if _, err := src.Load(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = src.Watch(ctx, st, nil) }()
	before, rev := revisions(st), st.Revision()
	if diff := cmp.Diff(map[string]uint64{"GlobalNetworkSet x": 1}, before); diff != "" {
		t.Fatalf("after Load (-want +got):\n%s", diff)
	}
	replaceFile(t, filepath.Join(dir, "other.yaml"), gns("z", "10.0.0.0/8")) // not watched
	replaceFile(t, path, gns("x", "192.0.2.0/24"))
	after := waitFor(t, st, "x changed", func(r map[string]uint64) bool { return r["GlobalNetworkSet x"] != 1 })
	checkStep(t, st, rev, before, after, []string{"GlobalNetworkSet x"}, nil)
}

func TestOpen(t *testing.T) {
	for _, spec := range []string{"file:../../examples/cluster", "../../examples/cluster"} {
		src, err := datastore.Open(spec)
		if err != nil {
			t.Fatalf("Open(%q): %v", spec, err)
		}
		if src.Name() != SourceName {
			t.Errorf("Open(%q).Name() = %q", spec, src.Name())
		}
	}
	if _, err := datastore.Open("file:"); err == nil {
		t.Error(`Open("file:") succeeded; want an error asking for a path`)
	}
}

func TestWatchRootRemoved(t *testing.T) {
	dir := writeTree(t, map[string]string{"tree/a.yaml": gns("a", "10.0.0.0/8")})
	root := filepath.Join(dir, "tree")
	st := store.New()
	src := New(root)
	src.debounce = 30 * time.Millisecond
	if _, err := src.Load(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- src.Watch(context.Background(), st, nil) }()
	// The root vanishes at once (a rename; RemoveAll would delete the file first, which is a
	// legitimate file deletion a rescan may see before the directory goes).
	if err := os.Rename(root, root+".gone"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Watch returned nil after its root was removed; want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its root was removed")
	}
	if diff := cmp.Diff(map[string]uint64{"GlobalNetworkSet a": 1}, revisions(st)); diff != "" {
		t.Errorf("store after the root vanished (-want +got):\n%s", diff)
	}
}
