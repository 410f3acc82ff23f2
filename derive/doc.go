// Package derive computes, purely, a node's complete desired dataplane state from an immutable
// store view: active policies and profiles in the rule IR, the IP sets they reference, local
// endpoints with their ordered tier programs, routes, services (frontends and their backends,
// as kube-proxy chooses them) and effective configuration (Felix's semantics).
package derive
