// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - address filtering: a netdev's unicast and multicast address lists
 * and its promiscuous and all-multicast flags, handed to the card
 * (interface 1.5, docs/datapath.md "Address filtering").
 *
 * ndo_set_rx_mode runs in atomic context (under the netdev's address lock),
 * so it only takes a snapshot of the lists and flags and queues a work item.
 * The work copies the snapshot into the port's list in guest memory
 * (VNIC_FILTER_MAX_ADDRS entries of VNIC_FILTER_ENTRY_LEN bytes), writes
 * QP_FILTER_LO/HI and QP_RX_MODE, which hands the whole list over in one
 * message, and reads QP_ADDR_STATUS to learn what the card granted. A burst
 * of changes (a bridge coming up, IPv6 joining its groups) queues the work
 * once and is handed over as one list.
 *
 * A list longer than the card takes falls back as NIC drivers do: too many
 * unicast addresses ask for promiscuous mode, too many groups for
 * all-multicast. The card grants promiscuous mode, and extra unicast
 * addresses beyond the VF's limit, only to a trusted VF; what it refuses is
 * logged once each time it starts refusing it.
 *
 * The list stays in guest memory, so the recovery (vnic_recovery.c) hands it
 * to a card that lost it (loadvm, a new vnicd) with the same three writes.
 * On a card older than 1.5 the netdev has no IFF_UNICAST_FLT (the core puts
 * it into promiscuous mode for extra unicast addresses, as before) and
 * nothing is sent.
 */
#include <linux/bitfield.h>
#include <linux/dma-mapping.h>
#include <linux/etherdevice.h>
#include <linux/netdevice.h>
#include <linux/string.h>

#include "vnic.h"

#define VNIC_FILTER_LIST_LEN	(VNIC_FILTER_MAX_ADDRS * VNIC_FILTER_ENTRY_LEN)

/* The refusals QP_ADDR_STATUS reports */
#define VNIC_ADDR_ST_REFUSED	(VNIC_ADDR_ST_PROMISC_REFUSED | \
				 VNIC_ADDR_ST_OVER_LIMIT | \
				 VNIC_ADDR_ST_TAKEN | VNIC_ADDR_ST_LIST_ERROR)

/* Log what the card newly refuses; f->mutex held */
static void vnic_filter_report(struct vnic_port *port, u32 status)
{
	struct vnic_filter *f = &port->filter;
	struct net_device *netdev = port->netdev;
	u32 news;

	/* All-ones: the card is gone; the recovery hands the list over again */
	if (status == ~0U)
		return;
	news = status & VNIC_ADDR_ST_REFUSED & ~f->status;
	f->status = status;
	if (news & VNIC_ADDR_ST_PROMISC_REFUSED)
		netdev_warn(netdev, "card refused promiscuous mode: VF not trusted (ip link set <pf> vf %u trust on); it receives its own addresses only\n",
			    port->priv->vf_index);
	if (news & VNIC_ADDR_ST_OVER_LIMIT)
		netdev_warn(netdev, "card refused unicast addresses over the VF's limit (%lu in effect): VF not trusted (ip link set <pf> vf %u trust on)\n",
			    FIELD_GET(VNIC_ADDR_ST_UNICAST, status),
			    port->priv->vf_index);
	if (news & VNIC_ADDR_ST_TAKEN)
		netdev_warn(netdev, "card refused unicast addresses that another vNIC has\n");
	if (news & VNIC_ADDR_ST_LIST_ERROR)
		netdev_err(netdev, "card could not read the address list at %pad\n",
			   &f->list.dma);
}

/* Hand the list and the flags to the card; f->mutex held */
static void vnic_filter_commit(struct vnic_port *port)
{
	struct vnic_filter *f = &port->filter;

	/* A queue pair that is gone, or a card that does not answer yet */
	if (READ_ONCE(port->gone) || !vnic_card_answers(port->priv))
		return;
	/* iowrite32() orders the list's stores before the card reads it */
	vnic_qp_wr32(port, VNIC_QP_FILTER_LO, lower_32_bits(f->list.dma));
	vnic_qp_wr32(port, VNIC_QP_FILTER_HI, upper_32_bits(f->list.dma));
	vnic_qp_wr32(port, VNIC_QP_RX_MODE, f->rx_mode);
	vnic_filter_report(port, vnic_qp_rd32(port, VNIC_QP_ADDR_STATUS));
}

