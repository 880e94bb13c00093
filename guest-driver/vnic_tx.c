// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - send queue.
 *
 * Ownership follows head/tail indices (docs/datapath.md): the driver fills
 * slots from its tail and hands them over by writing the tail to QP_TX_TAIL;
 * the card sends them in order and writes each back with DONE. The driver
 * reclaims by DONE, and with VNIC_FEAT_HEAD_WB only up to the head the card
 * wrote into the send context: what the card recorded as done, so that a
 * restarted card never sends again a buffer the driver freed.
 *
 * A frame takes one descriptor per buffer, EOP on the last: the skb's head
 * (dma_map_single()), then each of its frags (skb_frag_dma_map()). Every slot
 * remembers its own mapping and the frame's last slot the skb, so cleaning
 * unmaps slot by slot and frees the skb with its last slot. Without offloads
 * (a card older than them, the exception queue pair) the netdev has no
 * NETIF_F_SG and a frame is one linear buffer, as before.
 *
 * With offloads the send queue has VNET_HDR, CSUM and GSO: every frame starts
 * with a struct virtio_net_hdr that virtio_net_hdr_from_skb() fills, a
 * checksum request for a CHECKSUM_PARTIAL skb (the card completes it, or
 * leaves it to a receiver that takes partial checksums) and the segmentation
 * of a TSO skb of up to VNIC_GSO_MAX_FRAME bytes. The header is pushed into
 * the skb's headroom (needed_headroom asks the stack for it), so it shares
 * the head's descriptor. GSO skbs the card would refuse, or that do not fit
 * its descriptors, ndo_features_check hands to software GSO instead.
 *
 * The queue stops while fewer slots are free than one frame may need
 * (tx->stop_thresh) and wakes once a quarter of the ring, and at least that,
 * is free again. BQL counts frame bytes, the header not included. The
 * doorbell is deferred while the stack says more frames follow
 * (netdev_xmit_more()), so a burst costs one MMIO write.
 */
#include <linux/bitfield.h>
#include <linux/dma-mapping.h>
#include <linux/if_vlan.h>
#include <linux/ipv6.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/virtio_net.h>

#include "vnic.h"

static_assert(sizeof(struct virtio_net_hdr) == VNIC_VNET_HDR_LEN);

/* Free slots the driver may still fill; one slot always stays empty */
static u32 vnic_tx_unused(const struct vnic_tx_ring *tx)
{
	/*
	 * Pairs with the release in vnic_tx_clean(): a slot counted free here
	 * has been emptied (its mapping and skb dropped) before xmit fills it.
	 */
	return (smp_load_acquire(&tx->next_to_clean) - tx->tail - 1) &
	       tx->mask;
}

/* A stopped queue restarts once a quarter of the ring is free again */
static u32 vnic_tx_wake_thresh(const struct vnic_tx_ring *tx)
{
	return max(tx->size / 4, tx->stop_thresh);
}

/**
 * vnic_tx_ring_min - smallest send ring a port can run with
 * @port: the port
 *
 * Return: VNIC_TX_RING_MIN_SG when its frames may have frags, else the
 * card's minimum.
 */
u32 vnic_tx_ring_min(const struct vnic_port *port)
{
	return port->netdev->hw_features & NETIF_F_SG ? VNIC_TX_RING_MIN_SG :
							VNIC_RING_MIN;
}

/**
 * vnic_tx_ring_alloc - allocate the send ring of a port
 * @port: the port, stopped; @port->tx_ring_size and its features set
 *
 * Return: 0, -EINVAL for a ring too small for the port, or -ENOMEM.
 */
