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
 * Each policy and family has exact hosts (/32, /128) and shorter prefixes.
 * Hosts sit in buckets of one cache line (see include/couic.h): the source
 * hashes to one bucket, a single array read, whose few slots are compared
 * in an unrolled loop; only a bucket that spilled sends the lookup on to
 * its overflow hash. Shorter prefixes are in an LPM trie, whose walk costs
 * a miss per level. Most blocklist rules are hosts, so most lookups never
 * walk a trie. A host rule is the longest possible prefix, so trying hosts
 * first keeps longest-prefix semantics. couic_active says which hosts and
 * which tries hold anything, so an empty one (typically ignore) costs
 * nothing.
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
const volatile enum couic_bucket_slots couic_slots_anchor = COUIC_B4_SLOTS;
const volatile enum couic_guard couic_guard_anchor = COUIC_GUARD4_BITS;

/* Bucket hashing, set by the daemon before loading: a random seed, and per
 * bucket array log2 of its number of buckets (max_entries, a power of 2). */
const volatile __u64 couic_seed = 0;
const volatile __u8 couic_i4_bits = 1;
const volatile __u8 couic_i6_bits = 1;
const volatile __u8 couic_d4_bits = 1;
const volatile __u8 couic_d6_bits = 1;

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
/* Buckets of exact hosts; mmapable so each bucket starts on a cache line. */
#define BUCKETS(name, bucket)                      \
	struct {                                   \
		__uint(type, BPF_MAP_TYPE_ARRAY);  \
		__uint(map_flags, BPF_F_MMAPABLE); \
		__uint(max_entries, 2);            \
		__type(key, __u32);                \
		__type(value, bucket);             \
	} name SEC(".maps")

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

BUCKETS(couic_i4_bkt, struct couic_b4_bucket);			/* ignore, IPv4 /32 */
BUCKETS(couic_i6_bkt, struct couic_b6_bucket);			/* ignore, IPv6 /128 */
BUCKETS(couic_d4_bkt, struct couic_b4_bucket);			/* drop, IPv4 /32 */
BUCKETS(couic_d6_bkt, struct couic_b6_bucket);			/* drop, IPv6 /128 */
HOST_MAP(couic_i4_host, struct couic_v4_key, COUIC_IGNORE_MAX); /* ignore, IPv4 /32 overflow */
NET_MAP(couic_i4_net, struct couic_v4_key, COUIC_IGNORE_MAX);	/* ignore, IPv4 /0-/31 */
HOST_MAP(couic_i6_host, struct couic_v6_key, COUIC_IGNORE_MAX); /* ignore, IPv6 /128 overflow */
NET_MAP(couic_i6_net, struct couic_v6_key, COUIC_IGNORE_MAX);	/* ignore, IPv6 /0-/127 */
HOST_MAP(couic_d4_host, struct couic_v4_key, COUIC_DROP_MAX);	/* drop, IPv4 /32 overflow */
NET_MAP(couic_d4_net, struct couic_v4_key, COUIC_DROP_MAX);	/* drop, IPv4 /0-/31 */
HOST_MAP(couic_d6_host, struct couic_v6_key, COUIC_DROP_MAX);	/* drop, IPv6 /128 overflow */
NET_MAP(couic_d6_net, struct couic_v6_key, COUIC_DROP_MAX);	/* drop, IPv6 /0-/127 */

/* Trie guards (see couic.h): 64 bits per word. */
#define GUARD(name, words)                        \
	struct {                                  \
		__uint(type, BPF_MAP_TYPE_ARRAY); \
		__uint(max_entries, words);       \
		__type(key, __u32);               \
		__type(value, __u64);             \
	} name SEC(".maps")

GUARD(couic_i4_grd, COUIC_GUARD4_WORDS);
GUARD(couic_i6_grd, COUIC_GUARD6_WORDS);
GUARD(couic_d4_grd, COUIC_GUARD4_WORDS);
GUARD(couic_d6_grd, COUIC_GUARD6_WORDS);

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

/* Multiplicative hash of the address words, top `bits` bits kept.
 * src/bpf/hosts.rs computes the same. */
#define COUIC_HASH_MUL 0x9e3779b97f4a7c15ULL

static __always_inline __u32 couic_bucket_of(const __u32 *words, int n, __u8 bits)
{
	__u64 h = couic_seed;

	for (int i = 0; i < n; i++)
		h = (h ^ words[i]) * COUIC_HASH_MUL;
	return h >> (64 - bits);
}

/* A slot's tag, read before its address is compared. Volatile so that
 * clang cannot move the read into a block shared by every slot, where the
 * slot's offset would be a variable added to the map pointer, which the
 * verifier refuses without CAP_PERFMON. Same cache line, so it costs ~0. */
static __always_inline __u32 slot_tag(const __u32 *tag)
{
	return *(const volatile __u32 *)tag;
}

/* An exact IPv4 host: its bucket's slots, then the overflow hash only if
 * the bucket spilled. Sets *tag and returns 1 when listed. */