static void vnic_filter_work(struct work_struct *work)
{
	struct vnic_filter *f = container_of(work, struct vnic_filter, work);
	struct vnic_port *port = container_of(f, struct vnic_port, filter);
	u8 *list = f->list.va;
	u32 i;

	mutex_lock(&f->mutex);
	spin_lock_bh(&f->lock);
	memset(list, 0, f->count * VNIC_FILTER_ENTRY_LEN);
	for (i = 0; i < f->count; i++)
		memcpy(list + i * VNIC_FILTER_ENTRY_LEN, f->addrs[i], ETH_ALEN);
	f->rx_mode = f->mode | FIELD_PREP(VNIC_RX_MODE_COUNT, f->count);
	spin_unlock_bh(&f->lock);
	f->written = true;
	vnic_filter_commit(port);
	mutex_unlock(&f->mutex);
}

/**
 * vnic_set_rx_mode - ndo_set_rx_mode: snapshot the lists, queue the work
 * @netdev: a vNIC's netdev
 *
 * Called with the netdev's address lock held and bottom halves off.
 */
void vnic_set_rx_mode(struct net_device *netdev)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct vnic_filter *f = &port->filter;
	struct netdev_hw_addr *ha;
	u32 mode = 0, n = 0;

	if (!f->list.va)
		return;
	if (netdev->flags & IFF_PROMISC)
		mode |= VNIC_RX_MODE_PROMISC;
	if (netdev->flags & IFF_ALLMULTI)
		mode |= VNIC_RX_MODE_ALLMULTI;

	spin_lock(&f->lock);
	if (netdev_uc_count(netdev) > VNIC_FILTER_MAX_ADDRS) {
		mode |= VNIC_RX_MODE_PROMISC;
	} else {
		netdev_for_each_uc_addr(ha, netdev)
			memcpy(f->addrs[n++], ha->addr, ETH_ALEN);
	}
	if (n + netdev_mc_count(netdev) > VNIC_FILTER_MAX_ADDRS) {
		mode |= VNIC_RX_MODE_ALLMULTI;
	} else {
		netdev_for_each_mc_addr(ha, netdev)
			memcpy(f->addrs[n++], ha->addr, ETH_ALEN);
	}
	f->mode = mode;
	f->count = n;
	spin_unlock(&f->lock);
	schedule_work(&f->work);
}

/**
 * vnic_filter_rewrite - hand the last list to the card again
 * @port: a port whose card lost its filter (the recovery's step 5)
 */
void vnic_filter_rewrite(struct vnic_port *port)
{
	struct vnic_filter *f = &port->filter;

	if (!f->list.va)
		return;
	mutex_lock(&f->mutex);
	if (f->written)
		vnic_filter_commit(port);
	mutex_unlock(&f->mutex);
}

/**
 * vnic_filter_init - set up a port's filter before its netdev registers
 * @port: the port; the exception queue pair's gets no list
 *
 * Return: 0 or -ENOMEM.
 */
int vnic_filter_init(struct vnic_port *port)
{
	struct vnic_filter *f = &port->filter;
	struct vnic_priv *priv = port->priv;

	spin_lock_init(&f->lock);
	mutex_init(&f->mutex);
	INIT_WORK(&f->work, vnic_filter_work);
	if (port->exc || !vnic_has_rx_filter(priv))
		return 0;
	f->list.va = dma_alloc_coherent(&priv->pdev->dev, VNIC_FILTER_LIST_LEN,
					&f->list.dma, GFP_KERNEL);
	if (!f->list.va)
		return -ENOMEM;
	port->netdev->priv_flags |= IFF_UNICAST_FLT;
	return 0;
}

/**
 * vnic_filter_free - undo vnic_filter_init()
 * @port: a port whose netdev is unregistered (or never was)
 */
void vnic_filter_free(struct vnic_port *port)
{
	struct vnic_filter *f = &port->filter;

	cancel_work_sync(&f->work);
	if (f->list.va)
		dma_free_coherent(&port->priv->pdev->dev, VNIC_FILTER_LIST_LEN,
				  f->list.va, f->list.dma);
	f->list.va = NULL;
	mutex_destroy(&f->mutex);
}