int vnic_tx_ring_alloc(struct vnic_port *port)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_tx_ring *tx = &port->tx;

	memset(tx, 0, sizeof(*tx));
	tx->size = port->tx_ring_size;
	tx->mask = tx->size - 1;
	tx->vnet_hdr = port->sq_features & VNIC_FEAT_VNET_HDR;
	tx->stop_thresh = port->netdev->hw_features & NETIF_F_SG ?
			  VNIC_TX_SG_STOP : 1;
	if (WARN_ON(tx->size < vnic_tx_ring_min(port)))
		return -EINVAL;

	tx->bufs = kvcalloc(tx->size, sizeof(*tx->bufs), GFP_KERNEL);
	if (!tx->bufs)
		return -ENOMEM;

	/* Zeroed, page aligned (the card needs 16) */
	tx->desc = dma_alloc_coherent(dev, tx->size * sizeof(*tx->desc),
				      &tx->dma, GFP_KERNEL);
	if (!tx->desc) {
		kvfree(tx->bufs);
		tx->bufs = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* Undo the mapping of one slot; the slot is free afterwards */
static void vnic_tx_unmap(struct device *dev, struct vnic_tx_buf *buf)
{
	if (buf->page)
		dma_unmap_page(dev, buf->dma, buf->len, DMA_TO_DEVICE);
	else
		dma_unmap_single(dev, buf->dma, buf->len, DMA_TO_DEVICE);
	buf->len = 0;
}

/**
 * vnic_tx_ring_free - release frames still in the ring, then the ring
 * @port: the port; the card's send queue already stopped
 */
void vnic_tx_ring_free(struct vnic_port *port)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_tx_ring *tx = &port->tx;
	struct vnic_tx_buf *buf;
	u32 i;

	if (!tx->bufs)
		return;

	for (i = 0; i < tx->size; i++) {
		buf = &tx->bufs[i];
		if (buf->len)
			vnic_tx_unmap(dev, buf);
		if (buf->skb) {
			dev_kfree_skb_any(buf->skb);
			buf->skb = NULL;
		}
	}
	netdev_reset_queue(port->netdev);

	dma_free_coherent(dev, tx->size * sizeof(*tx->desc), tx->desc,
			  tx->dma);
	tx->desc = NULL;
	kvfree(tx->bufs);
	tx->bufs = NULL;
}

/* Hand everything filled so far to the card: one doorbell for the batch. */
static void vnic_tx_kick(struct vnic_port *port)
{
	struct vnic_tx_ring *tx = &port->tx;

	if (tx->kicked == tx->tail)
		return;
	tx->kicked = tx->tail;
	vnic_db_tx(port, tx->tail);
}

static void vnic_tx_count_drop(struct vnic_port *port)
{
	u64_stats_update_begin(&port->xstats.syncp);
	u64_stats_inc(&port->xstats.dropped);
	u64_stats_update_end(&port->xstats.syncp);
}

/* Is TCP right behind the IPv6 header? (A GSO skb's network header is set) */
static bool vnic_tx_ipv6_tcp(const struct sk_buff *skb)
{
	const u8 *next;
	u8 buf;

	next = skb_header_pointer(skb, skb_network_offset(skb) +
				  offsetof(struct ipv6hdr, nexthdr),
				  sizeof(buf), &buf);
	return next && *next == IPPROTO_TCP;
}

/*
 * Can the card segment this GSO skb, and can its descriptors hold it? The
 * card parses Ethernet, at most one 802.1Q tag (vlan_features_check() has
 * ruled out more), IPv4 or IPv6 without extension headers, TCP; a tag still
 * outside the frame will be inserted into it. It only segments frames that
 * ask for their checksum (the core may pass a GSO skb whose checksum is
 * CHECKSUM_UNNECESSARY).
 */
static bool vnic_tx_gso_ok(struct sk_buff *skb)
{
	const struct skb_shared_info *shinfo = skb_shinfo(skb);
	bool tagged = skb_vlan_tag_present(skb);
	__be16 outer = tagged ? skb->vlan_proto : skb->protocol;
	__be16 inner = vlan_get_protocol(skb);
	u32 i;

	if (skb->ip_summed != CHECKSUM_PARTIAL)
		return false;
	if (outer == htons(ETH_P_8021AD))
		return false;
	if (inner != htons(ETH_P_IP) && inner != htons(ETH_P_IPV6))
		return false;
	if (inner == htons(ETH_P_IPV6) && !vnic_tx_ipv6_tcp(skb))
		return false;
	if (skb->len + (tagged ? VLAN_HLEN : 0) > VNIC_GSO_MAX_FRAME)
		return false;

	/* A buffer can only outgrow a descriptor if the frame does */
	if (skb->len + VNIC_VNET_HDR_LEN <= VNIC_DESC_MAX_LEN)
		return true;
	if (skb_headlen(skb) + VNIC_VNET_HDR_LEN > VNIC_DESC_MAX_LEN)
		return false;
	for (i = 0; i < shinfo->nr_frags; i++)
		if (skb_frag_size(&shinfo->frags[i]) > VNIC_DESC_MAX_LEN)
			return false;
	return true;
}

