// SPDX-License-Identifier: Apache-2.0
// Conntrack for the felis TC programs: the flow map fct_v2 (flows policy allowed, so their
// packets and replies pass without policy, with TCP state and Felix's per-state timeouts) and the fragment map ffrag_v1 (a fragmented
// datagram's later fragments follow its first fragment's verdict). Included by policy.c
// after struct pkt and parse.h.

#ifndef FELIS_CT_H
#define FELIS_CT_H

#define SEC_NS 1000000000ULL

// Idle timeouts: Felix's BPF-mode defaults (BPFConntrackTimeouts, Calico v3.31). An entry
// younger than the creation grace period never expires.
#define CT_CREATION_GRACE (10 * SEC_NS)
#define CT_TCP_SYN_SENT (20 * SEC_NS)
#define CT_TCP_ESTABLISHED (3600 * SEC_NS)
#define CT_TCP_FINS_SEEN (30 * SEC_NS)
#define CT_TCP_RESET_SEEN (40 * SEC_NS)
#define CT_UDP (60 * SEC_NS)
#define CT_GENERIC (600 * SEC_NS)
#define CT_ICMP (5 * SEC_NS)

// Flow flags (ct_val.flags).
#define CT_F_ESTABLISHED 1 // the reply side answered (TCP: a reply with ACK; picked up mid-flow)
#define CT_F_FIN_FWD 2     // FIN seen from the side that opened the flow
#define CT_F_FIN_REV 4     // FIN seen from the other side
#define CT_F_RST 8         // RST seen
#define CT_F_FINS (CT_F_FIN_FWD | CT_F_FIN_REV)

// TCP flags.
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_URG 0x20

// A first fragment's verdict is kept this long for the fragments that follow it: the
// kernel's reassembly timeout (net.ipv4.ipfrag_time, net.ipv6.ip6frag_time).
#define FRAG_TIMEOUT_NS (30ULL * 1000000000ULL)

struct ct_key {
	__u32 ifindex;
	__u8 dir;
	__u8 proto;
	__u8 family;
	__u8 icmp; // ICMP: the packet's type (echo: tuple ports are the echo ID); else 0
	__u16 sport;
	__u16 dport;
	__u8 src[16];
	__u8 dst[16];
};

struct ct_val {
	__u64 created;   // bpf_ktime_get_ns
	__u64 last_seen; // bpf_ktime_get_ns
	__u32 flags;     // CT_F_*
	__u32 pad;
};

// frag_key names one fragmented datagram at one hook (RFC 791 / RFC 8200: source,
// destination, protocol and identification).
struct frag_key {
	__u32 ifindex;
	__u8 dir;
	__u8 family;
	__u8 proto; // IPv4: the protocol; IPv6: the fragment header's next header
	__u8 pad;
	__u32 id;
	__u8 src[16];
	__u8 dst[16];
};

// frag_val: the first fragment passed (only passed datagrams are recorded) and its ports.
struct frag_val {
	__u64 seen;
	__u16 sport;
	__u16 dport;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
} fct_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
} ffrag_v1 SEC(".maps");

// echo_request maps an echo reply type to its request's; 0 for every other type.
static __always_inline __u8 echo_request(struct pkt *p)
{
	if (p->family == FAMILY_V4 && p->icmp_type == 0)
		return 8;
	if (p->family == FAMILY_V6 && p->icmp_type == 129)
		return 128;
	return 0;
}

// ct_fill builds a conntrack key: the flow as seen (reverse=0), or the flow this packet would
// be the reply of (reverse=1). ICMP flows are echo exchanges keyed by their ID: only an echo
// reply is the reply of an echo request; other ICMP never matches a reverse entry.
static __always_inline void ct_fill(struct ct_key *k, struct pkt *p, __u32 ifindex, __u8 dir, int reverse)
{
	k->ifindex = ifindex;
	k->dir = dir;
	k->proto = p->proto;
	k->family = p->family;
	if (p->has_icmp) {
		k->icmp = reverse ? echo_request(p) : p->icmp_type;
		if (reverse && !k->icmp)
			k->icmp = 255; // no entry has this type
		k->sport = p->icmp_id;
		k->dport = p->icmp_id;
		__builtin_memcpy(k->src, reverse ? p->dst : p->src, 16);
		__builtin_memcpy(k->dst, reverse ? p->src : p->dst, 16);
		return;
	}
	if (reverse) {
		k->sport = p->dport;
		k->dport = p->sport;
		__builtin_memcpy(k->src, p->dst, 16);
		__builtin_memcpy(k->dst, p->src, 16);
	} else {
		k->sport = p->sport;
		k->dport = p->dport;
		__builtin_memcpy(k->src, p->src, 16);
		__builtin_memcpy(k->dst, p->dst, 16);
	}
}

