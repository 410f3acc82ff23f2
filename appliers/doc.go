// Package appliers defines the contract every dataplane applier offers the agent: program a
// desired snapshot with the minimal kernel operations (diffing against what was last
// committed, or against a fresh read of the kernel on a full sync), and verify the kernel.
package appliers
