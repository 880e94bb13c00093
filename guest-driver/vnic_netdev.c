// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - one netdev per enabled queue pair.
 *
 * A VF serves several vNICs of one VM: QP_NUM queue pairs, each its own
 * netdev with its own MAC (QP_MAC), MSI-X vector and rings. The PF has one.
 * dev_port tells the netdevs of one function apart.
 *
 * Management may change QP_NUM at run time (IRQ_CAUSE.CONFIG): netdevs are
 * then added or removed above the lower of the two counts, never below.
 *
 * A PF whose EXC_QP is not 0 has one more netdev, after its vNIC's, for the
 * exception queue pair (docs/vxlan.md): the card writes its VxLAN requests
 * there as 0x88B5 frames and takes the answers from its send queue, so an
 * agent in the guest (vnicctl vxlan-agent --pf-netdev) can serve them over
 * an AF_PACKET socket. It is a port like the others (rings, contexts, NAPI,
 * vector q + 1, recovery) but not a vNIC: no ARP, no MAC or VLAN writes (the
 * card refuses them), and an MTU that fits the card's longest message.
 *
 * Opening and closing a netdev starts and stops its port (vnic_port.c); a
 * new MTU and the reset task (transmit timeout, queue error) restart it.
 *
 * With a card that offers the offloads (FEATURES), a vNIC's netdev has
 * checksum offload, scatter-gather and TSO, and its queues exchange a
 * struct virtio_net_hdr with every frame (vnic_port_init_offloads()).
 */
#include <linux/bitfield.h>
#include <linux/etherdevice.h>
#include <linux/if_vlan.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/slab.h>

#include "vnic.h"

/*
 * Send completions alone wait this long for the interrupt (QP_ITR.TX_USECS):
 * a sender reclaims its ring in bursts instead of taking an interrupt, a
 * NAPI poll and a rearm per frame (docs/performance.md, step G5).
 */
static unsigned int tx_usecs = 200;
module_param(tx_usecs, uint, 0444);
MODULE_PARM_DESC(tx_usecs,
		 "Initial ethtool -C tx-usecs of every vNIC, 0..32767 (default: 200)");

/*
 * Received frames: the card's adaptive moderation (QP_ITR.ADAPTIVE) by
 * default, an interrupt at once at a low rate and about four frames per
 * interrupt under load (docs/performance.md, "Round 2").
 */
static bool adaptive_rx = true;
module_param(adaptive_rx, bool, 0444);
MODULE_PARM_DESC(adaptive_rx,
		 "Initial ethtool -C adaptive-rx of every vNIC (default: on)");

static int vnic_open(struct net_device *netdev)
{
	return vnic_port_start(netdev_priv(netdev));
}

static int vnic_stop(struct net_device *netdev)
{
	vnic_port_stop(netdev_priv(netdev));
	return 0;
}

static int vnic_change_mtu(struct net_device *netdev, int new_mtu)
{
	struct vnic_port *port = netdev_priv(netdev);
	int old_mtu = netdev->mtu;
	int err;

	/* The receive buffers are sized for the MTU: rebuild them */
	netdev->mtu = new_mtu;
	err = vnic_port_restart(port);
	if (err) {
		netdev->mtu = old_mtu;
		if (vnic_port_restart(port))
			netdev_err(netdev, "cannot restart with the old MTU %d either\n",
				   old_mtu);
	}
	return err;
}

static int vnic_vlan_rx_add_vid(struct net_device *netdev, __be16 proto,
				u16 vid)
{
	struct vnic_port *port = netdev_priv(netdev);

	/* VID 0 (priority tags) counts as untagged on the card */
	if (!vid || test_bit(vid, port->active_vlans))
		return 0;
	if (port->nr_vlans >= VNIC_QP_MAX_VLANS) {
		netdev_err(netdev, "cannot join VLAN %u: the card allows %u VLANs per vNIC\n",
			   vid, VNIC_QP_MAX_VLANS);
		return -ENOSPC;
	}
	vnic_qp_wr32(port, VNIC_QP_VLAN, FIELD_PREP(VNIC_QP_VLAN_VID, vid));
	set_bit(vid, port->active_vlans);
	port->nr_vlans++;
	return 0;
}

