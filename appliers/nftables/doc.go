// Package nftables programs felis's policy and services into the kernel's nftables: two
// private inet tables rendered from the snapshot (see render), diffed into ops at the level of
// set elements and whole chains (Plan), applied as one atomic netlink batch (Kernel) or to an
// in-memory Fake.
package nftables
