package store

import "errors"

// Sentinel errors returned by the store; callers match them with errors.Is.
var (
	// ErrUnknownKind is returned when an object's kind has no table.
	ErrUnknownKind = errors.New("unknown kind")
	// ErrInvalidObject is returned for an object with an empty name or a nil value.
	ErrInvalidObject = errors.New("invalid object")
	// ErrUnknownSource is returned when marking a source that was never registered.
	ErrUnknownSource = errors.New("unknown source")
	// ErrStale is returned for an upsert of an object older than the one stored under its
	// key (an outdated read written back).
	ErrStale = errors.New("stale object")
)
