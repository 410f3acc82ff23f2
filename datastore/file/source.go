package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

func init() {
	datastore.Register("file", func(arg string) (datastore.Source, error) {
		if arg == "" {
			return nil, errors.New("--datastore file:PATH needs a path")
		}
		return New(arg), nil
	})
}

// DefaultDebounce is how long Watch waits after the last file event before reloading, so an
// editor's save (truncate, write, rename) or a `cp -r` is applied as one change.
const DefaultDebounce = 100 * time.Millisecond

// Source is the file datastore rooted at one file or directory.
type Source struct {
	root     string
	debounce time.Duration

	mu       sync.Mutex
	files    map[string]*fileState           // path -> what the file contributes
	current  map[model.Key][sha256.Size]byte // document hash of each object in the store
	problems datastore.Problems              // last problems reported
	notices  []string
	// lastValid holds, per input resource ("Kind ns/name"), the entries of its last valid
	// version: a resource whose new version is invalid keeps them (last-known-good), so a
	// bad edit never removes a policy from the dataplane.
	lastValid map[string][]entry
}

// New returns a file datastore for path (a file or a directory read recursively).
func New(path string) *Source {
	return &Source{root: filepath.Clean(path), debounce: DefaultDebounce}
}

// Name implements datastore.Source.
func (s *Source) Name() string { return SourceName }

// Notices returns the notices of the last load (kinds skipped).
func (s *Source) Notices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.notices)
}

// Load implements datastore.Source: it reads every file, replaces the objects this source owns
// in st with the valid ones and marks the source in sync. Invalid resources are returned as
// Problems and left out. It fails only when the root cannot be read or the store rejects a write.
func (s *Source) Load(ctx context.Context, st *store.Store) (datastore.Problems, error) {
	files, err := listFiles(s.root)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files = map[string]*fileState{}
	var readProblems datastore.Problems
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fs, err := readFile(f)
		if err != nil {
			readProblems = append(readProblems, datastore.Problem{Where: f, Reason: err.Error()})
			continue
		}
		s.files[f] = fs
	}
	st.RegisterSource(SourceName)
	problems, err := s.applyLocked(st)
	if err != nil {
		return nil, err
	}
	problems = append(problems, readProblems...)
	sortProblems(problems)
	s.problems = problems
	if err := st.MarkInSync(SourceName); err != nil {
		return nil, err
	}
	return problems, nil
}

// applyLocked assembles every file's entries and writes the difference to the store.
func (s *Source) applyLocked(st *store.Store) (datastore.Problems, error) {
	paths := make([]string, 0, len(s.files))
	for p := range s.files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	states := make([]*fileState, 0, len(paths))
	for _, p := range paths {
		states = append(states, s.files[p])
	}
	entries, problems, notices := assemble(states)
	entries = s.keepLastValid(entries, problems)
	next := make(map[model.Key][sha256.Size]byte, len(entries))
	objs := make([]model.Object, 0, len(entries))
	for _, e := range entries {
		next[e.Object.GetMeta().Key] = e.Hash
		objs = append(objs, store.Unstamped(e.Object))
	}
	// An object is unchanged when it comes from the same canonical document at the same place:
	// it keeps its revision and nothing downstream recomputes.
	equal := func(old, cur model.Object) bool {
		om, cm := old.GetMeta(), cur.GetMeta()
		prev, ok := s.current[om.Key]
		return ok && om.Source == cm.Source && prev == next[cm.Key]
	}
	if _, err := st.Replace(SourceName, objs, equal); err != nil {
		return nil, fmt.Errorf("datastore file:%s: %w", s.root, err)
	}
	s.current = next
	s.notices = notices
	s.lastValid = map[string][]entry{}
	for _, e := range entries {
		s.lastValid[e.Resource] = append(s.lastValid[e.Resource], e)
	}
	return problems, nil
}

// keepLastValid adds back the last valid entries of every resource that now has a problem
// and no valid entries (an edit made it invalid); a resource that is gone from the files has
// no problem and is deleted as usual.
func (s *Source) keepLastValid(entries []entry, problems datastore.Problems) []entry {
	if len(s.lastValid) == 0 {
		return entries
	}
	present := make(map[string]bool, len(entries))
	keys := make(map[model.Key]bool, len(entries))
	for _, e := range entries {
		present[e.Resource] = true
		keys[e.Object.GetMeta().Key] = true
	}
	for _, p := range problems {
		if p.Resource == "" || present[p.Resource] {
			continue
		}
		present[p.Resource] = true
		for _, e := range s.lastValid[p.Resource] {
			if k := e.Object.GetMeta().Key; !keys[k] {
				keys[k] = true
				entries = append(entries, e)
			}
		}
	}
	return entries
}

