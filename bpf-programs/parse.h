// SPDX-License-Identifier: Apache-2.0
// Packet parsing for the felis TC programs: the IPv4 or IPv6 header (IPv6 extension headers
// walked up to a fixed bound), fragments, and the L4 fields policy and conntrack look at.
// Included by policy.c after struct pkt.

#ifndef FELIS_PARSE_H
#define FELIS_PARSE_H

// Fragment kinds (pkt.frag). A non-first fragment carries no L4 header: its first bytes are
// payload and must never be read as ports.
#define FRAG_NONE 0
#define FRAG_FIRST 1 // offset 0, more fragments follow: the L4 header is here
#define FRAG_LATER 2 // offset > 0

// IPv6 extension headers walked before giving up (the packet is then dropped). Real chains
// are short: hop-by-hop, destination options, routing, fragment, AH, destination options.
#define IPV6_EXT_MAX 8

#define IPPROTO_HOPOPTS_ 0
#define IPPROTO_ROUTING_ 43
#define IPPROTO_FRAGMENT_ 44
#define IPPROTO_AH_ 51
#define IPPROTO_DSTOPTS_ 60

// parse_ip4 reads an IPv4 header at off. Returns 0, or -1 when the header is truncated or
// malformed.
static __always_inline int parse_ip4(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	__u8 h[20];
	if (bpf_skb_load_bytes(skb, off, h, 20) < 0)
		return -1;
	__u32 ihl = (h[0] & 0xf) * 4;
	if (h[0] >> 4 != 4 || ihl < 20)
		return -1;
	p->family = FAMILY_V4;
	p->proto = h[9];
	__builtin_memcpy(p->src, h + 12, 4);
	__builtin_memcpy(p->dst, h + 16, 4);
	p->l4off = off + ihl;
	__u16 offset = ((__u16)(h[6] & 0x1f) << 8) | h[7];
	if (offset)
		p->frag = FRAG_LATER;
	else if (h[6] & 0x20)
		p->frag = FRAG_FIRST;
	if (p->frag) {
		p->frag_proto = h[9];
		p->frag_id = ((__u32)h[4] << 8) | h[5];
	}
	return 0;
}

// parse_ip6 reads an IPv6 header at off and walks its extension headers to the upper-layer
// header. A fragment header with a non-zero offset ends the walk (what follows is payload);
// frag_proto is then its next-header value, which every fragment of a packet carries alike
// (RFC 8200 4.5). ESP and no-next-header end it too (they are the "L4" protocol). Returns
// 0, or -1 when a header is truncated or the chain is longer than IPV6_EXT_MAX.
static __always_inline int parse_ip6(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	__u8 h[40];
	if (bpf_skb_load_bytes(skb, off, h, 40) < 0)
		return -1;
	if (h[0] >> 4 != 6)
		return -1;
	p->family = FAMILY_V6;
	__builtin_memcpy(p->src, h + 8, 16);
	__builtin_memcpy(p->dst, h + 24, 16);
	__u8 nh = h[6];
	off += 40;
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 e[8];
		switch (nh) {
		case IPPROTO_HOPOPTS_:
		case IPPROTO_ROUTING_:
		case IPPROTO_DSTOPTS_:
			if (bpf_skb_load_bytes(skb, off, e, 2) < 0)
				return -1;
			nh = e[0];
			off += ((__u32)e[1] + 1) * 8;
			break;
		case IPPROTO_AH_:
			if (bpf_skb_load_bytes(skb, off, e, 2) < 0)
				return -1;
			nh = e[0];
			off += ((__u32)e[1] + 2) * 4;
			break;
		case IPPROTO_FRAGMENT_: {
			if (bpf_skb_load_bytes(skb, off, e, 8) < 0)
				return -1;
			__u16 offset = (((__u16)e[2] << 8) | e[3]) & 0xfff8;
			p->frag_proto = e[0];
			p->frag_id = ((__u32)e[4] << 24) | ((__u32)e[5] << 16) | ((__u32)e[6] << 8) | e[7];
			if (offset) {
				p->frag = FRAG_LATER;
				p->proto = e[0];
				p->l4off = off + 8;
				return 0;
			}
			// Offset 0: the first fragment, or an atomic fragment (M=0: the whole packet,
			// RFC 8200 4.5), which is handled as an unfragmented packet.
			if (e[3] & 1)
				p->frag = FRAG_FIRST;
			nh = e[0];
			off += 8;
			break;
		}
		default:
			p->proto = nh;
			p->l4off = off;
			return 0;
		}
	}
	return -1;
}

// parse_l4 reads the ports (TCP, UDP, SCTP), the TCP flags, or the ICMP type, code and echo
// ID at p->l4off. Nothing is read from a non-first fragment. Returns 0, or -1 when a first
// fragment is too short to hold the header policy needs (a tiny-fragment attack: the ports
// would otherwise be read from the next fragment).
static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p)
{
	if (p->frag == FRAG_LATER)
		return 0;
	if (p->proto == 6 || p->proto == 17 || p->proto == 132) {
		__u8 ports[4];
		if (bpf_skb_load_bytes(skb, p->l4off, ports, 4) < 0)
			return p->frag == FRAG_FIRST ? -1 : 0;
		p->sport = ((__u16)ports[0] << 8) | ports[1];
		p->dport = ((__u16)ports[2] << 8) | ports[3];
		if (p->proto == 6 && bpf_skb_load_bytes(skb, p->l4off + 13, &p->tcp_flags, 1) < 0)
			return p->frag == FRAG_FIRST ? -1 : 0;
	} else if ((p->proto == 1 && p->family == FAMILY_V4) || (p->proto == 58 && p->family == FAMILY_V6)) {
		__u8 tc[8];
		if (bpf_skb_load_bytes(skb, p->l4off, tc, 8) < 0)
			return p->frag == FRAG_FIRST ? -1 : 0;
		p->has_icmp = 1;
		p->icmp_type = tc[0];
		p->icmp_code = tc[1];
		p->icmp_id = ((__u16)tc[4] << 8) | tc[5];
	}
	return 0;
}

// parse fills p from the Ethernet frame. Returns 1 when the frame is not IP (not policed), 0
// when parsed, -1 when it must be dropped (truncated, malformed, an over-long IPv6 extension
// header chain).
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 eth_proto;
	if (bpf_skb_load_bytes(skb, 12, &eth_proto, 2) < 0)
		return -1;
	int r;
	if (eth_proto == bpf_htons(ETH_P_IP))
		r = parse_ip4(skb, ETH_HLEN, p);
	else if (eth_proto == bpf_htons(ETH_P_IPV6))
		r = parse_ip6(skb, ETH_HLEN, p);
	else
		return 1; // not IP: not policed
	if (r < 0)
		return -1;
	return parse_l4(skb, p);
}

#endif
