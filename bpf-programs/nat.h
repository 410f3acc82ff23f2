// SPDX-License-Identifier: Apache-2.0
// felis service NAT (kube-proxy's job), included by policy.c after its helpers.
//
// Frontends (address, protocol, port) map to a backend group: a count of backends, each in
// fbe_v1 under (group, index). A new flow picks one at random (or the client's affinity
// entry), and both directions of the flow are recorded in the LRU map fnat_v1: the forward
// tuple as the client sends it, and the reply tuple as the backend sends it. Every later
// packet is rewritten from those entries, so a backend change never moves an open flow.
//
// Where it happens:
// - felis_from_wep (a pod sends): a frontend is DNATed before the pod's egress policy, which
//   sees the backend (as in the nftables dataplane, where dstnat precedes the filter); the
//   NAT entries are written only when policy allowed the packet. A reply from a local backend
//   is policed as it is sent, then reverse-NATed.
// - felis_to_wep (to a pod): a reply from a remote backend is policed, then reverse-NATed; a
//   reply already reverse-NATed at its backend's interface passes.
// - felis_data_in (TC ingress of the node's data interfaces): traffic from outside to any
//   frontend is DNATed; a remote backend of a frontend that does not keep the client address
//   gets the node's address as source; replies are reverse-NATed.
// - felis_data_out (TC egress of the data interfaces, hostnat.h): the host's own connections.
// Hairpin (a pod reaching itself through a service) gets the frontend address as source, so
// the reply leaves the pod and is reverse-NATed at its interface.
// A packet whose rewritten source is a node address is forwarded with bpf_fib_lookup and a
// redirect: the routing stack drops packets that arrive with a local source.

#define NAT_CONTINUE -1
#define NAT_REJECT_HOST 2 // nat_reject's external: the packet left the host at TC egress

// Frontend flags.
#define FE_AFFINITY 1 // ClientIP session affinity (timeout in affinity)
#define FE_SNAT 2     // from outside to a remote backend: source becomes snat (the node)
#define FE_REJECT 4   // no backend: answer a new flow with ICMP port unreachable (else drop)
#define FE_LOCAL 8    // externalTrafficPolicy Local: only clients from outside the node are held
                      // to the count local backends; a local pod gets the cluster ones after them
#define FE_NODE 16    // the frontend is a node address (NodePort): replies rewritten to come from
                      // it are forwarded by fib lookup (the input route check drops local sources)

// Backend flags.
#define BE_LOCAL 1 // the backend runs on this node

// NAT entry flags.
#define NE_REV 1      // a reply-direction entry
#define NE_REDIRECT 2 // rewritten packets of this flow are forwarded by fib lookup + redirect
#define NE_LOOP 4     // a reply to the node's own flow through lo (a frontend on a node address):
                      // handed to lo's ingress after the rewrite (with NE_REDIRECT)

#define LOOPBACK_IFINDEX 1 // lo, in every network namespace

#define NAT_TIMEOUT_NS (600ULL * 1000000000ULL)
#define SNAT_PORT_MIN 32768

struct fe_key {
	__u8 family;
	__u8 proto;
	__u16 port; // host order
	__u8 addr[16];
};

struct fe_val {
	__u64 group;
	__u32 count;
	__u32 flags;
	__u32 affinity; // seconds
	__u32 cluster;  // FE_LOCAL: the cluster-wide backends, at indices count .. count+cluster-1
	__u8 snat[16];
};

struct be_key {
	__u64 group;
	__u32 index;
	__u32 pad;
};

struct be_val {
	__u8 addr[16];
	__u16 port; // host order
	__u8 family;
	__u8 flags;
};

struct nat_key {
	__u8 family;
	__u8 proto;
	__u16 sport; // host order
	__u16 dport;
	__u16 pad;
	__u8 src[16];
	__u8 dst[16];
};

struct nat_val {
	__u8 src[16]; // the packet's new source and destination
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 flags;
	__u64 last_seen;
};

struct aff_key {
	__u64 group;
	__u8 family;
	__u8 pad[7];
	__u8 client[16];
};

struct aff_val {
	__u32 index;
	__u32 pad;
	__u64 last_seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct fe_key);
	__type(value, struct fe_val);
} fsvc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct be_key);
	__type(value, struct be_val);
} fbe_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 524288);
	__type(key, struct nat_key);
	__type(value, struct nat_val);
} fnat_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct aff_key);
	__type(value, struct aff_val);
} faff_v1 SEC(".maps");

// frag_nat is the NAT decision taken for a fragmented datagram's first fragment (the one
// with the ports), kept for its later fragments (ffragnat_v1, keyed like ffrag_v1 by the
// datagram as it arrived at the hook: hook 1 is TC ingress, nat_in; 0 is TC egress,
// nat_to_wep). A later fragment gets the same address rewrite (its ports are payload), the
// same policy view and the same forwarding.
struct frag_nat {
	__u64 seen;
	struct nat_val to;
	__u8 action; // NA_FWD, NA_REPLY, NA_PASS, or NA_NONE (a hairpin view only)
	__u8 redirect;
	__u8 view;
	__u8 view_src;
	__u16 view_port;
	__u16 pad;
	__u8 view_addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_nat);
} ffragnat_v1 SEC(".maps");