// Watch implements datastore.Source: it follows the tree with fsnotify until ctx ends,
// re-reads only the files that changed (after a quiet period of DefaultDebounce), and writes
// only the objects that differ. report receives the complete list of problems whenever it
// changes. A file that stops parsing as YAML keeps its previous objects until it is fixed, so
// a half-written file never removes resources. It returns nil when ctx ends, and an error
// (leaving the store as it was) when the root disappears or cannot be watched. Call Load first.
func (s *Source) Watch(ctx context.Context, st *store.Store, report func(datastore.Problems)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("datastore file:%s: watch: %w", s.root, err)
	}
	defer w.Close()
	info, err := os.Stat(s.root)
	if err != nil {
		return fmt.Errorf("datastore file:%s: %w", s.root, err)
	}
	rootIsDir := info.IsDir()
	if rootIsDir {
		if err := addTree(w, s.root); err != nil {
			return fmt.Errorf("datastore file:%s: watch: %w", s.root, err)
		}
	} else if err := w.Add(filepath.Dir(s.root)); err != nil {
		// Watch the directory, not the file: editors replace files by renaming over them.
		return fmt.Errorf("datastore file:%s: watch: %w", s.root, err)
	}

	// One rescan right away catches what changed between Load and the watches being set up;
	// files whose bytes did not change are not decoded again.
	pending := map[string]bool{}
	var watchProblems datastore.Problems // directories that could not be watched
	rescan := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Clean(ev.Name)
			if !rootIsDir {
				if name != s.root && !strings.HasPrefix(filepath.Base(name), "..") {
					continue
				}
			}
			if strings.HasPrefix(filepath.Base(name), "..") {
				// A mounted ConfigMap swaps its "..data" symlink: every file may have changed.
				rescan = true
			} else if ev.Has(fsnotify.Create) && rootIsDir {
				if fi, err := os.Lstat(name); err == nil && fi.IsDir() && !hidden(s.root, name) {
					// Files may have been created before the new directory was watched.
					if err := addTree(w, name); err != nil {
						watchProblems = append(watchProblems, datastore.Problem{Where: name, Reason: "cannot watch for changes: " + err.Error()})
					}
					for _, f := range walkFiles(name) {
						pending[f] = true
					}
				}
			}
			pending[name] = true
			timer.Reset(s.debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				rescan = true
				timer.Reset(s.debounce)
				continue
			}
			return fmt.Errorf("datastore file:%s: watch: %w", s.root, err)
		case <-timer.C:
			problems, changed, err := s.reload(st, pending, rescan, watchProblems)
			pending, rescan = map[string]bool{}, false
			if err != nil {
				return err
			}
			if changed && report != nil {
				report(problems)
			}
		}
	}
}

// reload re-reads the pending paths (or everything, on rescan) and applies the difference.
// changed says whether the problem list differs from the last one. When the root itself is
// gone (an unmounted volume, a deleted checkout) it changes nothing and returns an error:
// an accident there must not delete every resource.
func (s *Source) reload(st *store.Store, pending map[string]bool, rescan bool, extra datastore.Problems) (datastore.Problems, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.root); err != nil {
		return nil, false, fmt.Errorf("datastore file:%s: %w; keeping the resources loaded last", s.root, err)
	}
	if s.files == nil {
		s.files = map[string]*fileState{}
	}
	if rescan {
		for p := range s.files {
			pending[p] = true
		}
		files, _ := listFiles(s.root)
		for _, f := range files {
			pending[f] = true
		}
	}
	var readProblems datastore.Problems
	for p := range pending {
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			// Gone: drop the file, or every file below a removed directory.
			for f := range s.files {
				if f == p || strings.HasPrefix(f, p+string(filepath.Separator)) {
					delete(s.files, f)
				}
			}
		case hidden(s.root, p):
			// Hidden entries (editor swap files, a ConfigMap's ..data) are never read.
		case fi.IsDir():
			// A renamed-in directory: forget files no longer present, pick up new ones.
			for f := range s.files {
				if strings.HasPrefix(f, p+string(filepath.Separator)) {
					if _, err := os.Stat(f); err != nil {
						delete(s.files, f)
					}
				}
			}
			for _, f := range walkFiles(p) {
				s.readLocked(f, &readProblems)
			}
		case p == s.root || isResourceFile(p):
			s.readLocked(p, &readProblems)
		}
	}
	problems, err := s.applyLocked(st)
	if err != nil {
		return nil, false, err
	}
	problems = append(problems, readProblems...)
	problems = append(problems, extra...)
	sortProblems(problems)
	changed := !slices.Equal(problems, s.problems)
	s.problems = problems
	return problems, changed, nil
}

// readLocked re-reads one file. Unchanged bytes are not decoded again; a file that no longer
// parses keeps its previous objects (with the new problems) until it is fixed.
func (s *Source) readLocked(path string, problems *datastore.Problems) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			delete(s.files, path)
			return
		}
		*problems = append(*problems, datastore.Problem{Where: path, Reason: err.Error()})
		return
	}
	old := s.files[path]
	if old != nil && old.Content == sha256.Sum256(data) {
		return
	}
	st := decodeFile(path, data)
	if st.Broken && old != nil {
		st.Entries = old.Entries
		for i := range st.Problems {
			st.Problems[i].Reason += " (keeping the file's previous resources until it parses)"
		}
	}
	s.files[path] = st
}

// addTree watches dir and every non-hidden directory below it. It returns the first error
// other than a directory vanishing meanwhile (which produces its own Remove event), such as
// running out of inotify watches.
func addTree(w *fsnotify.Watcher, dir string) error {
	var first error
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if err := w.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	return first
}

// walkFiles lists the resource files below dir (none if it cannot be read).
func walkFiles(dir string) []string {
	files, err := listFiles(dir)
	if err != nil {
		return nil
	}
	return files
}

// hidden reports whether p, below root, has a path element starting with ".".
func hidden(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == "." {
		return false
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}
