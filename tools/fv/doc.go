//go:build linux

// Package fv is felis's real-packet functional-verification suite (its specs live in the test
// files): throwaway node and pod network namespaces, `felis agent` programming the node from a
// file datastore, and real TCP, UDP and ICMP that must agree with `felis reach`. Needs root.
package fv
