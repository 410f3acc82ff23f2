// Package bpf is the eBPF policy dataplane: it renders a snapshot into the contents of the
// TC policy program's maps (IP-set LPM trie, per-endpoint instruction streams, endpoints),
// syncs them minimally into pinned maps and attaches the program to workload interfaces.
package bpf