static int vnic_vlan_rx_kill_vid(struct net_device *netdev, __be16 proto,
				 u16 vid)
{
	struct vnic_port *port = netdev_priv(netdev);

	if (!vid || !test_bit(vid, port->active_vlans))
		return 0;
	/* A removed queue pair left its VLANs with its switch entries */
	if (!port->gone)
		vnic_qp_wr32(port, VNIC_QP_VLAN,
			     FIELD_PREP(VNIC_QP_VLAN_VID, vid) |
			     VNIC_QP_VLAN_LEAVE);
	clear_bit(vid, port->active_vlans);
	port->nr_vlans--;
	return 0;
}

static void vnic_get_stats64(struct net_device *netdev,
			     struct rtnl_link_stats64 *s)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct vnic_napi_stats *ns = &port->nstats;
	struct vnic_xmit_stats *xs = &port->xstats;
	u64 switch_drops, desc_errors, alloc_fail, bad_len, dropped;
	u64 bad_chain, too_many_bufs, hdr_errors;
	unsigned int start;

	do {
		start = u64_stats_fetch_begin(&ns->syncp);
		s->rx_packets = u64_stats_read(&ns->rx_packets);
		s->rx_bytes = u64_stats_read(&ns->rx_bytes);
		s->tx_packets = u64_stats_read(&ns->tx_packets);
		s->tx_bytes = u64_stats_read(&ns->tx_bytes);
		switch_drops = u64_stats_read(&ns->tx_switch_drops);
		desc_errors = u64_stats_read(&ns->tx_desc_errors);
		alloc_fail = u64_stats_read(&ns->rx_alloc_fail);
		bad_len = u64_stats_read(&ns->rx_bad_len);
		bad_chain = u64_stats_read(&ns->rx_bad_chain);
		too_many_bufs = u64_stats_read(&ns->rx_too_many_bufs);
		hdr_errors = u64_stats_read(&ns->rx_hdr_errors);
	} while (u64_stats_fetch_retry(&ns->syncp, start));

	do {
		start = u64_stats_fetch_begin(&xs->syncp);
		dropped = u64_stats_read(&xs->dropped);
	} while (u64_stats_fetch_retry(&xs->syncp, start));

	s->tx_dropped = dropped + switch_drops;
	s->tx_errors = desc_errors;
	s->rx_dropped = alloc_fail + too_many_bufs;
	s->rx_errors = bad_len + bad_chain + hdr_errors;
	s->rx_length_errors = bad_len;
	s->rx_frame_errors = bad_chain + hdr_errors;
}

static void vnic_tx_timeout(struct net_device *netdev, unsigned int txqueue)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct vnic_queue_ctx *ctx = port->sq_ctx;
	struct vnic_tx_ring *tx = &port->tx;

	netdev_err(netdev, "transmit timeout: tail %u, next to clean %u, card head %u, QP_STATUS 0x%08x, send context state 0x%x head %u tail %u error %u; restarting the queues\n",
		   READ_ONCE(tx->tail), READ_ONCE(tx->next_to_clean),
		   vnic_qp_rd32(port, VNIC_QP_TX_HEAD),
		   vnic_qp_rd32(port, VNIC_QP_STATUS),
		   le16_to_cpu(READ_ONCE(ctx->state)),
		   le16_to_cpu(READ_ONCE(ctx->head)),
		   le16_to_cpu(READ_ONCE(ctx->tail)), READ_ONCE(ctx->error));
	schedule_work(&port->reset_task);
}

static void vnic_reset_task(struct work_struct *work)
{
	struct vnic_port *port = container_of(work, struct vnic_port,
					      reset_task);

	rtnl_lock();
	/* A detached netdev waits for the recovery (vnic_recovery.c) */
	if (netif_running(port->netdev) &&
	    netif_device_present(port->netdev)) {
		port->restarts++;
		if (vnic_port_restart(port))
			netdev_err(port->netdev, "restart failed; set the link down and up to retry\n");
	}
	rtnl_unlock();
}

