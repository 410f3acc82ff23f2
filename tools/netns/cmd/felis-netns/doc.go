//go:build linux

// Command felis-netns builds a small topology of network namespaces (nodes, pods wired the way
// a Calico-style CNI wires them, an underlay when there are several nodes) and tears it down,
// so felis can be tried by hand: `felis-netns up`, then `ip netns exec PREFIX-node1 felis agent ...`.
package main
