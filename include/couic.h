/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * Layouts shared by the XDP program and the daemon. This header is the only
 * definition: Rust sees these types through the skeleton's generated `types`
 * module, never through hand-written mirrors.
 */
#ifndef COUIC_H
#define COUIC_H

#include <linux/types.h>

/* Default capacities; the daemon sets max_entries from its config before
 * loading, so these only size a program loaded as it was compiled. */
enum couic_limits {
	COUIC_DROP_MAX = 262144,  /* drop rules per address family */
	COUIC_IGNORE_MAX = 65536, /* ignore rules per address family */
	COUIC_TAG_MAX = 4096,	  /* per-tag counter slots per policy */
};

/*
 * Key of the overflow hashes (see below): the prefix length, then the
 * address in network byte order, masked to that length.
 */
struct couic_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct couic_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/*
 * Every rule of a policy and family, host or prefix, sits in one bucket of
 * one cache line, in an array map that user space manages: it hashes the
 * rule's masked address and prefix length to a bucket (the hash is
 * couic_bucket_of() in couic.bpf.c, mirrored in src/bpf/buckets.rs), reads
 * the buckets a change touches back from the map and rewrites each whole.
 * `count` slots are in use, packed from slot 0. A rule that finds its bucket
 * full goes to the overflow hash map of the same policy and family, and the
 * bucket's `overflow` counts how many did, so the program looks there only
 * then. A slot's `rule` holds the tag id in its low COUIC_RULE_TAG_BITS bits
 * and the prefix length above them.
 */
enum couic_bucket_slots {
	COUIC_B4_SLOTS = 7, /* IPv4 rules per bucket */
	COUIC_B6_SLOTS = 3, /* IPv6 rules per bucket */
	COUIC_RULE_TAG_BITS = 24,
};

struct couic_b4_slot {
	__u8 addr[4];
	__u32 rule;
};

struct couic_b6_slot {
	__u8 addr[16];
	__u32 rule;
};

struct couic_b4_bucket {
	struct couic_b4_slot slot[COUIC_B4_SLOTS];
	__u16 count;
	__u16 overflow;
	__u32 unused;
};

struct couic_b6_bucket {
	struct couic_b6_slot slot[COUIC_B6_SLOTS];
	__u16 count;
	__u16 overflow;
};

/*
 * Prefix lengths to probe. A host is one probe; a prefix of unknown length
 * would be one probe per length, so the program asks first which lengths
 * can match. Addresses are cut into blocks: IPv4 /16s, and IPv6 /32s hashed
 * to COUIC_BLOCK6_BITS bits (couic_bucket_of() of the first word, length 0).
 * A block's `lens` has bit L set while the policy holds a prefix of length L
 * that meets the block, and `sub` one bit per 1/32 of the block (the next 5
 * address bits) that such a prefix meets; the program probes the block's
 * lengths only when its part's bit is set. A prefix more than 8 bits shorter
 * than a block meets too many blocks to mark: its length goes instead into
 * couic_active's `short_lens`, probed for every address.
 *
 * So bits 0..7 of `lens` never stand for a length (those lengths are short
 * in both families). They say where hosts are: bit E is set while the
 * policy holds a host in the E-th eighth of the block (the next 3 address
 * bits), and the program probes the host only then. Most traffic that no
 * rule matches, and most that a prefix matches, then costs no host probe.
 * (An IPv6 block keeps these bits in `hosts`, and its lengths in short
 * form: see couic_b6_block.)
 */
enum couic_block {
	COUIC_BLOCK4_LEN = 16,
	COUIC_BLOCK6_LEN = 32,
	COUIC_BLOCK6_BITS = 16,
	COUIC_BLOCK_SUB_BITS = 5,
	COUIC_BLOCK_WIDEST = 8,	   /* a prefix marks at most 2^8 blocks */
	COUIC_BLOCK_HOST_BITS = 3, /* eighths of a block flagged for hosts */
};

struct couic_b4_block {
	__u32 lens; /* bit L: lengths 8..31; bits 0..7: hosts */
	__u32 sub;
};

/*
 * An IPv6 block is read by every IPv6 lookup, so it is kept to 8 bytes like
 * an IPv4 one: the whole table then stays in cache where 24-byte blocks
 * (1.5 MiB) did not. Most blocks meet at most two prefix lengths, and list
 * them in `len`; a block that meets more sets `more`, and its lengths are
 * read from the block's couic_b6_lens in an array of their own.
 */
struct couic_b6_block {
	__u32 sub;
	__u8 hosts;  /* bit E: the E-th eighth of the block holds hosts */
	__u8 len[2]; /* the block's lengths, longest first, 0: none */
	__u8 more;   /* nonzero: more than two lengths, see couic_b6_lens */
};

struct couic_b6_lens {
	__u64 lens[2]; /* bit L of lens[L / 64]: lengths 24..127; bits 0..7: hosts */
};

/* Value of the overflow hashes: the rule's tag, an index into the per-tag
 * counter arrays. Tag id 0 is "untagged". */
struct couic_rule {
	__u32 tag_id;
};

/* One counter cell; per CPU, so the hot path never needs an atomic. */
struct couic_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * Indexes of couic_stats. 0..4 are the XDP actions themselves (XDP_ABORTED,
 * XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT); MALFORMED counts frames that
 * were too short or inconsistent to parse. They pass, so they are counted
 * under XDP_PASS as well.
 */
enum couic_stat {
	COUIC_STAT_ABORTED = 0,
	COUIC_STAT_DROP = 1,
	COUIC_STAT_PASS = 2,
	COUIC_STAT_TX = 3,
	COUIC_STAT_REDIRECT = 4,
	COUIC_STAT_MALFORMED = 5,
	COUIC_STAT_MAX = 6,
};

/*
 * Indexes of couic_active's flags: whether a policy and family holds hosts
 * (_HOST) or shorter prefixes (_NET). The program skips what is empty.
 * User space raises a flag before it inserts and lowers it after it
 * deletes, so rules are never skipped.
 */
enum couic_map_index {
	COUIC_MAP_IGN4_HOST = 0,
	COUIC_MAP_IGN4_NET = 1,
	COUIC_MAP_IGN6_HOST = 2,
	COUIC_MAP_IGN6_NET = 3,
	COUIC_MAP_DROP4_HOST = 4,
	COUIC_MAP_DROP4_NET = 5,
	COUIC_MAP_DROP6_HOST = 6,
	COUIC_MAP_DROP6_NET = 7,
	COUIC_MAP_COUNT = 8,
};

/* Tables, one per policy and family, in the order of the flags above
 * (index / 2); they index couic_active's short_lens. */
enum couic_table {
	COUIC_TABLE_IGN4 = 0,
	COUIC_TABLE_IGN6 = 1,
	COUIC_TABLE_DROP4 = 2,
	COUIC_TABLE_DROP6 = 3,
	COUIC_TABLE_COUNT = 4,
};

/* The one value of couic_active, written only by the daemon: the flags
 * above, and per table the lengths of the prefixes too short to mark in
 * blocks (bit L: length L, all below 32). */
struct couic_active {
	__u8 map[COUIC_MAP_COUNT];
	__u32 short_lens[COUIC_TABLE_COUNT];
};

#endif /* COUIC_H */
