package store

import (
	"fmt"
	"sort"
	"sync"

	"github.com/hashicorp/go-memdb"

	"github.com/felis-dev/felis/model"
)

const tableGraveyard = "graveyard"

// tombstone records a deletion in the change feed until every consumer has passed it.
type tombstone struct {
	Meta model.Meta
}

// Store is the MVCC database. Writes are serialised; reads take an immutable View and never
// block writers.
type Store struct {
	db *memdb.MemDB

	mu        sync.Mutex // serialises writes and guards the fields below
	revision  uint64
	notify    chan struct{}
	sources   map[string]bool // registered source -> in sync
	consumers map[*Consumer]struct{}
}

// New returns an empty store with a table per model.Kind.
func New() *Store {
	schema := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for _, k := range model.Kinds {
		t := &memdb.TableSchema{
			Name: string(k),
			Indexes: map[string]*memdb.IndexSchema{
				indexID:       {Name: indexID, Unique: true, Indexer: idIndexer{}},
				indexRevision: {Name: indexRevision, Unique: true, Indexer: revisionIndexer{}},
				indexSource:   {Name: indexSource, Indexer: sourceIndexer{}},
			},
		}
		switch k {
		case model.KindWorkloadEndpoint, model.KindHostEndpoint, model.KindIPAMBlock, model.KindBlockAffinity:
			t.Indexes[indexNode] = &memdb.IndexSchema{Name: indexNode, Indexer: nodeIndexer{}}
		}
		schema.Tables[t.Name] = t
	}
	schema.Tables[tableGraveyard] = &memdb.TableSchema{
		Name: tableGraveyard,
		Indexes: map[string]*memdb.IndexSchema{
			indexID:       {Name: indexID, Unique: true, Indexer: revisionIndexer{}},
			indexRevision: {Name: indexRevision, Unique: true, Indexer: revisionIndexer{}},
		},
	}
	db, err := memdb.NewMemDB(schema)
	if err != nil {
		panic(fmt.Sprintf("store schema: %v", err)) // a programming error, caught by every test
	}
	return &Store{
		db:        db,
		notify:    make(chan struct{}),
		sources:   map[string]bool{},
		consumers: map[*Consumer]struct{}{},
	}
}

// RegisterSource declares a datastore source. The store is in sync only once every
// registered source has called MarkInSync.
func (s *Store) RegisterSource(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sources[name]; !ok {
		s.sources[name] = false
	}
	s.broadcastLocked()
}

// MarkInSync records that a source has delivered its complete initial state.
// It returns ErrUnknownSource if the source was never registered.
func (s *Store) MarkInSync(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sources[name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSource, name)
	}
	s.sources[name] = true
	s.broadcastLocked()
	return nil
}

// MarkOutOfSync records that a source lost its connection and must resync.
func (s *Store) MarkOutOfSync(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sources[name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSource, name)
	}
	s.sources[name] = false
	s.broadcastLocked()
	return nil
}

// InSync reports whether at least one source is registered and all are in sync.
func (s *Store) InSync() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sources) == 0 {
		return false
	}
	for _, ok := range s.sources {
		if !ok {
			return false
		}
	}
	return true
}

// Changed returns a channel that is closed at the next write or in-sync change.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notify
}

func (s *Store) broadcastLocked() {
	close(s.notify)
	s.notify = make(chan struct{})
}

// Revision returns the revision of the last write.
func (s *Store) Revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revision
}

// Batch is one atomic write: objects to insert or replace, keys to delete.
type Batch struct {
	Upserts []model.Object
	Deletes []model.Key
}

// Write applies a batch atomically under one new revision, which it returns. Every upserted
// object is stamped with that revision; the caller must not modify it afterwards. Deleting a
// missing key is not an error. It returns ErrUnknownKind or ErrInvalidObject (and writes
// nothing) when an object cannot be stored.
func (s *Store) Write(b Batch) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := s.revision + 1
	txn := s.db.Txn(true)
	defer txn.Abort()
	changed := false
	for _, k := range b.Deletes {
		ok, err := s.deleteLocked(txn, k, rev)
		if err != nil {
			return 0, err
		}
		changed = changed || ok
	}
	for _, o := range b.Upserts {
		if o == nil || o.GetMeta().Key.Name == "" {
			return 0, fmt.Errorf("%w: nil object or empty name", ErrInvalidObject)
		}
		m := o.GetMeta()
		if !knownKind(m.Key.Kind) {
			return 0, fmt.Errorf("%w: %s", ErrUnknownKind, m.Key)
		}
		m.Revision = rev
		if err := txn.Insert(string(m.Key.Kind), o); err != nil {
			return 0, fmt.Errorf("insert %s: %w", m.Key, err)
		}
		changed = true
	}
	if !changed {
		return s.revision, nil
	}
	txn.Commit()
	s.revision = rev
	if len(s.consumers) == 0 {
		s.collectLocked()
	}
	s.broadcastLocked()
	return rev, nil
}

func (s *Store) deleteLocked(txn *memdb.Txn, k model.Key, rev uint64) (bool, error) {
	if !knownKind(k.Kind) {
		return false, fmt.Errorf("%w: %s", ErrUnknownKind, k)
	}
	old, err := txn.First(string(k.Kind), indexID, k.ID())
	if err != nil {
		return false, err
	}
	if old == nil {
		return false, nil
	}
	if err := txn.Delete(string(k.Kind), old); err != nil {
		return false, err
	}
	ts := &tombstone{Meta: model.Meta{Key: k, Source: old.(model.Object).GetMeta().Source, Revision: rev}}
	if err := txn.Insert(tableGraveyard, ts); err != nil {
		return false, err
	}
	return true, nil
}

// Replace makes the objects owned by source exactly objs: objects of that source that are
// not in objs are deleted, the others upserted (unchanged ones are left as they are when
// equal reports them equal; pass nil to always rewrite). One revision, atomically.
func (s *Store) Replace(source string, objs []model.Object, equal func(a, b model.Object) bool) (uint64, error) {
	view := s.View()
	want := make(map[model.Key]model.Object, len(objs))
	for _, o := range objs {
		want[o.GetMeta().Key] = o
	}
	var b Batch
	for _, k := range model.Kinds {
		for o := range view.bySource(k, source) {
			key := o.GetMeta().Key
			if _, ok := want[key]; !ok {
				b.Deletes = append(b.Deletes, key)
			}
		}
	}
	for _, o := range objs {
		if equal != nil {
			if old, ok := view.Get(o.GetMeta().Key); ok && equal(old, o) {
				continue
			}
		}
		b.Upserts = append(b.Upserts, o)
	}
	sort.Slice(b.Deletes, func(i, j int) bool { return b.Deletes[i].String() < b.Deletes[j].String() })
	return s.Write(b)
}

func knownKind(k model.Kind) bool {
	for _, kk := range model.Kinds {
		if kk == k {
			return true
		}
	}
	return false
}

// View returns an immutable snapshot of the whole store.
func (s *Store) View() *View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &View{txn: s.db.Txn(false), revision: s.revision}
}
