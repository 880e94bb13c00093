// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - receive queue.
 *
 * One frame per buffer: every buffer holds MTU + 18 bytes (Ethernet header
 * and one VLAN tag, since tags stay in-band), rounded up, so the card never
 * needs to chain. Every slot always holds a mapped buffer; all slots but one
 * are posted to the card. When the card has filled a slot (DONE), the driver
 * passes the buffer up, puts a fresh one in the slot (or, if it cannot get
 * one, drops the frame and reuses the old buffer, so the ring never runs
 * dry) and, once per poll, moves the tail up behind the cleaned slots with
 * one doorbell write.
 *
 * The card is not trusted: a length it reports that does not fit the buffer
 * is counted and the frame dropped.
 */
#include <linux/dma-mapping.h>
#include <linux/etherdevice.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>

#include "vnic.h"

static void vnic_rx_write_desc(struct vnic_rx_ring *rx, u32 i)
{
	struct vnic_rx_desc *desc = &rx->desc[i];

	desc->addr = cpu_to_le64(rx->bufs[i].dma);
	desc->buf_len = cpu_to_le16(rx->buf_len);
	desc->len = 0;
	desc->status = 0;
	desc->reserved = 0;
}

/* Allocate and map one empty buffer; @napi is NULL outside NAPI context. */
static int vnic_rx_buf_alloc(struct vnic_port *port, struct vnic_rx_buf *buf,
			     struct napi_struct *napi)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_ring *rx = &port->rx;
	struct sk_buff *skb;
	dma_addr_t dma;

	if (napi)
		skb = napi_alloc_skb(napi, rx->buf_len);
	else
		skb = __netdev_alloc_skb_ip_align(port->netdev, rx->buf_len,
						  GFP_KERNEL);
	if (unlikely(!skb))
		return -ENOMEM;

	dma = dma_map_single(dev, skb->data, rx->buf_len, DMA_FROM_DEVICE);
	if (unlikely(dma_mapping_error(dev, dma))) {
		dev_kfree_skb_any(skb);
		return -ENOMEM;
	}

	buf->skb = skb;
	buf->dma = dma;
	return 0;
}

/**
 * vnic_rx_ring_alloc - allocate the receive ring and fill every slot
 * @port: the port, stopped; @port->rx_ring_size and the MTU set
 *
 * The descriptors are ready but not posted: vnic_rx_post_all() does that
 * once the queue runs.
 *
 * Return: 0 or -ENOMEM.
 */
int vnic_rx_ring_alloc(struct vnic_port *port)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_ring *rx = &port->rx;
	u32 i;
	int err;

	memset(rx, 0, sizeof(*rx));
	rx->size = port->rx_ring_size;
	rx->mask = rx->size - 1;
	rx->buf_len = max_t(u32, VNIC_RX_BUF_LEN(port->netdev->mtu),
			    VNIC_RX_MIN_BUF);
	if (WARN_ON(rx->buf_len > VNIC_RX_MAX_BUF))
		return -EINVAL;

	rx->bufs = kvcalloc(rx->size, sizeof(*rx->bufs), GFP_KERNEL);
	if (!rx->bufs)
		return -ENOMEM;

	rx->desc = dma_alloc_coherent(dev, rx->size * sizeof(*rx->desc),
				      &rx->dma, GFP_KERNEL);
	if (!rx->desc) {
		err = -ENOMEM;
		goto abort_with_bufs;
	}

	for (i = 0; i < rx->size; i++) {
		err = vnic_rx_buf_alloc(port, &rx->bufs[i], NULL);
		if (err)
			goto abort_with_buffers;
		vnic_rx_write_desc(rx, i);
	}
	return 0;

abort_with_buffers:
	vnic_rx_ring_free(port);
	return err;

abort_with_bufs:
	kvfree(rx->bufs);
	rx->bufs = NULL;
	return err;
}

