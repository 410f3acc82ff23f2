// SPDX-License-Identifier: Apache-2.0
// felis TC policy program: one object attached to both TC hooks of every workload interface
// (host side of the veth). It interprets each endpoint's policy program from maps: a flat
// instruction stream (tests in conjunctive normal form, then an action) per direction, stored
// in a region of fixed-size blocks of an array map and walked a block per bpf_loop step. IP
// sets live in one LPM trie keyed by (set, family, protocol, port, prefix).
// A conntrack map lets established flows and their replies through without policy.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FAMILY_V4 4
#define FAMILY_V6 6

// Instruction kinds.
#define K_IPVER 1
#define K_PROTO 2
#define K_ICMP 3
#define K_SET 4
#define K_PORT 5
#define K_ACTION 16

// Instruction flags.
#define F_NEG 1       // negate the test's result
#define F_END 2       // the test closes its clause (clause = OR of its tests)
#define F_SRC 4       // the test looks at the source side (else destination)
#define F_WITHPORT 8  // set lookup with the packet's protocol and port (named-port sets)
#define F_HASCODE 16  // ICMP test also matches the code

// Actions.
#define A_NEXT 0
#define A_ALLOW 1
#define A_DENY 2
#define A_PASS 3
#define A_RETURN 4 // end the program without a verdict (host endpoint stages fall through)

// Directions (index into the endpoint's programs). DIR_TO_WEP is the endpoint's ingress
// policy (TC egress of the host-side veth); DIR_FROM_WEP its egress policy (TC ingress).
#define DIR_TO_WEP 0
#define DIR_FROM_WEP 1

// Counter kinds.
#define C_ALLOW 0
#define C_DENY 1
#define C_ESTABLISHED 2
#define C_SPOOF 3
#define C_EXEMPT 4
#define C_FRAGMENT 5 // a later fragment that followed its first fragment's pass
#define C_RELATED 6  // an ICMP error about a known flow
#define C_INVALID 7  // conntrack INVALID (TCP, unrelated ICMP error): dropped before policy

// Endpoint flags.
#define EP_TO_HOST_DENY 1 // drop allowed traffic to the host itself (DefaultEndpointToHostAction Drop)
#define EP_HOST 2         // a host endpoint (see hep.h)
#define EP_HOST_NO_NORMAL 4 // a host endpoint without normal policy (lo: accepted before it in nftables)

#define AF_INET 2
#define AF_INET6 10

struct set_key {
	__u32 prefixlen;
	__u32 set;
	__u8 family;
	__u8 proto;
	__u16 port; // host order
	__u8 addr[16];
};

struct insn {
	__u8 kind;
	__u8 flags;
	__u8 a; // ip version, protocol, ICMP type or action
	__u8 b; // ICMP code
	__u16 min;
	__u16 max;
	__u32 set;
	__u32 next; // tests: pc of the next rule; pass: pc of the next tier or profile
};

// Programs live in fprog_v2 as regions of consecutive blocks: instruction pc of a program
// starting at block base is insn[pc % BLOCK_INSNS] of block base + pc / BLOCK_INSNS, so one
// array lookup serves up to BLOCK_INSNS steps.
#define BLOCK_SHIFT 4
#define BLOCK_INSNS (1 << BLOCK_SHIFT)
#define PROG_BLOCKS 32768 // 524,288 instructions, 8 MiB

struct block {
	struct insn insn[BLOCK_INSNS];
};

struct endpoint {
	__u32 prog[2]; // program IDs (content hashes): what the applier wrote, for adoption and inspection
	__u32 len[2];
	__u32 spoof_set; // allowed source addresses (anti-spoofing), a set in fsets_v1
	__u32 flags;
	__u32 base[2]; // first block of each program in fprog_v2
};

struct counter_key {
	__u32 ifindex;
	__u32 dir;
	__u32 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4194304);
	__type(key, struct set_key);
	__type(value, __u8);
} fsets_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PROG_BLOCKS);
	__type(key, __u32);
	__type(value, struct block);
} fprog_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct endpoint);
} feps_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct counter_key);
	__type(value, __u64);
} fcnt_v1 SEC(".maps");

