// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - ethtool operations.
 *
 * ethtool DEV shows the card's nominal speed (LINK_SPEED), full duplex.
 * A netdev is one queue pair, so -l reports one combined channel. -S shows
 * the card's counters of this queue pair (its contexts' counters, read from
 * the queue pair's area in BAR0), the function-wide counters the switch
 * keeps (shared by every netdev of the function, hence the fn_ prefix) and
 * the driver's own counters (sw_). -C adaptive-rx on (the default, module
 * parameter adaptive_rx) lets the card adapt its interrupt moderation to the
 * load, -C adaptive-rx off rx-usecs N fixes the interval (QP_ITR), -C
 * tx-usecs is how long send completions alone may wait for the interrupt;
 * -G changes the ring sizes.
 *
 * A card that does not answer (its configuration lost, until the watchdog
 * restores it) reads 0 or all-ones: the queue counters then come from the
 * contexts in guest memory, as the card last wrote them back, and the
 * function's counters read 0.
 */
#include <linux/bitfield.h>
#include <linux/ethtool.h>
#include <linux/log2.h>
#include <linux/netdevice.h>
#include <linux/stringify.h>

#include "vnic.h"

/**
 * struct vnic_reg_stat - a function counter
 * @name: its name in ethtool -S
 * @reg: BAR0 offset
 * @minor: the VERSION minor that introduced it: an older card has no such
 *	register (a read would be a bad access), and it shows 0 there
 */
struct vnic_reg_stat {
	char name[ETH_GSTRING_LEN];
	u32 reg;
	u32 minor;
};

/**
 * struct vnic_qp_stat - a queue counter
 * @name: its name in ethtool -S
 * @reg: offset inside the queue pair's area
 * @rx: it belongs to the receive queue's context, not the send queue's
 * @ctx_off: offset of the __le64 counter inside the context
 */
struct vnic_qp_stat {
	char name[ETH_GSTRING_LEN];
	u32 reg;
	bool rx;
	u32 ctx_off;
};

#define VNIC_CTX_OFF(field)	offsetof(struct vnic_queue_ctx, field)

/* This queue pair's counters: the contexts' counters */
static const struct vnic_qp_stat vnic_qp_stats[] = {
	{ "tx_packets", VNIC_QP_TX_PACKETS, false, VNIC_CTX_OFF(packets) },
	{ "tx_bytes",	VNIC_QP_TX_BYTES,   false, VNIC_CTX_OFF(bytes) },
	{ "tx_drops",	VNIC_QP_TX_DROPS,   false, VNIC_CTX_OFF(drops) },
	{ "tx_errors",	VNIC_QP_TX_ERRORS,  false, VNIC_CTX_OFF(errors) },
	{ "rx_packets", VNIC_QP_RX_PACKETS, true,  VNIC_CTX_OFF(packets) },
	{ "rx_bytes",	VNIC_QP_RX_BYTES,   true,  VNIC_CTX_OFF(bytes) },
	{ "rx_drops",	VNIC_QP_RX_DROPS,   true,  VNIC_CTX_OFF(drops) },
	{ "rx_errors",	VNIC_QP_RX_ERRORS,  true,  VNIC_CTX_OFF(errors) },
};

/* The function's counters: BAR0 offsets */
static const struct vnic_reg_stat vnic_fn_stats[] = {
	{ "fn_tx_drops",	VNIC_REG_FN_TX_DROPS },
	{ "fn_rx_drops",	VNIC_REG_FN_RX_DROPS },
	{ "fn_spoof_drops",	VNIC_REG_FN_SPOOF_DROPS },
	{ "fn_vlan_drops",	VNIC_REG_FN_VLAN_DROPS },
	{ "fn_to_uplink",	VNIC_REG_FN_TO_UPLINK },
	{ "fn_queue_errors",	VNIC_REG_FN_QUEUE_ERRORS },
	{ "fn_offload_drops",	VNIC_REG_FN_OFFLOAD_DROPS,
	  VNIC_VERSION_MINOR_OFFLOADS },
	{ "fn_tx_gso",		VNIC_REG_FN_TX_GSO, VNIC_VERSION_MINOR_OFFLOADS },
	{ "fn_sw_segments",	VNIC_REG_FN_SW_SEGMENTS,
	  VNIC_VERSION_MINOR_OFFLOADS },
	{ "fn_sw_csum",		VNIC_REG_FN_SW_CSUM, VNIC_VERSION_MINOR_OFFLOADS },
	{ "fn_addr_refused",	VNIC_REG_FN_ADDR_REFUSED,
	  VNIC_VERSION_MINOR_RX_FILTER },
	{ "fn_promisc_refused",	VNIC_REG_FN_PROMISC_REFUSED,
	  VNIC_VERSION_MINOR_RX_FILTER },
};

