package store

import (
	"errors"
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
			indexKey:      {Name: indexKey, Indexer: tombstoneKeyIndexer{}},
		},
	}
	db, err := memdb.NewMemDB(schema)
	if err != nil {
		panic(fmt.Sprintf("store schema: %v", err)) // a programming error, caught by every test
	}
	return &Store{
		// The store never uses memdb's watch channels (Changed is its own notification), so
		// it writes to a non-primary handle of the database: memdb tracks and closes a
		// channel per mutated radix node only on the primary, which costs every write.
		db:        db.Snapshot(),
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

// InSync reports whether at least one source is registered and all are in sync. To act on
// a view, use View.InSync: the two calls here and View would race with a source's writes.
func (s *Store) InSync() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inSyncLocked()
}

func (s *Store) inSyncLocked() bool {
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

// Batch is one atomic write: objects to insert or replace, keys to delete. Deletes apply
// before upserts, so a batch that deletes and upserts the same key leaves the new object.
type Batch struct {
	Upserts []model.Object
	Deletes []model.Key
}

// Write applies a batch atomically under one new revision, which it returns. Every upserted
// object is stamped with that revision; the caller must not modify it afterwards, and must
// pass a new object (a copy) to change one. Writing the object already stored under its key
// is a no-op; writing an object older than the stored one fails with ErrStale; writing an
// object that was stored and then deleted is a caller error the store cannot detect (it
// would re-stamp an object old views still hold). Deleting a missing key is not an error. A
// batch that changes nothing returns the current revision and does not notify. It returns
// ErrUnknownKind, ErrInvalidObject or ErrStale, and then writes and stamps nothing.
func (s *Store) Write(b Batch) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeLocked(b)
}

// validate checks a whole batch before anything is stamped or written, so a rejected batch
// leaves its objects untouched.
func (b Batch) validate() error {
	for _, k := range b.Deletes {
		if !knownKind(k.Kind) {
			return fmt.Errorf("%w: delete %s", ErrUnknownKind, k)
		}
	}
	for i, o := range b.Upserts {
		if o == nil || o.GetMeta() == nil {
			return fmt.Errorf("%w: upsert %d is nil", ErrInvalidObject, i)
		}
		m := o.GetMeta()
		if m.Key.Name == "" {
			return fmt.Errorf("%w: upsert %d (%s): empty name", ErrInvalidObject, i, m.Key)
		}
		if !knownKind(m.Key.Kind) {
			return fmt.Errorf("%w: upsert %s", ErrUnknownKind, m.Key)
		}
	}
	return nil
}