/* The queue pair's MAC as the card reports it (QP_MAC_LO/HI) */
static void vnic_port_card_mac(struct vnic_port *port, u8 *mac)
{
	put_unaligned_le32(vnic_qp_rd32(port, VNIC_QP_MAC_LO), &mac[0]);
	put_unaligned_le16(vnic_qp_rd32(port, VNIC_QP_MAC_HI) & 0xffff,
			   &mac[4]);
}

/*
 * Ask the card to make @addr the queue pair's MAC (written LO first, HI
 * commits). It takes it from the PF and a trusted VF, if no other vNIC has
 * it; else it keeps the old one and, from interface 1.5, says why in
 * QP_ADDR_STATUS. Return: 0, -EPERM (VF not trusted, as iavf and ixgbevf
 * answer when their PF refuses), -EADDRNOTAVAIL (another vNIC's address) or
 * -EIO (the card does not answer).
 */
static int vnic_port_write_mac(struct vnic_port *port, const u8 *addr)
{
	struct net_device *netdev = port->netdev;
	struct vnic_priv *priv = port->priv;
	u32 status = 0;
	u8 mac[ETH_ALEN];

	vnic_qp_wr32(port, VNIC_QP_MAC_LO, get_unaligned_le32(&addr[0]));
	vnic_qp_wr32(port, VNIC_QP_MAC_HI, get_unaligned_le16(&addr[4]));
	vnic_port_card_mac(port, mac);
	if (ether_addr_equal(mac, addr)) {
		ether_addr_copy(port->card_mac, mac);
		netdev_info(netdev, "card took the MAC %pM for queue pair %u\n",
			    mac, port->q);
		return 0;
	}
	if (!vnic_card_answers(priv))
		return -EIO;
	if (vnic_has_rx_filter(priv))
		status = vnic_qp_rd32(port, VNIC_QP_ADDR_STATUS);
	if (status & VNIC_ADDR_ST_MAC_TAKEN) {
		netdev_err(netdev, "card refused the MAC %pM: another vNIC has it; keeping %pM\n",
			   addr, port->card_mac);
		return -EADDRNOTAVAIL;
	}
	netdev_err(netdev, "card refused the MAC %pM: VF not trusted (ip link set <pf> vf %u trust on); keeping %pM\n",
		   addr, priv->vf_index, port->card_mac);
	return -EPERM;
}

/*
 * ndo_set_mac_address: the netdev takes the address only if the card does,
 * as on SR-IOV VFs whose PF refuses it; a refusal leaves the old address
 * and the traffic as they were.
 */
static int vnic_set_mac_address(struct net_device *netdev, void *p)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct sockaddr *sa = p;
	const u8 *addr = sa->sa_data;
	int err;

	err = eth_prepare_mac_addr_change(netdev, p);
	if (err)
		return err;
	if (!ether_addr_equal(addr, port->card_mac)) {
		if (READ_ONCE(port->gone))
			return -ENODEV;
		err = vnic_port_write_mac(port, addr);
		if (err)
			return err;
	}
	eth_commit_mac_addr_change(netdev, p);
	return 0;
}

static const struct net_device_ops vnic_netdev_ops = {
	.ndo_open = vnic_open,
	.ndo_stop = vnic_stop,
	.ndo_start_xmit = vnic_start_xmit,
	.ndo_features_check = vnic_features_check,
	.ndo_get_stats64 = vnic_get_stats64,
	.ndo_set_mac_address = vnic_set_mac_address,
	.ndo_set_rx_mode = vnic_set_rx_mode,
	.ndo_validate_addr = eth_validate_addr,
	.ndo_change_mtu = vnic_change_mtu,
	.ndo_vlan_rx_add_vid = vnic_vlan_rx_add_vid,
	.ndo_vlan_rx_kill_vid = vnic_vlan_rx_kill_vid,
	.ndo_tx_timeout = vnic_tx_timeout,
};

