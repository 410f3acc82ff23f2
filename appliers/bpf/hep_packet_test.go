//go:build linux

package bpf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/felis-dev/felis/appliers/nftables"
	nftrender "github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
	"github.com/felis-dev/felis/tools/netns"
)

// TestPacketsHostEndpointStages sends real TCP through a host endpoint on eth0 with a policy
// in every stage, on a node (tools/netns) with a pod, and a peer node on the same underlay
// that routes the pod network through it:
//
//   - normal ingress denies everything: the node's 8080 closes, failsafe 22 stays open;
//   - untracked ingress allows 7000 and untracked egress allows replies from port 7000: the
//     peer reaches the node's 7000 although normal ingress and egress deny everything (the
//     flow is never tracked, so its replies pass only by the untracked egress allow);
//   - forward ingress allows 80 and 90, preDNAT denies 90: the peer reaches the pod's 80,
//     not its 90 (preDNAT) nor 81 (forward tier default);
//   - forward egress allows 9000: the pod reaches the peer's 9000, not its 9001.
//
// IPv4 and IPv6. It mirrors the nftables host endpoint packet test (failsafe open, a port
// closed) and adds what only host endpoints' other programs decide. The same flows run
// against the nftables dataplane first, so the two dataplanes are seen to agree on them.
func TestPacketsHostEndpointStages(t *testing.T) {
	_, dir := openTest(t) // root check and a private bpffs
	for _, dp := range []string{"nftables", "bpf"} {
		t.Run(dp, func(t *testing.T) { hostEndpointStagePackets(t, dp, dir+"/stages") })
	}
}

