package store

import (
	"fmt"

	"github.com/felis-dev/felis/model"
)

// Hand-written memdb indexers: no reflection on the write or read path.

const (
	indexID       = "id"
	indexRevision = "revision"
	indexNode     = "node"
	indexKey      = "key"
)

// idIndexer indexes an object by Key.ID() ("namespace/name" or "name").
type idIndexer struct{}

func (idIndexer) FromObject(raw any) (bool, []byte, error) {
	o, ok := raw.(model.Object)
	if !ok {
		return false, nil, fmt.Errorf("%w: %T is not a model.Object", ErrInvalidObject, raw)
	}
	return true, append([]byte(o.GetMeta().Key.ID()), 0), nil
}

func (idIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }

func (idIndexer) PrefixFromArgs(args ...any) ([]byte, error) {
	b, err := stringArg(args)
	if err != nil {
		return nil, err
	}
	return b[:len(b)-1], nil
}

// revisionIndexer indexes by the revision (see appendRevision), so LowerBound walks changes
// in order.
// The object's ID is appended to keep the index unique within a batch.
type revisionIndexer struct{}

func (revisionIndexer) FromObject(raw any) (bool, []byte, error) {
	var m *model.Meta
	switch o := raw.(type) {
	case model.Object:
		m = o.GetMeta()
	case *tombstone:
		m = &o.Meta
	default:
		return false, nil, fmt.Errorf("%w: %T", ErrInvalidObject, raw)
	}
	b := make([]byte, 0, revisionLen+len(m.Key.Kind)+len(m.Key.Namespace)+len(m.Key.Name)+3)
	b = appendRevision(b, m.Revision)
	b = append(b, m.Key.Kind...)
	b = append(b, 0)
	b = append(b, m.Key.Namespace...)
	if m.Key.Namespace != "" {
		b = append(b, '/')
	}
	b = append(b, m.Key.Name...)
	return true, append(b, 0), nil
}

func (revisionIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("revision index takes one argument, got %d", len(args))
	}
	rev, ok := args[0].(uint64)
	if !ok {
		return nil, fmt.Errorf("revision index argument must be uint64, got %T", args[0])
	}
	return appendRevision(make([]byte, 0, revisionLen), rev), nil
}

// revisionLen is the length of an encoded revision.
const revisionLen = 16

// appendRevision encodes rev big-endian, one nibble per byte. Byte order is revision order,
// as LowerBound needs, and no radix node has more than 16 children: with one byte per 8 bits
// the nodes for the low bytes of consecutive revisions hold 256 edges, and every write
// copies them (several kilobytes per index per write).
func appendRevision(b []byte, rev uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, byte(rev>>shift)&0xf)
	}
	return b
}

// tombstoneKeyIndexer indexes tombstones by their object's kind and ID, so a key's
// tombstones can be found and dropped when it is deleted again or re-created.
type tombstoneKeyIndexer struct{}

func (tombstoneKeyIndexer) FromObject(raw any) (bool, []byte, error) {
	ts, ok := raw.(*tombstone)
	if !ok {
		return false, nil, fmt.Errorf("%w: %T is not a tombstone", ErrInvalidObject, raw)
	}
	return true, keyBytes(ts.Meta.Key), nil
}

func (tombstoneKeyIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("key index takes one argument, got %d", len(args))
	}
	k, ok := args[0].(model.Key)
	if !ok {
		return nil, fmt.Errorf("key index argument must be a model.Key, got %T", args[0])
	}
	return keyBytes(k), nil
}

func keyBytes(k model.Key) []byte {
	b := make([]byte, 0, len(k.Kind)+len(k.Namespace)+len(k.Name)+3)
	b = append(b, k.Kind...)
	b = append(b, 0)
	b = append(b, k.ID()...)
	return append(b, 0)
}

// nodeIndexer indexes objects that belong to a node (workload and host endpoints, blocks).
type nodeIndexer struct{}

func (nodeIndexer) FromObject(raw any) (bool, []byte, error) {
	node := NodeOf(raw.(model.Object))
	return true, append([]byte(node), 0), nil
}

func (nodeIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }

func stringArg(args []any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("index takes one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("index argument must be a string, got %T", args[0])
	}
	return append([]byte(s), 0), nil
}

// NodeOf returns the node an object is bound to, or "" for cluster-wide objects.
func NodeOf(o model.Object) string {
	switch v := o.(type) {
	case *model.WorkloadEndpoint:
		return v.Node
	case *model.HostEndpoint:
		return v.Node
	case *model.IPAMBlock:
		return v.AffinityNode
	case *model.BlockAffinity:
		return v.Node
	}
	return ""
}