struct pkt {
	__u8 family;
	__u8 proto;
	__u8 has_icmp;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 icmp_id;
	__u16 sport;
	__u16 dport;
	__u8 src[16];
	__u8 dst[16];
	__u8 frag;       // FRAG_NONE, FRAG_FIRST or FRAG_LATER (parse.h)
	__u8 frag_proto; // fragments: the protocol (IPv6: the fragment header's next header)
	__u8 tcp_flags;
	__u32 frag_id;
	__u32 l4off; // offset of the L4 header in the frame
};

#include "parse.h"
#include "ct.h"

struct walk {
	struct pkt *p;
	__u32 base; // first block of the program
	__u32 len;
	__u32 pc;
	__u8 acc; // the open clause has a true test
	__u8 verdict;
};

// SET_MEMO is the number of set lookups a walk remembers (direct-mapped by set ID and side):
// rules often test the same set (a namespace's pods, a named port), and a repeated LPM
// lookup costs ~15 ns where the memo costs a compare. The memo lives in a per-CPU scratch
// map (the stack is at its 512-byte limit) and is cleared at the start of each walk.
#define SET_MEMO 8

struct memo {
	__u8 key[SET_MEMO]; // F_SRC | F_WITHPORT of the lookup, | 1: the entry is valid
	__u32 set[SET_MEMO];
	__u8 hit[SET_MEMO];
	struct set_key lookup; // the LPM key of a walk's set test (off the stack, too)
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct memo);
} fmemo SEC(".maps");

static __always_inline void count(__u32 ifindex, __u32 dir, __u32 kind)
{
	struct counter_key k = {.ifindex = ifindex, .dir = dir, .kind = kind};
	__u64 *v = bpf_map_lookup_elem(&fcnt_v1, &k);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return;
	}
	__u64 one = 1;
	bpf_map_update_elem(&fcnt_v1, &k, &one, BPF_NOEXIST);
}

// set_lookup fills *k (every field) for the packet's address on one side and looks it up.
static __always_inline int set_lookup(struct set_key *k, __u32 set, struct pkt *p, int src, int withport)
{
	k->set = set;
	k->family = p->family;
	k->proto = withport ? p->proto : 0;
	k->port = withport ? (src ? p->sport : p->dport) : 0;
	__builtin_memcpy(k->addr, src ? p->src : p->dst, 16);
	k->prefixlen = 64 + (p->family == FAMILY_V4 ? 32 : 128);
	return bpf_map_lookup_elem(&fsets_v1, k) != 0;
}

static __always_inline int in_set(__u32 set, struct pkt *p, int src, int withport)
{
	struct set_key k = {};
	return set_lookup(&k, set, p, src, withport);
}

