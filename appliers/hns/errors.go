package hns

import "errors"

var (
	// ErrUnsupported is returned (wrapped) when a rule uses a match HNS cannot express exactly.
	ErrUnsupported = errors.New("match not expressible in HNS ACLs")
	// ErrPriorityLimit is returned (wrapped) when an endpoint needs more distinct priorities
	// than the HNS policy range holds.
	ErrPriorityLimit = errors.New("HNS rule priority range exceeded")
	// ErrMalformed is returned (wrapped) by Decode and the Fake for an ACL setting HNS rejects.
	ErrMalformed = errors.New("malformed HNS ACL rule")
	// ErrNotSynced is returned by Applier.Plan before the first successful Resync.
	ErrNotSynced = errors.New("hns applier has not observed HNS yet")
	// ErrNotFound is returned (wrapped) by a Client for an endpoint or network policy that does not exist.
	ErrNotFound = errors.New("not found in HNS")
	// ErrExists is returned (wrapped) by a Client when adding a network policy that already exists.
	ErrExists = errors.New("already exists in HNS")
)