/*
 * The exception queue pair is no port of the card's switch: it has no MAC
 * of its own to change and joins no VLAN (QP_MAC and QP_VLAN writes to it
 * are bad accesses).
 */
static const struct net_device_ops vnic_exc_netdev_ops = {
	.ndo_open = vnic_open,
	.ndo_stop = vnic_stop,
	.ndo_start_xmit = vnic_start_xmit,
	.ndo_get_stats64 = vnic_get_stats64,
	.ndo_validate_addr = eth_validate_addr,
	.ndo_change_mtu = vnic_change_mtu,
	.ndo_tx_timeout = vnic_tx_timeout,
};

/* The PF's netdevs also configure the VFs, through the admin mailbox */
static const struct net_device_ops vnic_pf_netdev_ops = {
	.ndo_open = vnic_open,
	.ndo_stop = vnic_stop,
	.ndo_start_xmit = vnic_start_xmit,
	.ndo_features_check = vnic_features_check,
	.ndo_get_stats64 = vnic_get_stats64,
	.ndo_set_mac_address = vnic_set_mac_address,
	.ndo_set_rx_mode = vnic_set_rx_mode,
	.ndo_validate_addr = eth_validate_addr,
	.ndo_change_mtu = vnic_change_mtu,
	.ndo_vlan_rx_add_vid = vnic_vlan_rx_add_vid,
	.ndo_vlan_rx_kill_vid = vnic_vlan_rx_kill_vid,
	.ndo_tx_timeout = vnic_tx_timeout,
	.ndo_set_vf_mac = vnic_set_vf_mac,
	.ndo_set_vf_vlan = vnic_set_vf_vlan,
	.ndo_set_vf_rate = vnic_set_vf_rate,
	.ndo_set_vf_spoofchk = vnic_set_vf_spoofchk,
	.ndo_set_vf_trust = vnic_set_vf_trust,
	.ndo_set_vf_link_state = vnic_set_vf_link_state,
	.ndo_get_vf_config = vnic_get_vf_config,
};

static void vnic_port_read_mac(struct vnic_port *port)
{
	struct net_device *netdev = port->netdev;

	vnic_port_card_mac(port, port->card_mac);
	if (is_valid_ether_addr(port->card_mac)) {
		eth_hw_addr_set(netdev, port->card_mac);
		return;
	}
	eth_hw_addr_random(netdev);
	pci_warn(port->priv->pdev, "card reports an invalid MAC %pM for queue pair %u, using %pM\n",
		 port->card_mac, port->q, netdev->dev_addr);
}

/*
 * Take over a MAC the card changed (management set the vNIC's MAC), as a VF
 * driver does when its PF sets the VF's MAC; RTNL held.
 */
static void vnic_port_sync_mac(struct vnic_port *port)
{
	struct net_device *netdev = port->netdev;
	u8 mac[ETH_ALEN];

	ASSERT_RTNL();
	vnic_port_card_mac(port, mac);
	if (ether_addr_equal(mac, port->card_mac))
		return;
	if (!is_valid_ether_addr(mac)) {
		netdev_warn(netdev, "card reports an invalid MAC %pM for queue pair %u, keeping %pM\n",
			    mac, port->q, netdev->dev_addr);
		return;
	}
	ether_addr_copy(port->card_mac, mac);
	if (ether_addr_equal(netdev->dev_addr, mac))
		return;

	netdev_info(netdev, "card changed the MAC of queue pair %u: %pM -> %pM\n",
		    port->q, netdev->dev_addr, mac);
	eth_hw_addr_set(netdev, mac);
	call_netdevice_notifiers(NETDEV_CHANGEADDR, netdev);
}

/* The netdev features of a vNIC whose queues use the card's offloads */
#define VNIC_OFFLOAD_FEATURES	(NETIF_F_SG | NETIF_F_HW_CSUM | \
				 NETIF_F_TSO | NETIF_F_TSO6 | NETIF_F_TSO_ECN)

