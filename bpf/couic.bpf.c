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
 * Each policy and family keeps all its rules, hosts and prefixes alike, in
 * buckets of one cache line (see include/couic.h): a rule's masked address
 * and prefix length hash to one bucket, a single array read, whose few
 * slots are compared in an unrolled loop; only a bucket that spilled sends
 * the lookup on to its overflow hash. The address's block is read first: it
 * says whether hosts lie in that eighth of the block, and which prefix
 * lengths can match. The host is probed first, if there can be one: it is
 * the longest possible prefix. Then the lengths, from the longest down, so
 * the first found is the longest match. Most blocklist rules are hosts, and
 * most blocks hold few prefixes or none, so a lookup costs a block read and
 * one or two bucket reads where a trie walk costs a cache miss per level.
 * couic_active says which policies and families hold hosts or prefixes, so
 * an empty one (typically ignore) costs nothing.
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
const volatile enum couic_block couic_block_anchor = COUIC_BLOCK4_LEN;
const volatile enum couic_table couic_table_anchor = COUIC_TABLE_COUNT;

/* Bucket hashing, set by the daemon before loading: a random seed, and per
 * bucket array log2 of its number of buckets (max_entries, a power of 2). */
const volatile __u64 couic_seed = 0;
const volatile __u8 couic_i4_bits = 1;
const volatile __u8 couic_i6_bits = 1;
const volatile __u8 couic_d4_bits = 1;
const volatile __u8 couic_d6_bits = 1;

/* Which tables hold rules, and their unmarked short lengths (couic.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct couic_active);
} couic_active SEC(".maps");

/* Rule tables. max_entries of the buckets and overflow hashes is set by the
 * daemon at load time from its config; the values here are the defaults. */
/* Buckets; mmapable, so each bucket starts on a cache line and the daemon
 * can read many at once through a mapping (src/bpf/mapped.rs). */
#define BUCKETS(name, bucket)                      \
	struct {                                   \
		__uint(type, BPF_MAP_TYPE_ARRAY);  \
		__uint(map_flags, BPF_F_MMAPABLE); \
		__uint(max_entries, 2);            \
		__type(key, __u32);                \
		__type(value, bucket);             \
	} name SEC(".maps")

#define OVERFLOW(name, keytype, cap)                  \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_HASH);      \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__uint(max_entries, cap);             \
		__type(key, keytype);                 \
		__type(value, struct couic_rule);     \
	} name SEC(".maps")

#define BLOCKS(name, block, count)                \
	struct {                                  \
		__uint(type, BPF_MAP_TYPE_ARRAY); \
		__uint(max_entries, count);       \
		__type(key, __u32);               \
		__type(value, block);             \
	} name SEC(".maps")

BUCKETS(couic_i4_bkt, struct couic_b4_bucket); /* ignore, IPv4 */
BUCKETS(couic_i6_bkt, struct couic_b6_bucket); /* ignore, IPv6 */
BUCKETS(couic_d4_bkt, struct couic_b4_bucket); /* drop, IPv4 */
BUCKETS(couic_d6_bkt, struct couic_b6_bucket); /* drop, IPv6 */
OVERFLOW(couic_i4_ovf, struct couic_v4_key, COUIC_IGNORE_MAX);
OVERFLOW(couic_i6_ovf, struct couic_v6_key, COUIC_IGNORE_MAX);
OVERFLOW(couic_d4_ovf, struct couic_v4_key, COUIC_DROP_MAX);
OVERFLOW(couic_d6_ovf, struct couic_v6_key, COUIC_DROP_MAX);
BLOCKS(couic_i4_blk, struct couic_b4_block, 1 << COUIC_BLOCK4_LEN);
BLOCKS(couic_i6_blk, struct couic_b6_block, 1 << COUIC_BLOCK6_BITS);
BLOCKS(couic_d4_blk, struct couic_b4_block, 1 << COUIC_BLOCK4_LEN);
BLOCKS(couic_d6_blk, struct couic_b6_block, 1 << COUIC_BLOCK6_BITS);
BLOCKS(couic_i6_len, struct couic_b6_lens, 1 << COUIC_BLOCK6_BITS);
BLOCKS(couic_d6_len, struct couic_b6_lens, 1 << COUIC_BLOCK6_BITS);

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

