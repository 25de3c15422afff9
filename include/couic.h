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
 * Key of every rule map, trie or hash. The tries use it as an LPM key
 * (prefixlen first, address in network byte order); the exact-host hashes
 * use the same struct with prefixlen fixed at 32 or 128, so user space builds
 * one key per family whatever map the rule lands in.
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
 * Exact hosts are held in buckets of one cache line, in an array map that
 * user space manages: it hashes the address to a bucket (the hash is
 * couic_bucket_of() in couic.bpf.c, mirrored in src/bpf/hosts.rs), reads
 * the buckets a change touches back from the map and rewrites each whole. `count` slots
 * are in use, packed from slot 0. A host that finds its bucket full goes to
 * the overflow hash map of the same policy and family, and the bucket's
 * `overflow` counts how many did, so the program looks there only then.
 */
enum couic_bucket_slots {
	COUIC_B4_SLOTS = 7, /* IPv4 hosts per bucket */
	COUIC_B6_SLOTS = 3, /* IPv6 hosts per bucket */
};

struct couic_b4_slot {
	__u8 addr[4];
	__u32 tag_id;
};

struct couic_b6_slot {
	__u8 addr[16];
	__u32 tag_id;
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
 * Trie guards: one bit per IPv4 /16, and per IPv6 /32 hashed to
 * COUIC_GUARD6_BITS bits (couic_bucket_of() with the same seed), set while
 * the policy's trie holds a prefix that meets that block. A clear bit means
 * the trie cannot match the address, so the walk is skipped. An IPv6 prefix
 * shorter than /24 meets too many blocks to mark: while the trie holds one,
 * the map's couic_active flag is COUIC_WALK_ALWAYS and the bits are not read.
 */
enum couic_guard {
	COUIC_GUARD4_BITS = 16,
	COUIC_GUARD6_BITS = 20,
	COUIC_GUARD4_WORDS = 1 << (COUIC_GUARD4_BITS - 6), /* of 64 bits */
	COUIC_GUARD6_WORDS = 1 << (COUIC_GUARD6_BITS - 6),
	COUIC_GUARD6_SHORTEST = 24, /* shortest IPv6 prefix marked in bits */
	COUIC_WALK_ALWAYS = 2,	    /* couic_active flag: walk, guard or not */
};

/* Value of every rule map: the rule's tag, an index into the per-tag
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
 * Indexes of couic_sizes: how many rules each map holds. The program skips
 * a lookup into a map whose size is zero. User space raises a size before it
 * inserts and lowers it after it deletes, so a non-empty map is never skipped.
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

#endif /* COUIC_H */