/*
 * Choose the offloads of a port's queues and the netdev features that go
 * with them, and whether the port takes completions up to the head the card
 * writes into each context (VNIC_FEAT_HEAD_WB, whenever the card offers it).
 * Offloads are all or nothing: with a card that lacks any of the four bits
 * the contexts have no features and the netdev none of these, sending one
 * linear buffer per frame as before the offloads.
 *
 * A vNIC takes the per-frame header, checksum requests and GSO frames both
 * ways, and multi-buffer frames on receive, which GSO needs and which let
 * its receive buffers be single pages at any MTU. The exception queue pair
 * is no vNIC: the card allows it MULTI_BUF on receive only, so its netdev
 * offloads nothing but still receives into pages.
 *
 * The features are toggleable (ethtool -K) without touching the queues: the
 * header of each frame says what it asks for. TSO_ECN is among them so that
 * it comes back with TSO (the core clears a fixed TSO_ECN for good once
 * scatter-gather or TSO is off). RXCSUM is fixed: whatever the setting, the
 * card delivers frames from local vNICs with NEEDS_CSUM (CHECKSUM_PARTIAL).
 */
static void vnic_port_init_offloads(struct vnic_port *port)
{
	struct net_device *netdev = port->netdev;
	u16 head_wb = port->priv->features & VNIC_FEAT_HEAD_WB;

	/* Completions up to the card's head (not an offload): every queue */
	port->head_wb = head_wb;
	port->sq_features = head_wb;
	port->rq_features = head_wb;
	if ((port->priv->features & VNIC_FEAT_ALL) != VNIC_FEAT_ALL)
		return;
	if (port->exc) {
		port->rq_features |= VNIC_FEAT_MULTI_BUF;
		return;
	}

	port->sq_features |= VNIC_FEAT_VNET_HDR | VNIC_FEAT_CSUM | VNIC_FEAT_GSO;
	port->rq_features |= VNIC_FEAT_VNET_HDR | VNIC_FEAT_CSUM |
			     VNIC_FEAT_GSO | VNIC_FEAT_MULTI_BUF;

	netdev->hw_features |= VNIC_OFFLOAD_FEATURES;
	netdev->features |= VNIC_OFFLOAD_FEATURES | NETIF_F_RXCSUM;
	/* VLAN subinterfaces: their tag is in-band, which the card parses */
	netdev->vlan_features = VNIC_OFFLOAD_FEATURES | NETIF_F_HIGHDMA;
	/* Room to push the header in front of the frame (vnic_tx.c) */
	netdev->needed_headroom = VNIC_VNET_HDR_LEN;
	netif_set_tso_max_size(netdev, VNIC_TSO_MAX_SIZE);
}

/* Create and register the netdev of queue pair q; RTNL held. */
static struct vnic_port *vnic_port_create(struct vnic_priv *priv, u32 q)
{
	struct pci_dev *pdev = priv->pdev;
	struct net_device *netdev;
	struct vnic_port *port;
	u32 itr;
	int err;

	netdev = alloc_etherdev(sizeof(*port));
	if (!netdev)
		return ERR_PTR(-ENOMEM);
	SET_NETDEV_DEV(netdev, &pdev->dev);

	port = netdev_priv(netdev);
	port->priv = priv;
	port->netdev = netdev;
	port->q = q;
	port->exc = priv->exc_qp && q == priv->exc_qp;
	port->max_frame = port->exc ? VNIC_EXC_MAX_FRAME : VNIC_TX_MAX_FRAME;
	port->qp_regs = priv->regs + VNIC_QP_REG(q, 0);
	vnic_db_port_init(port);
	port->tx_ring_size = VNIC_TX_RING_DEFAULT;
	port->rx_ring_size = VNIC_RX_RING_DEFAULT;
	port->sq_ctx = vnic_state_ctx(priv, VNIC_SVC_SQ_CTX, q);
	port->rq_ctx = vnic_state_ctx(priv, VNIC_SVC_RQ_CTX, q);
	if (!port->sq_ctx || !port->rq_ctx) {
		err = -EINVAL;
		goto err_free_netdev;
	}
	u64_stats_init(&port->nstats.syncp);
	u64_stats_init(&port->xstats.syncp);
	INIT_WORK(&port->reset_task, vnic_reset_task);