/* Multiplicative hash of a prefix length and an address, top `bits`
 * bits kept; 64 address bits per multiply, so an IPv6 address costs two serial
 * multiplies rather than four. src/bpf/buckets.rs computes the same. */
#define COUIC_HASH_MUL 0x9e3779b97f4a7c15ULL
#define TAG_MASK ((1U << COUIC_RULE_TAG_BITS) - 1)
/* The host bits of a block's lens (couic.h). */
#define HOST_BITS ((1U << (1 << COUIC_BLOCK_HOST_BITS)) - 1)

static __always_inline __u32 couic_bucket_of(const __u32 *words, int n, __u32 len, __u8 bits)
{
	__u64 h = (couic_seed ^ len) * COUIC_HASH_MUL;

	for (int i = 0; i < n; i += 2) {
		/* The address as a number (host order): rules of consecutive
		 * addresses, or of regular strides, then take buckets spread
		 * evenly by the multiply. In the words' own order, consecutive
		 * hosts piled up and a fifth of a full table spilled. */
		__u64 w = bpf_ntohl(words[i]);

		if (i + 1 < n)
			w = w << 32 | bpf_ntohl(words[i + 1]);
		/* A multiply carries only upwards: fold the high half down so
		 * that the next 64 bits do not meet the last ones' low bits
		 * alone (consecutive IPv6 /64s piled up without it). */
		if (i)
			h ^= h >> 32;
		h = (h ^ w) * COUIC_HASH_MUL;
	}
	return h >> (64 - bits);
}

/* A slot's rule word, read before its address is compared. Volatile so
 * that clang cannot move the read into a block shared by every slot, where
 * the slot's offset would be a variable added to the map pointer, which the
 * verifier refuses without CAP_PERFMON. Same cache line, so it costs ~0. */
static __always_inline __u32 slot_rule(const __u32 *rule)
{
	return *(const volatile __u32 *)rule;
}

/* The first `len` bits (0..63) of 64 set, in host order. Shifted in 64
 * bits, len 0 needs no branch: every branch here doubles the paths the
 * verifier walks through each bpf_loop() callback. */
static __always_inline __u64 keep_of(__u32 len)
{
	return ~(~0ULL >> len);
}

/* The mask of a prefix of `len` bits (0..32) over one 32-bit word, in
 * network byte order like the address. */
static __always_inline __u32 mask_of(__u32 len)
{
	return bpf_htonl(keep_of(len) >> 32);
}

/* Two words w of an address (64 bits) masked to their first `len` bits
 * (0..63), into m. */
static __always_inline void mask_half(__u32 *m, const __u32 *w, __u32 len)
{
	__u64 keep = keep_of(len);

	m[0] = w[0] & bpf_htonl(keep >> 32);
	m[1] = w[1] & bpf_htonl(keep);
}

/* Index of the highest bit set in x, which is not 0: the bits below it
 * are filled in, then counted. No branch, so nothing for the verifier to
 * explore path by path. */
static __always_inline __u32 top_bit(__u64 x)
{
	x |= x >> 1;
	x |= x >> 2;
	x |= x >> 4;
	x |= x >> 8;
	x |= x >> 16;
	x |= x >> 32;
	x -= (x >> 1) & 0x5555555555555555ULL;
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return ((x * 0x0101010101010101ULL) >> 56) - 1;
}

/* One probe for IPv4 rule (addr, already masked to len, len): its bucket's
 * slots, then the overflow hash only if the bucket spilled. Sets *tag and
 * returns 1 when listed. */
