// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - queue-pair register helpers shared across the driver.
 *
 * Decoding QP_STATUS for the logs and writing QP_ITR are needed wherever a
 * queue pair is started, checked or restored: when a port starts or stops
 * (vnic_port.c), when a send descriptor reports an error (vnic_tx.c), by
 * the watchdog's health checks (vnic_health.c), after a recovery
 * (vnic_recovery.c) and by ethtool -C (vnic_ethtool.c). They decode or
 * write a queue pair's registers and call nothing else of the driver, so
 * any file may use them without depending on the others.
 */
#include <linux/bitfield.h>
#include <linux/netdevice.h>

#include "vnic.h"

/**
 * vnic_qerr_name - name of a queue error code
 * @code: VNIC_QERR_*
 *
 * Return: a short name for logs.
 */
const char *vnic_qerr_name(u32 code)
{
	switch (code) {
	case VNIC_QERR_NONE:
		return "none";
	case VNIC_QERR_RING:
		return "ring";
	case VNIC_QERR_DMA:
		return "dma";
	case VNIC_QERR_LENGTH:
		return "length";
	case VNIC_QERR_INDEX:
		return "index";
	case VNIC_QERR_CHAIN:
		return "chain";
	case VNIC_QERR_CONTEXT:
		return "context";
	case VNIC_QERR_FEATURES:
		return "features";
	default:
		return "unknown";
	}
}

/**
 * vnic_log_qp_status - log a queue pair's QP_STATUS, decoded
 * @port: the port
 * @what: what went wrong
 * @status: QP_STATUS as read
 */
void vnic_log_qp_status(struct vnic_port *port, const char *what, u32 status)
{
	u32 tx_code = FIELD_GET(VNIC_QP_STATUS_TX_CODE, status);
	u32 rx_code = FIELD_GET(VNIC_QP_STATUS_RX_CODE, status);

	if (status == ~0U) {
		netdev_err(port->netdev, "%s: QP_STATUS reads all-ones: the card does not answer for queue pair %u\n",
			   what, port->q);
		return;
	}
	netdev_err(port->netdev,
		   "%s: QP_STATUS 0x%08x: send %s%s (error %u, %s), receive %s%s (error %u, %s)\n",
		   what, status,
		   status & VNIC_QP_STATUS_TX_RUNNING ? "running" : "stopped",
		   status & VNIC_QP_STATUS_TX_ERROR ? ", failed" : "",
		   tx_code, vnic_qerr_name(tx_code),
		   status & VNIC_QP_STATUS_RX_RUNNING ? "running" : "stopped",
		   status & VNIC_QP_STATUS_RX_ERROR ? ", failed" : "",
		   rx_code, vnic_qerr_name(rx_code));
}

/**
 * vnic_write_itr - tell the card how to moderate the port's interrupt
 * @port: the port
 *
 * A 1.0 card ignores ADAPTIVE and uses the interval; a 1.1 card adapts it.
 * A card older than 1.3 ignores TX_USECS (the driver keeps it 0 there).
 */
void vnic_write_itr(struct vnic_port *port)
{
	u32 v = FIELD_PREP(VNIC_QP_ITR_USECS, port->itr) |
		FIELD_PREP(VNIC_QP_ITR_TX_USECS, port->tx_itr);

	if (port->itr_adaptive)
		v |= VNIC_QP_ITR_ADAPTIVE;
	vnic_qp_wr32(port, VNIC_QP_ITR, v);
}
