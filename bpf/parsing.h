/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * Bounds-checked header access for the XDP program.
 *
 * Every helper takes the frame and a *constant* offset and returns a pointer
 * to the header, or NULL when the frame is too short for it. Offsets stay
 * constant (the VLAN cases are unrolled by the caller) because, without
 * CAP_PERFMON, the verifier refuses packet pointers moved by a variable.
 */
#ifndef COUIC_PARSING_H
#define COUIC_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* An 802.1Q / 802.1ad tag as it sits after the MAC addresses. */
struct vlan_tag {
	__be16 tci;
	__be16 inner_proto;
};

static __always_inline void *header_at(struct xdp_md *ctx, __u32 off, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + off + len > data_end)
		return NULL;
	return data + off;
}

static __always_inline struct ethhdr *parse_ethhdr(struct xdp_md *ctx)
{
	return header_at(ctx, 0, sizeof(struct ethhdr));
}

/* The tag at `off` (just after the previous EtherType). */
static __always_inline struct vlan_tag *parse_vlan(struct xdp_md *ctx, __u32 off)
{
	return header_at(ctx, off, sizeof(struct vlan_tag));
}

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/*
 * The IPv4 header at `off`, or NULL when it is truncated or inconsistent:
 * wrong version, ihl < 5, or options running past the end of the frame.
 */
static __always_inline struct iphdr *parse_iphdr(struct xdp_md *ctx, __u32 off)
{
	struct iphdr *iph = header_at(ctx, off, sizeof(struct iphdr));

	if (!iph || iph->version != 4 || iph->ihl < 5)
		return NULL;
	/* Options are allowed but must be in the frame. The length is compared
	 * as a scalar so no packet pointer is moved by a variable amount. */
	if (off + iph->ihl * 4 > bpf_xdp_get_buff_len(ctx))
		return NULL;
	return iph;
}

/* The IPv6 fixed header at `off`, or NULL when truncated or not version 6. */
static __always_inline struct ipv6hdr *parse_ipv6hdr(struct xdp_md *ctx, __u32 off)
{
	struct ipv6hdr *ip6h = header_at(ctx, off, sizeof(struct ipv6hdr));

	if (!ip6h || ip6h->version != 6)
		return NULL;
	return ip6h;
}

#endif /* COUIC_PARSING_H */
