//go:build linux

package bpf

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/appliers/bpf/render"
	"github.com/felis-dev/felis/snapshot"
)

// inNetNS runs f on a locked thread inside a throwaway network namespace with lo up, a veth
// d0 (peer d1) holding 192.168.5.1/24 and fd00:5::1/64, and IPv4/IPv6 forwarding on
// (setForwarding changes it later). BPF_PROG_TEST_RUN runs packets in that namespace.
func inNetNS(t testing.TB, f func(setForwarding func(bool))) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		netns.Set(orig)
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
		orig.Close()
		ns.Close()
		runtime.UnlockOSThread()
	}()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0"}, PeerName: "d1"}); err != nil {
		t.Fatalf("veth d0: %v", err)
	}
	var d0 netlink.Link
	for _, n := range []string{"d1", "d0"} {
		if d0, err = netlink.LinkByName(n); err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(d0); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"192.168.5.1/24", "fd00:5::1/64"} {
		p := netip.MustParsePrefix(a)
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(d0, addr); err != nil {
			t.Fatalf("address %s: %v", a, err)
		}
	}
	// IPv6 installs the local route of fd00:5::1 only once the veth has carrier (the kernel's
	// link watcher, up to a second later); until then the address looks unroutable, not
	// local, and verdicts that depend on it flip.
	for i := 0; ; i++ {
		rs, err := netlink.RouteGet(net.ParseIP("fd00:5::1"))
		if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
			break
		}
		if i == 100 {
			t.Fatalf("no local route for fd00:5::1 after 5 s: %v %v", rs, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	setForwarding := func(on bool) {
		v := "0"
		if on {
			v = "1"
		}
		for _, p := range []string{"/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
	}
	setForwarding(true)
	f(setForwarding)
}

// TestEndpointToHostAction: traffic from a workload that its egress policy allows is dropped
// when it goes to the host itself (a local address, or anywhere while forwarding is off)
// under DefaultEndpointToHostAction Deny, and passes under Allow and Return; forwarded
// traffic and replies of host-initiated flows pass whatever the action; egress policy still
// applies first.
func TestEndpointToHostAction(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	inNetNS(t, func(setForwarding func(bool)) {
		s := syncSnapshot()
		s.Endpoints[0].Addrs = append(s.Endpoints[0].Addrs, netip.MustParsePrefix("fd00:1::1/128"))
		s.Profiles = []snapshot.Profile{{ID: "p", Inbound: []snapshot.Rule{{Action: snapshot.Allow}},
			Outbound: []snapshot.Rule{{Action: snapshot.Deny, DstPorts: []snapshot.PortRange{{Min: 25, Max: 25}}}, {Action: snapshot.Allow}}}}
		s.Endpoints[0].Egress = snapshot.Direction{Profiles: []string{"p"}}
		s.Endpoints[0].Ingress = snapshot.Direction{Profiles: []string{"p"}}
		ep4, ep6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00:1::1")
		tcp := func(src, dst string, dport uint16) snapshot.Packet {
			return snapshot.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: 6, SrcPort: 40000, DstPort: dport}
		}
		cases := []struct {
			name    string
			pkt     snapshot.Packet
			forward bool
			want    map[snapshot.Action]uint32
		}{
			{"local IPv4 address", tcp("10.0.0.1", "192.168.5.1", 80), true, map[snapshot.Action]uint32{snapshot.Deny: tcShot, snapshot.Allow: tcOK, snapshot.Return: tcOK}},
			{"loopback", tcp("10.0.0.1", "127.0.0.1", 80), true, map[snapshot.Action]uint32{snapshot.Deny: tcShot, snapshot.Allow: tcOK, snapshot.Return: tcOK}},
			{"local IPv6 address", tcp("fd00:1::1", "fd00:5::1", 80), true, map[snapshot.Action]uint32{snapshot.Deny: tcShot, snapshot.Allow: tcOK, snapshot.Return: tcOK}},
			{"forwarded IPv4", tcp("10.0.0.1", "192.168.5.7", 80), true, map[snapshot.Action]uint32{snapshot.Deny: tcOK, snapshot.Allow: tcOK, snapshot.Return: tcOK}},
			{"forwarded IPv6", tcp("fd00:1::1", "fd00:5::7", 80), true, map[snapshot.Action]uint32{snapshot.Deny: tcOK, snapshot.Allow: tcOK, snapshot.Return: tcOK}},
			{"egress policy denies, to host", tcp("10.0.0.1", "192.168.5.1", 25), true, map[snapshot.Action]uint32{snapshot.Deny: tcShot, snapshot.Allow: tcShot, snapshot.Return: tcShot}},
			{"egress policy denies, forwarded", tcp("10.0.0.1", "192.168.5.7", 25), true, map[snapshot.Action]uint32{snapshot.Deny: tcShot, snapshot.Allow: tcShot, snapshot.Return: tcShot}},
			{"forwarding off", tcp("10.0.0.1", "192.168.5.7", 80), false, map[snapshot.Action]uint32{snapshot.Deny: tcShot, snapshot.Allow: tcOK}},
		}
		for _, action := range []snapshot.Action{snapshot.Deny, snapshot.Allow, snapshot.Return} {
			s.Config.DefaultEndpointToHostAction = action
			mustSync(t, d, s, false)
			for _, c := range cases {
				want, ok := c.want[action]
				if !ok {
					continue
				}
				clearCT(t, d.CTMap())
				setForwarding(c.forward)
				if got := run(t, fromWEP, c.pkt); got != want {
					t.Errorf("%s (%v→%v), action %s: verdict %d, want %d", c.name, c.pkt.Src, c.pkt.Dst, action, got, want)
				}
			}
		}
		setForwarding(true)

		// A flow the host opened: its reply from the workload passes under Deny.
		s.Config.DefaultEndpointToHostAction = snapshot.Deny
		mustSync(t, d, s, false)
		clearCT(t, d.CTMap())
		for _, ep := range []netip.Addr{ep4, ep6} {
			host := netip.MustParseAddr("192.168.5.1")
			if ep.Is6() {
				host = netip.MustParseAddr("fd00:5::1")
			}
			in := snapshot.Packet{Src: host, Dst: ep, Protocol: 6, SrcPort: 50000, DstPort: 8080}
			reply := snapshot.Packet{Src: ep, Dst: host, Protocol: 6, SrcPort: 8080, DstPort: 50000}
			if got := run(t, fromWEP, reply); got != tcShot {
				t.Errorf("unsolicited %v→%v under Deny: %d, want drop", ep, host, got)
			}
			if got := run(t, toWEP, in); got != tcOK {
				t.Fatalf("host %v → workload: %d, want pass", host, got)
			}
			if got := run(t, fromWEP, reply); got != tcOK {
				t.Errorf("reply %v→%v of a host-initiated flow under Deny: %d, want pass", ep, host, got)
			}
		}
	})
}

// TestEndpointToHostActionFlags: the renderer maps the configured action onto the endpoint
// entry (Deny and unset drop; Allow, Return and Felix's spellings accept) and rejects others.
func TestEndpointToHostActionFlags(t *testing.T) {
	for _, c := range []struct {
		action snapshot.Action
		flags  uint32
		err    bool
	}{
		{"", render.EndpointFlagToHostDeny, false},
		{snapshot.Deny, render.EndpointFlagToHostDeny, false},
		{"Drop", render.EndpointFlagToHostDeny, false},
		{snapshot.Allow, 0, false},
		{"Accept", 0, false},
		{snapshot.Return, 0, false},
		{"Bogus", 0, true},
	} {
		s := syncSnapshot()
		s.Config.DefaultEndpointToHostAction = c.action
		st, err := render.Render(s)
		if c.err {
			if err == nil {
				t.Errorf("action %q: no error", c.action)
			}
			continue
		}
		if err != nil {
			t.Fatalf("action %q: %v", c.action, err)
		}
		if got := st.Endpoints["cali0"].Flags; got != c.flags {
			t.Errorf("action %q: endpoint flags %d, want %d", c.action, got, c.flags)
		}
	}
}
