package snapshot

// BackendsFor returns the backends a frontend balances over on node, as kube-proxy chooses
// them: the service's backends of the frontend's port name, protocol and address family
// (only those on node when the frontend is LocalOnly); the ready ones, or when none is
// ready, the serving (terminating) ones. The result keeps the service's backend order.
func (s *Service) BackendsFor(f Frontend, node string) []Backend {
	var ready, serving []Backend
	for _, b := range s.Backends {
		if b.PortName != f.PortName || b.Protocol != f.Protocol || b.Addr.Is4() != f.Addr.Is4() {
			continue
		}
		if f.LocalOnly && b.Node != node {
			continue
		}
		switch {
		case b.Ready:
			ready = append(ready, b)
		case b.Serving:
			serving = append(serving, b)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return serving
}