/* The driver's counters, in the order vnic_get_sw_stats() fills them */
static const char vnic_sw_stats[][ETH_GSTRING_LEN] = {
	"sw_tx_busy",
	"sw_tx_stopped",
	"sw_tx_dropped",
	"sw_tx_gso",
	"sw_tx_switch_drops",
	"sw_tx_desc_errors",
	"sw_rx_alloc_fail",
	"sw_rx_bad_len",
	"sw_rx_bad_chain",
	"sw_rx_too_many_bufs",
	"sw_rx_hdr_errors",
	"sw_rx_gso",
	"sw_rx_multi_buf",
	"sw_napi_polls",
	"sw_restarts",
	"sw_irq_rescues",
	"sw_queue_error_restarts",
};

#define VNIC_NUM_QP_STATS	ARRAY_SIZE(vnic_qp_stats)
#define VNIC_NUM_FN_STATS	ARRAY_SIZE(vnic_fn_stats)
#define VNIC_NUM_SW_STATS	ARRAY_SIZE(vnic_sw_stats)
#define VNIC_NUM_STATS		(VNIC_NUM_QP_STATS + VNIC_NUM_FN_STATS + \
				 VNIC_NUM_SW_STATS)

static void vnic_get_drvinfo(struct net_device *netdev,
			     struct ethtool_drvinfo *info)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct vnic_priv *priv = port->priv;

	strscpy(info->driver, VNIC_DRV_NAME, sizeof(info->driver));
	strscpy(info->bus_info, pci_name(priv->pdev), sizeof(info->bus_info));
	/* The card has no firmware: report its register interface version */
	snprintf(info->fw_version, sizeof(info->fw_version), "%u.%u",
		 VNIC_VERSION_MAJOR(priv->version),
		 VNIC_VERSION_MINOR(priv->version));
}

/*
 * Speed and duplex: LINK_SPEED (interface 1.6), the port's nominal speed or
 * the function's TX rate limit if that is lower, always full duplex. Unknown
 * while the carrier is off, on an older card, or when the card does not
 * answer (0 or all-ones). No autonegotiation and no port type: the port is
 * emulated.
 */
static int vnic_get_link_ksettings(struct net_device *netdev,
				   struct ethtool_link_ksettings *cmd)
{
	struct vnic_port *port = netdev_priv(netdev);
	struct vnic_priv *priv = port->priv;
	u32 speed;

	cmd->base.autoneg = AUTONEG_DISABLE;
	cmd->base.port = PORT_OTHER;
	cmd->base.speed = SPEED_UNKNOWN;
	cmd->base.duplex = DUPLEX_UNKNOWN;
	if (!netif_carrier_ok(netdev) ||
	    VNIC_VERSION_MINOR(priv->version) < VNIC_VERSION_MINOR_LINK_SPEED)
		return 0;
	speed = vnic_rd32(priv, VNIC_REG_LINK_SPEED);
	if (!speed || speed > INT_MAX)
		return 0;
	cmd->base.speed = speed;
	cmd->base.duplex = DUPLEX_FULL;
	return 0;
}

static int vnic_get_sset_count(struct net_device *netdev, int sset)
{
	switch (sset) {
	case ETH_SS_STATS:
		return VNIC_NUM_STATS;
	default:
		return -EOPNOTSUPP;
	}
}

static void vnic_get_strings(struct net_device *netdev, u32 sset, u8 *data)
{
	unsigned int i;

	if (sset != ETH_SS_STATS)
		return;

	for (i = 0; i < VNIC_NUM_QP_STATS; i++) {
		memcpy(data, vnic_qp_stats[i].name, ETH_GSTRING_LEN);
		data += ETH_GSTRING_LEN;
	}
	for (i = 0; i < VNIC_NUM_FN_STATS; i++) {
		memcpy(data, vnic_fn_stats[i].name, ETH_GSTRING_LEN);
		data += ETH_GSTRING_LEN;
	}
	for (i = 0; i < VNIC_NUM_SW_STATS; i++) {
		memcpy(data, vnic_sw_stats[i], ETH_GSTRING_LEN);
		data += ETH_GSTRING_LEN;
	}
}