// ct_expired applies Felix's expiry rule (felix/bpf/conntrack EntryExpired) to a flow of
// protocol proto: TCP by state (RST seen, FINs seen both ways, established, else SYN sent),
// UDP, ICMP and anything else by its own idle timeout.
static __always_inline int ct_expired(struct ct_val *v, __u8 proto, __u64 now)
{
	if (now - v->created < CT_CREATION_GRACE)
		return 0;
	__u64 age = now - v->last_seen;
	switch (proto) {
	case 6:
		if ((v->flags & CT_F_RST) && age > CT_TCP_RESET_SEEN)
			return 1;
		if ((v->flags & CT_F_FINS) == CT_F_FINS && age > CT_TCP_FINS_SEEN)
			return 1;
		if (v->flags & CT_F_ESTABLISHED)
			return age > CT_TCP_ESTABLISHED;
		return age > CT_TCP_SYN_SENT;
	case 17:
		return age > CT_UDP;
	case 1:
	case 58:
		return age > CT_ICMP;
	default:
		return age > CT_GENERIC;
	}
}

// ct_get returns the flow k if it is known and not expired.
static __always_inline struct ct_val *ct_get(struct ct_key *k, __u64 now)
{
	struct ct_val *v = bpf_map_lookup_elem(&fct_v2, k);
	if (!v || ct_expired(v, k->proto, now))
		return 0;
	return v;
}

// ct_alive says whether the flow is known and not expired, without refreshing it (an ICMP
// error does not keep its flow alive, as in nf_conntrack).
static __always_inline int ct_alive(struct ct_key *k, __u64 now)
{
	return ct_get(k, now) != 0;
}

// tcp_valid_flags: nf_conntrack's valid TCP flag combinations (PSH, ECE and CWR ignored);
// any other combination is INVALID there, with or without a flow, and the netfilter
// dataplanes drop INVALID packets before policy.
static __always_inline int tcp_valid_flags(__u8 flags)
{
	switch (flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG)) {
	case TCP_SYN:
	case TCP_SYN | TCP_URG:
	case TCP_SYN | TCP_ACK:
	case TCP_RST:
	case TCP_RST | TCP_ACK:
	case TCP_FIN | TCP_ACK:
	case TCP_FIN | TCP_ACK | TCP_URG:
	case TCP_ACK:
	case TCP_ACK | TCP_URG:
		return 1;
	}
	return 0;
}

// tcp_may_open says whether a TCP packet with no flow may start one (then policy decides):
// a SYN, or — nf_conntrack's loose pickup (nf_conntrack_tcp_loose=1, the default) — an ACK
// without SYN, FIN or RST, a packet of a connection already under way. nf_conntrack marks a
// SYN-ACK, FIN or RST with no flow INVALID.
static __always_inline int tcp_may_open(__u8 flags)
{
	if (flags & TCP_RST)
		return 0;
	if (flags & TCP_SYN)
		return !(flags & TCP_ACK);
	return (flags & (TCP_FIN | TCP_ACK)) == TCP_ACK;
}

// icmp_error says whether p is an ICMP error, which embeds the header of the packet it reports:
// IPv4 destination unreachable (fragmentation needed included), time exceeded, parameter
// problem; IPv6 destination unreachable, packet too big, time exceeded, parameter problem.
static __always_inline int icmp_error(struct pkt *p)
{
	if (!p->has_icmp)
		return 0;
	__u8 t = p->icmp_type;
	if (p->family == FAMILY_V4)
		return t == 3 || t == 11 || t == 12;
	return t >= 1 && t <= 4;
}

// ct_related says whether the ICMP error p reports a packet of a known flow (conntrack's
// RELATED). The embedded packet travelled the other way through this interface: it belongs
// to a flow allowed at the other hook, or is the reply of one allowed at this hook.
static __always_inline int ct_related(struct __sk_buff *skb, struct pkt *p, __u32 ifindex, __u8 dir, __u64 now)
{
	struct pkt in = {};
	__u32 off = p->l4off + 8;
	int r = p->family == FAMILY_V4 ? parse_ip4(skb, off, &in) : parse_ip6(skb, off, &in);
	if (r < 0 || in.frag == FRAG_LATER || parse_l4(skb, &in) < 0)
		return 0;
	if (in.has_icmp && icmp_error(&in))
		return 0; // errors about errors are never related (no flow is an error)
	struct ct_key fwd = {}, rev = {};
	ct_fill(&fwd, &in, ifindex, dir ^ 1, 0);
	ct_fill(&rev, &in, ifindex, dir, 1);
	return ct_alive(&fwd, now) || ct_alive(&rev, now);
}

// Results of ct_lookup.
#define CT_NEW 0
#define CT_ESTABLISHED 1
#define CT_RELATED 2
#define CT_INVALID 3