// nat is one packet's NAT work, carried from before policy to after it.
struct nat {
	struct pkt p;        // the packet as it arrived
	__u32 l3off, l4off;  // offsets of the IP and L4 headers
	__u8 action;         // NA_*
	__u8 redirect;       // forward the rewritten packet by fib lookup
	__u8 parsed;         // parse() read p from this packet: police() reuses it (nat_reuse)
	__u8 view;           // hairpin: police() sees the pod's own address instead of the frontend
	__u8 view_src;       // ... as the source (else as the destination)
	__u16 view_port;
	__u8 view_addr[16];
	struct nat_val to;   // the rewrite (dst before policy, src after; or both after: replies)
	struct nat_val back; // new flows: the reply entry to record
	__u8 buf[96];        // an ICMP error being built (reject)
	__u8 tail[8];        // the ICMPv6 pseudo-header's length and next header
	struct frag_key fk;  // a fragment's datagram at this hook (off the stack)
	struct frag_nat fn;  // a first fragment's decision being recorded
	struct pkt in;       // an ICMP error's embedded packet
	__u32 in_l3;         // ... and the offset of its IP header
	struct nat_key ik;   // ... and the key of the entry its reply would match
};

// Actions on a packet.
#define NA_NONE 0
#define NA_NEW 1   // a new flow: DNAT done; after policy record it (and SNAT if to.src differs)
#define NA_FWD 2   // a known flow: DNAT done; after policy SNAT if to.src differs
#define NA_REPLY 3 // a reply: after policy rewrite source and destination from to
#define NA_PASS 4  // a later fragment of a datagram nat_to_wep passed (already reverse-NATed)
#define NA_ICMP 5  // an ICMP error about a NATed flow: after policy translate it (nat_icmp_out)

// scratch holds the NAT state: it does not fit beside police()'s on the 512-byte stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nat);
} fnatscratch_v1 SEC(".maps");

static __always_inline struct nat *nat_scratch(void)
{
	__u32 zero = 0;
	struct nat *n = bpf_map_lookup_elem(&fnatscratch_v1, &zero);
	if (n) {
		// parse() fills only some of p's fields; every other field is written before it
		// is read (to, back, the offsets, the reject buffers).
		__builtin_memset(&n->p, 0, sizeof(n->p));
		n->action = NA_NONE;
		n->redirect = 0;
		n->parsed = 0;
		n->view = 0;
	}
	return n;
}

// nat_reuse gives police() the packet nat_parse already read for this run of the program,
// with a DNAT done before policy applied, sparing it a second parse. Returns 1 when p was
// filled.
static __always_inline int nat_reuse(struct pkt *p)
{
	__u32 zero = 0;
	struct nat *n = bpf_map_lookup_elem(&fnatscratch_v1, &zero);
	if (!n || !n->parsed)
		return 0;
	*p = n->p;
	if (n->action == NA_NEW || n->action == NA_FWD) {
		__builtin_memcpy(p->dst, n->to.dst, 16);
		p->dport = n->to.dport;
	}
	if (n->view && n->view_src) {
		__builtin_memcpy(p->src, n->view_addr, 16);
		p->sport = n->view_port;
	} else if (n->view) {
		__builtin_memcpy(p->dst, n->view_addr, 16);
		p->dport = n->view_port;
	}
	return 1;
}

// hairpin_view makes police() see a hairpin packet as nftables' filter does, before the
// masquerade: the pod's own address (the client's, v->dst of the reply entry) where the
// packet carries the frontend. src: the frontend is the packet's source (to the pod), else
// its destination (the pod's reply).
static __always_inline void hairpin_view(struct nat *n, struct nat_val *v, int src)
{
	n->view = 1;
	n->view_src = src;
	__builtin_memcpy(n->view_addr, v->dst, 16);
	n->view_port = v->dport;
}

static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	__u32 x[4], y[4];
	__builtin_memcpy(x, a, 16);
	__builtin_memcpy(y, b, 16);
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

// nat_parse fills n->p and the header offsets. Returns 0 for a TCP or UDP packet NAT may
// touch (a first fragment included), 1 for a later fragment whose first fragment's NAT
// decision was recorded at this hook (restored into n), else -1. hook: 1 at TC ingress
// (nat_in), 0 at TC egress (nat_to_wep).
static __always_inline int nat_parse(struct __sk_buff *skb, struct nat *n, __u8 hook)
{
	if (parse(skb, &n->p) != 0)
		return -1;
	n->parsed = 1;
	n->l3off = ETH_HLEN;
	n->l4off = n->p.l4off;
	if (n->p.frag != FRAG_NONE) {
		__builtin_memset(&n->fk, 0, sizeof(n->fk));
		frag_fill(&n->fk, &n->p, skb->ifindex, hook);
	}
	if (n->p.frag == FRAG_LATER) {
		struct frag_nat *f = bpf_map_lookup_elem(&ffragnat_v1, &n->fk);
		if (!f || bpf_ktime_get_ns() - f->seen > FRAG_TIMEOUT_NS)
			return -1;
		n->to = f->to;
		n->action = f->action;
		n->redirect = f->redirect;
		n->view = f->view;
		n->view_src = f->view_src;
		n->view_port = f->view_port;
		__builtin_memcpy(n->view_addr, f->view_addr, 16);
		return 1;
	}
	if (n->p.proto != 6 && n->p.proto != 17)
		return -1;
	return 0;
}