// run_block is one bpf_loop step: it executes the instructions of the block holding w->pc
// until the walk leaves the block (falls through to the next one or jumps forward) or ends.
// Jumps only go forward and stay below the program's length, so every step consumes at least
// one instruction and the walk ends within len steps.
static long run_block(__u64 index, void *data)
{
	struct walk *w = data;
	__u32 pc = w->pc;
	__u32 len = w->len;
	if (pc >= len)
		goto deny;
	__u32 blk = w->base + (pc >> BLOCK_SHIFT);
	struct block *b = bpf_map_lookup_elem(&fprog_v2, &blk);
	if (!b)
		goto deny;
	blk = 0; // now the scratch map's key: one stack slot less
	struct memo *memo = bpf_map_lookup_elem(&fmemo, &blk);
	if (!memo)
		goto deny;
	if (index == 0)
		__builtin_memset(memo->key, 0, sizeof(memo->key));
	struct pkt *p = w->p;
	__u8 acc = w->acc;
	__u32 next_block = (pc | (BLOCK_INSNS - 1)) + 1;
	// The slot is the loop counter, a constant per iteration for the verifier: indexing by
	// pc would make pc precise and every path through the block a state of its own. A jump
	// forward within the block skips the slots before its target.
#pragma unroll
	for (__u32 j = 0; j < BLOCK_INSNS; j++) {
		if (j != (pc & (BLOCK_INSNS - 1)))
			continue;
		// Opaque per iteration, so clang does not hoist every field address out of the loop
		// and spill them: the stack is at its 512-byte limit across the calls.
		asm volatile("" : "+r"(memo), "+r"(p));
		struct insn *in = &b->insn[j];
		int r = 0;
		switch (in->kind) {
		case K_ACTION:
			acc = 0;
			switch (in->a) {
			case A_ALLOW:
			case A_DENY:
			case A_RETURN:
				w->verdict = in->a;
				return 1;
			case A_PASS:
				if (in->next <= pc) // never loop backwards
					goto deny;
				pc = in->next;
				goto moved;
			default:
				pc++;
				goto moved;
			}
		case K_IPVER:
			r = p->family == in->a;
			break;
		case K_PROTO:
			r = p->proto == in->a;
			break;
		case K_ICMP:
			r = p->has_icmp && p->icmp_type == in->a &&
			    (!(in->flags & F_HASCODE) || p->icmp_code == in->b);
			break;
		case K_SET: {
			__u8 key = (in->flags & (F_SRC | F_WITHPORT)) | 1;
			__u32 m = (in->set ^ key) & (SET_MEMO - 1);
			if (memo->key[m] == key && memo->set[m] == in->set) {
				r = memo->hit[m];
				break;
			}
			r = set_lookup(&memo->lookup, in->set, p, in->flags & F_SRC, in->flags & F_WITHPORT);
			memo->set[m] = in->set;
			memo->key[m] = key;
			memo->hit[m] = r;
			break;
		}
		case K_PORT: {
			__u16 port = (in->flags & F_SRC) ? p->sport : p->dport;
			r = port >= in->min && port <= in->max;
			break;
		}
		default:
			goto deny;
		}
		if (in->flags & F_NEG)
			r = !r;
		acc |= r;
		if (in->flags & F_END) {
			if (!acc) {
				if (in->next <= pc)
					goto deny;
				pc = in->next;
				goto moved;
			}
			acc = 0;
		}
		pc++;
	moved:
		if (pc >= len)
			goto deny;
		if (pc >= next_block)
			break;
	}
	w->pc = pc;
	w->acc = acc;
	return 0;
deny:
	w->verdict = A_DENY;
	return 1;
}

// walk_program runs the program of len instructions starting at block base of fprog_v2 on
// the packet and returns its verdict. It is a global function so that the verifier checks it
// (and run_block) once, not at each of its call sites (both hooks, every host endpoint stage).
__attribute__((noinline)) int walk_program(struct pkt *p, __u32 base, __u32 len)
{
	if (!p)
		return A_DENY;
	struct walk w = {.p = p, .base = base, .len = len, .verdict = A_DENY};
	bpf_loop(len + 1, run_block, &w, 0);
	return w.verdict;
}

// ND and MLD are exempt from policy and anti-spoofing, as in the other dataplanes (they are
// untracked by conntrack there).
static __always_inline int exempt(struct pkt *p)
{
	if (p->family != FAMILY_V6 || p->proto != 58 || !p->has_icmp)
		return 0;
	__u8 t = p->icmp_type;
	return (t >= 130 && t <= 137) || t == 143;
}

// host_addr says whether the routing table delivers the packet to the host itself rather than
// forwarding it: a local (or broadcast, multicast, unroutable) destination, or any destination
// when forwarding is off on the interface (the host is then the only place it can go). With
// src set it asks the same of the source address (the packet was sent by the host itself).
static __always_inline int host_addr(struct __sk_buff *skb, struct pkt *p, int src)
{
	struct bpf_fib_lookup f = {};
	f.ifindex = skb->ifindex;
	f.l4_protocol = p->proto;
	f.sport = bpf_htons(p->sport);
	f.dport = bpf_htons(p->dport);
	if (p->family == FAMILY_V4) {
		f.family = AF_INET;
		__builtin_memcpy(&f.ipv4_src, src ? p->dst : p->src, 4);
		__builtin_memcpy(&f.ipv4_dst, src ? p->src : p->dst, 4);
	} else {
		f.family = AF_INET6;
		__builtin_memcpy(f.ipv6_src, src ? p->dst : p->src, 16);
		__builtin_memcpy(f.ipv6_dst, src ? p->src : p->dst, 16);
	}
	long r = bpf_fib_lookup(skb, &f, sizeof(f), 0);
	return r == BPF_FIB_LKUP_RET_NOT_FWDED || r == BPF_FIB_LKUP_RET_FWD_DISABLED;
}

