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
 *
 * Over the 400 lines this file aims at: its globals and 18 maps take ~90,
 * the data path ~375, a quarter of which are notes on what the verifier
 * and clang need. They belong next to the code they explain: split into
 * headers, the path could no longer be read in one place.
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

#define COUNTERS(name, count)                            \
	struct {                                         \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); \
		__uint(max_entries, count);              \
		__type(key, __u32);                      \
		__type(value, struct couic_counter);     \
	} name SEC(".maps")

/* Packets and bytes per XDP action, plus malformed frames (enum couic_stat),
 * and per tag id of the matching drop / ignore rule. */
COUNTERS(couic_stats, COUIC_STAT_MAX);
COUNTERS(couic_tag_drop, COUIC_TAG_MAX);
COUNTERS(couic_tag_ign, COUIC_TAG_MAX);

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

/* A slot's rule word, read before the slot is tested. Volatile so
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

/* A table's maps and facts, by enum couic_table. The helpers below take
 * the table's name, a constant wherever they are inlined, so that each map
 * access sees one map: the verifier inlines an array lookup only then, and
 * a call site that saw two maps would cost a helper call per lookup. */
struct rule_table {
	void *buckets;		   /* couic_b4_bucket or couic_b6_bucket array */
	void *overflow;		   /* hash of couic_v4_key or couic_v6_key */
	void *blocks;		   /* couic_b4_block or couic_b6_block array */
	void *block_lens;	   /* IPv6 only: couic_b6_lens array */
	const volatile __u8 *bits; /* log2 of the number of buckets */
	int words;		   /* of an address: 1 (IPv4) or 4 (IPv6) */
	__u8 host, net;		   /* its flags in couic_active (couic_map_index) */
};

/* Read only at constant indexes: clang folds each read and never emits the
 * array (libbpf would refuse map addresses as data). */
static const struct rule_table tables[COUIC_TABLE_COUNT] = {
	[COUIC_TABLE_IGN4] = { &couic_i4_bkt, &couic_i4_ovf, &couic_i4_blk, NULL, &couic_i4_bits, 1,
			       COUIC_MAP_IGN4_HOST, COUIC_MAP_IGN4_NET },
	[COUIC_TABLE_IGN6] = { &couic_i6_bkt, &couic_i6_ovf, &couic_i6_blk, &couic_i6_len,
			       &couic_i6_bits, 4, COUIC_MAP_IGN6_HOST, COUIC_MAP_IGN6_NET },
	[COUIC_TABLE_DROP4] = { &couic_d4_bkt, &couic_d4_ovf, &couic_d4_blk, NULL, &couic_d4_bits,
				1, COUIC_MAP_DROP4_HOST, COUIC_MAP_DROP4_NET },
	[COUIC_TABLE_DROP6] = { &couic_d6_bkt, &couic_d6_ovf, &couic_d6_blk, &couic_d6_len,
				&couic_d6_bits, 4, COUIC_MAP_DROP6_HOST, COUIC_MAP_DROP6_NET },
};

/* Nonzero when the address in slot i of bucket b differs from w. Per
 * family: IPv4 compares one word, IPv6 four. */
static __always_inline __u32 slot_differs(const void *b, int words, int i, const __u32 *w)
{
	const struct couic_b4_bucket *b4 = b;
	const struct couic_b6_bucket *b6 = b;
	__u32 a[4];

	if (words == 1) {
		__builtin_memcpy(a, b4->slot[i].addr, 4);
		return a[0] ^ w[0];
	}
	__builtin_memcpy(a, b6->slot[i].addr, sizeof(a));
	return (a[0] ^ w[0]) | (a[1] ^ w[1]) | (a[2] ^ w[2]) | (a[3] ^ w[3]);
}

/* The overflow key is written as an IPv6 one: an IPv4 key is its start. */
_Static_assert(sizeof(struct couic_v4_key) == __builtin_offsetof(struct couic_v6_key, addr) + 4,
	       "an IPv4 key is the first bytes of an IPv6 key");

/* One probe of table t, whose addresses are `words` long, for rule (w,
 * already masked to len, len): its bucket's slots, then the overflow hash
 * only if the bucket spilled. Sets *tag and returns 1 when listed. */