/**
 * vnic_features_check - ndo_features_check
 * @skb: a frame about to be sent
 * @netdev: the port's netdev
 * @features: the features the stack would use for it
 *
 * A GSO skb the card would refuse (and drop, counting OFFLOAD_DROPS) is
 * segmented by the stack instead; so is one longer than VNIC_GSO_MAX_FRAME,
 * which would fail the queue.
 *
 * Return: @features, less what this skb cannot use.
 */
netdev_features_t vnic_features_check(struct sk_buff *skb,
				      struct net_device *netdev,
				      netdev_features_t features)
{
	/* Multi-tagged frames: checksum yes, segmentation no */
	features = vlan_features_check(skb, features);
	if (skb_is_gso(skb) && (features & NETIF_F_GSO_MASK) &&
	    !vnic_tx_gso_ok(skb))
		features &= ~NETIF_F_GSO_MASK;
	return features;
}

/* Is the frame (without header) one the send queue takes? */
static bool vnic_tx_len_ok(const struct vnic_port *port,
			   const struct sk_buff *skb)
{
	u32 max = port->max_frame;

	if (skb_is_gso(skb) && (port->sq_features & VNIC_FEAT_GSO))
		max = VNIC_GSO_MAX_FRAME;
	return skb->len >= VNIC_TX_MIN_FRAME && skb->len <= max;
}

/*
 * Put the frame's offload request in front of it, in the headroom, where it
 * shares the head's descriptor. virtio_net_hdr_from_skb() runs first: it
 * counts csum_start from skb->data, the Ethernet header.
 */
static int vnic_tx_push_hdr(struct sk_buff *skb)
{
	struct virtio_net_hdr hdr;
	int err;

	/* A clone's headroom may be shared: get a private one */
	err = skb_cow_head(skb, VNIC_VNET_HDR_LEN);
	if (err)
		return err;
	err = virtio_net_hdr_from_skb(skb, &hdr, true, false, 0);
	if (err)
		return err;
	memcpy(__skb_push(skb, VNIC_VNET_HDR_LEN), &hdr, VNIC_VNET_HDR_LEN);
	return 0;
}

/* Point the descriptor of slot @i at one mapped buffer (not EOP yet) */
static void vnic_tx_fill(struct vnic_tx_ring *tx, u32 i, dma_addr_t dma,
			 u32 len, bool page)
{
	struct vnic_tx_desc *desc = &tx->desc[i];
	struct vnic_tx_buf *buf = &tx->bufs[i];

	buf->dma = dma;
	buf->len = len;
	buf->page = page;

	desc->addr = cpu_to_le64(dma);
	desc->len = cpu_to_le16(len);
	desc->flags = 0;
	desc->status = 0;
	desc->reserved = 0;
}

/*
 * Map the skb's head and frags into descriptors from the tail on, EOP on the
 * last, which also keeps the skb and its @bytes. Empty buffers are skipped:
 * the card fails the queue on a zero-length descriptor.
 *
 * Return: descriptors used, or -EIO with everything unmapped again.
 */