static __always_inline int host_v4(void *buckets, void *overflow, __u8 bits,
				   const struct couic_v4_key *key, __u32 *tag)
{
	__u32 addr, idx, count;
	struct couic_b4_bucket *b;
	struct couic_rule *rule;

	__builtin_memcpy(&addr, key->addr, sizeof(addr));
	idx = couic_bucket_of(&addr, 1, bits);
	b = bpf_map_lookup_elem(buckets, &idx);
	if (!b)
		return 0;
	count = b->count;
#pragma unroll
	for (int i = 0; i < COUIC_B4_SLOTS; i++) {
		__u32 a, t = slot_tag(&b->slot[i].tag_id);

		__builtin_memcpy(&a, b->slot[i].addr, sizeof(a));
		if (i < count && a == addr) {
			*tag = t;
			return 1;
		}
	}
	if (!b->overflow)
		return 0;
	rule = bpf_map_lookup_elem(overflow, key);
	if (!rule)
		return 0;
	*tag = rule->tag_id;
	return 1;
}

/* The same for an IPv6 host, compared as four words. */
static __always_inline int host_v6(void *buckets, void *overflow, __u8 bits,
				   const struct couic_v6_key *key, __u32 *tag)
{
	__u32 w[4], idx, count;
	struct couic_b6_bucket *b;
	struct couic_rule *rule;

	__builtin_memcpy(w, key->addr, sizeof(w));
	idx = couic_bucket_of(w, 4, bits);
	b = bpf_map_lookup_elem(buckets, &idx);
	if (!b)
		return 0;
	count = b->count;
#pragma unroll
	for (int i = 0; i < COUIC_B6_SLOTS; i++) {
		__u32 a[4], t = slot_tag(&b->slot[i].tag_id);

		__builtin_memcpy(a, b->slot[i].addr, sizeof(a));
		if (i < count && a[0] == w[0] && a[1] == w[1] && a[2] == w[2] && a[3] == w[3]) {
			*tag = t;
			return 1;
		}
	}
	if (!b->overflow)
		return 0;
	rule = bpf_map_lookup_elem(overflow, key);
	if (!rule)
		return 0;
	*tag = rule->tag_id;
	return 1;
}

/* Whether a trie flagged `on` may hold a prefix meeting guard block
 * `slot`: if not, its walk, the costliest lookup, is skipped. */
static __always_inline __u8 may_match(void *guard, __u8 on, __u32 slot)
{
	__u32 word = slot / 64;
	__u64 *bits;

	if (on != 1)
		return on; /* empty, or COUIC_WALK_ALWAYS */
	bits = bpf_map_lookup_elem(guard, &word);
	return bits && ((*bits >> (slot % 64)) & 1);
}

/* A prefix in the trie, if it holds rules. */
static __always_inline int net(void *trie, __u8 on, void *key, __u32 *tag)
{
	struct couic_rule *rule;

	if (!on)
		return 0;
	rule = bpf_map_lookup_elem(trie, key);
	if (!rule)
		return 0;
	*tag = rule->tag_id;
	return 1;
}

static __always_inline void judge_v4(struct verdict *v, const struct couic_active *on,
				     const struct iphdr *iph)
{
	struct couic_v4_key key = { .prefixlen = 32 };
	const __u8 *m = on->map;
	__u32 tag, slot;

	__builtin_memcpy(key.addr, &iph->saddr, sizeof(key.addr));
	slot = (__u32)key.addr[0] << 8 | key.addr[1]; /* the /16 */
	if ((m[COUIC_MAP_IGN4_HOST] &&
	     host_v4(&couic_i4_bkt, &couic_i4_host, couic_i4_bits, &key, &tag)) ||
	    net(&couic_i4_net, may_match(&couic_i4_grd, m[COUIC_MAP_IGN4_NET], slot), &key, &tag)) {
		v->matched = MATCHED_IGNORE;
		v->tag_id = tag;
	} else if ((m[COUIC_MAP_DROP4_HOST] &&
		    host_v4(&couic_d4_bkt, &couic_d4_host, couic_d4_bits, &key, &tag)) ||
		   net(&couic_d4_net, may_match(&couic_d4_grd, m[COUIC_MAP_DROP4_NET], slot), &key,
		       &tag)) {
		v->action = XDP_DROP;
		v->matched = MATCHED_DROP;
		v->tag_id = tag;
	}
}

static __always_inline void judge_v6(struct verdict *v, const struct couic_active *on,
				     const struct ipv6hdr *ip6h)
{
	struct couic_v6_key key = { .prefixlen = 128 };
	const __u8 *m = on->map;
	__u32 tag, slot, top;

	__builtin_memcpy(key.addr, &ip6h->saddr, sizeof(key.addr));
	__builtin_memcpy(&top, key.addr, sizeof(top));
	slot = couic_bucket_of(&top, 1, COUIC_GUARD6_BITS); /* the hashed /32 */
	if ((m[COUIC_MAP_IGN6_HOST] &&
	     host_v6(&couic_i6_bkt, &couic_i6_host, couic_i6_bits, &key, &tag)) ||
	    net(&couic_i6_net, may_match(&couic_i6_grd, m[COUIC_MAP_IGN6_NET], slot), &key, &tag)) {
		v->matched = MATCHED_IGNORE;
		v->tag_id = tag;
	} else if ((m[COUIC_MAP_DROP6_HOST] &&
		    host_v6(&couic_d6_bkt, &couic_d6_host, couic_d6_bits, &key, &tag)) ||
		   net(&couic_d6_net, may_match(&couic_d6_grd, m[COUIC_MAP_DROP6_NET], slot), &key,
		       &tag)) {
		v->action = XDP_DROP;
		v->matched = MATCHED_DROP;
		v->tag_id = tag;
	}
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