func hostEndpointStagePackets(t *testing.T, dataplane, pins string) {
	node, peer := underlayNodes(t)
	pod, err := node.NewPod(netns.PodOptions{Namespace: "ns", Name: "a",
		IPv4: netip.MustParseAddr("10.65.0.2"), IPv6: netip.MustParseAddr("fd00:65::2")})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		dst netip.Prefix
		via netip.Addr
	}{{netip.MustParsePrefix("10.65.0.0/24"), node.IPv4}, {netip.MustParsePrefix("fd00:65::/64"), node.IPv6}} {
		if err := peer.AddRoute(r.dst, r.via); err != nil {
			t.Fatal(err)
		}
	}
	listen := func(ns *netns.Namespace, ports ...uint16) {
		for _, p := range ports {
			if _, err := ns.Listen(netns.TCP, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	listen(node.Namespace, 22, 7000, 8080)
	listen(pod.Namespace, 80, 81, 90)
	listen(peer.Namespace, 9000, 9001)

	type flow struct {
		from  *netns.Namespace
		what  string
		dst   netip.Addr
		port  uint16
		allow bool
	}
	var flows []flow
	for _, v6 := range []bool{false, true} {
		nodeIP, podIP, peerIP := node.IPv4, pod.IPv4, peer.IPv4
		if v6 {
			nodeIP, podIP, peerIP = node.IPv6, pod.IPv6, peer.IPv6
		}
		flows = append(flows,
			flow{peer.Namespace, "peer → node, failsafe", nodeIP, 22, true},
			flow{peer.Namespace, "peer → node, normal ingress deny-all", nodeIP, 8080, false},
			flow{peer.Namespace, "peer → node, untracked allow both ways", nodeIP, 7000, true},
			flow{peer.Namespace, "peer → pod, forward allow", podIP, 80, true},
			flow{peer.Namespace, "peer → pod, forward tier default deny", podIP, 81, false},
			flow{peer.Namespace, "peer → pod, preDNAT deny", podIP, 90, false},
			flow{pod.Namespace, "pod → peer, forward egress allow", peerIP, 9000, true},
			flow{pod.Namespace, "pod → peer, forward egress tier default deny", peerIP, 9001, false},
		)
	}
	probe := func(want func(flow) bool) error {
		errs := make([]string, len(flows))
		var wg sync.WaitGroup
		for i, f := range flows {
			wg.Go(func() {
				r := f.from.Probe(netns.TCP, netip.AddrPortFrom(f.dst, f.port))
				check := r.Denied
				if want(f) {
					check = r.Allowed
				}
				if err := check(); err != nil {
					errs[i] = fmt.Sprintf("  %s (%v:%d): %v", f.what, f.dst, f.port, err)
				}
			})
		}
		wg.Wait()
		var bad []string
		for _, e := range errs {
			if e != "" {
				bad = append(bad, e)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "\n"))
		}
		return nil
	}
	if err := probe(func(flow) bool { return true }); err != nil {
		t.Fatalf("without felis every flow must pass (the test wiring is broken):\n%v", err)
	}

	tcp := func(a snapshot.Action, dst ...uint16) snapshot.Rule {
		r := snapshot.Rule{Action: a, Protocol: u8(6)}
		for _, p := range dst {
			r.DstPorts = append(r.DstPorts, snapshot.PortRange{Min: p, Max: p})
		}
		return r
	}
	allowAll := []snapshot.Rule{{Action: snapshot.Allow}}
	snap := &snapshot.Snapshot{
		Node:   node.NodeName,
		Config: snapshot.Config{InterfacePrefixes: []string{"cali"}, FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}}},
		Policies: []snapshot.Policy{
			{ID: "deny-all", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Deny}}, Outbound: []snapshot.Rule{{Action: snapshot.Deny}}},
			{ID: "raw", Tier: "default", DoNotTrack: true, Inbound: []snapshot.Rule{tcp(snapshot.Allow, 7000)},
				Outbound: []snapshot.Rule{{Action: snapshot.Allow, Protocol: u8(6), SrcPorts: []snapshot.PortRange{{Min: 7000, Max: 7000}}}}},
			{ID: "pre", Tier: "default", PreDNAT: true, Inbound: []snapshot.Rule{tcp(snapshot.Deny, 90)}},
			{ID: "fwd", Tier: "default", ApplyOnForward: true, Inbound: []snapshot.Rule{tcp(snapshot.Allow, 80, 90)},
				Outbound: []snapshot.Rule{tcp(snapshot.Allow, 9000)}},
		},
		Profiles: []snapshot.Profile{{ID: "kns.ns", Inbound: allowAll, Outbound: allowAll}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/a", Namespace: "ns", Workload: "a", Name: "eth0", Interface: pod.HostInterface,
			Addrs:   []netip.Prefix{netip.PrefixFrom(pod.IPv4, 32), netip.PrefixFrom(pod.IPv6, 128)},
			Ingress: snapshot.Direction{Profiles: []string{"kns.ns"}}, Egress: snapshot.Direction{Profiles: []string{"kns.ns"}}}},
		HostEndpoints: []snapshot.HostEndpoint{{ID: "node1-eth0", Interface: "eth0",
			Normal:    snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "deny-all"), Egress: tier("default", snapshot.Deny, "deny-all")},
			Untracked: snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "raw"), Egress: tier("default", snapshot.Pass, "raw")},
			PreDNAT:   snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "pre")},
			Forward:   snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "fwd"), Egress: tier("default", snapshot.Deny, "fwd")},
		}},
	}
	snap.Finalize()
	if dataplane == "nftables" {
		tbl, err := nftrender.Render(*snap)
		if err != nil {
			t.Fatal(err)
		}
		k, err := nftables.NewKernel(nftables.WithNetNSFd(int(node.Handle())))
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if _, err := nftables.NewApplier(k).Sync(context.Background(), tbl); err != nil {
			t.Fatal(err)
		}
		if err := probe(func(f flow) bool { return f.allow }); err != nil {
			t.Errorf("through the host endpoint's chains:\n%v", err)
		}
		return
	}
	var d *Dataplane
	if err := node.Do(func() error {
		var err error
		if d, err = Open(Options{PinDir: pins}); err != nil {
			return err
		}
		res, err := d.Sync(context.Background(), snap, true)
		if err != nil {
			return err
		}
		// The pod's veth and eth0: two links each.
		if res.Counts["link-attach"] != 4 || res.Counts["host-put"] != 1 {
			t.Errorf("sync counts %v: want 4 link-attach (pod, eth0) and 1 host-put (eth0)", res.Counts)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer node.Do(func() error { return Cleanup(context.Background(), pins) })

	if err := probe(func(f flow) bool { return f.allow }); err != nil {
		t.Errorf("through the host endpoint's stages:\n%v", err)
	}
}

// TestPacketsHostEndpointNodePort: a host endpoint on eth0 in front of NodePorts (tools/netns:
// node1 with a backend pod, node2 the outside). preDNAT policy sees the NodePort before
// service DNAT, forward policy the backend after it, and the normal programs (deny-all both
// ways) never see the flow:
//
//   - preDNAT denies TCP 30090 and TCP 8080: node2 reaches NodePort 30080 (→ pod:8080), not
//     NodePort 30090 (→ pod:8080), and not pod:8080 directly (routed through node1);
//   - forward ingress allows TCP 8080 only: NodePort 30070 (→ pod:7070) is dropped;
//   - failsafe 22 to the node stays open.
//
// The same flows run against the nftables dataplane first.
func TestPacketsHostEndpointNodePort(t *testing.T) {
	_, dir := openTest(t)
	for _, dp := range []string{"nftables", "bpf"} {
		t.Run(dp, func(t *testing.T) { hostEndpointNodePortPackets(t, dp, dir+"/nodeport") })
	}
}

func hostEndpointNodePortPackets(t *testing.T, dataplane, pins string) {
	node, peer := underlayNodes(t)
	pod, err := node.NewPod(netns.PodOptions{Namespace: "ns", Name: "web", IPv4: netip.MustParseAddr("10.65.0.10")})
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.AddRoute(netip.MustParsePrefix("10.65.0.0/24"), node.IPv4); err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint16{7070, 8080} {
		if _, err := pod.Listen(netns.TCP, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := node.Listen(netns.TCP, 22); err != nil {
		t.Fatal(err)
	}
	type flow struct {
		what  string
		dst   netip.AddrPort
		allow bool
	}
	flows := []flow{
		{"NodePort 30080 → pod:8080 (preDNAT allows the frontend, forward the backend)", netip.AddrPortFrom(node.IPv4, 30080), true},
		{"NodePort 30090 → pod:8080 (preDNAT denies the frontend port)", netip.AddrPortFrom(node.IPv4, 30090), false},
		{"NodePort 30070 → pod:7070 (forward tier default deny)", netip.AddrPortFrom(node.IPv4, 30070), false},
		{"pod:8080 routed through node1 (preDNAT denies 8080)", netip.AddrPortFrom(pod.IPv4, 8080), false},
		{"node1:22 (failsafe)", netip.AddrPortFrom(node.IPv4, 22), true},
	}
	probe := func(flows []flow, want func(flow) bool) error {
		errs := make([]string, len(flows))
		var wg sync.WaitGroup
		for i, f := range flows {
			wg.Go(func() {
				r := peer.Probe(netns.TCP, f.dst)
				check := r.Denied
				if want(f) {
					check = r.Allowed
				}
				if err := check(); err != nil {
					errs[i] = fmt.Sprintf("  %s: %v", f.what, err)
				}
			})
		}
		wg.Wait()
		var bad []string
		for _, e := range errs {
			if e != "" {
				bad = append(bad, e)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "\n"))
		}
		return nil
	}
	if err := probe(flows[3:], func(flow) bool { return true }); err != nil {
		t.Fatalf("without felis node2 must reach the pod and node1:22 (the test wiring is broken):\n%v", err)
	}

	tcp := func(a snapshot.Action, dst ...uint16) snapshot.Rule {
		r := snapshot.Rule{Action: a, Protocol: u8(6)}
		for _, p := range dst {
			r.DstPorts = append(r.DstPorts, snapshot.PortRange{Min: p, Max: p})
		}
		return r
	}
	allowAll := []snapshot.Rule{{Action: snapshot.Allow}}
	svc := func(id string, port, target uint16) snapshot.Service {
		return snapshot.Service{ID: id,
			Frontends: []snapshot.Frontend{{Addr: node.IPv4, Port: port, Protocol: 6, Kind: "NodePort"}},
			Backends:  []snapshot.Backend{{Addr: pod.IPv4, Port: target, Protocol: 6, Node: node.NodeName, Ready: true, Serving: true}}}
	}
	snap := &snapshot.Snapshot{
		Node: node.NodeName,
		Config: snapshot.Config{InterfacePrefixes: []string{"cali"}, NodeIPv4: netip.PrefixFrom(node.IPv4, 24),
			FailsafeInbound: []snapshot.FailsafePort{{Protocol: 6, Port: 22}}},
		Policies: []snapshot.Policy{
			{ID: "deny-all", Tier: "default", Inbound: []snapshot.Rule{{Action: snapshot.Deny}}, Outbound: []snapshot.Rule{{Action: snapshot.Deny}}},
			{ID: "pre", Tier: "default", PreDNAT: true, Inbound: []snapshot.Rule{tcp(snapshot.Deny, 30090, 8080)}},
			{ID: "fwd", Tier: "default", ApplyOnForward: true, Inbound: []snapshot.Rule{tcp(snapshot.Allow, 8080)}},
		},
		Profiles: []snapshot.Profile{{ID: "kns.ns", Inbound: allowAll, Outbound: allowAll}},
		Endpoints: []snapshot.Endpoint{{ID: "ns/web", Namespace: "ns", Workload: "web", Name: "eth0", Interface: pod.HostInterface,
			Addrs:   []netip.Prefix{netip.PrefixFrom(pod.IPv4, 32)},
			Ingress: snapshot.Direction{Profiles: []string{"kns.ns"}}, Egress: snapshot.Direction{Profiles: []string{"kns.ns"}}}},
		HostEndpoints: []snapshot.HostEndpoint{{ID: "node1-eth0", Interface: "eth0",
			Normal:  snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "deny-all"), Egress: tier("default", snapshot.Deny, "deny-all")},
			PreDNAT: snapshot.HostDirections{Ingress: tier("default", snapshot.Pass, "pre")},
			Forward: snapshot.HostDirections{Ingress: tier("default", snapshot.Deny, "fwd")},
		}},
		Services: []snapshot.Service{svc("ns/a", 30080, 8080), svc("ns/b", 30090, 8080), svc("ns/c", 30070, 7070)},
	}
	snap.Finalize()
	if dataplane == "nftables" {
		tbl, err := nftrender.Render(*snap)
		if err != nil {
			t.Fatal(err)
		}
		k, err := nftables.NewKernel(nftables.WithNetNSFd(int(node.Handle())))
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if _, err := nftables.NewApplier(k).Sync(context.Background(), tbl); err != nil {
			t.Fatal(err)
		}
	} else {
		var d *Dataplane
		if err := node.Do(func() error {
			var err error
			if d, err = Open(Options{PinDir: pins}); err != nil {
				return err
			}
			_, err = d.Sync(context.Background(), snap, true)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		defer node.Do(func() error { return Cleanup(context.Background(), pins) })
	}
	if err := probe(flows, func(f flow) bool { return f.allow }); err != nil {
		t.Errorf("through the host endpoint and the NodePorts (%s):\n%v", dataplane, err)
	}
}