static int vnic_tx_map(struct vnic_port *port, struct sk_buff *skb,
		       u32 bytes)
{
	struct device *dev = &port->priv->pdev->dev;
	const struct skb_shared_info *shinfo = skb_shinfo(skb);
	struct vnic_tx_ring *tx = &port->tx;
	u32 n = 0, f, len, last;
	dma_addr_t dma;

	len = skb_headlen(skb);
	if (len) {
		if (unlikely(len > VNIC_DESC_MAX_LEN))
			goto unwind;
		dma = dma_map_single(dev, skb->data, len, DMA_TO_DEVICE);
		if (unlikely(dma_mapping_error(dev, dma)))
			goto unwind;
		vnic_tx_fill(tx, tx->tail, dma, len, false);
		n++;
	}

	for (f = 0; f < shinfo->nr_frags; f++) {
		len = skb_frag_size(&shinfo->frags[f]);
		if (!len)
			continue;
		if (unlikely(len > VNIC_DESC_MAX_LEN))
			goto unwind;
		dma = skb_frag_dma_map(dev, &shinfo->frags[f], 0, len,
				       DMA_TO_DEVICE);
		if (unlikely(dma_mapping_error(dev, dma)))
			goto unwind;
		vnic_tx_fill(tx, (tx->tail + n) & tx->mask, dma, len, true);
		n++;
	}

	if (unlikely(!n))
		return -EIO;
	last = (tx->tail + n - 1) & tx->mask;
	tx->desc[last].flags = cpu_to_le16(VNIC_TXD_F_EOP);
	tx->bufs[last].skb = skb;
	tx->bufs[last].bytes = bytes;
	return n;

unwind:
	while (n--)
		vnic_tx_unmap(dev, &tx->bufs[(tx->tail + n) & tx->mask]);
	return -EIO;
}

/* The ring cannot take the frame: hand it back to the stack */
static netdev_tx_t vnic_tx_busy(struct vnic_port *port)
{
	netif_stop_queue(port->netdev);
	u64_stats_update_begin(&port->xstats.syncp);
	u64_stats_inc(&port->xstats.busy);
	u64_stats_update_end(&port->xstats.syncp);
	vnic_tx_kick(port);
	return NETDEV_TX_BUSY;
}

/**
 * vnic_start_xmit - ndo_start_xmit
 * @skb: the frame
 * @netdev: the port's netdev
 *
 * Return: NETDEV_TX_OK, or NETDEV_TX_BUSY if the ring was full (which the
 * queue stop logic makes a should-not-happen).
 */
netdev_tx_t vnic_start_xmit(struct sk_buff *skb, struct net_device *netdev)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct vnic_tx_ring *tx = &port->tx;
	bool gso = skb_is_gso(skb);
	bool kick, stopped = false;
	u32 bytes = skb->len;
	int descs;

	if (unlikely(vnic_tx_unused(tx) < skb_shinfo(skb)->nr_frags + 1))
		return vnic_tx_busy(port);

	/* The card refuses (and fails the queue on) frames outside these */
	if (unlikely(!vnic_tx_len_ok(port, skb)))
		goto drop;

	/* Before the header goes in front: PTP classification parses data */
	skb_tx_timestamp(skb);

	if (tx->vnet_hdr && unlikely(vnic_tx_push_hdr(skb)))
		goto drop;
	descs = vnic_tx_map(port, skb, bytes);
	if (unlikely(descs < 0))
		goto drop;

	/* The skb belongs to the cleaner once the doorbell may be rung */
	WRITE_ONCE(tx->tail, (tx->tail + descs) & tx->mask);
	kick = __netdev_tx_sent_queue(netdev_get_tx_queue(netdev, 0), bytes,
				      netdev_xmit_more());

	if (unlikely(vnic_tx_unused(tx) < tx->stop_thresh)) {
		netif_stop_queue(netdev);
		stopped = true;
		/* Pairs with the barrier in vnic_tx_clean() */
		smp_mb();
		if (vnic_tx_unused(tx) >= vnic_tx_wake_thresh(tx))
			netif_start_queue(netdev);
		/* Nobody else will ring for the frames now in the ring */
		kick = true;
	}

	if (kick)
		vnic_tx_kick(port);

	if (gso || unlikely(stopped)) {
		u64_stats_update_begin(&port->xstats.syncp);
		if (gso)
			u64_stats_inc(&port->xstats.gso);
		if (stopped)
			u64_stats_inc(&port->xstats.stopped);
		u64_stats_update_end(&port->xstats.syncp);
	}
	return NETDEV_TX_OK;

