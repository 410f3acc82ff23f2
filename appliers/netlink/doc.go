// Package netlink programs felis's routes, VXLAN devices, neighbour and FDB entries and
// workload-interface sysctls: Observe reads what felis owns, render.Plan diffs, Apply executes
// through a Kernel (the real one over netlink, or the in-memory Fake with the same semantics).
package netlink
