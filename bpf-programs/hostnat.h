// SPDX-License-Identifier: Apache-2.0
// felis service NAT for clients on the host network (the node itself, host-network pods),
// included by policy.c after nat.h: kube-proxy's nat OUTPUT chain, done at TC egress.
//
// A host process's packet to a frontend is routed like any other packet to that address and
// leaves through the interface its route picks: a data interface (a default route, or a route
// to the service range). felis_data_out, on TC egress of every data interface, DNATs it to a
// backend there and forwards it with bpf_fib_lookup and a redirect: into a local backend's
// veth (whose TC egress program still runs the backend's ingress policy) or out towards a
// remote one (VXLAN device or underlay). Both directions are recorded in fnat_v1 as for a
// pod's flow, so the reply is reverse-NATed at the first felis hook it meets: felis_from_wep
// of a local backend, felis_data_in for a remote one; the stack then delivers it to the
// socket, which sees the frontend. No cgroup program and no state outside the node's netns.

// host_redirect forwards a DNATed packet the host sent towards its backend: out of the
// interface the fib lookup picks (no TTL decrement: the packet is the host's own, not
// forwarded). A packet whose new destination is the node itself (a host-network backend)
// would need loopback delivery and reverse NAT there: it is dropped.
static __always_inline int host_redirect(struct __sk_buff *skb, struct nat *n)
{
	struct bpf_fib_lookup f = {};
	nat_fib_fill(&f, skb, n);
	// Without BPF_FIB_LOOKUP_OUTPUT: an output lookup would be bound to this interface.
	long r = bpf_fib_lookup(skb, &f, sizeof(f), 0);
	if (r == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(f.ifindex, 0, 0, 0);
	if (r != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, f.dmac, 6, 0) < 0 || bpf_skb_store_bytes(skb, 6, f.smac, 6, 0) < 0)
		return TC_ACT_SHOT;
	if (f.ifindex == skb->ifindex)
		return TC_ACT_OK; // the backend is out of this interface too: carry on
	return bpf_redirect(f.ifindex, 0);
}

// nat_host_out DNATs a packet the host sends to a frontend (a new flow: backend chosen and
// both NAT entries recorded; a known flow: its recorded backend) and forwards it. Packets to
// no frontend, replies and forwarded traffic (already NATed where it entered) go on
// unchanged (TC_ACT_UNSPEC).
static __always_inline int nat_host_out(struct __sk_buff *skb, struct nat *n)
{
	// Hook 0 (TC egress) in the fragment records: on a data interface it is this program's.
	int r = nat_parse(skb, n, 0);
	if (r < 0)
		return TC_ACT_UNSPEC;
	if (r > 0) { // a later fragment: its first fragment's rewrite (addresses only)
		if (n->action != NA_FWD)
			return TC_ACT_UNSPEC;
		if (rewrite_dst(skb, n) < 0 || rewrite_src(skb, n) < 0)
			return TC_ACT_SHOT;
		return host_redirect(skb, n);
	}
	__u64 now = bpf_ktime_get_ns();
	struct nat_key k = {};
	nat_key_of(&k, &n->p);
	struct nat_val *v = nat_lookup(&k, now);
	if (v) {
		if (v->flags & NE_REV)
			return TC_ACT_UNSPEC;
		n->to = *v;
	} else {
		struct fe_key fk = {.family = n->p.family, .proto = n->p.proto, .port = n->p.dport};
		__builtin_memcpy(fk.addr, n->p.dst, 16);
		struct fe_val *fe = bpf_map_lookup_elem(&fsvc_v1, &fk);
		if (!fe)
			return TC_ACT_UNSPEC;
		__u32 base; // the node is a client inside it: Local frontends short-circuit
		__u32 cnt = fe_range(fe, 0, &base);
		if (cnt == 0) // no backend: refuse (ICMP back into the host), or drop
			return (fe->flags & FE_REJECT) ? nat_reject(skb, n, NAT_REJECT_HOST) : TC_ACT_SHOT;
		if (choose(n, fe, base, cnt, now) < 0)
			return TC_ACT_SHOT;
		__builtin_memcpy(n->to.src, n->p.src, 16);
		n->to.sport = n->p.sport;
		n->to.flags = 0;
		n->to.last_seen = now;
		// The reply, from the backend to the host, is rewritten back to come from the
		// frontend; the stack delivers it (no redirect). Through lo (a frontend on a node
		// address) the rewritten reply has a local source, which the input route check
		// drops on any other interface: it is handed to lo's ingress (NE_LOOP).
		n->back.flags = NE_REV;
		if (skb->ifindex == LOOPBACK_IFINDEX)
			n->back.flags |= NE_REDIRECT | NE_LOOP;
		n->back.last_seen = now;
		__builtin_memcpy(n->back.src, n->p.dst, 16);
		__builtin_memcpy(n->back.dst, n->p.src, 16);
		n->back.sport = n->p.dport;
		n->back.dport = n->p.sport;
		struct nat_key rk = {.family = n->p.family, .proto = n->p.proto, .sport = n->to.dport, .dport = n->to.sport};
		__builtin_memcpy(rk.src, n->to.dst, 16);
		__builtin_memcpy(rk.dst, n->to.src, 16);
		// Another flow from this source port may already reach the same backend (the same
		// socket to two frontends sharing it, a NodePort flow SNATed to this address): its
		// reply would be taken for this one's. This flow then gets another source port, as
		// the SNAT path does; the reply entry restores the socket's.
		for (int i = 0; i < 4 && nat_lookup(&rk, now); i++) {
			rk.dport = SNAT_PORT_MIN + bpf_get_prandom_u32() % (65536 - SNAT_PORT_MIN);
			n->to.sport = rk.dport;
		}
		bpf_map_update_elem(&fnat_v1, &k, &n->to, BPF_ANY);
		bpf_map_update_elem(&fnat_v1, &rk, &n->back, BPF_ANY);
	}
	if (rewrite_dst(skb, n) < 0 || rewrite_src(skb, n) < 0) // the source: its port, if remapped
		return TC_ACT_SHOT;
	n->redirect = 1;
	nat_frag_record(n, NA_FWD); // a first fragment: its later ones follow (no-op otherwise)
	return host_redirect(skb, n);
}

// felis_data_out runs on TC egress of the node's data interfaces and of lo: the host's own
// connections to service frontends (on lo: to a frontend on one of its own addresses, a
// NodePort or an external IP assigned to it). On a host endpoint's interface it does nothing
// (not NATed there yet), except on lo: a `*` host endpoint's program there does no NAT.
SEC("tc")
int felis_data_out(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&feps_v2, &ifindex);
	if (ep && (ep->flags & EP_HOST) && ifindex != LOOPBACK_IFINDEX)
		return TC_ACT_UNSPEC;
	struct nat *n = nat_scratch();
	if (!n)
		return TC_ACT_UNSPEC;
	return nat_host_out(skb, n);
}