func (s *Store) writeLocked(b Batch) (uint64, error) {
	if err := b.validate(); err != nil {
		return 0, err
	}
	// Lookups read the state before the batch (pre), never the write transaction: a read
	// from a memdb write transaction resets that index's writable-node cache (iradix
	// Txn.Clone), after which every write copies its whole path again.
	pre := s.db.Txn(false)
	unchanged, err := checkRewrites(pre, b)
	if err != nil {
		return 0, err
	}
	graveyard, err := pre.First(tableGraveyard, indexID)
	if err != nil {
		return 0, err
	}
	rev := s.revision + 1
	txn := s.db.Txn(true)
	defer txn.Abort()
	var buried map[model.Key]*tombstone // tombstones this batch wrote
	for _, k := range b.Deletes {
		if _, ok := unchanged[k]; ok {
			continue
		}
		ts, err := deleteObject(pre, txn, k, rev)
		if err != nil {
			return 0, fmt.Errorf("delete %s: %w", k, err)
		}
		if ts != nil {
			if buried == nil {
				buried = map[model.Key]*tombstone{}
			}
			buried[k] = ts
		}
	}
	changed := len(buried) > 0
	for _, o := range b.Upserts {
		m := o.GetMeta()
		if _, ok := unchanged[m.Key]; ok {
			continue
		}
		m.Revision = rev
		if err := txn.Insert(string(m.Key.Kind), o); err != nil {
			return 0, fmt.Errorf("insert %s: %w", m.Key, err)
		}
		// The key is live again: its tombstones (even one from this batch) say nothing a
		// consumer needs, since the live object supersedes them.
		if ts, ok := buried[m.Key]; ok {
			if err := txn.Delete(tableGraveyard, ts); err != nil && !errors.Is(err, memdb.ErrNotFound) {
				return 0, fmt.Errorf("drop tombstone of %s: %w", m.Key, err)
			}
		}
		if graveyard != nil {
			if err := dropTombstones(pre, txn, m.Key); err != nil {
				return 0, fmt.Errorf("drop tombstones of %s: %w", m.Key, err)
			}
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

// checkRewrites handles upserts of objects that were written before (Revision set). Writing
// the object currently stored under its key is a no-op (re-stamping it would change it under
// every open view); writing one older than the stored object is refused with ErrStale. A copy
// of the current object, changed and written back, is an ordinary upsert. It returns the keys
// to leave alone (nil in the common case of fresh objects).
func checkRewrites(pre *memdb.Txn, b Batch) (map[model.Key]struct{}, error) {
	var unchanged map[model.Key]struct{}
	for _, o := range b.Upserts {
		m := o.GetMeta()
		if m.Revision == 0 {
			continue
		}
		raw, err := pre.First(string(m.Key.Kind), indexID, m.Key.ID())
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", m.Key, err)
		}
		if raw == nil {
			continue
		}
		if cur := raw.(model.Object); cur == o {
			if unchanged == nil {
				unchanged = map[model.Key]struct{}{}
			}
			unchanged[m.Key] = struct{}{}
		} else if cur.GetMeta().Revision > m.Revision {
			return nil, fmt.Errorf("%w: %s was written at revision %d, the store holds revision %d",
				ErrStale, m.Key, m.Revision, cur.GetMeta().Revision)
		}
	}
	return unchanged, nil
}

// deleteObject deletes the object stored under k and writes its tombstone, which it
// returns; nil when there was nothing to delete (a missing key, or one this batch already
// deleted). pre is the state before the batch, txn the batch's write transaction.
func deleteObject(pre, txn *memdb.Txn, k model.Key, rev uint64) (*tombstone, error) {
	old, err := pre.First(string(k.Kind), indexID, k.ID())
	if err != nil || old == nil {
		return nil, err
	}
	if err := txn.Delete(string(k.Kind), old); err != nil {
		if errors.Is(err, memdb.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	// One tombstone per key is enough: any consumer that needed an older one has not
	// acknowledged this revision either.
	if err := dropTombstones(pre, txn, k); err != nil {
		return nil, err
	}
	ts := &tombstone{Meta: model.Meta{Key: k, Source: old.(model.Object).GetMeta().Source, Revision: rev}}
	if err := txn.Insert(tableGraveyard, ts); err != nil {
		return nil, err
	}
	return ts, nil
}

// dropTombstones deletes, in txn, every tombstone of key k that pre holds.
func dropTombstones(pre, txn *memdb.Txn, k model.Key) error {
	it, err := pre.Get(tableGraveyard, indexKey, k)
	if err != nil {
		return err
	}
	for ts := it.Next(); ts != nil; ts = it.Next() {
		if err := txn.Delete(tableGraveyard, ts); err != nil && !errors.Is(err, memdb.ErrNotFound) {
			return err
		}
	}
	return nil
}

// Replace makes the objects owned by source exactly objs: objects of that source that are
// not in objs are deleted, the others upserted (unchanged ones are left as they are when
// equal reports them equal; pass nil to always rewrite). One revision, atomically: the
// comparison and the write happen under the write lock, so a concurrent Write cannot slip
// in between. Every object must carry Source.Name == source (or Replace could never delete
// it later); otherwise, and for the reasons Write gives, it returns ErrInvalidObject.
func (s *Store) Replace(source string, objs []model.Object, equal func(a, b model.Object) bool) (uint64, error) {
	want := make(map[model.Key]model.Object, len(objs))
	for i, o := range objs {
		if o == nil || o.GetMeta() == nil {
			return 0, fmt.Errorf("%w: replace %q: object %d is nil", ErrInvalidObject, source, i)
		}
		m := o.GetMeta()
		if m.Source.Name != source {
			return 0, fmt.Errorf("%w: replace %q: %s has source %q", ErrInvalidObject, source, m.Key, m.Source.Name)
		}
		want[m.Key] = o
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	view := &View{txn: s.db.Txn(false), revision: s.revision}
	var b Batch
	owned := map[model.Key]model.Object{}
	for _, k := range model.Kinds {
		for o := range view.bySource(k, source) {
			key := o.GetMeta().Key
			owned[key] = o
			if _, ok := want[key]; !ok {
				b.Deletes = append(b.Deletes, key)
			}
		}
	}
	for _, o := range objs {
		// Only an equal object of the same source is left alone: an equal one written by
		// another source stays that source's, and its Replace would delete it.
		if old, ok := owned[o.GetMeta().Key]; ok && equal != nil && equal(old, o) {
			continue
		}
		b.Upserts = append(b.Upserts, o)
	}
	sort.Slice(b.Deletes, func(i, j int) bool { return b.Deletes[i].String() < b.Deletes[j].String() })
	return s.writeLocked(b)
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
	return &View{txn: s.db.Txn(false), revision: s.revision, inSync: s.inSyncLocked()}
}