static __always_inline int probe_words(const struct rule_table *t, int words, const __u32 *w,
				       __u32 len, __u32 *tag)
{
	const int v4 = words == 1;
	__u32 idx = couic_bucket_of(w, words, len, *t->bits), want = len << COUIC_RULE_TAG_BITS;
	const struct couic_b4_bucket *b4;
	const struct couic_b6_bucket *b6;
	struct couic_v6_key key;
	struct couic_rule *rule;

	b4 = bpf_map_lookup_elem(t->buckets, &idx);
	b6 = (const void *)b4;
	if (!b4)
		return 0;
#pragma unroll
	for (int i = 0; i < (v4 ? COUIC_B4_SLOTS : COUIC_B6_SLOTS); i++) {
		/* The address first, the rule word then: clang tests IPv4's
		 * in that order, and a probe's slots mostly hold other
		 * addresses of the same length (hosts, for a host probe). */
		__u32 d = slot_differs(b4, words, i, w);
		__u32 r = slot_rule(v4 ? &b4->slot[i].rule : &b6->slot[i].rule);

		/* One branch per slot, taken only on a match; an empty slot
		 * (zeros) can match only the probe of 0.0.0.0/0 or ::/0,
		 * hence the count, tested last and read only then: held from
		 * the start, each slot's test of it split the verifier's
		 * states. */
		if (!(d | ((r ^ want) & ~TAG_MASK)) && i < (v4 ? b4->count : b6->count)) {
			*tag = r & TAG_MASK;
			return 1;
		}
	}
	if (!(v4 ? b4->overflow : b6->overflow))
		return 0;
	/* Written only now: stack writes are not free (see lookup()). */
	key.prefixlen = len;
	__builtin_memcpy(key.addr, w, 4 * words);
	rule = bpf_map_lookup_elem(t->overflow, &key);
	if (!rule)
		return 0;
	*tag = rule->tag_id;
	return 1;
}

/* The body above, its family fixed in a function of its own: clang then
 * shapes each family's probe before inlining it. Inlined straight into the
 * bpf_loop() callbacks, the same body spilled more registers there, and
 * the verifier walked more instructions. */
static __always_inline int probe_v4(const struct rule_table *t, const __u32 *w, __u32 len,
				    __u32 *tag)
{
	return probe_words(t, 1, w, len, tag);
}

static __always_inline int probe_v6(const struct rule_table *t, const __u32 *w, __u32 len,
				    __u32 *tag)
{
	return probe_words(t, 4, w, len, tag);
}

/* One probe of table `id`. */
static __always_inline int probe(enum couic_table id, const __u32 *w, __u32 len, __u32 *tag)
{
	const struct rule_table *t = &tables[id];

	return t->words == 1 ? probe_v4(t, w, len, tag) : probe_v6(t, w, len, tag);
}

/* The prefix probes of one lookup, run by bpf_loop(): each call probes the
 * longest length left in `lens` (`hi` for IPv6 lengths 64..127) and stops
 * the loop on a match or when no length is left. A callback is verified
 * once, where an open-coded loop of up to 128 probes is verified probe by
 * probe, past the verifier's budget. */
struct probes {
	__u32 w[4];  /* the address: w[0] only for IPv4 */
	__u64 lens;  /* lengths left, bit L: length L (IPv6: 0..63) */
	__u64 hi;    /* IPv6 lengths 64..127 left */
	__u32 table; /* enum couic_table: the family's drop or ignore */
	__u32 tag;   /* the match's tag */
	int found;
};

/* The longest length left in *lens (not 0), taken out of it. */
static __always_inline __u32 take_longest(__u64 *lens)
{
	__u32 len = top_bit(*lens);

	*lens ^= 1ULL << len;
	return len;
}

/* Probes p's table, `ign` or `drop`, for (m, len); returns 1, which stops
 * the loop, on a match. One call of probe() per table, as each map lookup
 * must see a single map (see struct rule_table). */
static __always_inline long probe_table(struct probes *p, enum couic_table ign,
					enum couic_table drop, const __u32 *m, __u32 len)
{
	if (p->table == drop)
		p->found = probe(drop, m, len, &p->tag);
	else
		p->found = probe(ign, m, len, &p->tag);
	return p->found;
}

static long probe_next_v4(__u64 i, void *ctx)
{
	struct probes *p = ctx;
	__u32 len, m;

	if (!p->lens)
		return 1;
	len = take_longest(&p->lens);
	m = p->w[0] & mask_of(len);
	return probe_table(p, COUIC_TABLE_IGN4, COUIC_TABLE_DROP4, &m, len);
}