static __always_inline int probe_v4(void *buckets, void *overflow, __u8 bits, __u32 addr, __u32 len,
				    __u32 *tag)
{
	__u32 idx = couic_bucket_of(&addr, 1, len, bits), want = len << COUIC_RULE_TAG_BITS;
	struct couic_v4_key key;
	struct couic_b4_bucket *b;
	struct couic_rule *rule;

	b = bpf_map_lookup_elem(buckets, &idx);
	if (!b)
		return 0;
#pragma unroll
	for (int i = 0; i < COUIC_B4_SLOTS; i++) {
		__u32 a, r = slot_rule(&b->slot[i].rule);

		__builtin_memcpy(&a, b->slot[i].addr, sizeof(a));
		/* One branch per slot, taken only on a match; an empty slot
		 * (zeros) can match only the probe of 0.0.0.0/0, hence the
		 * count, tested last and read only then: held from the
		 * start, each slot's test of it split the verifier's states. */
		if (!((a ^ addr) | ((r ^ want) & ~TAG_MASK)) && i < b->count) {
			*tag = r & TAG_MASK;
			return 1;
		}
	}
	if (!b->overflow)
		return 0;
	/* Written only now: stack writes are not free (see lookup_v4). */
	key.prefixlen = len;
	__builtin_memcpy(key.addr, &addr, sizeof(addr));
	rule = bpf_map_lookup_elem(overflow, &key);
	if (!rule)
		return 0;
	*tag = rule->tag_id;
	return 1;
}

/* The same for IPv6, the address as four words. */
static __always_inline int probe_v6(void *buckets, void *overflow, __u8 bits, const __u32 *w,
				    __u32 len, __u32 *tag)
{
	__u32 idx = couic_bucket_of(w, 4, len, bits), want = len << COUIC_RULE_TAG_BITS;
	struct couic_v6_key key;
	struct couic_b6_bucket *b;
	struct couic_rule *rule;

	b = bpf_map_lookup_elem(buckets, &idx);
	if (!b)
		return 0;
#pragma unroll
	for (int i = 0; i < COUIC_B6_SLOTS; i++) {
		__u32 a[4], r = slot_rule(&b->slot[i].rule);

		__builtin_memcpy(a, b->slot[i].addr, sizeof(a));
		if (!((a[0] ^ w[0]) | (a[1] ^ w[1]) | (a[2] ^ w[2]) | (a[3] ^ w[3]) |
		      ((r ^ want) & ~TAG_MASK)) &&
		    i < b->count) {
			*tag = r & TAG_MASK;
			return 1;
		}
	}
	if (!b->overflow)
		return 0;
	key.prefixlen = len;
	__builtin_memcpy(key.addr, w, sizeof(key.addr));
	rule = bpf_map_lookup_elem(overflow, &key);
	if (!rule)
		return 0;
	*tag = rule->tag_id;
	return 1;
}

/* The prefix probes of one lookup, run by bpf_loop(): each call probes the
 * longest length left in `lens` (`hi` for IPv6 lengths 64..127) and stops
 * the loop on a match or when no length is left. A callback is verified
 * once, where an open-coded loop of up to 128 probes is verified probe by
 * probe, past the verifier's budget. */
struct probes {
	__u32 w[4]; /* the address: w[0] only for IPv4 */
	__u64 lens; /* lengths left, bit L: length L (IPv6: 0..63) */
	__u64 hi;   /* IPv6 lengths 64..127 left */
	__u32 drop; /* the table: drop or ignore */
	__u32 tag;  /* the match's tag */
	int found;
};

static long probe_next_v4(__u64 i, void *ctx)
{
	struct probes *p = ctx;
	__u32 len, addr;

	if (!p->lens)
		return 1;
	len = top_bit(p->lens);
	p->lens ^= 1ULL << len;
	addr = p->w[0] & mask_of(len);
	if (p->drop)
		p->found =
			probe_v4(&couic_d4_bkt, &couic_d4_ovf, couic_d4_bits, addr, len, &p->tag);
	else
		p->found =
			probe_v4(&couic_i4_bkt, &couic_i4_ovf, couic_i4_bits, addr, len, &p->tag);
	return p->found;
}

