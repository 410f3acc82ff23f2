// Package diff computes ordered, minimal operations that turn observed objects into desired
// ones: a generic keyed diff (Plan) with dependency ranks, and a sorted-list member diff
// (Members) for set-like objects. It is pure: values in, values out.
package diff
