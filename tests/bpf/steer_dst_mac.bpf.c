// SPDX-License-Identifier: GPL-2.0
/* Emulates a NIC's ntuple rules "flow-type ether dst MAC_q action q" on a
 * veth, for the multi-queue tests (tests/xdp_queues.rs,
 * tests/scripts/76-linux-multiqueue.sh).
 *
 * Attached to the SENDING veth's tc egress (clsact): a frame whose
 * destination MAC is STEER_MAC_q leaves on tx queue q, and a veth delivers
 * tx queue q to the peer's rx queue q (the peer runs XDP with that many
 * rx queues). The program sets skb->queue_mapping to q + 1: at this point
 * the kernel reads it as a recorded receive queue plus one, and
 * netdev_pick_tx maps recorded queue q to tx queue q (the veth must have
 * no XPS map; a fresh one has none). Every other frame (broadcast,
 * other MACs) goes to queue 0, as a NIC's RSS puts non-IP frames on its
 * default queue; without this the veth would pick a queue by a flow hash
 * that depends on a per-boot random seed.
 *
 * This kernel has neither the flower classifier nor the skbedit action,
 * hence BPF. The MACs are compiled in (clang -DSTEER_MAC_0=0x... as
 * 48-bit integers, up to 4; -DSTEER_N=count), so the object needs no map
 * filled after loading.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#ifndef STEER_N
#error "define STEER_N and STEER_MAC_0..STEER_MAC_{N-1}"
#endif
#ifndef STEER_MAC_1
#define STEER_MAC_1 0
#endif
#ifndef STEER_MAC_2
#define STEER_MAC_2 0
#endif
#ifndef STEER_MAC_3
#define STEER_MAC_3 0
#endif

SEC("tc")
int steer(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const __u8 *p = data;
	__u64 dst;

	if (data + 6 > data_end) {
		skb->queue_mapping = 1;
		return TC_ACT_OK;
	}
	dst = ((__u64)p[0] << 40) | ((__u64)p[1] << 32) | ((__u64)p[2] << 24) |
	      ((__u64)p[3] << 16) | ((__u64)p[4] << 8) | (__u64)p[5];
	if (dst == STEER_MAC_0)
		skb->queue_mapping = 1;
	else if (STEER_N > 1 && dst == STEER_MAC_1)
		skb->queue_mapping = 2;
	else if (STEER_N > 2 && dst == STEER_MAC_2)
		skb->queue_mapping = 3;
	else if (STEER_N > 3 && dst == STEER_MAC_3)
		skb->queue_mapping = 4;
	else
		skb->queue_mapping = 1;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
