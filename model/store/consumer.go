package store

// Consumer is a reader of the change feed. Tombstones are kept until every registered
// consumer has acknowledged a revision at or past them.
type Consumer struct {
	s     *Store
	name  string
	acked uint64
}

// RegisterConsumer adds a change-feed consumer that starts at the current revision (it is
// expected to read a full View first).
func (s *Store) RegisterConsumer(name string) *Consumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &Consumer{s: s, name: name, acked: s.revision}
	s.consumers[c] = struct{}{}
	return c
}

// Ack records that the consumer has processed every change up to rev, and drops tombstones
// that no consumer needs any more.
func (c *Consumer) Ack(rev uint64) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if rev > c.acked {
		c.acked = rev
	}
	c.s.collectLocked()
}

// Acked returns the last acknowledged revision.
func (c *Consumer) Acked() uint64 {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.acked
}

// Close unregisters the consumer.
func (c *Consumer) Close() {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	delete(c.s.consumers, c)
	c.s.collectLocked()
}

// collectLocked deletes tombstones at or below the lowest acknowledged revision. With no
// consumers every tombstone goes.
func (s *Store) collectLocked() {
	low := s.revision
	for c := range s.consumers {
		if c.acked < low {
			low = c.acked
		}
	}
	txn := s.db.Txn(true)
	defer txn.Abort()
	it, err := txn.Get(tableGraveyard, indexRevision)
	if err != nil {
		return
	}
	var dead []any
	for o := it.Next(); o != nil; o = it.Next() {
		if o.(*tombstone).Meta.Revision > low {
			break
		}
		dead = append(dead, o)
	}
	if len(dead) == 0 {
		return
	}
	for _, o := range dead {
		_ = txn.Delete(tableGraveyard, o)
	}
	txn.Commit()
}

// Tombstones returns how many deletions the change feed still holds (for metrics and tests).
func (s *Store) Tombstones() int {
	txn := s.db.Txn(false)
	it, err := txn.Get(tableGraveyard, indexRevision)
	if err != nil {
		return 0
	}
	n := 0
	for o := it.Next(); o != nil; o = it.Next() {
		n++
	}
	return n
}
