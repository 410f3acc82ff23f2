// SPDX-License-Identifier: Apache-2.0
// felis host endpoints: the untracked (doNotTrack), preDNAT and forward (applyOnForward)
// stages around a host endpoint's normal policy. Included by policy.c after the interpreter
// (walk_program), parse.h and ct.h; police() calls hep_before_ct before the
// conntrack lookup and hep_after_ct after it.
//
// The stages follow the nftables dataplane's hooks, so both give the same verdicts:
//
//   TC ingress (packet arriving on the interface):
//     untracked ingress   every packet, before conntrack (raw prerouting). Allow: the packet
//                         is untracked: no conntrack lookup or record, normal policy skipped
//                         (forward policy still applies). Deny: drop.
//     conntrack           a known flow (tracked packets only) passes.
//     preDNAT ingress     new flows, to the host or forwarded (mangle prerouting). Deny: drop.
//     service DNAT        nat.h's nat_in, as on a data interface (felis_data_in leaves host
//                         endpoint interfaces to this program): the local/forwarded decision
//                         and the policies after it see the backend (nat prerouting). A known
//                         NAT flow is rewritten on the conntrack path too; nat_out finishes
//                         every NATed packet after police() (SNAT, reverse NAT, redirect).
//     normal ingress      destination is the host (filter input), unless untracked.
//     forward ingress     forwarded (filter forward), no failsafes.
//   A flow with a NAT entry (nat.h writes them only for packets policy allowed) is a known
//   flow at a host endpoint in both directions, like a conntrack entry.
//   TC egress (packet leaving through the interface):
//     host-originated:    untracked egress (raw output; Allow passes untracked), conntrack,
//                         normal egress.
//     forwarded:          conntrack, forward egress (no untracked stage: raw output sees only
//                         the host's own packets).
//
// ND and MLD (exempt for workloads) meet the untracked stage and, arriving, the preDNAT stage,
// then pass: conntrack leaves them untracked and the nftables filter chains accept them.
//
// Untracked and preDNAT programs start with the failsafe ports as "return" rules (they end
// the stage, the packet stays tracked); every stage program ends with "return" (fall through
// to the next stage). A stage with no policy has length 0 and is skipped.

#ifndef FELIS_HEP_H
#define FELIS_HEP_H

// Host endpoint stages: index into struct hep_progs (render.Stage* in Go).
#define HS_UNTRACKED_IN 0
#define HS_UNTRACKED_OUT 1
#define HS_PREDNAT_IN 2
#define HS_FORWARD_IN 3
#define HS_FORWARD_OUT 4
#define HS_COUNT 5

// HEP_CONTINUE: the hook decided nothing; police() goes on.
#define HEP_CONTINUE -1

struct hep_progs {
	__u32 prog[HS_COUNT]; // program IDs, as in struct endpoint
	__u32 len[HS_COUNT];
	__u32 base[HS_COUNT]; // first block of each program in fprog_v2
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct hep_progs);
} fhep_v2 SEC(".maps");

// hep_state carries what the first hook learnt to the second.
struct hep_state {
	__u8 untracked; // an untracked policy allowed the packet
	__u8 local;     // TC egress: the host sent it (else it is forwarded)
};

// hep_run walks one stage's program; a missing stage falls through (A_RETURN).
static __always_inline __u8 hep_run(struct pkt *p, __u32 ifindex, int stage)
{
	struct hep_progs *hp = bpf_map_lookup_elem(&fhep_v2, &ifindex);
	if (!hp || !hp->len[stage])
		return A_RETURN;
	return walk_program(p, hp->base[stage], hp->len[stage]);
}

// hep_nat_flow says whether the packet, or its reply, belongs to a flow service NAT recorded:
// nat_out writes the entries only for packets policy allowed, so it is a known flow here (a
// NodePort flow is recorded under its translated tuple, and leaves SNATed or reverse-NATed).
static __always_inline int hep_nat_flow(struct pkt *p, __u64 now)
{
	if (p->proto != 6 && p->proto != 17)
		return 0;
	struct nat_key k = {};
	nat_key_of(&k, p);
	if (nat_lookup(&k, now))
		return 1;
	struct nat_key r = {.family = p->family, .proto = p->proto, .sport = p->dport, .dport = p->sport};
	__builtin_memcpy(r.src, p->dst, 16);
	__builtin_memcpy(r.dst, p->src, 16);
	return nat_lookup(&r, now) != 0;
}

// hep_nat_in runs service NAT on a packet arriving at a host endpoint (the entry program's
// nat_out finishes it) and points p at the translated destination. Not on lo (a `*` host
// endpoint's): the host's own traffic to a service is translated on lo's egress by
// felis_data_out (hostnat.h), ahead of this program in lo's TCX chain.
static __always_inline int hep_nat_in(struct __sk_buff *skb, struct endpoint *ep, struct pkt *p)
{
	if (ep->flags & EP_HOST_NO_NORMAL)
		return HEP_CONTINUE;
	__u32 zero = 0;
	struct nat *n = bpf_map_lookup_elem(&fnatscratch_v1, &zero); // zeroed by the entry program
	if (!n)
		return HEP_CONTINUE;
	int r = nat_in(skb, n, 1);
	if (r != NAT_CONTINUE)
		return r;
	if (n->action == NA_NEW || n->action == NA_FWD) {
		__builtin_memcpy(p->dst, n->to.dst, 16);
		p->dport = n->to.dport;
	}
	return HEP_CONTINUE;
}