drop:
	dev_kfree_skb_any(skb);
	vnic_tx_count_drop(port);
	/* Frames deferred by earlier xmit_more must still go out */
	if (!netdev_xmit_more())
		vnic_tx_kick(port);
	return NETDEV_TX_OK;
}

static void vnic_tx_log_error(struct vnic_port *port, u32 slot, u16 status)
{
	u32 code = FIELD_GET(VNIC_TXD_S_ERR_CODE, status);

	net_err_ratelimited("%s: send queue failed on descriptor %u: error %u (%s)\n",
			    netdev_name(port->netdev), slot, code,
			    vnic_qerr_name(code));
}

/**
 * vnic_tx_clean - reclaim the descriptors the card is done with
 * @port: the port
 * @napi_budget: NAPI budget, 0 from netpoll (passed to napi_consume_skb)
 *
 * Runs in NAPI context only, so it is the only writer of next_to_clean.
 * Every slot is unmapped as soon as the card is done with it; a frame is
 * accounted, by the status of its last descriptor, when that one is.
 */
void vnic_tx_clean(struct vnic_port *port, int napi_budget)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_napi_stats *ns = &port->nstats;
	struct vnic_tx_ring *tx = &port->tx;
	u32 pkts = 0, bytes = 0, sent = 0, sent_bytes = 0;
	u32 dropped = 0, errors = 0;
	u32 ntc = tx->next_to_clean;
	u32 tail = READ_ONCE(tx->tail);
	struct vnic_tx_desc *desc;
	struct vnic_tx_buf *buf;
	u16 status;

	if (port->head_wb) {
		/* Never past what the card recorded; its head is a slot */
		tail = le16_to_cpu(READ_ONCE(port->sq_ctx->head)) & tx->mask;
		/* Descriptors only after the head that covers them */
		dma_rmb();
	}
	while (ntc != tail) {
		desc = &tx->desc[ntc];
		status = le16_to_cpu(READ_ONCE(desc->status));
		if (!(status & VNIC_TXD_S_DONE))
			break;
		/* Read the rest of the slot only after DONE */
		dma_rmb();

		buf = &tx->bufs[ntc];
		if (unlikely(!buf->len))
			break;	/* DONE on a slot never posted: ignore */

		vnic_tx_unmap(dev, buf);
		desc->status = 0;
		ntc = (ntc + 1) & tx->mask;
		if (!buf->skb)
			continue;	/* not the frame's last buffer */

		if (unlikely(status & VNIC_TXD_S_ERR_CODE)) {
			errors++;
			vnic_tx_log_error(port, (ntc - 1) & tx->mask, status);
		} else if (status & VNIC_TXD_S_DROPPED) {
			dropped++;
		} else {
			sent++;
			sent_bytes += buf->bytes;
		}
		pkts++;
		bytes += buf->bytes;
		napi_consume_skb(buf->skb, napi_budget);
		buf->skb = NULL;
	}

	if (ntc == tx->next_to_clean)
		return;

	/* Publish the emptied slots; pairs with vnic_tx_unused() */
	smp_store_release(&tx->next_to_clean, ntc);

	u64_stats_update_begin(&ns->syncp);
	u64_stats_add(&ns->tx_packets, sent);
	u64_stats_add(&ns->tx_bytes, sent_bytes);
	u64_stats_add(&ns->tx_switch_drops, dropped);
	u64_stats_add(&ns->tx_desc_errors, errors);
	u64_stats_update_end(&ns->syncp);

	netdev_tx_completed_queue(netdev_get_tx_queue(port->netdev, 0), pkts,
				  bytes);

	/*
	 * Pairs with the barrier in vnic_start_xmit(). A detached netdev (the
	 * function is being recovered) stays stopped: attaching wakes it.
	 */
	smp_mb();
	if (unlikely(netif_queue_stopped(port->netdev)) &&
	    netif_device_present(port->netdev) &&
	    vnic_tx_unused(tx) >= vnic_tx_wake_thresh(tx))
		netif_wake_queue(port->netdev);
}