	itr = vnic_qp_rd32(port, VNIC_QP_ITR);
	port->itr = itr == ~0U ? VNIC_QP_ITR_DEFAULT :
		    FIELD_GET(VNIC_QP_ITR_USECS, itr);
	port->itr_adaptive = adaptive_rx;
	port->tx_itr = vnic_has_tx_itr(priv) ?
		       min_t(u32, tx_usecs, FIELD_MAX(VNIC_QP_ITR_TX_USECS)) : 0;

	netdev->netdev_ops = priv->is_vf ? &vnic_netdev_ops :
					   &vnic_pf_netdev_ops;
	vnic_set_ethtool_ops(netdev);
	netdev->watchdog_timeo = 5 * HZ;
	netdev->dev_port = q;
	netdev->min_mtu = ETH_MIN_MTU;
	netdev->max_mtu = VNIC_MAX_MTU;
	/*
	 * Tags stay in-band; the VLAN filter is the card's switch, joined
	 * through QP_VLAN.
	 */
	netdev->features = NETIF_F_HW_VLAN_CTAG_FILTER | NETIF_F_HIGHDMA;
	netdev->hw_features = 0;
	/* Changing the MAC never needs the queues stopped */
	netdev->priv_flags |= IFF_LIVE_ADDR_CHANGE;
	if (port->exc) {
		/* Messages only: nobody to resolve, nothing to filter */
		netdev->netdev_ops = &vnic_exc_netdev_ops;
		netdev->features = NETIF_F_HIGHDMA;
		netdev->flags |= IFF_NOARP;
		netdev->max_mtu = VNIC_EXC_MTU;
		netdev->mtu = VNIC_EXC_MTU;
	}
	vnic_port_init_offloads(port);
	vnic_port_read_mac(port);
	err = vnic_filter_init(port);
	if (err)
		goto err_filter_free;

	netif_napi_add(netdev, &port->napi, vnic_napi_poll);

	err = vnic_qp_irq_request(port);
	if (err)
		goto err_napi_del;

	netif_carrier_off(netdev);
	err = register_netdevice(netdev);
	if (err) {
		pci_err(pdev, "cannot register the netdev of queue pair %u: %d\n",
			q, err);
		goto err_irq_free;
	}

	netdev_info(netdev, "queue pair %u, MAC %pM, IRQ %s\n", q,
		    netdev->dev_addr, port->irq_name);
	if (port->exc)
		pci_info(pdev, "exception queue pair %u: %s\n", q,
			 netdev_name(netdev));
	return port;

err_irq_free:
	vnic_qp_irq_free(port);
err_napi_del:
	netif_napi_del(&port->napi);
err_filter_free:
	vnic_filter_free(port);
err_free_netdev:
	free_netdev(netdev);
	return ERR_PTR(err);
}

/*
 * Register netdevs for queue pairs nr_ports .. n - 1; RTNL held. On error the
 * netdevs registered so far stay, and nr_ports counts them.
 */
static int vnic_ports_add(struct vnic_priv *priv, u32 n)
{
	struct vnic_port *port;

	ASSERT_RTNL();
	if (WARN_ON_ONCE(n > priv->qp_limit))
		n = priv->qp_limit;
	while (priv->nr_ports < n) {
		port = vnic_port_create(priv, priv->nr_ports);
		if (IS_ERR(port))
			return PTR_ERR(port);
		priv->ports[priv->nr_ports++] = port;
	}
	return 0;
}

/*
 * Unregister the netdevs of queue pairs n .. nr_ports - 1, highest first;
 * RTNL held. Unregistering closes a running netdev, which stops its queues
 * (unless @gone: the card already did) and frees its rings. The ports stay
 * in their slots until vnic_ports_free(), which must run without RTNL.
 */
static void vnic_ports_unregister(struct vnic_priv *priv, u32 n, bool gone)
{
	struct vnic_port *port;

	ASSERT_RTNL();
	while (priv->nr_ports > n) {
		port = priv->ports[--priv->nr_ports];
		WRITE_ONCE(port->gone, gone);
		unregister_netdevice(port->netdev);
	}
}

