// Package store is felis's in-memory MVCC database (go-memdb): one table per kind, a global
// revision stamped on every write, a change feed that keeps tombstones until every consumer
// has passed them, per-source in-sync marks, and immutable read views for derivation.
package store
