package file

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/convert"
)

// SourceName is the model.Source.Name stamped on every object this datastore loads.
const SourceName = "file"

// entry is one model object decoded from a document, with the hash of that document.
type entry struct {
	Object   model.Object
	Resource string // the input resource, e.g. "Pod frontend/web-1"
	Hash     [sha256.Size]byte
}

// fileState is everything one file contributes.
type fileState struct {
	Path     string
	Content  [sha256.Size]byte // hash of the raw bytes, to skip re-decoding unchanged files
	Entries  []entry
	Problems datastore.Problems
	Skipped  map[string]int // "apiVersion Kind" -> count of documents of kinds felis does not use
	Broken   bool           // at least one document could not be parsed as YAML
}

// LoadPath reads a YAML/JSON file or a directory tree and decodes every resource in it. It
// returns the valid objects (each stamped with its file and line), one Problem per invalid
// resource sorted by file and line, and notices about kinds felis skipped. err is set only
// when path itself cannot be read.
func LoadPath(path string) (objs []model.Object, problems datastore.Problems, notices []string, err error) {
	files, err := listFiles(path)
	if err != nil {
		return nil, nil, nil, err
	}
	states := make([]*fileState, 0, len(files))
	for _, f := range files {
		st, err := readFile(f)
		if err != nil {
			problems = append(problems, datastore.Problem{Where: f, Reason: err.Error()})
			continue
		}
		states = append(states, st)
	}
	entries, p, notices := assemble(states)
	for _, e := range entries {
		objs = append(objs, e.Object)
	}
	problems = append(problems, p...)
	sortProblems(problems)
	return objs, problems, notices, nil
}

// listFiles returns the resource files at path in sorted order: path itself if it is a file,
// else every *.yaml, *.yml and *.json below it. Hidden entries (names starting with ".") are
// skipped, which also skips the "..data" directories of a mounted ConfigMap.
func listFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("datastore file:%s: %w", path, err)
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var out []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == path {
				return err
			}
			return nil // a file removed while walking, or unreadable: the watcher reports it later
		}
		if p != path && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if isResourceFile(p) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("datastore file:%s: %w", path, err)
	}
	slices.Sort(out)
	return out, nil
}

func isResourceFile(p string) bool {
	base := filepath.Base(p)
	if strings.HasPrefix(base, ".") {
		return false
	}
	switch strings.ToLower(filepath.Ext(base)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// readFile reads and decodes one file.
func readFile(path string) (*fileState, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeFile(path, data), nil
}

// decodeFile parses data (the contents of path) and converts every document.
func decodeFile(path string, data []byte) *fileState {
	st := &fileState{Path: path, Content: sha256.Sum256(data), Skipped: map[string]int{}}
	docs, errs := parseFile(data)
	for _, e := range errs {
		st.Broken = true
		st.Problems = append(st.Problems, datastore.Problem{Where: where(path, e.Line), Field: e.Field, Reason: e.Reason})
	}
	for _, d := range docs {
		r := decode(d)
		if r.Skipped {
			st.Skipped[d.APIVersion+" "+d.Kind]++
			continue
		}
		if len(r.Errors) > 0 {
			for _, fe := range r.Errors {
				st.Problems = append(st.Problems, datastore.Problem{Where: where(path, d.Line), Resource: r.Resource, Field: fe.Field, Reason: fe.Reason})
			}
			continue
		}
		for _, o := range r.Objects {
			if o == nil || o.GetMeta() == nil {
				continue
			}
			o.GetMeta().Source = model.Source{Name: SourceName, File: path, Line: d.Line}
			st.Entries = append(st.Entries, entry{Object: o, Resource: r.Resource, Hash: d.Hash})
		}
	}
	return st
}

// decode converts one document, turning a panic in a converter into a Problem: invalid input
// must never crash the agent.
func decode(d document) (r convert.Result) {
	defer func() {
		if p := recover(); p != nil {
			r = convert.Result{Errors: []convert.FieldError{{Reason: fmt.Sprintf("internal error decoding %s %s: %v", d.APIVersion, d.Kind, p)}}}
		}
	}()
	return convert.Decode(d.APIVersion, d.Kind, d.JSON)
}

func where(path string, line int) string {
	if line <= 0 {
		return path
	}
	return path + ":" + strconv.Itoa(line)
}

// assemble merges the files' entries in file order. A key defined twice is a Problem at the
// second place naming the first; the first definition wins.
func assemble(files []*fileState) (entries []entry, problems datastore.Problems, notices []string) {
	first := map[model.Key]model.Source{}
	skipped := map[string]int{}
	for _, f := range files {
		problems = append(problems, f.Problems...)
		for k, n := range f.Skipped {
			skipped[k] += n
		}
		for _, e := range f.Entries {
			m := e.Object.GetMeta()
			if prev, dup := first[m.Key]; dup {
				problems = append(problems, datastore.Problem{
					Where:    m.Source.String(),
					Resource: e.Resource,
					Reason:   fmt.Sprintf("duplicate: %s is already defined at %s; this definition is ignored", m.Key, prev),
				})
				continue
			}
			first[m.Key] = m.Source
			entries = append(entries, e)
		}
	}
	kinds := make([]string, 0, len(skipped))
	for k := range skipped {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		notices = append(notices, fmt.Sprintf("skipped %d %s (a kind felis does not use)", skipped[k], k))
	}
	sortProblems(problems)
	return entries, problems, notices
}

// sortProblems orders problems by file, then line (numerically), then text.
func sortProblems(ps datastore.Problems) {
	slices.SortStableFunc(ps, func(a, b datastore.Problem) int {
		af, al := splitWhere(a.Where)
		bf, bl := splitWhere(b.Where)
		return cmp.Or(cmp.Compare(af, bf), cmp.Compare(al, bl), cmp.Compare(a.String(), b.String()))
	})
}

func splitWhere(w string) (string, int) {
	i := strings.LastIndexByte(w, ':')
	if i < 0 {
		return w, 0
	}
	n, err := strconv.Atoi(w[i+1:])
	if err != nil {
		return w, 0
	}
	return w[:i], n
}