// nat_frag_record keeps a first fragment's NAT decision (taken, and allowed by policy) for
// the later fragments of its datagram. A new flow's later fragments follow it as a known one.
static __always_inline void nat_frag_record(struct nat *n, __u8 action)
{
	if (n->p.frag != FRAG_FIRST)
		return;
	struct frag_nat *f = &n->fn;
	f->seen = bpf_ktime_get_ns();
	f->to = n->to;
	f->action = action == NA_NEW ? NA_FWD : action;
	f->redirect = n->redirect;
	f->view = n->view;
	f->view_src = n->view_src;
	f->view_port = n->view_port;
	f->pad = 0;
	__builtin_memcpy(f->view_addr, n->view_addr, 16);
	bpf_map_update_elem(&ffragnat_v1, &n->fk, f, BPF_ANY);
}

static __always_inline void nat_key_of(struct nat_key *k, struct pkt *p)
{
	k->family = p->family;
	k->proto = p->proto;
	k->sport = p->sport;
	k->dport = p->dport;
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
}

static __always_inline struct nat_val *nat_lookup(struct nat_key *k, __u64 now)
{
	struct nat_val *v = bpf_map_lookup_elem(&fnat_v1, k);
	if (!v || now - v->last_seen > NAT_TIMEOUT_NS)
		return 0;
	v->last_seen = now;
	return v;
}

static __always_inline __u32 csum_off(struct nat *n)
{
	if (n->p.proto == 6)
		return n->l4off + 16;
	if (n->p.proto == 17)
		return n->l4off + 6;
	return n->l4off + 2; // ICMPv6 (an ICMP error being translated)
}

