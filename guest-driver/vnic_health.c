// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - queue health checks run by the watchdog (vnic_recovery.c).
 *
 * Why: a card can fail a queue or lose an interrupt without the stack ever
 * noticing. The transmit watchdog of the core only fires when a send queue
 * is stopped (its ring full) for watchdog_timeo, and nothing at all watches
 * a receive queue. Real drivers check their queues from a service task for
 * the same reason (ixgbe rearms queues with work pending, igb and e1000e
 * look for hung units). The card's fault injection (docs/fault-injection.md)
 * makes each of these happen on demand.
 *
 * Every VNIC_WATCHDOG_MS, for every netdev that is up:
 *
 *  - a queue the card stopped with an error (QP_STATUS TX_ERROR/RX_ERROR,
 *    e.g. a failed DMA) is logged, decoded, and its queue pair restarted by
 *    the reset task, as after a transmit timeout;
 *  - completed work (DONE at next_to_clean of the send or receive ring; with
 *    VNIC_FEAT_HEAD_WB, a context head past next_to_clean) that
 *    is still there, unreaped, one tick later means the interrupt that
 *    should have reported it was lost: NAPI is scheduled, which reaps it and
 *    rearms the vector.
 */
#include <linux/bottom_half.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>

#include "vnic.h"

/* Completed work waits at the head of either ring (a peek: NAPI owns it) */
static bool vnic_work_pending(struct vnic_port *port)
{
	struct vnic_tx_ring *tx = &port->tx;
	struct vnic_rx_ring *rx = &port->rx;
	u32 ntc = READ_ONCE(tx->next_to_clean);
	u16 status;

	if (port->head_wb)
		return (le16_to_cpu(READ_ONCE(port->sq_ctx->head)) & tx->mask) != ntc ||
		       (le16_to_cpu(READ_ONCE(port->rq_ctx->head)) & rx->mask) !=
		       READ_ONCE(rx->next_to_clean);
	if (ntc != READ_ONCE(tx->tail)) {
		status = le16_to_cpu(READ_ONCE(tx->desc[ntc].status));
		if (status & VNIC_TXD_S_DONE)
			return true;
	}
	ntc = READ_ONCE(rx->next_to_clean);
	status = le16_to_cpu(READ_ONCE(rx->desc[ntc].status));
	return status & VNIC_RXD_S_DONE;
}

/* Work pending at the same place as at the last tick: no interrupt came */
static void vnic_check_lost_irq(struct vnic_port *port)
{
	u32 tx_ntc = READ_ONCE(port->tx.next_to_clean);
	u32 rx_ntc = READ_ONCE(port->rx.next_to_clean);
	bool pending = vnic_work_pending(port);
	bool stuck = pending && port->wd_pending &&
		     tx_ntc == port->wd_tx_ntc && rx_ntc == port->wd_rx_ntc;

	port->wd_pending = pending;
	port->wd_tx_ntc = tx_ntc;
	port->wd_rx_ntc = rx_ntc;
	if (!stuck)
		return;
	port->irq_rescues++;
	port->wd_pending = false;
	if (net_ratelimit())
		netdev_warn(port->netdev, "completions waiting for %u ms without an interrupt: polling (%llu so far)\n",
			    VNIC_WATCHDOG_MS, port->irq_rescues);
	local_bh_disable();
	napi_schedule(&port->napi);
	local_bh_enable();
}

/* A queue the card stopped with an error: restart the queue pair */
static void vnic_check_queue_error(struct vnic_port *port)
{
	const u32 errs = VNIC_QP_STATUS_TX_ERROR | VNIC_QP_STATUS_RX_ERROR;
	u32 status = vnic_qp_rd32(port, VNIC_QP_STATUS);

	/* All-ones: the card is gone, the recovery watchdog deals with it */
	if (status == ~0U || !(status & errs))
		return;
	if (work_pending(&port->reset_task))
		return;
	port->queue_error_restarts++;
	vnic_log_qp_status(port, "queue error, restarting the queue pair",
			   status);
	schedule_work(&port->reset_task);
}

/**
 * vnic_health_check - check every running queue pair
 * @priv: driver state; the function runs (VNIC_FN_RUNNING)
 *
 * Skipped for a tick when RTNL is busy: ports come and go under it.
 */
void vnic_health_check(struct vnic_priv *priv)
{
	struct vnic_port *port;
	u32 q;

	if (!rtnl_trylock())
		return;
	for (q = 0; q < priv->nr_ports; q++) {
		port = priv->ports[q];
		if (!port->up || port->gone)
			continue;
		vnic_check_queue_error(port);
		vnic_check_lost_irq(port);
	}
	rtnl_unlock();
}
