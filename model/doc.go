// Package model holds felis's internal resource types: immutable values decoded from the
// Calico v3 and Kubernetes APIs, with netip addresses and pre-parsed selectors, ready for
// the store and for derivation. Conversion from API objects lives in model/convert.
package model
