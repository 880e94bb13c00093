// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - receive queue.
 *
 * Every buffer is a page, mapped while it sits in its slot. Every slot always
 * holds one; all slots but one are posted to the card. Once per poll the
 * driver moves the tail up behind the slots it cleaned, with one doorbell
 * write. The NAPI budget counts frames, whatever buffers they span.
 *
 * With MULTI_BUF (offloads on, and the exception queue pair of a card that
 * offers them) a buffer is one page (at most VNIC_RX_MAX_BUF) and a frame
 * spans consecutive buffers, each DONE with its own length, the last with
 * EOP. The card writes a frame's first descriptor last, so DONE there means
 * the whole frame is in. A frame may span as many buffers as an skb has
 * frags (MAX_SKB_FRAGS: a 64 KiB GSO frame with its header takes 17 pages).
 *
 * Without MULTI_BUF (a card older than the offloads) a buffer holds one
 * whole frame: the pages are of the order that fits MTU + 18 bytes (a single
 * page up to an MTU of about 4000, 16 KiB at 9000), and EOP is not looked
 * at, since such a card never sets it.
 *
 * On a queue with VNET_HDR every frame starts with a struct virtio_net_hdr,
 * read from the first buffer and applied with virtio_net_hdr_to_skb()
 * (CHECKSUM_PARTIAL, GSO type and size) before eth_type_trans(), while
 * skb->data is still the Ethernet header csum_start counts from. DATA_VALID
 * is not acted on: the card never sets it, and trusting it would let a
 * broken card pass corrupt data as verified.
 *
 * A frame of at most VNIC_RX_COPYBREAK bytes is copied into a small skb and
 * its pages stay in their slots: small-packet rates depend on it. A longer
 * one gets its headers (eth_get_headlen(), at most VNIC_RX_HDR_MAX bytes)
 * copied into the skb's head and the rest of each buffer attached as a page
 * frag, each slot taking a fresh page instead. If the skb or a fresh page
 * cannot be had, the frame is dropped and its pages stay (rx_alloc_fail): the
 * ring never runs dry.
 *
 * The card is not trusted. Each descriptor's length is read once. A frame
 * with an empty buffer or one longer than the buffer, whose first buffer does
 * not hold its header and an Ethernet header, that lacks EOP where it must
 * have one (a descriptor without DONE before it, or more than
 * VNIC_RX_MAX_DESCS buffers), or that spans more buffers than an skb takes,
 * is dropped and counted; its buffers go back to the card. A chain without
 * EOP is dropped up to the first descriptor that is not DONE.
 */
#include <linux/bitfield.h>
#include <linux/dma-mapping.h>
#include <linux/etherdevice.h>
#include <linux/gfp.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/virtio_net.h>

#include "vnic.h"

/**
 * struct vnic_rx_frame - the buffers of one received frame
 * @first: slot of its first buffer
 * @nbufs: slots it spans, which all go back to the card afterwards
 * @len: bytes in all of them, the per-frame header included
 * @fresh: bit j set: slot @first + j got a fresh page, the skb its old one
 * @lens: bytes in each buffer, as read (once) from the descriptors
 */
struct vnic_rx_frame {
	u32 first;
	u32 nbufs;
	u32 len;
	u32 fresh;
	u16 lens[VNIC_RX_MAX_DESCS];
};

/* What one poll counted, added to the port's statistics at its end */
struct vnic_rx_counts {
	u32 packets;
	u32 bytes;
	u32 bad_len;
	u32 bad_chain;
	u32 too_many_bufs;
	u32 alloc_fail;
	u32 hdr_errors;
	u32 gso;
	u32 multi_buf;
};

static void vnic_rx_write_desc(struct vnic_rx_ring *rx, u32 i)
{
	struct vnic_rx_desc *desc = &rx->desc[i];

	desc->addr = cpu_to_le64(rx->bufs[i].dma);
	desc->buf_len = cpu_to_le16(rx->buf_len);
	desc->len = 0;
	desc->status = 0;
	desc->reserved = 0;
}

