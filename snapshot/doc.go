// Package snapshot is the target-neutral desired dataplane state of one node: IP sets,
// policies and profiles in a rule IR that references IP sets only, local endpoints with their
// ordered tiers, routes, VTEPs, pools and the effective configuration. derive produces it;
// every applier renders it. It has canonical YAML/JSON encodings and per-object content hashes.
package snapshot
