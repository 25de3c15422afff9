// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * Load generator for couic-bench, run through BPF_PROG_TEST_RUN with
 * BPF_F_TEST_XDP_LIVE_FRAMES: each run rewrites the source address of the
 * template frame with the next entry of gen_srcs (and, for IPv4, the header
 * checksum) and redirects the frame into the sending veth.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define GEN_MAX_SOURCES 131072

const volatile __u32 gen_ifindex = 0; /* the sending veth */
const volatile __u32 gen_sources = 1; /* entries of gen_srcs in use */
const volatile __u32 gen_ipv6 = 0;    /* template is IPv6, not IPv4 */
const volatile __u32 gen_csum = 0;    /* IPv4 header sum without the source */

struct gen_src {
	__u8 addr[16];
};

/* Source addresses to cycle through. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GEN_MAX_SOURCES);
	__type(key, __u32);
	__type(value, struct gen_src);
} gen_srcs SEC(".maps");

/* Index of the next source, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gen_next SEC(".maps");

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct gen_src *src;
	__u32 zero = 0, i;
	__u32 *next;

	next = bpf_map_lookup_elem(&gen_next, &zero);
	if (!next)
		return XDP_ABORTED;
	i = *next;
	*next = i + 1 >= gen_sources ? 0 : i + 1;
	src = bpf_map_lookup_elem(&gen_srcs, &i);
	if (!src)
		return XDP_ABORTED;

	if (gen_ipv6) {
		if (data + 14 + 40 > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data + 14 + 8, src->addr, 16);
	} else {
		__u16 *words = (__u16 *)src->addr;

		if (data + 14 + 20 > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data + 14 + 12, src->addr, 4);
		*(__u16 *)(data + 14 + 10) = fold(gen_csum + words[0] + words[1]);
	}
	return bpf_redirect(gen_ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