static long probe_next_v6(__u64 i, void *ctx)
{
	struct probes *p = ctx;
	__u32 len, m[4];

	/* Each half masked where its lengths are taken: no branch on len. */
	if (p->hi) {
		len = 64 + top_bit(p->hi);
		p->hi ^= 1ULL << (len - 64);
		m[0] = p->w[0];
		m[1] = p->w[1];
		mask_half(&m[2], &p->w[2], len - 64);
	} else if (p->lens) {
		len = top_bit(p->lens);
		p->lens ^= 1ULL << len;
		mask_half(m, p->w, len);
		m[2] = m[3] = 0;
	} else {
		return 1;
	}
	if (p->drop)
		p->found = probe_v6(&couic_d6_bkt, &couic_d6_ovf, couic_d6_bits, m, len, &p->tag);
	else
		p->found = probe_v6(&couic_i6_bkt, &couic_i6_ovf, couic_i6_bits, m, len, &p->tag);
	return p->found;
}

/* One table's IPv4 lookup: the host if its eighth of the /16 block holds
 * any, then the lengths the block (and the table's short lengths) may
 * match, longest first. */
static __always_inline int lookup_v4(void *buckets, void *overflow, void *blocks, __u8 bits,
				     __u8 hosts, __u8 nets, __u32 short_lens, __u32 drop,
				     __u32 addr, __u32 *tag)
{
	const __u8 *o = (const __u8 *)&addr;
	__u32 block = (__u32)o[0] << 8 | o[1];
	struct couic_b4_block *k;
	struct probes p;
	__u64 lens = short_lens;

	if (!hosts && !nets)
		return 0;
	k = bpf_map_lookup_elem(blocks, &block);
	if (!k)
		return 0;
	if (hosts && (k->lens >> (o[2] >> 5)) & 1 &&
	    probe_v4(buckets, overflow, bits, addr, 32, tag))
		return 1;
	if (!nets)
		return 0;
	if ((k->sub >> (o[2] >> 3)) & 1)
		lens |= k->lens & ~HOST_BITS;
	if (!lens)
		return 0;
	/* The probes' state is written only now: a lookup that ends before
	 * makes no stack writes (each one a speculation barrier when the
	 * loader lacks CAP_PERFMON). */
	p = (struct probes){ .w = { addr }, .lens = lens, .drop = drop };
	bpf_loop(32, probe_next_v4, &p, 0);
	*tag = p.tag;
	return p.found;
}

/* The same for IPv6: blocks are hashed /32s, eighths of them /35s. */
static __always_inline int lookup_v6(void *buckets, void *overflow, void *blocks, void *block_lens,
				     __u8 bits, __u8 hosts, __u8 nets, __u32 short_lens, __u32 drop,
				     const __u32 *w, __u32 *tag)
{
	__u32 block = couic_bucket_of(w, 1, 0, COUIC_BLOCK6_BITS);
	__u8 next = ((const __u8 *)w)[4]; /* the 8 address bits after the /32 */
	struct couic_b6_block *k;
	struct couic_b6_lens *all;
	__u64 lens = short_lens, hi = 0;
	struct probes p;

	if (!hosts && !nets)
		return 0;
	k = bpf_map_lookup_elem(blocks, &block);
	if (!k)
		return 0;
	if (hosts && (k->hosts >> (next >> 5)) & 1 &&
	    probe_v6(buckets, overflow, bits, w, 128, tag))
		return 1;
	if (!nets)
		return 0;
	if ((k->sub >> (next >> 3)) & 1) {
		if (k->more) {
			all = bpf_map_lookup_elem(block_lens, &block);
			if (all) {
				lens |= all->lens[0] & ~(__u64)HOST_BITS;
				hi = all->lens[1];
			}
		} else {
#pragma unroll
			for (int i = 0; i < 2; i++) {
				__u32 len = k->len[i];

				/* Lengths are 24..127; 0 is none. */
				if (len >= 64)
					hi |= 1ULL << ((len - 64) & 63);
				else if (len)
					lens |= 1ULL << len;
			}
		}
	}
	if (!lens && !hi)
		return 0;
	p = (struct probes){ .lens = lens, .hi = hi, .drop = drop };
	__builtin_memcpy(p.w, w, sizeof(p.w));
	bpf_loop(128, probe_next_v6, &p, 0);
	*tag = p.tag;
	return p.found;
}