// ct_lookup says whether p belongs to a known flow at this hook (a flow allowed here, or the
// reply of one allowed at the other hook of the same interface), is an ICMP error related to
// one, is new (policy decides), or is invalid (dropped, as the netfilter dataplanes drop
// conntrack's INVALID: a TCP flag combination nf_conntrack rejects, a TCP packet that cannot
// open a flow and has none, or an ICMP error that relates to no known flow: nf_conntrack
// attaches no entry to it, whether its embedded packet is unknown, truncated or itself an
// error). A hit refreshes the flow and records its TCP state. A
// SYN from the opening side of a flow that was reset or closed by FINs both ways reopens it:
// it is new again (nf_conntrack: TIME_WAIT/CLOSE -> SYN_SENT).
static __always_inline int ct_lookup(struct __sk_buff *skb, struct pkt *p, __u32 ifindex, __u8 dir, __u64 now)
{
	if (icmp_error(p)) // conntrack finds no flow for an unrelated error: INVALID
		return ct_related(skb, p, ifindex, dir, now) ? CT_RELATED : CT_INVALID;
	__u8 f = p->tcp_flags;
	int tcp = p->proto == 6;
	if (tcp && !tcp_valid_flags(f))
		return CT_INVALID;
	struct ct_key fwd = {}, rev = {};
	ct_fill(&fwd, p, ifindex, dir, 0);
	struct ct_val *v = ct_get(&fwd, now);
	int reply = 0;
	if (!v) {
		ct_fill(&rev, p, ifindex, dir ^ 1, 1);
		v = ct_get(&rev, now);
		reply = 1;
	}
	if (!v)
		return !tcp || tcp_may_open(f) ? CT_NEW : CT_INVALID;
	__u32 add = 0;
	if (tcp) {
		if (!reply && (f & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
		    ((v->flags & CT_F_RST) || (v->flags & CT_F_FINS) == CT_F_FINS))
			return CT_NEW;
		if (f & TCP_RST)
			add |= CT_F_RST;
		if (f & TCP_FIN)
			add |= reply ? CT_F_FIN_REV : CT_F_FIN_FWD;
		if (reply && (f & TCP_ACK))
			add |= CT_F_ESTABLISHED;
	} else if (reply) {
		add |= CT_F_ESTABLISHED;
	}
	// Plain stores: two CPUs racing on one flow may lose a flag bit, which only leaves the
	// flow on a longer timeout.
	if ((v->flags | add) != v->flags)
		v->flags |= add;
	v->last_seen = now;
	return CT_ESTABLISHED;
}

// ct_create records a flow policy allowed. ICMP errors are not flows: one that policy
// allows is not recorded.
static __always_inline void ct_create(struct pkt *p, __u32 ifindex, __u8 dir, __u64 now)
{
	if (icmp_error(p))
		return;
	struct ct_key k = {};
	ct_fill(&k, p, ifindex, dir, 0);
	struct ct_val v = {.created = now, .last_seen = now};
	// A TCP flow opened by a SYN waits for its reply; one picked up mid-flow (an ACK) is
	// established, as nf_conntrack's loose pickup makes it.
	if (p->proto == 6 && !(p->tcp_flags & TCP_SYN))
		v.flags = CT_F_ESTABLISHED;
	bpf_map_update_elem(&fct_v2, &k, &v, BPF_ANY);
}

static __always_inline void frag_fill(struct frag_key *k, struct pkt *p, __u32 ifindex, __u8 dir)
{
	k->ifindex = ifindex;
	k->dir = dir;
	k->family = p->family;
	k->proto = p->frag_proto;
	k->id = p->frag_id;
	__builtin_memcpy(k->src, p->src, 16);
	__builtin_memcpy(k->dst, p->dst, 16);
}

// frag_pass records that a first fragment passed, so the fragments that follow it pass too.
// Other packets are not recorded.
static __always_inline void frag_pass(struct pkt *p, __u32 ifindex, __u8 dir, __u64 now)
{
	if (p->frag != FRAG_FIRST)
		return;
	struct frag_key k = {};
	frag_fill(&k, p, ifindex, dir);
	struct frag_val v = {.seen = now, .sport = p->sport, .dport = p->dport};
	bpf_map_update_elem(&ffrag_v1, &k, &v, BPF_ANY);
}

// frag_follows says whether a non-first fragment's first fragment passed at this hook
// within FRAG_TIMEOUT_NS. The netfilter dataplanes reassemble before policy, so a datagram
// is decided as a whole; here the first fragment (the one with the ports) is decided and the
// rest follow it. A fragment that arrives before its first fragment is dropped.
static __always_inline int frag_follows(struct pkt *p, __u32 ifindex, __u8 dir, __u64 now)
{
	struct frag_key k = {};
	frag_fill(&k, p, ifindex, dir);
	struct frag_val *v = bpf_map_lookup_elem(&ffrag_v1, &k);
	return v && now - v->seen <= FRAG_TIMEOUT_NS;
}

#endif
