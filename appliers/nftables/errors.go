package nftables

import "errors"

// Errors the fake returns, mirroring the kernel's errnos; Kernel wraps the kernel's own.
var (
	// ErrNotFound: an op names (or a rule references) a table, set, map, chain or element
	// that does not exist (the kernel's ENOENT).
	ErrNotFound = errors.New("no such object")
	// ErrExists: an op creates a set, map or chain that already exists, or an interval that
	// overlaps one in the set (the kernel's EEXIST).
	ErrExists = errors.New("object exists")
	// ErrInUse: an op deletes a set, map or chain that a rule or map element still
	// references (the kernel's EBUSY).
	ErrInUse = errors.New("object in use")
	// ErrInvalid: an op is malformed (element of the wrong family, missing payload).
	ErrInvalid = errors.New("invalid op")
	// ErrNotSynced: Plan was called before the applier had read the kernel's state.
	ErrNotSynced = errors.New("applier has not observed the dataplane yet; call Resync")
)
