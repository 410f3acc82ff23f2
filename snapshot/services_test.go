package snapshot

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestBackendsFor(t *testing.T) {
	a := netip.MustParseAddr
	local := Backend{Addr: a("10.0.1.1"), Protocol: 6, Port: 8080, PortName: "http", Node: "n1", Ready: true, Serving: true}
	remote := Backend{Addr: a("10.0.2.1"), Protocol: 6, Port: 8080, PortName: "http", Node: "n2", Ready: true, Serving: true}
	termLocal := Backend{Addr: a("10.0.1.2"), Protocol: 6, Port: 8080, PortName: "http", Node: "n1", Serving: true}
	otherPort := Backend{Addr: a("10.0.2.2"), Protocol: 6, Port: 9090, PortName: "admin", Node: "n2", Ready: true, Serving: true}
	udp := Backend{Addr: a("10.0.2.3"), Protocol: 17, Port: 8080, PortName: "http", Node: "n2", Ready: true, Serving: true}
	v6 := Backend{Addr: a("fd00::1"), Protocol: 6, Port: 8080, PortName: "http", Node: "n1", Ready: true, Serving: true}
	fe := Frontend{Addr: a("10.96.0.1"), Protocol: 6, Port: 80, PortName: "http", Kind: "ClusterIP"}
	feLocal := fe
	feLocal.LocalOnly = true
	fe6 := fe
	fe6.Addr = a("fd00:96::1")
	tests := []struct {
		name     string
		backends []Backend
		fe       Frontend
		want     []Backend
	}{
		{"ready only, by name, protocol and family", []Backend{local, remote, termLocal, otherPort, udp, v6}, fe, []Backend{local, remote}},
		{"no ready: serving terminating", []Backend{termLocal, otherPort}, fe, []Backend{termLocal}},
		{"local only", []Backend{local, remote}, feLocal, []Backend{local}},
		{"local only, no local ready: local terminating", []Backend{remote, termLocal}, feLocal, []Backend{termLocal}},
		{"local only, none local", []Backend{remote}, feLocal, nil},
		{"ipv6 frontend", []Backend{local, v6}, fe6, []Backend{v6}},
	}
	for _, tc := range tests {
		s := Service{ID: "ns/s", Backends: tc.backends}
		if d := cmp.Diff(tc.want, s.BackendsFor(tc.fe, "n1"), cmpopts.EquateComparable(netip.Addr{})); d != "" {
			t.Errorf("%s: (-want +got)\n%s", tc.name, d)
		}
	}
}