static long probe_next_v6(__u64 i, void *ctx)
{
	struct probes *p = ctx;
	__u32 len, m[4];

	/* Each half masked where its lengths are taken: no branch on len. */
	if (p->hi) {
		len = 64 + take_longest(&p->hi);
		m[0] = p->w[0];
		m[1] = p->w[1];
		mask_half(&m[2], &p->w[2], len - 64);
	} else if (p->lens) {
		len = take_longest(&p->lens);
		mask_half(m, p->w, len);
		m[2] = m[3] = 0;
	} else {
		return 1;
	}
	return probe_table(p, COUIC_TABLE_IGN6, COUIC_TABLE_DROP6, m, len);
}

/* One table's lookup: the host if its eighth of the block holds any, then
 * the lengths the block (and the table's short lengths) may match, longest
 * first. Blocks are IPv4 /16s, or hashed IPv6 /32s (eighths of /35s). */
static __always_inline int lookup(enum couic_table id, const struct couic_active *on,
				  const __u32 *w, __u32 *tag)
{
	const struct rule_table *t = &tables[id];
	const int v4 = t->words == 1;
	/* The block, and the 8 address bits after it. */
	__u32 block = v4 ? bpf_ntohl(w[0]) >> 16 : couic_bucket_of(w, 1, 0, COUIC_BLOCK6_BITS);
	__u8 next = v4 ? bpf_ntohl(w[0]) >> 8 : bpf_ntohl(w[1]) >> 24;
	__u8 hosts = on->map[t->host], nets = on->map[t->net];
	__u64 lens = on->short_lens[id], hi = 0;
	const struct couic_b4_block *k4;
	const struct couic_b6_block *k6;
	struct couic_b6_lens *all;
	struct probes p;

	if (!hosts && !nets)
		return 0;
	k4 = bpf_map_lookup_elem(t->blocks, &block);
	k6 = (const void *)k4;
	if (!k4)
		return 0;
	if (hosts && ((v4 ? k4->lens : k6->hosts) >> (next >> 5)) & 1 &&
	    probe(id, w, 32 * t->words, tag))
		return 1;
	if (!nets)
		return 0;
	if (((v4 ? k4->sub : k6->sub) >> (next >> 3)) & 1) {
		if (v4) {
			lens |= k4->lens & ~HOST_BITS;
		} else if (k6->more) {
			all = bpf_map_lookup_elem(t->block_lens, &block);
			if (all) {
				lens |= all->lens[0] & ~(__u64)HOST_BITS;
				hi = all->lens[1];
			}
		} else {
#pragma unroll
			for (int i = 0; i < 2; i++) {
				__u32 len = k6->len[i];

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
	/* The probes' state is written only now: a lookup that ends before
	 * makes no stack writes (each one a speculation barrier when the
	 * loader lacks CAP_PERFMON). */
	p = (struct probes){ .lens = lens, .hi = hi, .table = id };
	__builtin_memcpy(p.w, w, 4 * t->words);
	/* At most one call per length: 32 for IPv4, 128 for IPv6. */
	bpf_loop(32 * t->words, v4 ? probe_next_v4 : probe_next_v6, &p, 0);
	*tag = p.tag;
	return p.found;
}

/* The verdict for source w from its family's tables: ignore before drop. */
static __always_inline void judge(enum couic_table ign, enum couic_table drop, const __u32 *w,
				  struct verdict *v)
{
	__u32 tag, zero = 0;
	struct couic_active *on = bpf_map_lookup_elem(&couic_active, &zero);

	if (!on || !w || !v)
		return;
	if (lookup(ign, on, w, &tag)) {
		v->matched = MATCHED_IGNORE;
		v->tag_id = tag;
	} else if (lookup(drop, on, w, &tag)) {
		v->action = XDP_DROP;
		v->matched = MATCHED_DROP;
		v->tag_id = tag;
	}
}

/*
 * The verdict for one source address. These two are global functions, so
 * the verifier checks each once, not once per VLAN path that reaches it;
 * their pointers may then be NULL as far as it knows. A table flagged empty
 * in couic_active costs no lookup.
 */
__noinline int couic_judge_v4(__u32 addr, struct verdict *v)
{
	judge(COUIC_TABLE_IGN4, COUIC_TABLE_DROP4, &addr, v);
	return 0;
}

/* An IPv6 source, copied out of the packet: a global function takes no
 * packet pointer. */
struct source6 {
	__u32 w[4];
};

__noinline int couic_judge_v6(const struct source6 *src, struct verdict *v)
{
	judge(COUIC_TABLE_IGN6, COUIC_TABLE_DROP6, src ? src->w : NULL, v);
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
