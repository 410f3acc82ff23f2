//go:build linux

// Package netns builds throwaway network namespaces for real-packet tests: "nodes" with an
// uplink and forwarding on, an "underlay" bridge joining nodes, and "pods" wired to a node the
// way a Calico-style CNI plugin wires them; it runs code and binaries inside them, sends real
// TCP, UDP and ICMP between them, and removes everything it created (see Harness and Sweep).
package netns