static void vnic_get_sw_stats(struct vnic_port *port, u64 *data)
{
	struct vnic_napi_stats *ns = &port->nstats;
	struct vnic_xmit_stats *xs = &port->xstats;
	unsigned int start;

	do {
		start = u64_stats_fetch_begin(&xs->syncp);
		data[0] = u64_stats_read(&xs->busy);
		data[1] = u64_stats_read(&xs->stopped);
		data[2] = u64_stats_read(&xs->dropped);
		data[3] = u64_stats_read(&xs->gso);
	} while (u64_stats_fetch_retry(&xs->syncp, start));

	do {
		start = u64_stats_fetch_begin(&ns->syncp);
		data[4] = u64_stats_read(&ns->tx_switch_drops);
		data[5] = u64_stats_read(&ns->tx_desc_errors);
		data[6] = u64_stats_read(&ns->rx_alloc_fail);
		data[7] = u64_stats_read(&ns->rx_bad_len);
		data[8] = u64_stats_read(&ns->rx_bad_chain);
		data[9] = u64_stats_read(&ns->rx_too_many_bufs);
		data[10] = u64_stats_read(&ns->rx_hdr_errors);
		data[11] = u64_stats_read(&ns->rx_gso);
		data[12] = u64_stats_read(&ns->rx_multi_buf);
		data[13] = u64_stats_read(&ns->polls);
	} while (u64_stats_fetch_retry(&ns->syncp, start));

	data[14] = port->restarts;
	data[15] = port->irq_rescues;
	data[16] = port->queue_error_restarts;
}

static u64 vnic_qp_stat_read(struct vnic_port *port,
			     const struct vnic_qp_stat *stat, bool card)
{
	u64 val = card ? vnic_qp_rd64(port, stat->reg) : U64_MAX;
	void *ctx;

	if (val != U64_MAX)
		return val;
	/* The card does not answer: its last write-back to guest memory */
	ctx = stat->rx ? port->rq_ctx : port->sq_ctx;
	return le64_to_cpu(READ_ONCE(*(__le64 *)(ctx + stat->ctx_off)));
}

static u64 vnic_fn_stat_read(struct vnic_priv *priv,
			     const struct vnic_reg_stat *stat, bool card)
{
	u64 val = U64_MAX;

	if (card && VNIC_VERSION_MINOR(priv->version) >= stat->minor)
		val = vnic_rd64(priv, stat->reg);

	/* Not a count: the card does not answer */
	return val == U64_MAX ? 0 : val;
}

static void vnic_get_ethtool_stats(struct net_device *netdev,
				   struct ethtool_stats *stats, u64 *data)
{
	struct vnic_port *port = netdev_priv(netdev);
	bool card = vnic_card_answers(port->priv);
	unsigned int i;

	for (i = 0; i < VNIC_NUM_QP_STATS; i++)
		*data++ = vnic_qp_stat_read(port, &vnic_qp_stats[i], card);
	for (i = 0; i < VNIC_NUM_FN_STATS; i++)
		*data++ = vnic_fn_stat_read(port->priv, &vnic_fn_stats[i],
					    card);
	vnic_get_sw_stats(port, data);
}

static void vnic_get_channels(struct net_device *netdev,
			      struct ethtool_channels *ch)
{
	ch->max_combined = 1;
	ch->combined_count = 1;
}

static void vnic_get_ringparam(struct net_device *netdev,
			       struct ethtool_ringparam *ring,
			       struct kernel_ethtool_ringparam *kring,
			       struct netlink_ext_ack *extack)
{
	struct vnic_port *port = netdev_priv(netdev);

	ring->rx_max_pending = VNIC_RING_MAX;
	ring->tx_max_pending = VNIC_RING_MAX;
	ring->rx_pending = port->rx_ring_size;
	ring->tx_pending = port->tx_ring_size;
}

static int vnic_set_ringparam(struct net_device *netdev,
			      struct ethtool_ringparam *ring,
			      struct kernel_ethtool_ringparam *kring,
			      struct netlink_ext_ack *extack)
{
	struct vnic_port *port = netdev_priv(netdev);
	u32 old_rx = port->rx_ring_size, old_tx = port->tx_ring_size;
	int err;

