// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * couic: drop packets whose source address is blocklisted, at XDP.
 *
 * The path of one frame:
 *   1. Ethernet header, then zero, one or two VLAN tags (802.1Q or 802.1ad,
 *      in any order). A third tag or any other EtherType is not IP: PASS.
 *   2. IPv4 (version 4, ihl >= 5, options inside the frame) or IPv6 (version
 *      6, fixed header inside the frame). The key is the *source* address.
 *      A frame too short or inconsistent for a header it announces is
 *      "malformed": it goes to the stack (PASS) and is counted apart.
 *   3. Verdict, ignore before drop:
 *        source in an ignore rule (any prefix length) -> PASS
 *        else source in a drop rule                  -> DROP
 *        else                                          -> PASS
 *      so an ignore /8 beats a drop /32. Within a policy the longest prefix
 *      names the tag that is counted.
 *   4. Counting, at the single exit: packets and bytes per action in
 *      couic_stats, and per tag of the matching rule in couic_tag_drop or
 *      couic_tag_ign. All counters are per CPU: no atomics on this path.
 *
 * Each policy and family is two maps: a hash of exact hosts (/32, /128),
 * which is one or two cache misses whatever its size, and an LPM trie for
 * shorter prefixes, whose walk costs a miss per level. Most blocklist rules
 * are hosts, so most lookups never walk a trie. A host rule is the longest
 * possible prefix, so trying the hash first keeps longest-prefix semantics.
 * couic_active says which of the eight maps hold anything, so an empty
 * map (typically the ignore ones) costs nothing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "couic.h"
#include "parsing.h"

/* Never read: these read-only globals only put the shared enums in the
 * object's BTF, which is how the skeleton's `types` module gets them. */
const volatile enum couic_limits couic_limits_anchor = COUIC_DROP_MAX;
const volatile enum couic_stat couic_stat_anchor = COUIC_STAT_MAX;
const volatile enum couic_map_index couic_map_anchor = COUIC_MAP_COUNT;

/* Flags, one byte per map of enum couic_map_index: non-zero while the map
 * may hold rules. Written only by the daemon. */
struct couic_active {
	__u8 map[COUIC_MAP_COUNT];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct couic_active);
} couic_active SEC(".maps");

/* Rule maps. max_entries is set by the daemon at load time from its config;
 * the values here are the defaults. */
#define HOST_MAP(name, keytype, cap)                  \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_HASH);      \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__uint(max_entries, cap);             \
		__type(key, keytype);                 \
		__type(value, struct couic_rule);     \
	} name SEC(".maps")

#define NET_MAP(name, keytype, cap)                   \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);  \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__uint(max_entries, cap);             \
		__type(key, keytype);                 \
		__type(value, struct couic_rule);     \
	} name SEC(".maps")

HOST_MAP(couic_i4_host, struct couic_v4_key, COUIC_IGNORE_MAX); /* ignore, IPv4 /32 */
NET_MAP(couic_i4_net, struct couic_v4_key, COUIC_IGNORE_MAX);	/* ignore, IPv4 /0-/31 */
HOST_MAP(couic_i6_host, struct couic_v6_key, COUIC_IGNORE_MAX); /* ignore, IPv6 /128 */
NET_MAP(couic_i6_net, struct couic_v6_key, COUIC_IGNORE_MAX);	/* ignore, IPv6 /0-/127 */
HOST_MAP(couic_d4_host, struct couic_v4_key, COUIC_DROP_MAX);	/* drop, IPv4 /32 */
NET_MAP(couic_d4_net, struct couic_v4_key, COUIC_DROP_MAX);	/* drop, IPv4 /0-/31 */
HOST_MAP(couic_d6_host, struct couic_v6_key, COUIC_DROP_MAX);	/* drop, IPv6 /128 */
NET_MAP(couic_d6_net, struct couic_v6_key, COUIC_DROP_MAX);	/* drop, IPv6 /0-/127 */

/* Packets and bytes per XDP action, plus malformed frames (enum couic_stat). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUIC_STAT_MAX);
	__type(key, __u32);
	__type(value, struct couic_counter);
} couic_stats SEC(".maps");

/* Packets and bytes per tag id of the matching drop / ignore rule. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUIC_TAG_MAX);
	__type(key, __u32);
	__type(value, struct couic_counter);
} couic_tag_drop SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUIC_TAG_MAX);
	__type(key, __u32);
	__type(value, struct couic_counter);
} couic_tag_ign SEC(".maps");

enum matched {
	MATCHED_NONE,
	MATCHED_IGNORE,
	MATCHED_DROP
};

struct verdict {
	__u32 action;
	__u32 tag_id;
	enum matched matched;
	int malformed;
};

/* Host hash first, then the trie; each only if it holds rules. */
static __always_inline struct couic_rule *lookup(void *host, void *net, __u8 host_on, __u8 net_on,
						 void *key)
{
	struct couic_rule *rule = NULL;

	if (host_on)
		rule = bpf_map_lookup_elem(host, key);
	if (!rule && net_on)
		rule = bpf_map_lookup_elem(net, key);
	return rule;
}