/**
 * vnic_rx_ring_free - unmap and free every buffer, then the ring
 * @port: the port; the card's receive queue already stopped
 */
void vnic_rx_ring_free(struct vnic_port *port)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_ring *rx = &port->rx;
	struct vnic_rx_buf *buf;
	u32 i;

	if (!rx->bufs)
		return;

	for (i = 0; i < rx->size; i++) {
		buf = &rx->bufs[i];
		if (!buf->skb)
			continue;
		dma_unmap_single(dev, buf->dma, rx->buf_len, DMA_FROM_DEVICE);
		dev_kfree_skb_any(buf->skb);
		buf->skb = NULL;
	}

	if (rx->desc)
		dma_free_coherent(dev, rx->size * sizeof(*rx->desc), rx->desc,
				  rx->dma);
	rx->desc = NULL;
	kvfree(rx->bufs);
	rx->bufs = NULL;
}

/**
 * vnic_rx_post_all - hand every slot but one to the card
 * @port: the port, its receive queue running
 */
void vnic_rx_post_all(struct vnic_port *port)
{
	/* next_to_clean is 0 since vnic_rx_ring_alloc(), like the card's head */
	vnic_qp_wr32(port, VNIC_QP_RX_TAIL, port->rx.mask);
}

/**
 * vnic_rx_clean - pass received frames up and repost their slots
 * @port: the port
 * @budget: most frames to process
 *
 * Return: frames processed (passed up or dropped), at most @budget.
 */
int vnic_rx_clean(struct vnic_port *port, int budget)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_napi_stats *ns = &port->nstats;
	struct vnic_rx_ring *rx = &port->rx;
	u32 packets = 0, bytes = 0, bad_len = 0, alloc_fail = 0;
	u32 i = rx->next_to_clean;
	struct vnic_rx_buf *buf, fresh;
	struct vnic_rx_desc *desc;
	struct sk_buff *skb;
	int done = 0;
	u16 status;
	u32 len;

	while (done < budget) {
		desc = &rx->desc[i];
		status = le16_to_cpu(READ_ONCE(desc->status));
		if (!(status & VNIC_RXD_S_DONE))
			break;
		/* The card wrote len and status after the data */
		dma_rmb();
		len = le16_to_cpu(READ_ONCE(desc->len));
		buf = &rx->bufs[i];

		if (unlikely(len < ETH_HLEN || len > rx->buf_len)) {
			bad_len++;
			net_err_ratelimited("%s: card reported a %u-byte frame in a %u-byte buffer (slot %u)\n",
					    netdev_name(port->netdev), len,
					    rx->buf_len, i);
			goto repost;
		}

		if (unlikely(vnic_rx_buf_alloc(port, &fresh, &port->napi))) {
			alloc_fail++;
			goto repost;	/* drop the frame, keep the buffer */
		}

		dma_unmap_single(dev, buf->dma, rx->buf_len, DMA_FROM_DEVICE);
		skb = buf->skb;
		*buf = fresh;

		skb_put(skb, len);
		skb->protocol = eth_type_trans(skb, port->netdev);
		napi_gro_receive(&port->napi, skb);
		packets++;
		bytes += len;

repost:
		vnic_rx_write_desc(rx, i);
		i = (i + 1) & rx->mask;
		done++;
	}

	if (!done)
		return 0;

	rx->next_to_clean = i;
	/* One doorbell for everything cleaned: the card owns all but one */
	vnic_qp_wr32(port, VNIC_QP_RX_TAIL, (i - 1) & rx->mask);

	u64_stats_update_begin(&ns->syncp);
	u64_stats_add(&ns->rx_packets, packets);
	u64_stats_add(&ns->rx_bytes, bytes);
	u64_stats_add(&ns->rx_bad_len, bad_len);
	u64_stats_add(&ns->rx_alloc_fail, alloc_fail);
	u64_stats_update_end(&ns->syncp);

	return done;
}