// hep_known runs after the conntrack lookup: a tracked packet of a NAT flow is known (even
// one conntrack alone would call invalid), and a known packet arriving is NATed like its flow.
static __always_inline int hep_known(struct __sk_buff *skb, struct endpoint *ep, __u8 dir, struct pkt *p,
				     struct hep_state *hs, int *ct, __u64 now)
{
	if ((*ct == CT_NEW || *ct == CT_INVALID) && !hs->untracked && hep_nat_flow(p, now))
		*ct = CT_ESTABLISHED; // e.g. a backend's SYN-ACK: conntrack holds the translated tuple
	if (*ct != CT_ESTABLISHED || dir != DIR_FROM_WEP)
		return HEP_CONTINUE;
	int r = hep_nat_in(skb, ep, p);
	if (r != HEP_CONTINUE)
		count(skb->ifindex, dir, C_DENY);
	return r;
}

// hep_allowed counts a packet a host endpoint stage let through and, for a first fragment,
// lets the fragments that follow it through too.
static __always_inline int hep_allowed(struct pkt *p, __u32 ifindex, __u8 dir, __u64 now)
{
	frag_pass(p, ifindex, dir, now);
	count(ifindex, dir, C_ALLOW);
	return TC_ACT_OK;
}

// hep_exempt finishes ND and MLD after the untracked stage: conntrack leaves them untracked
// and the nftables filter chains accept them, but the raw (untracked) and mangle (preDNAT)
// chains police them first.
static __always_inline int hep_exempt(struct pkt *p, __u32 ifindex, __u8 dir)
{
	if (dir == DIR_FROM_WEP && hep_run(p, ifindex, HS_PREDNAT_IN) == A_DENY) {
		count(ifindex, dir, C_DENY);
		return TC_ACT_SHOT;
	}
	count(ifindex, dir, C_EXEMPT);
	return TC_ACT_OK;
}

// hep_before_ct runs the untracked stage: ingress for every packet, egress for the host's own.
// Later fragments (no ports) skip it: they follow their first fragment's verdict.
static __always_inline int hep_before_ct(struct __sk_buff *skb, __u32 ifindex, __u8 dir, struct pkt *p,
					 struct hep_state *hs)
{
	if (p->frag == FRAG_LATER)
		return HEP_CONTINUE;
	if (dir == DIR_TO_WEP) { // TC egress
		hs->local = host_addr(skb, p, 1);
		if (!hs->local)
			return exempt(p) ? hep_exempt(p, ifindex, dir) : HEP_CONTINUE;
	}
	__u8 v = hep_run(p, ifindex, dir == DIR_TO_WEP ? HS_UNTRACKED_OUT : HS_UNTRACKED_IN);
	if (v == A_DENY) {
		count(ifindex, dir, C_DENY);
		return TC_ACT_SHOT;
	}
	if (exempt(p))
		return hep_exempt(p, ifindex, dir);
	if (v == A_ALLOW) {
		hs->untracked = 1;
		if (dir == DIR_TO_WEP) // nothing after raw output polices an untracked packet
			return hep_allowed(p, ifindex, dir, bpf_ktime_get_ns());
	}
	return HEP_CONTINUE;
}

// hep_after_ct runs, for a packet not part of a known flow, the preDNAT stage (ingress) and
// then decides: host traffic continues to the normal program in police() (HEP_CONTINUE), an
// untracked packet to the host passes, forwarded traffic meets the forward stage here (an
// allowed tracked flow is recorded so its replies pass).
static __always_inline int hep_after_ct(struct __sk_buff *skb, __u32 ifindex, __u8 dir, struct pkt *p,
					struct endpoint *ep, struct hep_state *hs, __u64 now)
{
	int local = hs->local;
	if (dir == DIR_FROM_WEP) { // TC ingress
		if (hep_run(p, ifindex, HS_PREDNAT_IN) == A_DENY) {
			count(ifindex, dir, C_DENY);
			return TC_ACT_SHOT;
		}
		// Service DNAT: after preDNAT, before everything else; never for an untracked packet
		// (NAT needs conntrack: nftables leaves a notrack packet's destination alone).
		int r = hs->untracked ? HEP_CONTINUE : hep_nat_in(skb, ep, p);
		if (r != HEP_CONTINUE) {
			count(ifindex, dir, C_DENY);
			return r;
		}
		local = host_addr(skb, p, 0);
	}
	if (local) {
		if (hs->untracked || (ep->flags & EP_HOST_NO_NORMAL))
			return hep_allowed(p, ifindex, dir, now);
		return HEP_CONTINUE;
	}
	if (hep_run(p, ifindex, dir == DIR_FROM_WEP ? HS_FORWARD_IN : HS_FORWARD_OUT) == A_DENY) {
		count(ifindex, dir, C_DENY);
		return TC_ACT_SHOT;
	}
	if (!hs->untracked)
		ct_create(p, ifindex, dir, now);
	return hep_allowed(p, ifindex, dir, now);
}

#endif