static __always_inline void decide(struct verdict *v, struct couic_rule *ignore,
				   struct couic_rule *drop)
{
	if (ignore) {
		v->matched = MATCHED_IGNORE;
		v->tag_id = ignore->tag_id;
	} else if (drop) {
		v->action = XDP_DROP;
		v->matched = MATCHED_DROP;
		v->tag_id = drop->tag_id;
	}
}

static __always_inline void judge_v4(struct verdict *v, const struct couic_active *on,
				     const struct iphdr *iph)
{
	struct couic_v4_key key = { .prefixlen = 32 };
	struct couic_rule *ignore, *drop = NULL;

	__builtin_memcpy(key.addr, &iph->saddr, sizeof(key.addr));
	ignore = lookup(&couic_i4_host, &couic_i4_net, on->map[COUIC_MAP_IGN4_HOST],
			on->map[COUIC_MAP_IGN4_NET], &key);
	if (!ignore)
		drop = lookup(&couic_d4_host, &couic_d4_net, on->map[COUIC_MAP_DROP4_HOST],
			      on->map[COUIC_MAP_DROP4_NET], &key);
	decide(v, ignore, drop);
}

static __always_inline void judge_v6(struct verdict *v, const struct couic_active *on,
				     const struct ipv6hdr *ip6h)
{
	struct couic_v6_key key = { .prefixlen = 128 };
	struct couic_rule *ignore, *drop = NULL;

	__builtin_memcpy(key.addr, &ip6h->saddr, sizeof(key.addr));
	ignore = lookup(&couic_i6_host, &couic_i6_net, on->map[COUIC_MAP_IGN6_HOST],
			on->map[COUIC_MAP_IGN6_NET], &key);
	if (!ignore)
		drop = lookup(&couic_d6_host, &couic_d6_net, on->map[COUIC_MAP_DROP6_HOST],
			      on->map[COUIC_MAP_DROP6_NET], &key);
	decide(v, ignore, drop);
}

/* The L3 header announced by `proto` at the constant offset `off`. */
static __always_inline void judge_l3(struct xdp_md *ctx, struct verdict *v, __be16 proto, __u32 off)
{
	__u32 zero = 0;
	struct couic_active *on = bpf_map_lookup_elem(&couic_active, &zero);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph;

		if (parse_iphdr(ctx, off, &iph))
			v->malformed = 1;
		else if (on)
			judge_v4(v, on, iph);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h;

		if (parse_ipv6hdr(ctx, off, &ip6h))
			v->malformed = 1;
		else if (on)
			judge_v6(v, on, ip6h);
	}
}

static __always_inline void count(void *map, __u32 index, __u64 bytes)
{
	struct couic_counter *c = bpf_map_lookup_elem(map, &index);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

SEC("xdp")
int couic(struct xdp_md *ctx)
{
	struct verdict v = { .action = XDP_PASS };
	struct vlan_tag *outer, *inner;
	struct ethhdr *eth;
	__u64 bytes;

	if (parse_ethhdr(ctx, &eth)) {
		v.malformed = 1;
		goto out;
	}
	if (!is_vlan(eth->h_proto)) {
		judge_l3(ctx, &v, eth->h_proto, ETH_HLEN);
		goto out;
	}

	/* One tag: its inner EtherType follows the TCI. Unrolled so every
	 * header sits at a constant offset. */
	if (parse_vlan(ctx, ETH_HLEN, &outer)) {
		v.malformed = 1;
		goto out;
	}
	if (!is_vlan(outer->inner_proto)) {
		judge_l3(ctx, &v, outer->inner_proto, ETH_HLEN + sizeof(struct vlan_tag));
		goto out;
	}

	if (parse_vlan(ctx, ETH_HLEN + sizeof(struct vlan_tag), &inner)) {
		v.malformed = 1;
		goto out;
	}
	if (!is_vlan(inner->inner_proto))
		judge_l3(ctx, &v, inner->inner_proto, ETH_HLEN + 2 * sizeof(struct vlan_tag));

out:
	bytes = bpf_xdp_get_buff_len(ctx);
	count(&couic_stats, v.action, bytes);
	if (v.malformed)
		count(&couic_stats, COUIC_STAT_MALFORMED, bytes);
	if (v.matched == MATCHED_IGNORE)
		count(&couic_tag_ign, v.tag_id, bytes);
	else if (v.matched == MATCHED_DROP)
		count(&couic_tag_drop, v.tag_id, bytes);
	return v.action;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
