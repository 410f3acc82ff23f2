// Package nftables programs felis's policy into the kernel's nftables: a private inet table
// rendered from the snapshot (see render), diffed into ops at the level of set elements and
// whole chains (Plan), applied as one atomic netlink batch (Kernel) or to an in-memory Fake.
package nftables
