package store

import (
	"encoding/binary"
	"fmt"

	"github.com/felis-dev/felis/model"
)

// Hand-written memdb indexers: no reflection on the write or read path.

const (
	indexID       = "id"
	indexRevision = "revision"
	indexNode     = "node"
	indexSource   = "source"
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

// revisionIndexer indexes by the big-endian revision, so LowerBound walks changes in order.
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
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 9+len(m.Key.Name)), m.Revision)
	b = append(b, string(m.Key.Kind)+"\x00"+m.Key.ID()+"\x00"...)
	return true, b, nil
}

func (revisionIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("revision index takes one argument, got %d", len(args))
	}
	rev, ok := args[0].(uint64)
	if !ok {
		return nil, fmt.Errorf("revision index argument must be uint64, got %T", args[0])
	}
	return binary.BigEndian.AppendUint64(nil, rev), nil
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

// sourceIndexer indexes objects by the datastore source that wrote them.
type sourceIndexer struct{}

func (sourceIndexer) FromObject(raw any) (bool, []byte, error) {
	return true, append([]byte(raw.(model.Object).GetMeta().Source.Name), 0), nil
}

func (sourceIndexer) FromArgs(args ...any) ([]byte, error) { return stringArg(args) }

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