/* Allocate and map one empty buffer */
static int vnic_rx_page_alloc(struct vnic_port *port, struct vnic_rx_buf *buf,
			      gfp_t gfp)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_ring *rx = &port->rx;
	struct page *page;
	dma_addr_t dma;

	/* Compound, so that the stack can hold and free it as one frag */
	page = alloc_pages(gfp | __GFP_COMP | __GFP_NOWARN, rx->page_order);
	if (unlikely(!page))
		return -ENOMEM;

	dma = dma_map_page(dev, page, 0, rx->truesize, DMA_FROM_DEVICE);
	if (unlikely(dma_mapping_error(dev, dma))) {
		__free_pages(page, rx->page_order);
		return -ENOMEM;
	}

	buf->page = page;
	buf->dma = dma;
	return 0;
}

static void vnic_rx_page_free(struct vnic_port *port, struct vnic_rx_buf *buf)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_ring *rx = &port->rx;

	dma_unmap_page(dev, buf->dma, rx->truesize, DMA_FROM_DEVICE);
	__free_pages(buf->page, rx->page_order);
	buf->page = NULL;
}

/* @n fresh buffers for a frame, in NAPI context: all of them or none */
static int vnic_rx_pages_alloc(struct vnic_port *port,
			       struct vnic_rx_buf *bufs, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++) {
		if (vnic_rx_page_alloc(port, &bufs[i], GFP_ATOMIC)) {
			while (i--)
				vnic_rx_page_free(port, &bufs[i]);
			return -ENOMEM;
		}
	}
	return 0;
}

/* How the ring's buffers look, from the queue's features and the MTU */
static int vnic_rx_ring_layout(struct vnic_port *port)
{
	struct vnic_rx_ring *rx = &port->rx;
	u32 frame;

	rx->multi_buf = port->rq_features & VNIC_FEAT_MULTI_BUF;
	rx->hdr_len = port->rq_features & VNIC_FEAT_VNET_HDR ?
		      VNIC_VNET_HDR_LEN : 0;
	if (rx->multi_buf) {
		frame = VNIC_RX_MIN_BUF;
		rx->page_order = 0;
		rx->max_bufs = MAX_SKB_FRAGS;
	} else {
		frame = rx->hdr_len + VNIC_RX_BUF_LEN(port->netdev->mtu);
		rx->page_order = get_order(frame);
		rx->max_bufs = 1;
	}
	rx->truesize = PAGE_SIZE << rx->page_order;
	/* The whole page: the card may fill it all, whatever the MTU */
	rx->buf_len = min_t(u32, rx->truesize, VNIC_RX_MAX_BUF);
	if (WARN_ON(rx->buf_len < max_t(u32, frame, VNIC_RX_MIN_BUF)))
		return -EINVAL;
	if (WARN_ON(rx->size < vnic_rx_ring_min(port)))
		return -EINVAL;
	return 0;
}

/**
 * vnic_rx_ring_min - smallest receive ring a port can run with
 * @port: the port
 *
 * Return: VNIC_RX_RING_MIN_GSO if GSO frames arrive, else the card's
 * minimum.
 */
u32 vnic_rx_ring_min(const struct vnic_port *port)
{
	return port->rq_features & VNIC_FEAT_GSO ? VNIC_RX_RING_MIN_GSO :
						   VNIC_RING_MIN;
}

/**
 * vnic_rx_ring_alloc - allocate the receive ring and fill every slot
 * @port: the port, stopped; @port->rx_ring_size, its features and MTU set
 *
 * The descriptors are ready but not posted: vnic_rx_post_all() does that
 * once the queue runs.
 *
 * Return: 0, -EINVAL for a ring too small for the port, or -ENOMEM.
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
	err = vnic_rx_ring_layout(port);
	if (err)
		return err;

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
		err = vnic_rx_page_alloc(port, &rx->bufs[i], GFP_KERNEL);
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
	u32 i;

	if (!rx->bufs)
		return;

	for (i = 0; i < rx->size; i++)
		if (rx->bufs[i].page)
			vnic_rx_page_free(port, &rx->bufs[i]);

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
	if (!vnic_db_rx(port, true, port->rx.mask, false))
		vnic_qp_wr32(port, VNIC_QP_RX_TAIL, port->rx.mask);
}

static struct vnic_rx_buf *vnic_rx_frame_buf(struct vnic_rx_ring *rx,
					     const struct vnic_rx_frame *f,
					     u32 j)
{
	return &rx->bufs[(f->first + j) & rx->mask];
}

/* Checks on a frame whose buffers end with EOP (or that has one buffer) */
static bool vnic_rx_frame_ok(struct vnic_port *port,
			     const struct vnic_rx_frame *f, bool bad_len,
			     struct vnic_rx_counts *c)
{
	struct vnic_rx_ring *rx = &port->rx;