	if (ring->rx_mini_pending || ring->rx_jumbo_pending)
		return -EINVAL;
	if (!is_power_of_2(ring->rx_pending) ||
	    !is_power_of_2(ring->tx_pending) ||
	    ring->rx_pending < VNIC_RING_MIN ||
	    ring->tx_pending < VNIC_RING_MIN) {
		NL_SET_ERR_MSG_MOD(extack,
				   "ring sizes must be powers of two, 8 to 4096");
		return -EINVAL;
	}
	/* Offloads need room for a whole GSO frame, or one of MAX_SKB_FRAGS */
	if (ring->rx_pending < vnic_rx_ring_min(port) ||
	    ring->tx_pending < vnic_tx_ring_min(port)) {
		NL_SET_ERR_MSG_MOD(extack,
				   "with offloads the rings need at least "
				   __stringify(VNIC_RX_RING_MIN_GSO) " (rx) and "
				   __stringify(VNIC_TX_RING_MIN_SG) " (tx) entries");
		return -EINVAL;
	}
	if (ring->rx_pending == old_rx && ring->tx_pending == old_tx)
		return 0;

	port->rx_ring_size = ring->rx_pending;
	port->tx_ring_size = ring->tx_pending;
	err = vnic_port_restart(port);
	if (err) {
		port->rx_ring_size = old_rx;
		port->tx_ring_size = old_tx;
		if (vnic_port_restart(port))
			netdev_err(netdev, "cannot restart with the old ring sizes either\n");
	}
	return err;
}

static int vnic_get_coalesce(struct net_device *netdev,
			     struct ethtool_coalesce *ec,
			     struct kernel_ethtool_coalesce *kec,
			     struct netlink_ext_ack *extack)
{
	struct vnic_port *port = netdev_priv(netdev);

	ec->rx_coalesce_usecs = port->itr;
	ec->use_adaptive_rx_coalesce = port->itr_adaptive;
	ec->tx_coalesce_usecs = port->tx_itr;
	return 0;
}

static int vnic_set_coalesce(struct net_device *netdev,
			     struct ethtool_coalesce *ec,
			     struct kernel_ethtool_coalesce *kec,
			     struct netlink_ext_ack *extack)
{
	struct vnic_port *port = netdev_priv(netdev);

	if (ec->rx_coalesce_usecs > FIELD_MAX(VNIC_QP_ITR_USECS)) {
		NL_SET_ERR_MSG_MOD(extack, "rx-usecs must be at most 65535");
		return -EINVAL;
	}
	if (ec->tx_coalesce_usecs > FIELD_MAX(VNIC_QP_ITR_TX_USECS)) {
		NL_SET_ERR_MSG_MOD(extack, "tx-usecs must be at most 32767");
		return -EINVAL;
	}
	if (ec->tx_coalesce_usecs && !vnic_has_tx_itr(port->priv)) {
		NL_SET_ERR_MSG_MOD(extack, "the card is older than interface 1.3: no tx-usecs");
		return -EOPNOTSUPP;
	}
	port->itr = ec->rx_coalesce_usecs;
	port->itr_adaptive = ec->use_adaptive_rx_coalesce;
	port->tx_itr = ec->tx_coalesce_usecs;
	vnic_write_itr(port);
	return 0;
}

static const struct ethtool_ops vnic_ethtool_ops = {
	.supported_coalesce_params = ETHTOOL_COALESCE_RX_USECS |
				     ETHTOOL_COALESCE_USE_ADAPTIVE_RX |
				     ETHTOOL_COALESCE_TX_USECS,
	.get_drvinfo = vnic_get_drvinfo,
	.get_link = ethtool_op_get_link,
	.get_link_ksettings = vnic_get_link_ksettings,
	.get_sset_count = vnic_get_sset_count,
	.get_strings = vnic_get_strings,
	.get_ethtool_stats = vnic_get_ethtool_stats,
	.get_channels = vnic_get_channels,
	.get_ringparam = vnic_get_ringparam,
	.set_ringparam = vnic_set_ringparam,
	.get_coalesce = vnic_get_coalesce,
	.set_coalesce = vnic_set_coalesce,
};

/**
 * vnic_set_ethtool_ops - attach the ethtool operations to a port's netdev
 * @netdev: the netdev
 */
void vnic_set_ethtool_ops(struct net_device *netdev)
{
	netdev->ethtool_ops = &vnic_ethtool_ops;
}
