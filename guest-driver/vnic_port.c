// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - starting and stopping a port's queues.
 *
 * Starting a port allocates its rings, writes ring base, size and offload
 * features into the queue pair's two contexts in guest memory and enables
 * both queues with QP_CTRL; the card loads the contexts through the VCT.
 * Stopping disables the queues (the card writes the contexts back and
 * forgets them) before any buffer is freed. Everything that starts or stops
 * a port runs under RTNL.
 *
 * A netdev's open and close start and stop its port, and
 * vnic_port_restart() rebuilds its rings for a new MTU and from the reset
 * task (vnic_netdev.c), and for new ring sizes (ethtool -G, vnic_ethtool.c):
 * neither of those two files calls the other for it.
 */
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>

#include "vnic.h"

/*
 * Wait until QP_STATUS shows both queues in the state QP_CTRL asked for.
 * The card normally has by the time the read returns, since the read follows
 * the write on the same channel; the loop tolerates a card that is slower.
 */
static int vnic_qp_wait(struct vnic_port *port, bool running, u32 *status)
{
	const u32 both = VNIC_QP_STATUS_TX_RUNNING | VNIC_QP_STATUS_RX_RUNNING;
	const u32 errs = VNIC_QP_STATUS_TX_ERROR | VNIC_QP_STATUS_RX_ERROR;
	unsigned long timeout = jiffies +
				msecs_to_jiffies(VNIC_QP_CTRL_TIMEOUT_MS);

	for (;;) {
		*status = vnic_qp_rd32(port, VNIC_QP_STATUS);
		if (*status == ~0U)
			return -ENODEV;
		if (running && (*status & errs))
			return -EIO;
		if ((*status & both) == (running ? both : 0))
			return 0;
		if (time_after(jiffies, timeout))
			return -ETIMEDOUT;
		usleep_range(1000, 2000);
	}
}

static int vnic_qp_enable(struct vnic_port *port)
{
	u32 status;
	int err;

	vnic_qp_wr32(port, VNIC_QP_CTRL,
		     VNIC_QP_CTRL_TX_ENABLE | VNIC_QP_CTRL_RX_ENABLE);
	err = vnic_qp_wait(port, true, &status);
	if (err) {
		vnic_log_qp_status(port, "cannot start the queues", status);
		vnic_qp_wr32(port, VNIC_QP_CTRL, 0);
		vnic_qp_rd32(port, VNIC_QP_STATUS);
	}
	return err;
}

static void vnic_qp_disable(struct vnic_port *port)
{
	u32 status;
	int err;

	vnic_qp_wr32(port, VNIC_QP_CTRL, 0);
	/*
	 * The card must have stopped before the rings are freed. A card that
	 * does not answer cannot DMA either; one that still says running is
	 * logged, and the rings are freed regardless.
	 */
	err = vnic_qp_wait(port, false, &status);
	if (err && err != -ENODEV)
		vnic_log_qp_status(port, "queues still running after disable",
				   status);
}

/**
 * vnic_port_start - start a port: its rings, the card's queues, the netdev's
 * @port: the port; RTNL held
 *
 * Return: 0 (also when it is up already) or a negative errno.
 */
int vnic_port_start(struct vnic_port *port)
{
	struct vnic_priv *priv = port->priv;
	struct net_device *netdev = port->netdev;
	int err;

	if (port->up)
		return 0;

	/* Until the watchdog restored it (vnic_recovery.c) */
	if (priv->fn_state != VNIC_FN_RUNNING) {
		netdev_err(netdev, "the function lost its PCI configuration and is not restored: cannot start the queues\n");
		return -ENODEV;
	}

	if (!priv->state.vct_ok) {
		/* The card rejected (or ignored) the BAT at probe: retry */
		err = vnic_state_write_vct(priv);
		if (err) {
			netdev_err(netdev, "the card has no usable VCT entry, cannot start the queues\n");
			return err;
		}
	}

	err = vnic_tx_ring_alloc(port);
	if (err)
		goto err_out;
	err = vnic_rx_ring_alloc(port);
	if (err)
		goto err_free_tx;

	vnic_state_ctx_reset(priv, port->sq_ctx, port->tx.dma, port->tx.size,
			     port->sq_features, 0);
	/* The exception queue pair's messages are no frames of an MTU */
	vnic_state_ctx_reset(priv, port->rq_ctx, port->rx.dma, port->rx.size,
			     port->rq_features,
			     port->exc ? 0 : VNIC_RX_MAX_FRAME(netdev->mtu));

	napi_enable(&port->napi);
	vnic_write_itr(port);

	err = vnic_qp_enable(port);
	if (err)
		goto err_napi_disable;

	vnic_rx_post_all(port);
	/* A vector that fired while the port was down stays masked: rearm */
	if (!vnic_db_rx(port, false, 0, true))
		vnic_qp_wr32(port, VNIC_QP_IRQ, VNIC_QP_IRQ_REARM);

	port->up = true;
	if (vnic_rd32(priv, VNIC_REG_STATUS) & VNIC_STATUS_LINK_UP)
		netif_carrier_on(netdev);
	else
		netif_carrier_off(netdev);
	/* Wake, not start: after a restart the qdisc may hold frames */
	netif_wake_queue(netdev);
	return 0;

err_napi_disable:
	napi_disable(&port->napi);
	vnic_rx_ring_free(port);
err_free_tx:
	vnic_tx_ring_free(port);
err_out:
	netdev_err(netdev, "cannot start queue pair %u: %d\n", port->q, err);
	return err;
}

/**
 * vnic_port_stop - stop the netdev's queue and the card's, free the rings
 * @port: the port; RTNL held
 */
void vnic_port_stop(struct vnic_port *port)
{
	struct net_device *netdev = port->netdev;

	if (!port->up)
		return;
	port->up = false;

	netif_carrier_off(netdev);
	/* NAPI first, so that it cannot wake the queue stopped below */
	napi_disable(&port->napi);
	netif_tx_disable(netdev);
	/*
	 * A queue pair the card removed was stopped and written back by the
	 * card itself, and its registers no longer answer.
	 */
	if (!port->gone)
		vnic_qp_disable(port);
	/*
	 * A card that never loaded the contexts (the function waits for its
	 * VCT entry after a restore) wrote nothing back: no context may say
	 * RUNNING once its ring is freed, or a VCT entry written later would
	 * resume it.
	 */
	vnic_state_ctx_stopped(port->sq_ctx);
	vnic_state_ctx_stopped(port->rq_ctx);

	vnic_tx_ring_free(port);
	vnic_rx_ring_free(port);
}

/**
 * vnic_port_restart - stop and start a port whose netdev is running
 * @port: the port; RTNL held
 *
 * Used when the MTU or the ring sizes change, and to recover a queue.
 *
 * Return: 0 or the negative errno of the start.
 */
int vnic_port_restart(struct vnic_port *port)
{
	ASSERT_RTNL();
	if (!netif_running(port->netdev))
		return 0;
	vnic_port_stop(port);
	return vnic_port_start(port);
}