/*
 * Free the unregistered ports in slots n and up, highest first. Without
 * RTNL: the restart task takes it, and must be cancelled first.
 */
static void vnic_ports_free(struct vnic_priv *priv, u32 n)
{
	struct vnic_port *port;
	u32 q;

	for (q = priv->qp_limit; q-- > n;) {
		port = priv->ports[q];
		if (!port)
			continue;
		priv->ports[q] = NULL;
		/* Closed now, so the watchdog cannot queue the task again */
		cancel_work_sync(&port->reset_task);
		vnic_filter_free(port);
		vnic_qp_irq_free(port);
		netif_napi_del(&port->napi);
		free_netdev(port->netdev);
	}
}

/*
 * Netdevs for n enabled queue pairs: n, and the exception queue pair's if it
 * comes right after them (the PF's queue pair 1 after its one vNIC).
 */
static u32 vnic_ports_wanted(struct vnic_priv *priv, u32 n)
{
	return priv->exc_qp && n == priv->exc_qp ? n + 1 : n;
}

/* Queue pairs the driver can serve: each needs a vector and a BAR0 area */
static u32 vnic_qp_limit(struct vnic_priv *priv)
{
	u32 limit = min_t(u32, priv->qp_max, priv->nvecs - 1);
	resource_size_t areas = 0;

	if (priv->regs_len > VNIC_QP_AREA_BASE)
		areas = (priv->regs_len - VNIC_QP_AREA_BASE) /
			VNIC_QP_AREA_STRIDE;
	return min_t(resource_size_t, limit, areas);
}

/**
 * vnic_netdevs_create - register a netdev for each enabled queue pair
 * @priv: driver state; MSI-X vectors allocated, context tables built
 *
 * Makes room for every queue pair the function may enable later (QP_MAX),
 * so that vnic_netdevs_config_changed() only has to fill slots.
 *
 * Return: 0 or a negative errno; on error no netdev is left.
 */
int vnic_netdevs_create(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	u32 n = priv->qp_num;
	int err;

	/* Queue pair q needs MSI-X vector q + 1 and its area inside BAR0 */
	if (priv->nvecs - 1 < (int)n) {
		pci_warn(pdev, "only %d MSI-X vectors: %d of %u queue pairs usable\n",
			 priv->nvecs, priv->nvecs - 1, n);
		n = priv->nvecs - 1;
	}
	if (n && VNIC_QP_REG(n, 0) > priv->regs_len) {
		pci_err(pdev, "BAR0 (%pa bytes) too small for %u queue pairs\n",
			&priv->regs_len, n);
		return -EINVAL;
	}
	priv->qp_limit = vnic_qp_limit(priv);
	if (!n)
		pci_info(pdev, "no queue pairs enabled: no netdevs\n");
	if (priv->exc_qp &&
	    (priv->exc_qp != n || priv->exc_qp >= priv->qp_limit)) {
		pci_warn(pdev, "EXC_QP %u is not the queue pair after the %u usable vNIC queue pairs (%u usable in all): no exception netdev\n",
			 priv->exc_qp, n, priv->qp_limit);
		priv->exc_qp = 0;
	}
	if (!priv->qp_limit)
		return 0;

	priv->ports = kcalloc(priv->qp_limit, sizeof(*priv->ports),
			      GFP_KERNEL);
	if (!priv->ports)
		return -ENOMEM;

	rtnl_lock();
	err = vnic_ports_add(priv, vnic_ports_wanted(priv, n));
	rtnl_unlock();
	if (err)
		vnic_netdevs_destroy(priv);
	return err;
}

