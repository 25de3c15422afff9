/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * Bounds-checked header access for the XDP program.
 *
 * Every helper takes the frame and a *constant* offset, points its last
 * argument at the header and returns 0, or returns -1 when the frame is too
 * short or the header inconsistent. Offsets stay
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

/*
 * Points *hdr at the `len` bytes at `off` and returns 0, or returns -1 when
 * the frame is too short. The status is a scalar on purpose: testing the
 * returned packet pointer against NULL instead is a pointer comparison,
 * which the verifier refuses without CAP_PERFMON.
 */
static __always_inline int header_at(struct xdp_md *ctx, __u32 off, __u32 len, void **hdr)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (data + off + len > data_end)
		return -1;
	*hdr = data + off;
	return 0;
}

static __always_inline int parse_ethhdr(struct xdp_md *ctx, struct ethhdr **eth)
{
	return header_at(ctx, 0, sizeof(struct ethhdr), (void **)eth);
}

/* The tag at `off` (just after the previous EtherType). */
static __always_inline int parse_vlan(struct xdp_md *ctx, __u32 off, struct vlan_tag **tag)
{
	return header_at(ctx, off, sizeof(struct vlan_tag), (void **)tag);
}

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/*
 * The IPv4 header at `off`; -1 when it is truncated or inconsistent: wrong
 * version, ihl < 5, or options running past the end of the frame.
 */
static __always_inline int parse_iphdr(struct xdp_md *ctx, __u32 off, struct iphdr **iph)
{
	struct iphdr *h;

	if (header_at(ctx, off, sizeof(struct iphdr), (void **)&h))
		return -1;
	if (h->version != 4 || h->ihl < 5)
		return -1;
	/* Options are allowed but must be in the frame. The length is compared
	 * as a scalar so no packet pointer is moved by a variable amount. */
	if (off + h->ihl * 4 > bpf_xdp_get_buff_len(ctx))
		return -1;
	*iph = h;
	return 0;
}

/* The IPv6 fixed header at `off`; -1 when truncated or not version 6. */
static __always_inline int parse_ipv6hdr(struct xdp_md *ctx, __u32 off, struct ipv6hdr **ip6h)
{
	struct ipv6hdr *h;

	if (header_at(ctx, off, sizeof(struct ipv6hdr), (void **)&h))
		return -1;
	if (h->version != 6)
		return -1;
	*ip6h = h;
	return 0;
}

#endif /* COUIC_PARSING_H */