	if (unlikely(bad_len || f->lens[0] < rx->hdr_len + ETH_HLEN)) {
		c->bad_len++;
		net_err_ratelimited("%s: card reported bad lengths for the %u-buffer frame at slot %u (first %u bytes, %u in all, buffers of %u)\n",
				    netdev_name(port->netdev), f->nbufs,
				    f->first, f->lens[0], f->len, rx->buf_len);
		return false;
	}
	/* Valid for the card, but beyond what an skb can hold */
	if (unlikely(f->nbufs > rx->max_bufs)) {
		c->too_many_bufs++;
		return false;
	}
	return true;
}

/*
 * Find the buffers of the frame whose first descriptor, at slot @first, is
 * DONE with @status, reading each length once. The card has written all of
 * them before that status (the caller's dma_rmb() orders the reads).
 *
 * Return: true if the frame can be passed up; either way f->nbufs (at least
 * 1) says how many slots it used.
 */
static bool vnic_rx_span(struct vnic_port *port, u32 first, u16 status,
			 struct vnic_rx_frame *f, struct vnic_rx_counts *c)
{
	struct vnic_rx_ring *rx = &port->rx;
	u32 limit = rx->multi_buf ? min_t(u32, VNIC_RX_MAX_DESCS, rx->mask) : 1;
	struct vnic_rx_desc *desc;
	bool bad_len = false;
	u32 j, len;

	f->first = first;
	f->len = 0;
	f->fresh = 0;
	for (j = 0; j < limit; j++) {
		desc = &rx->desc[(first + j) & rx->mask];
		if (j) {
			status = le16_to_cpu(READ_ONCE(desc->status));
			if (!(status & VNIC_RXD_S_DONE))
				break;
		}
		len = le16_to_cpu(READ_ONCE(desc->len));
		f->lens[j] = len;
		f->len += len;
		if (!len || len > rx->buf_len)
			bad_len = true;
		if (!rx->multi_buf || (status & VNIC_RXD_S_EOP)) {
			f->nbufs = j + 1;
			return vnic_rx_frame_ok(port, f, bad_len, c);
		}
	}

	/* No EOP: drop what the card says it filled */
	f->nbufs = j;
	c->bad_chain++;
	net_err_ratelimited("%s: card wrote a frame of %u buffers without EOP at slot %u\n",
			    netdev_name(port->netdev), j, first);
	return false;
}

/* Let the CPU see what the card wrote into the frame's buffers */
static void vnic_rx_sync_for_cpu(struct vnic_port *port,
				 const struct vnic_rx_frame *f)
{
	struct device *dev = &port->priv->pdev->dev;
	u32 j;

	for (j = 0; j < f->nbufs; j++)
		dma_sync_single_for_cpu(dev,
					vnic_rx_frame_buf(&port->rx, f, j)->dma,
					f->lens[j], DMA_FROM_DEVICE);
}

/*
 * Give the frame's slots back to the card: a page the CPU read (@synced)
 * and that stays is synced back first; fresh pages need nothing.
 */
static void vnic_rx_repost(struct vnic_port *port,
			   const struct vnic_rx_frame *f, bool synced)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_ring *rx = &port->rx;
	dma_addr_t dma;
	u32 j;

	for (j = 0; j < f->nbufs; j++) {
		dma = vnic_rx_frame_buf(rx, f, j)->dma;
		if (synced && !(f->fresh & BIT(j)))
			dma_sync_single_for_device(dev, dma, f->lens[j],
						   DMA_FROM_DEVICE);
		vnic_rx_write_desc(rx, (f->first + j) & rx->mask);
	}
}

