package hns

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

// TestReachVerdicts replays `felis reach` (snapshot.Cluster.Reach: every endpoint to every
// endpoint and to an outside address, both ways, on common and named ports) for every golden
// scenario and checks each row's verdict against the rendered HNS lists of both sides.
func TestReachVerdicts(t *testing.T) {
	files, _ := filepath.Glob("../../golden/*/snapshot.yaml")
	if len(files) == 0 {
		t.Fatal("no golden snapshots")
	}
	rows := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := snapshot.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(filepath.Dir(f))
		acls := map[string]EndpointACL{}
		for _, e := range Render(s, Options{}).Endpoints {
			acls[e.Endpoint] = e
		}
		c := snapshot.NewCluster([]*snapshot.Snapshot{s})
		peers, err := c.Resolve("")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, snapshot.Peer{Addr: netip.MustParseAddr("203.0.113.9")}, snapshot.Peer{Addr: netip.MustParseAddr("2001:db8::9")})
		var ports []snapshot.PortSpec
		for _, p := range []string{"80/TCP", "443/TCP", "53/UDP", "5432/TCP", "8080/TCP", "6379/TCP"} {
			ps, _ := snapshot.ParsePort(p)
			ports = append(ports, ps)
		}
		for _, l := range c.Endpoints() {
			for _, np := range l.Endpoint.Ports {
				ports = append(ports, snapshot.PortSpec{Name: np.Name})
			}
		}
		for _, row := range c.Reach(peers, peers, ports) {
			src, dst, from, to := rowPeers(t, c, peers, row)
			if from != nil && acls[from.ID].Err != nil || to != nil && acls[to.ID].Err != nil {
				continue
			}
			proto := map[string]uint8{"TCP": 6, "UDP": 17, "SCTP": 132}[row.Protocol]
			verdict := snapshot.Allow
			if from != nil && Evaluate(acls[from.ID].Rules, Out, Packet{Local: src, Remote: dst, Protocol: proto, LocalPort: 40000, RemotePort: row.Port}).Action != Allow {
				verdict = snapshot.Deny
			}
			if to != nil && Evaluate(acls[to.ID].Rules, In, Packet{Local: dst, Remote: src, Protocol: proto, LocalPort: row.Port, RemotePort: 40000}).Action != Allow {
				verdict = snapshot.Deny
			}
			rows++
			if verdict != row.Verdict {
				t.Errorf("%s: %s -> %s %d/%s: reach says %s (egress %s, ingress %s), HNS says %s",
					name, row.From, row.To, row.Port, row.Protocol, row.Verdict, row.Egress, row.Ingress, verdict)
			}
		}
	}
	t.Logf("%d reach rows agree", rows)
	if rows == 0 {
		t.Fatal("no reach rows checked")
	}
}

// rowPeers recovers a row's addresses and endpoints the way Reach picks them: IPv4 when both
// sides have it.
func rowPeers(t *testing.T, c *snapshot.Cluster, peers []snapshot.Peer, row snapshot.Row) (src, dst netip.Addr, from, to *snapshot.Endpoint) {
	t.Helper()
	find := func(name string) snapshot.Peer {
		for _, p := range peers {
			if p.Name() == name {
				return p
			}
		}
		t.Fatalf("row peer %q not found", name)
		return snapshot.Peer{}
	}
	f, g := find(row.From), find(row.To)
	addr := func(p snapshot.Peer, v4 bool) (netip.Addr, bool) {
		if p.Addr.IsValid() {
			return p.Addr, p.Addr.Is4() == v4
		}
		for _, a := range p.Endpoint.Endpoint.Addrs {
			if a.Addr().Is4() == v4 {
				return a.Addr(), true
			}
		}
		return netip.Addr{}, false
	}
	for _, v4 := range []bool{true, false} {
		s, ok1 := addr(f, v4)
		d, ok2 := addr(g, v4)
		if ok1 && ok2 {
			src, dst = s, d
			break
		}
	}
	if f.Endpoint != nil {
		from = f.Endpoint.Endpoint
	}
	if g.Endpoint != nil {
		to = g.Endpoint.Endpoint
	}
	return src, dst, from, to
}