/**
 * vnic_netdevs_config_changed - act on IRQ_CAUSE.CONFIG
 * @priv: driver state
 *
 * Management changed QP_NUM or a vNIC's MAC, or the function was recovered
 * and either may have changed meanwhile. Queue pairs the card added get
 * a netdev each, as at probe; the netdevs of queue pairs it removed (already
 * stopped and written back by the card, their areas no longer answering) are
 * unregistered and freed without a register access. Queue pairs below both
 * counts are left alone, so their traffic carries on. Then every netdev takes
 * over a MAC the card changed.
 *
 * The exception queue pair's netdev stays after the vNICs'. The card never
 * changes the PF's QP_NUM; if it did while that netdev is registered, the
 * netdevs are left as they are rather than mixing it among vNICs.
 */
void vnic_netdevs_config_changed(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	u32 n, old_n, q;
	int err = 0;

	if (!priv->ports)
		return;

	rtnl_lock();
	/*
	 * A BAR that does not answer reads QP_NUM 0 or all-ones, neither of
	 * which means anything; the recovery runs this check again.
	 */
	if (priv->fn_state != VNIC_FN_RUNNING || !vnic_card_answers(priv)) {
		rtnl_unlock();
		pci_dbg(pdev, "configuration check skipped: the card does not answer\n");
		return;
	}
	old_n = priv->nr_ports;
	n = vnic_rd32(priv, VNIC_REG_QP_NUM);
	priv->qp_num = n;
	if (n > priv->qp_limit) {
		pci_warn(pdev, "QP_NUM %u: only %u queue pairs usable (QP_MAX %u)\n",
			 n, priv->qp_limit, priv->qp_max);
		n = priv->qp_limit;
	}
	if (priv->exc_qp && old_n > priv->exc_qp && n != priv->exc_qp) {
		pci_warn(pdev, "QP_NUM %u: queue pair %u is the exception queue pair; netdevs unchanged\n",
			 n, priv->exc_qp);
		n = old_n;
	} else {
		n = vnic_ports_wanted(priv, n);
	}

	if (n < old_n)
		vnic_ports_unregister(priv, n, true);
	else if (n > old_n)
		err = vnic_ports_add(priv, n);

	for (q = 0; q < priv->nr_ports; q++)
		vnic_port_sync_mac(priv->ports[q]);
	rtnl_unlock();

	if (n < old_n)
		vnic_ports_free(priv, n);

	if (err)
		pci_err(pdev, "queue pairs %u -> %u: only %u netdevs: %d\n",
			old_n, n, priv->nr_ports, err);
	else if (n != old_n)
		pci_info(pdev, "queue pairs %u -> %u\n", old_n, n);
}

/**
 * vnic_netdevs_link_changed - act on IRQ_CAUSE.LINK
 * @priv: driver state
 *
 * Every open netdev of the function follows STATUS.LINK_UP; a closed one
 * reads it when it opens.
 */
void vnic_netdevs_link_changed(struct vnic_priv *priv)
{
	struct vnic_port *port;
	u32 status, q;
	bool up;

	rtnl_lock();
	/* A function being recovered gets its carrier when it runs again */
	if (priv->fn_state != VNIC_FN_RUNNING || !vnic_card_answers(priv)) {
		rtnl_unlock();
		return;
	}
	status = vnic_rd32(priv, VNIC_REG_STATUS);
	up = status & VNIC_STATUS_LINK_UP;
	for (q = 0; q < priv->nr_ports; q++) {
		port = priv->ports[q];
		if (!port->up)
			continue;
		if (up)
			netif_carrier_on(port->netdev);
		else
			netif_carrier_off(port->netdev);
	}
	if (up != priv->link_up)
		pci_info(priv->pdev, "link %s\n", up ? "up" : "down");
	priv->link_up = up;
	rtnl_unlock();
}

/**
 * vnic_netdevs_destroy - unregister and free every netdev of the function
 * @priv: driver state; card events already stopped
 *
 * Unregistering closes a running netdev, which stops its queues and frees
 * its rings.
 */
void vnic_netdevs_destroy(struct vnic_priv *priv)
{
	if (!priv->ports)
		return;
	rtnl_lock();
	vnic_ports_unregister(priv, 0, false);
	rtnl_unlock();
	vnic_ports_free(priv, 0);
	kfree(priv->ports);
	priv->ports = NULL;
}