// rewrite_addr replaces the source (src=1) or destination address, fixing the IPv4 header
// checksum and the L4 checksum's pseudo-header part (not in a later fragment: the L4 header
// and its checksum, which covers the whole datagram, are in the first one).
static __always_inline int rewrite_addr(struct __sk_buff *skb, struct nat *n, int src, __u8 *old, __u8 *new)
{
	__u64 mangled = n->p.proto == 17 ? BPF_F_MARK_MANGLED_0 : 0;
	__s64 diff;
	__u32 off;
	if (n->p.family == FAMILY_V4) {
		__u32 o, w;
		__builtin_memcpy(&o, old, 4);
		__builtin_memcpy(&w, new, 4);
		if (o == w)
			return 0;
		off = n->l3off + (src ? 12 : 16);
		if (bpf_l3_csum_replace(skb, n->l3off + 10, o, w, 4) < 0)
			return -1;
		// ICMPv4's checksum has no pseudo-header.
		if (n->p.frag != FRAG_LATER && n->p.proto != 1 &&
		    bpf_l4_csum_replace(skb, csum_off(n), o, w, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		return bpf_skb_store_bytes(skb, off, &w, 4, 0);
	}
	__u32 o[4], w[4];
	__builtin_memcpy(o, old, 16);
	__builtin_memcpy(w, new, 16);
	if (o[0] == w[0] && o[1] == w[1] && o[2] == w[2] && o[3] == w[3])
		return 0;
	off = n->l3off + (src ? 8 : 24);
	if (n->p.frag != FRAG_LATER) {
		diff = bpf_csum_diff(o, 16, w, 16, 0);
		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, csum_off(n), 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
	}
	return bpf_skb_store_bytes(skb, off, w, 16, 0);
}

// rewrite_port replaces the source (src=1) or destination port (host order values).
static __always_inline int rewrite_port(struct __sk_buff *skb, struct nat *n, int src, __u16 old, __u16 new)
{
	if (old == new || n->p.frag == FRAG_LATER) // a later fragment has no ports
		return 0;
	__u16 o = bpf_htons(old), w = bpf_htons(new);
	__u64 mangled = n->p.proto == 17 ? BPF_F_MARK_MANGLED_0 : 0;
	if (bpf_l4_csum_replace(skb, csum_off(n), o, w, mangled | 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, n->l4off + (src ? 0 : 2), &w, 2, 0);
}

// rewrite_src and rewrite_dst rewrite one side of the packet from n->p to n->to.
static __always_inline int rewrite_src(struct __sk_buff *skb, struct nat *n)
{
	if (rewrite_addr(skb, n, 1, n->p.src, n->to.src) < 0)
		return -1;
	return rewrite_port(skb, n, 1, n->p.sport, n->to.sport);
}

static __always_inline int rewrite_dst(struct __sk_buff *skb, struct nat *n)
{
	if (rewrite_addr(skb, n, 0, n->p.dst, n->to.dst) < 0)
		return -1;
	return rewrite_port(skb, n, 0, n->p.dport, n->to.dport);
}

// dec_ttl does what forwarding does to the IPv4 TTL (and header checksum) or the IPv6 hop
// limit; -1 when it has run out.
static __always_inline int dec_ttl(struct __sk_buff *skb, struct nat *n)
{
	__u32 off = n->l3off + (n->p.family == FAMILY_V4 ? 8 : 7);
	__u8 ttl;
	if (bpf_skb_load_bytes(skb, off, &ttl, 1) < 0 || ttl <= 1)
		return -1;
	__u8 next = ttl - 1;
	if (n->p.family == FAMILY_V4) {
		// The TTL is the high byte of the 16-bit word it shares with the protocol.
		__u16 o = bpf_htons((__u16)ttl << 8), w = bpf_htons((__u16)next << 8);
		if (bpf_l3_csum_replace(skb, n->l3off + 10, o, w, 2) < 0)
			return -1;
	}
	return bpf_skb_store_bytes(skb, off, &next, 1, 0);
}

// nat_fib_fill fills a fib lookup for the translated packet n describes (its new addresses
// and ports), arriving on skb's interface.
static __always_inline void nat_fib_fill(struct bpf_fib_lookup *fl, struct __sk_buff *skb, struct nat *n)
{
	fl->ifindex = skb->ifindex;
	fl->l4_protocol = n->p.proto;
	fl->sport = bpf_htons(n->to.sport);
	fl->dport = bpf_htons(n->to.dport);
	if (n->p.family == FAMILY_V4) {
		fl->family = AF_INET;
		fl->tot_len = skb->len - ETH_HLEN;
		__builtin_memcpy(&fl->ipv4_src, n->to.src, 4);
		__builtin_memcpy(&fl->ipv4_dst, n->to.dst, 4);
	} else {
		fl->family = AF_INET6;
		__builtin_memcpy(fl->ipv6_src, n->to.src, 16);
		__builtin_memcpy(fl->ipv6_dst, n->to.dst, 16);
	}
}

// nat_redirect forwards a rewritten packet by a fib lookup (bypassing the input route check,
// which drops packets arriving with a local source address).
static __always_inline int nat_redirect(struct __sk_buff *skb, struct nat *n)
{
	if (n->to.flags & NE_LOOP) {
		// The node's own flow through lo: the reply, now from the frontend (a node
		// address) to the node, is delivered as if it had come over lo. Zero MACs, as lo
		// carries them (anything else would be PACKET_OTHERHOST there).
		__u8 zero[12] = {};
		if (bpf_skb_store_bytes(skb, 0, zero, 12, 0) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(LOOPBACK_IFINDEX, BPF_F_INGRESS);
	}
	struct bpf_fib_lookup f = {};
	nat_fib_fill(&f, skb, n);
	long r = bpf_fib_lookup(skb, &f, sizeof(f), 0);
	if (r != BPF_FIB_LKUP_RET_SUCCESS && r != BPF_FIB_LKUP_RET_NO_NEIGH)
		return TC_ACT_OK; // the stack decides (a local destination, say)
	if (dec_ttl(skb, n) < 0)
		return TC_ACT_SHOT; // the stack would drop it too (with a time exceeded, not sent here)
	if (r == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(f.ifindex, 0, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, f.dmac, 6, 0) < 0 || bpf_skb_store_bytes(skb, 6, f.smac, 6, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(f.ifindex, 0);
}

// fe_range is the part of a frontend's backend group a client draws from: all of it, except
// that externalTrafficPolicy Local (FE_LOCAL) holds only clients from outside the node to
// the local backends (the first count); a client inside it (a pod, the node itself) gets the
// cluster-wide ones after them, as kube-proxy short-circuits it. Returns how many, from *base.
static __always_inline __u32 fe_range(struct fe_val *fe, int external, __u32 *base)
{
	if ((fe->flags & FE_LOCAL) && !external) {
		*base = fe->count;
		return fe->cluster;
	}
	*base = 0;
	return fe->count;
}

// choose picks the backend of a new flow, among the group's cnt backends from index base,
// into n->to.dst/dport: the client's affinity entry while it is fresh and its backend still
// in that range, else a random one.
static __always_inline int choose(struct nat *n, struct fe_val *fe, __u32 base, __u32 cnt, __u64 now)
{
	struct be_key bk = {.group = fe->group};
	struct be_val *be = 0;
	struct aff_key ak = {.group = fe->group, .family = n->p.family};
	__builtin_memcpy(ak.client, n->p.src, 16);
	if (fe->flags & FE_AFFINITY) {
		struct aff_val *a = bpf_map_lookup_elem(&faff_v1, &ak);
		if (a && now - a->last_seen <= (__u64)fe->affinity * 1000000000ULL && a->index >= base && a->index - base < cnt) {
			bk.index = a->index;
			be = bpf_map_lookup_elem(&fbe_v1, &bk);
		}
	}
	if (!be) {
		bk.index = base + bpf_get_prandom_u32() % cnt;
		be = bpf_map_lookup_elem(&fbe_v1, &bk);
		if (!be)
			return -1;
	}
	if (fe->flags & FE_AFFINITY) {
		struct aff_val a = {.index = bk.index, .last_seen = now};
		bpf_map_update_elem(&faff_v1, &ak, &a, BPF_ANY);
	}
	__builtin_memcpy(n->to.dst, be->addr, 16);
	n->to.dport = be->port;
	return be->flags & BE_LOCAL;
}

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u32 x = (__u32)sum;
	x = (x & 0xffff) + (x >> 16);
	x = (x & 0xffff) + (x >> 16);
	return (__u16)~x;
}

// nat_icmp_in notes an ICMP error about a NATed flow (the packet it embeds is one of the
// flow's packets as the error's sender saw it, translated): the entry the embedded packet's
// reply would match — for an error about a DNATed request (client -> backend), the flow's
// reply entry; for an error about a reverse-NATed reply (frontend -> client), its forward
// entry — gives the translation back, as conntrack's NAT translates related errors. Only a
// TCP or UDP packet behind an IPv4 header without options or a bare IPv6 header is
// translated. Policy decides on the error as it arrived (conntrack holds the flow in that
// form at this hook); nat_out translates it. At a pod's TC egress (to_wep) an error already
// translated at a local backend's interface quotes the client's own packet (its forward
// entry's key): it passes as related, as the flow's replies do; returns 1 then.
static __always_inline int nat_icmp_in(struct __sk_buff *skb, struct nat *n, int to_wep)
{
	if (!n->parsed || n->action != NA_NONE || n->p.frag != FRAG_NONE || !icmp_error(&n->p))
		return 0;
	__builtin_memset(&n->in, 0, sizeof(n->in));
	n->in_l3 = n->p.l4off + 8;
	int r = n->p.family == FAMILY_V4 ? parse_ip4(skb, n->in_l3, &n->in) : parse_ip6(skb, n->in_l3, &n->in);
	if (r < 0 || n->in.family != n->p.family || n->in.frag == FRAG_LATER || parse_l4(skb, &n->in) < 0)
		return 0;
	if ((n->in.proto != 6 && n->in.proto != 17) ||
	    n->in.l4off != n->in_l3 + (n->p.family == FAMILY_V4 ? 20 : 40))
		return 0;
	struct nat_key *k = &n->ik;
	struct nat_val *v;
	__u64 now = bpf_ktime_get_ns();
	if (to_wep) {
		nat_key_of(k, &n->in);
		k->pad = 0;
		v = bpf_map_lookup_elem(&fnat_v1, k);
		if (v && !(v->flags & NE_REV) && now - v->last_seen <= NAT_TIMEOUT_NS)
			return 1;
	}
	k->family = n->in.family;
	k->proto = n->in.proto;
	k->sport = n->in.dport;
	k->dport = n->in.sport;
	k->pad = 0;
	__builtin_memcpy(k->src, n->in.dst, 16);
	__builtin_memcpy(k->dst, n->in.src, 16);
	// Not refreshed: an error does not keep its flow alive.
	v = bpf_map_lookup_elem(&fnat_v1, k);
	if (!v || now - v->last_seen > NAT_TIMEOUT_NS)
		return 0;
	n->to = *v;
	n->redirect = (v->flags & NE_REDIRECT) != 0;
	n->action = NA_ICMP;
	return 0;
}

// csum_adjust returns a 16-bit checksum field (as stored) updated by a bpf_csum_diff of the
// data it covers.
static __always_inline __u16 csum_adjust(__u16 check, __s64 diff)
{
	__u64 sum = (__u16)~check;
	sum += (__u32)diff;
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return csum_fold((__s64)sum);
}

// nat_icmp_out translates an ICMP error nat_icmp_in noted, with n->to the entry found: the
// embedded packet gets the entry's rewrite reversed (source = to.dst:to.dport, destination
// = to.src:to.sport; its IPv4 header checksum and its L4 checksum, when present, updated),
// the ICMP checksum follows every changed byte, and the outer addresses that were the
// embedded packet's (the error's sender is the flow's peer; its destination the flow's
// other end) get the same translation — a router's address stays. For a redirect, n->to is
// left holding the outer addresses.
static __always_inline int nat_icmp_out(struct __sk_buff *skb, struct nat *n)
{
	__u8 *old = n->buf, *new = n->buf + 48;
	__u32 icmp_csum = n->p.l4off + 2;
	__u32 l4 = n->p.family == FAMILY_V4 ? 20 : 40;
	// Byte stores and scratch, not locals: this is inlined beside police(), whose stack is
	// at its limit.
	__s64 diff;
	if (n->p.family == FAMILY_V4) {
		if (bpf_skb_load_bytes(skb, n->in_l3, old, 28) < 0)
			return -1;
		__builtin_memcpy(new, old, 28);
		__builtin_memcpy(new + 12, n->to.dst, 4);
		__builtin_memcpy(new + 16, n->to.src, 4);
		new[20] = n->to.dport >> 8;
		new[21] = n->to.dport;
		new[22] = n->to.sport >> 8;
		new[23] = n->to.sport;
		// Pseudo-header addresses and ports, for the embedded L4 checksum.
		diff = bpf_csum_diff((__be32 *)(old + 12), 12, (__be32 *)(new + 12), 12, 0);
		new[10] = 0;
		new[11] = 0;
		__u16 c = csum_fold(bpf_csum_diff(0, 0, (__be32 *)new, 20, 0));
		new[10] = c; // as stored: the low byte first
		new[11] = c >> 8;
	} else {
		if (bpf_skb_load_bytes(skb, n->in_l3, old, 48) < 0)
			return -1;
		__builtin_memcpy(new, old, 48);
		__builtin_memcpy(new + 8, n->to.dst, 16);
		__builtin_memcpy(new + 24, n->to.src, 16);
		new[40] = n->to.dport >> 8;
		new[41] = n->to.dport;
		new[42] = n->to.sport >> 8;
		new[43] = n->to.sport;
		diff = bpf_csum_diff((__be32 *)(old + 8), 36, (__be32 *)(new + 8), 36, 0);
	}
	if (diff < 0)
		return -1;
	if (n->in.proto == 17) {
		__u16 c = old[l4 + 6] | (__u16)old[l4 + 7] << 8;
		if (c || n->p.family == FAMILY_V6) { // a zero IPv4 UDP checksum stays zero
			c = csum_adjust(c, diff);
			if (!c)
				c = 0xffff;
			new[l4 + 6] = c;
			new[l4 + 7] = c >> 8;
		}
	} else {
		// TCP's checksum is past the 8 bytes an error must quote: fixed when quoted.
		__u32 off = n->in_l3 + l4 + 16;
		__u8 *t = n->tail;
		if (bpf_skb_load_bytes(skb, off, t, 2) == 0) {
			__u16 o = t[0] | (__u16)t[1] << 8;
			__u16 c = csum_adjust(o, diff);
			t[2] = c;
			t[3] = c >> 8;
			if (bpf_l4_csum_replace(skb, icmp_csum, o, c, 2) < 0 ||
			    bpf_skb_store_bytes(skb, off, t + 2, 2, 0) < 0)
				return -1;
		}
	}
	__u32 len = n->p.family == FAMILY_V4 ? 28 : 48;
	diff = bpf_csum_diff((__be32 *)old, 48, (__be32 *)new, 48, 0);
	if (len == 28)
		diff = bpf_csum_diff((__be32 *)old, 28, (__be32 *)new, 28, 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, icmp_csum, 0, diff, 0) < 0)
		return -1;
	if (len == 28) {
		if (bpf_skb_store_bytes(skb, n->in_l3, new, 28, 0) < 0)
			return -1;
	} else if (bpf_skb_store_bytes(skb, n->in_l3, new, 48, 0) < 0) {
		return -1;
	}
	// The outer header: the embedded packet's old addresses become the translated ones.
	if (!addr_eq(n->p.src, n->in.dst))
		__builtin_memcpy(n->to.src, n->p.src, 16);
	if (!addr_eq(n->p.dst, n->in.src))
		__builtin_memcpy(n->to.dst, n->p.dst, 16);
	if (rewrite_addr(skb, n, 1, n->p.src, n->to.src) < 0)
		return -1;
	return rewrite_addr(skb, n, 0, n->p.dst, n->to.dst);
}

// nat_reject turns a packet to a frontend without backends into an ICMP port unreachable
// (ICMPv6 destination unreachable, port unreachable) quoting its IP header and 8 bytes of
// L4 header, from the frontend to the client, and sends it back: into the pod (the peer of
// its veth) or out of the interface it came in on. This is the nftables renderer's reject.
// An IPv4 header with options or an IPv6 extension header is dropped instead.
static __always_inline int nat_reject(struct __sk_buff *skb, struct nat *n, int external)
{
	__u8 mac[12];
	if (bpf_skb_load_bytes(skb, 0, mac, 12) < 0)
		return TC_ACT_SHOT;
	__u32 size;
	__u8 *b = n->buf;
	if (n->p.family == FAMILY_V4) {
		if (n->l4off != ETH_HLEN + 20)
			return TC_ACT_SHOT;
		size = 56; // IPv4 20, ICMP 8, quoted IPv4 20 + 8
		if (bpf_skb_load_bytes(skb, ETH_HLEN, b + 28, 28) < 0)
			return TC_ACT_SHOT;
		__builtin_memset(b, 0, 28);
		b[0] = 0x45;
		b[3] = 56;
		b[8] = 64;
		b[9] = 1;
		__builtin_memcpy(b + 12, n->p.dst, 4);
		__builtin_memcpy(b + 16, n->p.src, 4);
		b[20] = 3; // destination unreachable
		b[21] = 3; // port unreachable
		__u16 c = csum_fold(bpf_csum_diff(0, 0, (__be32 *)(b + 20), 36, 0));
		__builtin_memcpy(b + 22, &c, 2);
		c = csum_fold(bpf_csum_diff(0, 0, (__be32 *)b, 20, 0));
		__builtin_memcpy(b + 10, &c, 2);
	} else {
		if (n->l4off != ETH_HLEN + 40)
			return TC_ACT_SHOT;
		size = 96; // IPv6 40, ICMPv6 8, quoted IPv6 40 + 8
		if (bpf_skb_load_bytes(skb, ETH_HLEN, b + 48, 48) < 0)
			return TC_ACT_SHOT;
		__builtin_memset(b, 0, 48);
		b[0] = 0x60;
		b[5] = 56; // payload length
		b[6] = 58;
		b[7] = 64;
		__builtin_memcpy(b + 8, n->p.dst, 16);
		__builtin_memcpy(b + 24, n->p.src, 16);
		b[40] = 1; // destination unreachable
		b[41] = 4; // port unreachable
		__builtin_memset(n->tail, 0, 8);
		n->tail[3] = 56;
		n->tail[7] = 58;
		__s64 sum = bpf_csum_diff(0, 0, (__be32 *)(b + 8), 32, 0);
		sum = bpf_csum_diff(0, 0, (__be32 *)n->tail, 8, (__u32)sum);
		__u16 c = csum_fold(bpf_csum_diff(0, 0, (__be32 *)(b + 40), 56, (__u32)sum));
		__builtin_memcpy(b + 42, &c, 2);
	}
	if (bpf_skb_change_tail(skb, ETH_HLEN + size, 0) < 0)
		return TC_ACT_SHOT;
	__u8 swapped[12];
	__builtin_memcpy(swapped, mac + 6, 6);
	__builtin_memcpy(swapped + 6, mac, 6);
	if (bpf_skb_store_bytes(skb, 0, swapped, 12, 0) < 0)
		return TC_ACT_SHOT;
	if (size == 56) {
		if (bpf_skb_store_bytes(skb, ETH_HLEN, b, 56, 0) < 0)
			return TC_ACT_SHOT;
	} else if (bpf_skb_store_bytes(skb, ETH_HLEN, b, 96, 0) < 0) {
		return TC_ACT_SHOT;
	}
	if (external == NAT_REJECT_HOST) // sent by the host (hostnat.h): back in to it
		return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
	return external ? bpf_redirect(skb->ifindex, 0) : bpf_redirect_peer(skb->ifindex, 0);
}

// nat_in looks a packet up: a reply (NA_REPLY), a known flow (DNATed, NA_FWD), a new flow to a
// frontend (backend chosen, DNATed, NA_NEW), or nothing. It returns NAT_CONTINUE, or a
// verdict: TC_ACT_SHOT for a frontend without backends (and a packet that fails to rewrite).
// external says the packet came from outside the node (a data interface).
static __always_inline int nat_in(struct __sk_buff *skb, struct nat *n, int external)
{
	int r = nat_parse(skb, n, 1);
	if (r < 0)
		return NAT_CONTINUE;
	if (r > 0) { // a later fragment: its first fragment's rewrite
		if (n->action != NA_FWD)
			return NAT_CONTINUE;
		return rewrite_dst(skb, n) < 0 ? TC_ACT_SHOT : NAT_CONTINUE;
	}
	__u64 now = bpf_ktime_get_ns();
	struct nat_key k = {};
	nat_key_of(&k, &n->p);
	struct nat_val *v = nat_lookup(&k, now);
	if (v) {
		n->to = *v;
		n->redirect = (v->flags & NE_REDIRECT) != 0;
		if (v->flags & NE_REV) {
			n->action = NA_REPLY;
			if (addr_eq(v->dst, n->p.src)) // a hairpin reply: to the pod itself
				hairpin_view(n, v, 0);
			return NAT_CONTINUE;
		}
		n->action = NA_FWD;
		return rewrite_dst(skb, n) < 0 ? TC_ACT_SHOT : NAT_CONTINUE;
	}
	struct fe_key fk = {.family = n->p.family, .proto = n->p.proto, .port = n->p.dport};
	__builtin_memcpy(fk.addr, n->p.dst, 16);
	struct fe_val *fe = bpf_map_lookup_elem(&fsvc_v1, &fk);
	if (!fe)
		return NAT_CONTINUE;
	__u32 base;
	__u32 cnt = fe_range(fe, external, &base);
	if (cnt == 0) // no backend serves the frontend (for this client)
		return (fe->flags & FE_REJECT) ? nat_reject(skb, n, external) : TC_ACT_SHOT;
	int local = choose(n, fe, base, cnt, now);
	if (local < 0)
		return TC_ACT_SHOT;
	n->action = NA_NEW;
	__builtin_memcpy(n->to.src, n->p.src, 16);
	n->to.sport = n->p.sport;
	n->to.last_seen = now;
	if (external && !local && (fe->flags & FE_SNAT)) {
		__builtin_memcpy(n->to.src, fe->snat, 16);
		n->redirect = 1;
	} else if (!external && addr_eq(n->to.dst, n->p.src)) {
		__builtin_memcpy(n->to.src, n->p.dst, 16); // hairpin: the frontend is the source
	}
	// The reply entry: from the backend to the (new) source, rewritten back to the client
	// from the frontend. Replies to an external client leave through the node with a node
	// address as source, so they are redirected; so are replies to a pod from a frontend that
	// is a node address.
	n->back.flags = NE_REV | ((external || (fe->flags & FE_NODE)) ? NE_REDIRECT : 0);
	n->back.last_seen = now;
	__builtin_memcpy(n->back.src, n->p.dst, 16);
	__builtin_memcpy(n->back.dst, n->p.src, 16);
	n->back.sport = n->p.dport;
	n->back.dport = n->p.sport;
	if (n->redirect) {
		// The source port stays the client's unless another flow already has it.
		struct nat_key rk = {.family = n->p.family, .proto = n->p.proto, .sport = n->to.dport, .dport = n->to.sport};
		__builtin_memcpy(rk.src, n->to.dst, 16);
		__builtin_memcpy(rk.dst, n->to.src, 16);
		for (int i = 0; i < 4 && bpf_map_lookup_elem(&fnat_v1, &rk); i++) {
			rk.dport = SNAT_PORT_MIN + bpf_get_prandom_u32() % (65536 - SNAT_PORT_MIN);
			n->to.sport = rk.dport;
		}
	}
	n->to.flags = n->redirect ? NE_REDIRECT : 0;
	return rewrite_dst(skb, n) < 0 ? TC_ACT_SHOT : NAT_CONTINUE;
}

// nat_out finishes a packet that policy let through (verdict TC_ACT_OK): records a new flow,
// rewrites the source (SNAT, hairpin) or a reply's addresses, and redirects when needed.
static __always_inline int nat_out(struct __sk_buff *skb, struct nat *n, int verdict)
{
	if (!n || verdict != TC_ACT_OK)
		return verdict;
	if (n->action != NA_NONE || n->view)
		nat_frag_record(n, n->action);
	if (n->action == NA_NONE)
		return verdict;
	if (n->action == NA_ICMP) {
		if (nat_icmp_out(skb, n) < 0)
			return TC_ACT_SHOT;
		return n->redirect ? nat_redirect(skb, n) : verdict;
	}
	if (n->action == NA_NEW && n->p.frag != FRAG_LATER) {
		struct nat_key k = {};
		nat_key_of(&k, &n->p);
		bpf_map_update_elem(&fnat_v1, &k, &n->to, BPF_ANY);
		struct nat_key rk = {.family = n->p.family, .proto = n->p.proto, .sport = n->to.dport, .dport = n->to.sport};
		__builtin_memcpy(rk.src, n->to.dst, 16);
		__builtin_memcpy(rk.dst, n->to.src, 16);
		bpf_map_update_elem(&fnat_v1, &rk, &n->back, BPF_ANY);
	}
	if (n->action == NA_REPLY) {
		if (rewrite_dst(skb, n) < 0)
			return TC_ACT_SHOT;
	}
	if (rewrite_src(skb, n) < 0)
		return TC_ACT_SHOT;
	if (n->redirect)
		return nat_redirect(skb, n);
	return verdict;
}

// nat_workload reports whether the interface is a workload's (NAT applies; host endpoints
// are left alone).
static __always_inline int nat_workload(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&feps_v2, &ifindex);
	return ep && !(ep->flags & EP_HOST);
}

// nat_from_wep runs before a workload's egress policy: DNAT, or note a reply.
static __always_inline int nat_from_wep(struct __sk_buff *skb, struct nat *n)
{
	if (!n || !nat_workload(skb))
		return NAT_CONTINUE;
	int r = nat_in(skb, n, 0);
	if (r == NAT_CONTINUE)
		nat_icmp_in(skb, n, 0);
	return r;
}

// nat_to_wep runs before a workload's ingress policy: a reply rewritten at its backend's
// interface (the client's forward entry matches it reversed) passes; a reply still to be
// rewritten is noted.
static __always_inline int nat_to_wep(struct __sk_buff *skb, struct nat *n)
{
	if (!n || !nat_workload(skb))
		return NAT_CONTINUE;
	int r = nat_parse(skb, n, 0);
	if (r < 0) {
		if (nat_icmp_in(skb, n, 1)) {
			count(skb->ifindex, DIR_TO_WEP, C_RELATED);
			return TC_ACT_OK;
		}
		n->redirect = 0; // going to the pod
		return NAT_CONTINUE;
	}
	if (r > 0) { // a later fragment: as its first fragment
		if (n->action == NA_PASS) {
			count(skb->ifindex, DIR_TO_WEP, C_FRAGMENT);
			return TC_ACT_OK;
		}
		return NAT_CONTINUE;
	}
	__u64 now = bpf_ktime_get_ns();
	struct nat_key k = {};
	nat_key_of(&k, &n->p);
	struct nat_val *v = nat_lookup(&k, now);
	if (v) {
		if (!(v->flags & NE_REV))
			return NAT_CONTINUE;
		n->to = *v;
		n->action = NA_REPLY;
		n->redirect = 0; // going to the pod: routing already chose this interface
		return NAT_CONTINUE;
	}
	struct nat_key fk = {.family = n->p.family, .proto = n->p.proto, .sport = n->p.dport, .dport = n->p.sport};
	__builtin_memcpy(fk.src, n->p.dst, 16);
	__builtin_memcpy(fk.dst, n->p.src, 16);
	v = nat_lookup(&fk, now);
	if (v && !(v->flags & NE_REV)) {
		nat_frag_record(n, NA_PASS);
		count(skb->ifindex, DIR_TO_WEP, C_ESTABLISHED);
		return TC_ACT_OK;
	}
	if (v && addr_eq(v->dst, n->p.dst)) // a hairpin packet: its reply entry leads back here
		hairpin_view(n, v, 1);
	return NAT_CONTINUE;
}

// felis_data_in runs on TC ingress of the node's data interfaces: services reached from
// outside the node, and replies of flows it NATed.
// Packets it does not redirect or drop go on to the interface's next program (a host
// endpoint's policy): TC_ACT_UNSPEC is TCX_NEXT, and the next filter with clsact.
SEC("tc")
int felis_data_in(struct __sk_buff *skb)
{
	// A host endpoint's own program NATs, after its untracked and preDNAT stages (hep.h).
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&feps_v2, &ifindex);
	if (ep && (ep->flags & EP_HOST))
		return TC_ACT_UNSPEC;
	struct nat *n = nat_scratch();
	if (!n)
		return TC_ACT_UNSPEC;
	int r = nat_in(skb, n, 1);
	if (r == NAT_CONTINUE) {
		nat_icmp_in(skb, n, 0);
		r = nat_out(skb, n, TC_ACT_OK);
	}
	return r == TC_ACT_OK ? TC_ACT_UNSPEC : r;
}