/*
 * The verdict for one source address. These two are global functions, so
 * the verifier checks each once, not once per VLAN path that reaches it;
 * `v` may then be NULL as far as it knows. A table flagged empty in
 * couic_active costs no lookup.
 */
__noinline int couic_judge_v4(__u32 addr, struct verdict *v)
{
	__u32 tag, zero = 0;
	struct couic_active *on = bpf_map_lookup_elem(&couic_active, &zero);
	const __u8 *m;

	if (!on || !v)
		return 0;
	m = on->map;
	if (lookup_v4(&couic_i4_bkt, &couic_i4_ovf, &couic_i4_blk, couic_i4_bits,
		      m[COUIC_MAP_IGN4_HOST], m[COUIC_MAP_IGN4_NET], on->short_lens[0], 0, addr,
		      &tag)) {
		v->matched = MATCHED_IGNORE;
		v->tag_id = tag;
	} else if (lookup_v4(&couic_d4_bkt, &couic_d4_ovf, &couic_d4_blk, couic_d4_bits,
			     m[COUIC_MAP_DROP4_HOST], m[COUIC_MAP_DROP4_NET], on->short_lens[2], 1,
			     addr, &tag)) {
		v->action = XDP_DROP;
		v->matched = MATCHED_DROP;
		v->tag_id = tag;
	}
	return 0;
}

/* An IPv6 source, copied out of the packet: a global function takes no
 * packet pointer. */
struct source6 {
	__u32 w[4];
};

__noinline int couic_judge_v6(const struct source6 *src, struct verdict *v)
{
	__u32 tag, zero = 0;
	struct couic_active *on = bpf_map_lookup_elem(&couic_active, &zero);
	const __u8 *m;

	if (!on || !src || !v)
		return 0;
	m = on->map;
	if (lookup_v6(&couic_i6_bkt, &couic_i6_ovf, &couic_i6_blk, &couic_i6_len, couic_i6_bits,
		      m[COUIC_MAP_IGN6_HOST], m[COUIC_MAP_IGN6_NET], on->short_lens[1], 0, src->w,
		      &tag)) {
		v->matched = MATCHED_IGNORE;
		v->tag_id = tag;
	} else if (lookup_v6(&couic_d6_bkt, &couic_d6_ovf, &couic_d6_blk, &couic_d6_len,
			     couic_d6_bits, m[COUIC_MAP_DROP6_HOST], m[COUIC_MAP_DROP6_NET],
			     on->short_lens[3], 1, src->w, &tag)) {
		v->action = XDP_DROP;
		v->matched = MATCHED_DROP;
		v->tag_id = tag;
	}
	return 0;
}

/* The L3 header announced by `proto` at the constant offset `off`. */
static __always_inline void judge_l3(struct xdp_md *ctx, struct verdict *v, __be16 proto, __u32 off)
{
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph;

		if (parse_iphdr(ctx, off, &iph))
			v->malformed = 1;
		else
			couic_judge_v4(iph->saddr, v);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h;
		struct source6 src;

		if (parse_ipv6hdr(ctx, off, &ip6h)) {
			v->malformed = 1;
		} else {
			__builtin_memcpy(src.w, &ip6h->saddr, sizeof(src.w));
			couic_judge_v6(&src, v);
		}
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