/* A short frame: copied whole, the pages stay in their slots */
static struct sk_buff *vnic_rx_copy(struct vnic_port *port,
				    const struct vnic_rx_frame *f)
{
	struct vnic_rx_ring *rx = &port->rx;
	u32 j, off = rx->hdr_len;
	struct sk_buff *skb;
	void *va;

	skb = napi_alloc_skb(&port->napi, f->len - rx->hdr_len);
	if (unlikely(!skb))
		return NULL;

	for (j = 0; j < f->nbufs; j++) {
		va = page_address(vnic_rx_frame_buf(rx, f, j)->page);
		skb_put_data(skb, va + off, f->lens[j] - off);
		off = 0;
	}
	return skb;
}

/*
 * A long frame: its headers copied into the head, the rest of each buffer
 * attached as a frag, and a fresh page put in each slot whose page the skb
 * took. A first buffer that the head holds entirely keeps its page.
 */
static struct sk_buff *vnic_rx_build(struct vnic_port *port,
				     struct vnic_rx_frame *f)
{
	struct device *dev = &port->priv->pdev->dev;
	struct vnic_rx_buf fresh[MAX_SKB_FRAGS];
	struct vnic_rx_ring *rx = &port->rx;
	u32 j, skip, headlen, avail, off;
	struct vnic_rx_buf *buf;
	struct sk_buff *skb;
	void *va;

	va = page_address(rx->bufs[f->first].page) + rx->hdr_len;
	avail = f->lens[0] - rx->hdr_len;
	headlen = eth_get_headlen(port->netdev, va,
				  min_t(u32, avail, VNIC_RX_HDR_MAX));
	skip = headlen == avail;

	if (vnic_rx_pages_alloc(port, fresh, f->nbufs - skip))
		return NULL;
	skb = napi_alloc_skb(&port->napi, VNIC_RX_HDR_MAX);
	if (unlikely(!skb)) {
		for (j = 0; j < f->nbufs - skip; j++)
			vnic_rx_page_free(port, &fresh[j]);
		return NULL;
	}
	skb_put_data(skb, va, headlen);

	for (j = skip; j < f->nbufs; j++) {
		buf = vnic_rx_frame_buf(rx, f, j);
		off = j ? 0 : rx->hdr_len + headlen;
		/* Synced for the CPU already, as far as the card wrote */
		dma_unmap_page_attrs(dev, buf->dma, rx->truesize,
				     DMA_FROM_DEVICE, DMA_ATTR_SKIP_CPU_SYNC);
		skb_add_rx_frag(skb, j - skip, buf->page, off,
				f->lens[j] - off, rx->truesize);
		*buf = fresh[j - skip];
		f->fresh |= BIT(j);
	}
	return skb;
}

/* Apply the frame's header and pass it up */
static void vnic_rx_deliver(struct vnic_port *port, struct sk_buff *skb,
			    const struct virtio_net_hdr *hdr,
			    struct vnic_rx_counts *c)
{
	u32 len = skb->len;

	if (hdr && unlikely(virtio_net_hdr_to_skb(skb, hdr, true))) {
		c->hdr_errors++;
		net_dbg_ratelimited("%s: offload header refused: flags 0x%x gso_type 0x%x gso_size %u csum %u+%u, frame of %u bytes\n",
				    netdev_name(port->netdev), hdr->flags,
				    hdr->gso_type,
				    __virtio16_to_cpu(true, hdr->gso_size),
				    __virtio16_to_cpu(true, hdr->csum_start),
				    __virtio16_to_cpu(true, hdr->csum_offset),
				    len);
		kfree_skb(skb);
		return;
	}
	if (skb_is_gso(skb))
		c->gso++;

	skb->protocol = eth_type_trans(skb, port->netdev);
	napi_gro_receive(&port->napi, skb);
	c->packets++;
	c->bytes += len;
}

/*
 * Receive the frame whose first descriptor, at slot @first, is DONE with
 * @status, and give its slots back to the card.
 *
 * Return: slots it used.
 */
static u32 vnic_rx_one(struct vnic_port *port, u32 first, u16 status,
		       struct vnic_rx_counts *c)
{
	struct vnic_rx_ring *rx = &port->rx;
	struct virtio_net_hdr hdr;
	struct vnic_rx_frame f;
	struct sk_buff *skb;

	if (!vnic_rx_span(port, first, status, &f, c)) {
		vnic_rx_repost(port, &f, false);
		return f.nbufs;
	}

	vnic_rx_sync_for_cpu(port, &f);
	/* A copy: the card could still write into the page */
	if (rx->hdr_len)
		memcpy(&hdr, page_address(rx->bufs[first].page), sizeof(hdr));

