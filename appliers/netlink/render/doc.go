// Package render turns a snapshot.Snapshot into the routes, VXLAN devices, neighbour and FDB
// entries and workload-interface sysctls felis wants in the kernel, as plain data whose String()
// is ip/bridge/sysctl syntax, and plans the minimal ordered ops from observed to desired. Pure.
package render
