// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - send queue.
 *
 * Ownership follows head/tail indices (docs/datapath.md): the driver fills
 * slots from its tail and hands them over by writing the tail to QP_TX_TAIL;
 * the card sends them in order and writes each back with DONE. The driver
 * reclaims by DONE and never reads the card's head on the fast path.
 *
 * Every frame is one linear buffer in one descriptor with EOP: the driver
 * does not advertise NETIF_F_SG, so the stack hands it linear skbs. The
 * doorbell is deferred while the stack says more frames follow
 * (netdev_xmit_more()), so a burst costs one MMIO write.
 */
#include <linux/bitfield.h>
#include <linux/dma-mapping.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>

#include "vnic.h"

/* Free slots the driver may still fill; one slot always stays empty */
static u32 vnic_tx_unused(const struct vnic_tx_ring *tx)
{
	/*
	 * Pairs with the release in vnic_tx_clean(): a slot counted free here
	 * has been emptied (bufs[].skb cleared) before xmit fills it again.
	 */
	return (smp_load_acquire(&tx->next_to_clean) - tx->tail - 1) &
	       tx->mask;
}

/* A stopped queue restarts once a quarter of the ring is free again */
static u32 vnic_tx_wake_thresh(const struct vnic_tx_ring *tx)
{
	return tx->size / 4;
}

/**
 * vnic_tx_ring_alloc - allocate the send ring of a port
 * @port: the port, stopped; @port->tx_ring_size set
 *
 * Return: 0 or -ENOMEM.
 */
int vnic_tx_ring_alloc(struct vnic_port *port)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_tx_ring *tx = &port->tx;

	memset(tx, 0, sizeof(*tx));
	tx->size = port->tx_ring_size;
	tx->mask = tx->size - 1;

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
		if (!buf->skb)
			continue;
		dma_unmap_single(dev, buf->dma, buf->len, DMA_TO_DEVICE);
		dev_kfree_skb_any(buf->skb);
		buf->skb = NULL;
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
	/* iowrite32() orders the descriptor writes before the doorbell */
	vnic_qp_wr32(port, VNIC_QP_TX_TAIL, tx->tail);
}

static void vnic_tx_count_drop(struct vnic_port *port)
{
	u64_stats_update_begin(&port->xstats.syncp);
	u64_stats_inc(&port->xstats.dropped);
	u64_stats_update_end(&port->xstats.syncp);
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
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_tx_ring *tx = &port->tx;
	struct vnic_tx_desc *desc;
	struct vnic_tx_buf *buf;
	bool kick, stopped = false;
	dma_addr_t dma;
	u32 len;

	if (unlikely(!vnic_tx_unused(tx))) {
		netif_stop_queue(netdev);
		u64_stats_update_begin(&port->xstats.syncp);
		u64_stats_inc(&port->xstats.busy);
		u64_stats_update_end(&port->xstats.syncp);
		vnic_tx_kick(port);
		return NETDEV_TX_BUSY;
	}

	/* The card refuses (and fails the queue on) frames outside these */
	if (unlikely(skb->len < VNIC_TX_MIN_FRAME ||
		     skb->len > port->max_frame))
		goto drop;
	/* Without NETIF_F_SG this is a no-op; it keeps the one-buffer rule */
	if (unlikely(skb_linearize(skb)))
		goto drop;

	len = skb_headlen(skb);
	dma = dma_map_single(dev, skb->data, len, DMA_TO_DEVICE);
	if (unlikely(dma_mapping_error(dev, dma)))
		goto drop;

	buf = &tx->bufs[tx->tail];
	buf->skb = skb;
	buf->dma = dma;
	buf->len = len;

	desc = &tx->desc[tx->tail];
	desc->addr = cpu_to_le64(dma);
	desc->len = cpu_to_le16(len);
	desc->flags = cpu_to_le16(VNIC_TXD_F_EOP);
	desc->status = 0;
	desc->reserved = 0;

	skb_tx_timestamp(skb);

	/* The skb belongs to the cleaner once the doorbell may be rung */
	WRITE_ONCE(tx->tail, (tx->tail + 1) & tx->mask);
	kick = __netdev_tx_sent_queue(netdev_get_tx_queue(netdev, 0), len,
				      netdev_xmit_more());

	if (unlikely(!vnic_tx_unused(tx))) {
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

	if (unlikely(stopped)) {
		u64_stats_update_begin(&port->xstats.syncp);
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

	while (ntc != tail) {
		desc = &tx->desc[ntc];
		status = le16_to_cpu(READ_ONCE(desc->status));
		if (!(status & VNIC_TXD_S_DONE))
			break;
		/* Read the rest of the slot only after DONE */
		dma_rmb();

		buf = &tx->bufs[ntc];
		if (unlikely(!buf->skb))
			break;	/* DONE on a slot never posted: ignore */

		if (unlikely(status & VNIC_TXD_S_ERR_CODE)) {
			errors++;
			vnic_tx_log_error(port, ntc, status);
		} else if (status & VNIC_TXD_S_DROPPED) {
			dropped++;
		} else {
			sent++;
			sent_bytes += buf->len;
		}
		pkts++;
		bytes += buf->len;

		dma_unmap_single(dev, buf->dma, buf->len, DMA_TO_DEVICE);
		napi_consume_skb(buf->skb, napi_budget);
		buf->skb = NULL;
		desc->status = 0;
		ntc = (ntc + 1) & tx->mask;
	}

	if (!pkts)
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