	if (f.len - rx->hdr_len <= VNIC_RX_COPYBREAK)
		skb = vnic_rx_copy(port, &f);
	else
		skb = vnic_rx_build(port, &f);
	vnic_rx_repost(port, &f, true);
	if (unlikely(!skb)) {
		c->alloc_fail++;	/* dropped, the pages reused */
		return f.nbufs;
	}

	if (f.nbufs > 1)
		c->multi_buf++;
	vnic_rx_deliver(port, skb, rx->hdr_len ? &hdr : NULL, c);
	return f.nbufs;
}

static void vnic_rx_add_counts(struct vnic_port *port,
			       const struct vnic_rx_counts *c)
{
	struct vnic_napi_stats *ns = &port->nstats;

	u64_stats_update_begin(&ns->syncp);
	u64_stats_add(&ns->rx_packets, c->packets);
	u64_stats_add(&ns->rx_bytes, c->bytes);
	u64_stats_add(&ns->rx_bad_len, c->bad_len);
	u64_stats_add(&ns->rx_bad_chain, c->bad_chain);
	u64_stats_add(&ns->rx_too_many_bufs, c->too_many_bufs);
	u64_stats_add(&ns->rx_alloc_fail, c->alloc_fail);
	u64_stats_add(&ns->rx_hdr_errors, c->hdr_errors);
	u64_stats_add(&ns->rx_gso, c->gso);
	u64_stats_add(&ns->rx_multi_buf, c->multi_buf);
	u64_stats_update_end(&ns->syncp);
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
	struct vnic_rx_ring *rx = &port->rx;
	struct vnic_rx_counts c = {};
	u32 i = rx->next_to_clean;
	u32 head = U32_MAX;
	int done = 0;
	u16 status;

	if (port->head_wb) {
		/*
		 * Take only what the card recorded as received: a buffer past
		 * its head may be written again by a restarted card.
		 */
		head = le16_to_cpu(READ_ONCE(port->rq_ctx->head)) & rx->mask;
		dma_rmb();
	}
	while (done < budget && i != head) {
		status = le16_to_cpu(READ_ONCE(rx->desc[i].status));
		if (!(status & VNIC_RXD_S_DONE))
			break;
		/*
		 * The card wrote this status after the frame's data and its
		 * other descriptors: read those only now.
		 */
		dma_rmb();
		i = (i + vnic_rx_one(port, i, status, &c)) & rx->mask;
		done++;
	}

	if (!done)
		return 0;

	rx->next_to_clean = i;
	/* One doorbell for everything cleaned, by vnic_rx_post() */
	rx->post_pending = true;

	vnic_rx_add_counts(port, &c);
	return done;
}

/**
 * vnic_rx_post - hand the slots vnic_rx_clean() cleaned back to the card,
 * and re-enable the queue pair's interrupt if @rearm
 * @port: the port
 * @rearm: the NAPI poll is complete
 *
 * The card owns all slots but one: the new tail is next_to_clean - 1. On a
 * 1.1 card the doorbell rides on the rearm write: every register write is
 * a vfio-user message, and a NAPI poll then costs one instead of two.
 */
void vnic_rx_post(struct vnic_port *port, bool rearm)
{
	struct vnic_rx_ring *rx = &port->rx;
	u32 tail = (rx->next_to_clean - 1) & rx->mask;
	bool post = rx->post_pending;
	u32 irq = VNIC_QP_IRQ_REARM;

	rx->post_pending = false;
	if ((post || rearm) && vnic_db_rx(port, post, tail, rearm))
		return;
	if (rearm && VNIC_VERSION_MINOR(port->priv->version) >=
		     VNIC_VERSION_MINOR_OFFLOADS) {
		if (post)
			irq |= VNIC_QP_IRQ_RX_TAIL |
			       FIELD_PREP(VNIC_QP_IRQ_TAIL, tail);
		vnic_qp_wr32(port, VNIC_QP_IRQ, irq);
		return;
	}
	if (post)
		vnic_qp_wr32(port, VNIC_QP_RX_TAIL, tail);
	if (rearm)
		vnic_qp_wr32(port, VNIC_QP_IRQ, irq);
}
