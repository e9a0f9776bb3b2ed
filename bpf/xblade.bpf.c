// SPDX-License-Identifier: GPL-2.0
/* xblade XDP steering program.
 *
 * One copy is loaded per interface. For each received frame:
 *
 *  - not AoE (ethertype 0x88A2, also looked up behind one 802.1Q/802.1ad
 *    tag): XDP_PASS, the kernel stack gets it;
 *  - AoE behind a VLAN tag: XDP_PASS as well. Our replies are untagged, so
 *    a tagged request is served by whoever listens on the VLAN interface
 *    (the kernel untags it on the way up);
 *  - an AoE response (R flag set): XDP_PASS. It is meant for an initiator
 *    on this host (the Linux aoe driver), never for a target;
 *  - an AoE request to another host's MAC (neither the interface's address,
 *    nor one of its per-queue target MACs in the `macs` map, nor broadcast;
 *    seen in promiscuous mode, e.g. on a bridge port):
 *    XDP_PASS, and the kernel discards it as PACKET_OTHERHOST. The engine
 *    would drop it too (not_for_us), after a copy into the UMEM and a ring
 *    slot;
 *  - an AoE request for a shelf.slot this process does not serve (and not a
 *    wildcard): XDP_PASS, or XDP_DROP when cfg.drop_foreign is set (no other
 *    AoE target or initiator uses the interface);
 *  - every other AoE request: redirected into the AF_XDP socket bound to the
 *    receiving queue (XSKMAP keyed by rx_queue_index), or XDP_PASS when no
 *    socket is bound there.
 *
 * Multi-buffer aware (SEC("xdp.frags")): only the linear part is read, and
 * the checks need frame bytes 0..24 there (every driver and veth keeps at
 * least the headers linear). A frame whose AoE header is not linear is
 * passed and counted as "short".
 *
 * Counters live in a per-CPU array, CNT_MAX of them per rx queue; user space
 * sums the CPUs. The indexes are mirrored in src/net/xdp/bpf.rs
 * (BpfCounters).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_AOE_ 0x88A2
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define AOE_FLAG_RESPONSE 0x08
#define MAX_QUEUES 256

enum {
	CNT_REDIRECTED = 0, /* handed to the XSK of the receiving queue */
	CNT_PASSED_NON_AOE, /* not AoE: XDP_PASS */
	CNT_PASSED_FOREIGN, /* AoE for a shelf.slot we do not serve: XDP_PASS */
	CNT_DROPPED_FOREIGN, /* same, with drop_foreign set: XDP_DROP */
	CNT_NO_SOCKET,      /* AoE, but no XSK on this rx queue: XDP_PASS */
	CNT_SHORT,          /* AoE ethertype, header not in the linear part */
	CNT_VLAN,           /* AoE behind a VLAN tag: XDP_PASS */
	CNT_RESPONSE,       /* AoE response: XDP_PASS */
	CNT_OTHER_HOST,     /* AoE to another host's MAC: XDP_PASS */
	CNT_MAX,
};

/* A served shelf.slot (host byte order). */
struct target_key {
	__u16 major;
	__u8 minor;
	__u8 pad;
};

struct cfg {
	__u32 drop_foreign; /* 1: XDP_DROP AoE requests for foreign addresses */
	__u32 filter;       /* 1: the targets map is filled, check addresses */
	__u8 mac[6];        /* the interface's address: AoE to another is passed */
	__u8 pad[2];
};

static __always_inline int is_broadcast(const __u8 *m)
{
	return (m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xff;
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] &&
	       a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct target_key);
	__type(value, __u8);
} targets SEC(".maps");

/* The per-queue target MACs of the interface (src/net/xdp/steer.rs),
 * besides cfg.mac: AoE requests to them are ours too. */
struct mac_key {
	__u8 addr[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_QUEUES);
	__type(key, struct mac_key);
	__type(value, __u8);
} macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_QUEUES * CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count_q(struct xdp_md *ctx, __u32 idx)
{
	__u32 q = ctx->rx_queue_index;
	__u32 key;
	__u64 *v;

	if (q >= MAX_QUEUES)
		q = MAX_QUEUES - 1;
	key = q * CNT_MAX + idx;
	v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		*v += 1;
}

SEC("xdp.frags")
int xblade_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	__u16 proto;
	__u8 *aoe;

	if ((void *)(eth + 1) > data_end) {
		count_q(ctx, CNT_PASSED_NON_AOE);
		return XDP_PASS;
	}
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		/* 4-byte tag: TCI, then the inner ethertype. */
		__u16 *inner = data + sizeof(*eth) + 2;

		if ((void *)(inner + 1) > data_end) {
			count_q(ctx, CNT_PASSED_NON_AOE);
			return XDP_PASS;
		}
		if (*inner == bpf_htons(ETH_P_AOE_))
			count_q(ctx, CNT_VLAN);
		else
			count_q(ctx, CNT_PASSED_NON_AOE);
		return XDP_PASS;
	}
	if (proto != bpf_htons(ETH_P_AOE_)) {
		count_q(ctx, CNT_PASSED_NON_AOE);
		return XDP_PASS;
	}

	/* AoE common header: ver/flags, error, major (2), minor, command, tag (4). */
	aoe = data + sizeof(*eth);
	if ((void *)(aoe + 10) > data_end) {
		count_q(ctx, CNT_SHORT);
		return XDP_PASS;
	}
	if (aoe[0] & AOE_FLAG_RESPONSE) {
		count_q(ctx, CNT_RESPONSE);
		return XDP_PASS;
	}

	struct cfg *cfg = bpf_map_lookup_elem(&config, &zero);
	if (cfg && cfg->filter && !is_broadcast(eth->h_dest) &&
	    !mac_eq(eth->h_dest, cfg->mac)) {
		struct mac_key mk;

		__builtin_memcpy(mk.addr, eth->h_dest, 6);
		if (!bpf_map_lookup_elem(&macs, &mk)) {
			count_q(ctx, CNT_OTHER_HOST);
			return XDP_PASS;
		}
	}
	if (cfg && cfg->filter) {
		__u16 major = ((__u16)aoe[2] << 8) | aoe[3];
		__u8 minor = aoe[4];

		/* A wildcard in either half goes to user space, which answers
		 * for every matching export. */
		if (major != 0xffff && minor != 0xff) {
			struct target_key k = { .major = major, .minor = minor, .pad = 0 };

			if (!bpf_map_lookup_elem(&targets, &k)) {
				if (cfg->drop_foreign) {
					count_q(ctx, CNT_DROPPED_FOREIGN);
					return XDP_DROP;
				}
				count_q(ctx, CNT_PASSED_FOREIGN);
				return XDP_PASS;
			}
		}
	}

	int act = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);

	if (act == XDP_REDIRECT)
		count_q(ctx, CNT_REDIRECTED);
	else
		count_q(ctx, CNT_NO_SOCKET);
	return act;
}

char LICENSE[] SEC("license") = "GPL";