#include "nat.h"
#include "hostnat.h"
#include "hep.h"

static __always_inline int police(struct __sk_buff *skb, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&feps_v2, &ifindex);
	if (!ep)
		return TC_ACT_OK; // not a felis endpoint
	struct pkt p = {};
	int r = nat_reuse(&p) ? 0 : parse(skb, &p); // nat.h may have parsed it already
	if (r > 0)
		return TC_ACT_OK;
	if (r < 0) {
		count(ifindex, dir, C_DENY);
		return TC_ACT_SHOT;
	}
	if (exempt(&p) && !(ep->flags & EP_HOST)) { // host endpoints: see hep_before_ct
		count(ifindex, dir, C_EXEMPT);
		return TC_ACT_OK;
	}
	struct hep_state hs = {};
	if (ep->flags & EP_HOST) {
		r = hep_before_ct(skb, ifindex, dir, &p, &hs);
		if (r != HEP_CONTINUE)
			return r;
	} else if (dir == DIR_FROM_WEP && !in_set(ep->spoof_set, &p, 1, 0)) {
		count(ifindex, dir, C_SPOOF);
		return TC_ACT_SHOT;
	}
	__u64 now = bpf_ktime_get_ns();
	if (p.frag == FRAG_LATER) {
		// At a host endpoint a later fragment gets its first fragment's service NAT first:
		// that one was recorded here with its translated destination.
		if ((ep->flags & EP_HOST) && dir == DIR_FROM_WEP) {
			r = hep_nat_in(skb, ep, &p);
			if (r != HEP_CONTINUE)
				return r;
		}
		if (frag_follows(&p, ifindex, dir, now)) {
			count(ifindex, dir, C_FRAGMENT);
			return TC_ACT_OK;
		}
		count(ifindex, dir, C_DENY);
		return TC_ACT_SHOT;
	}
	int ct = hs.untracked ? CT_NEW : ct_lookup(skb, &p, ifindex, dir, now); // untracked: never a known flow
	if (ep->flags & EP_HOST) {
		r = hep_known(skb, ep, dir, &p, &hs, &ct, now);
		if (r != HEP_CONTINUE)
			return r;
	}
	if (ct == CT_INVALID) {
		count(ifindex, dir, C_INVALID);
		return TC_ACT_SHOT;
	}
	if (ct != CT_NEW) {
		frag_pass(&p, ifindex, dir, now);
		count(ifindex, dir, ct == CT_RELATED ? C_RELATED : C_ESTABLISHED);
		return TC_ACT_OK;
	}
	if (ep->flags & EP_HOST) {
		r = hep_after_ct(skb, ifindex, dir, &p, ep, &hs, now);
		if (r != HEP_CONTINUE)
			return r;
	}
	__u32 d = dir & 1;
	int verdict = walk_program(&p, ep->base[d], ep->len[d]);
	if (verdict == A_ALLOW && dir == DIR_FROM_WEP && (ep->flags & EP_TO_HOST_DENY) && host_addr(skb, &p, 0))
		verdict = A_DENY; // allowed by egress policy, but not towards the host
	if (verdict == A_ALLOW) {
		ct_create(&p, ifindex, dir, now);
		frag_pass(&p, ifindex, dir, now);
		count(ifindex, dir, C_ALLOW);
		return TC_ACT_OK;
	}
	count(ifindex, dir, C_DENY);
	return TC_ACT_SHOT;
}

// to_wep runs on the TC egress hook of the host-side veth: packets going to the workload.
SEC("tc")
int felis_to_wep(struct __sk_buff *skb)
{
	struct nat *n = nat_scratch();
	int r = nat_to_wep(skb, n);
	if (r != NAT_CONTINUE)
		return r;
	return nat_out(skb, n, police(skb, DIR_TO_WEP));
}

// from_wep runs on the TC ingress hook of the host-side veth: packets from the workload.
SEC("tc")
int felis_from_wep(struct __sk_buff *skb)
{
	struct nat *n = nat_scratch();
	int r = nat_from_wep(skb, n);
	if (r != NAT_CONTINUE)
		return r;
	return nat_out(skb, n, police(skb, DIR_FROM_WEP));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
