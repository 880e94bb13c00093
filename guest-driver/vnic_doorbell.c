// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - the doorbell page.
 *
 * Every write to a BAR0 register is a vfio-user message: a sendmsg() in the
 * vCPU thread and a wake-up of vnicd. A card started with --doorbell-page
 * offers the last page of BAR0 as memory QEMU maps: a store there stays
 * inside QEMU. The card polls the page while a queue pair is busy and says
 * so in the slot's WATCH word; when it goes idle it clears WATCH and the
 * driver rings the register (notification suppression, as virtio's event
 * index). The protocol, per doorbell:
 *
 *   store the tail (or IRQ_SEQ + 1) into the slot;
 *   full barrier; read WATCH;
 *   WATCH != 1: write the register too (the card then reads the slot;
 *   the value written is the same, the card ignores it).
 *
 * The card clears WATCH, issues a full barrier and reads the slot once
 * more, so either it sees the store or the driver sees WATCH cleared: no
 * doorbell is lost. A reset or a new card (migration) clears ENABLE and
 * zeroes the page: WATCH reads 0, so the driver rings the registers, which
 * such a card takes at their value, until it enables the page again
 * (vnic_recovery.c). A card without the page reads all-ones there.
 */

#include "vnic.h"

static bool doorbell_page = true;
module_param(doorbell_page, bool, 0444);
MODULE_PARM_DESC(doorbell_page,
		 "Store doorbells into the card's doorbell page when it has one (default: on)");

/**
 * vnic_db_enable - turn the doorbell page on, if the card has one
 * @priv: the function; its ports quiet (probe, or recovery)
 *
 * The card starts every slot from the queues' current tails, so this runs
 * after the tails were handed over through the registers.
 */
void vnic_db_enable(struct vnic_priv *priv)
{
	u32 v, q;

	priv->db_page = false;
	if (!doorbell_page ||
	    VNIC_VERSION_MINOR(priv->version) < VNIC_VERSION_MINOR_DB_PAGE ||
	    priv->regs_len < VNIC_DB_PAGE_OFFSET + VNIC_DB_PAGE_LEN)
		return;
	v = vnic_rd32(priv, VNIC_REG_DB_PAGE);
	if (v == ~0U || !(v & VNIC_DB_PAGE_PRESENT))
		return;
	vnic_wr32(priv, VNIC_REG_DB_PAGE, VNIC_DB_PAGE_ENABLE);
	v = vnic_rd32(priv, VNIC_REG_DB_PAGE);
	priv->db_page = v != ~0U && (v & VNIC_DB_PAGE_ENABLE);
	for (q = 0; q < priv->nr_ports; q++)
		vnic_db_port_init(priv->ports[q]);
	pci_info(priv->pdev, "doorbell page %s\n",
		 priv->db_page ? "on" : "refused");
}

/**
 * vnic_db_port_init - point a port at its slot (or at none)
 * @port: the port, not ringing doorbells meanwhile
 */
void vnic_db_port_init(struct vnic_port *port)
{
	struct vnic_priv *priv = port->priv;

	if (!priv->db_page || port->q >= VNIC_DB_PAGE_LEN / 0x10) {
		port->db_slot = NULL;
		return;
	}
	port->db_slot = priv->regs + VNIC_DB_SLOT(port->q);
	/* The card counts rearms from what the slot holds now */
	port->db_irq_seq = ioread32(port->db_slot + VNIC_DB_IRQ_SEQ);
}

/* After a store into the slot: does the card poll it, or must we ring? */
static bool vnic_db_watched(struct vnic_port *port)
{
	/* Pairs with the card's barrier between clearing WATCH and its last look */
	mb();
	return ioread32(port->db_slot + VNIC_DB_WATCH) == VNIC_DB_WATCHING;
}

/**
 * vnic_db_tx - send doorbell
 * @port: the port
 * @tail: the new send tail
 */
void vnic_db_tx(struct vnic_port *port, u32 tail)
{
	if (port->db_slot) {
		/* iowrite32() orders the descriptor writes before the store */
		iowrite32(tail, port->db_slot + VNIC_DB_TX_TAIL);
		if (vnic_db_watched(port))
			return;
	}
	vnic_qp_wr32(port, VNIC_QP_TX_TAIL, tail);
}

/**
 * vnic_db_rx - receive doorbell and rearm through the page
 * @port: the port
 * @post: hand the card receive buffers up to @tail
 * @tail: the new receive tail
 * @rearm: re-enable the queue pair's vector
 *
 * Return: true if the card polls the slot and nothing else is to be done;
 * false if the caller must write the registers as without a page.
 */
bool vnic_db_rx(struct vnic_port *port, bool post, u32 tail, bool rearm)
{
	if (!port->db_slot)
		return false;
	if (post)
		iowrite32(tail, port->db_slot + VNIC_DB_RX_TAIL);
	if (rearm)
		iowrite32(++port->db_irq_seq, port->db_slot + VNIC_DB_IRQ_SEQ);
	return vnic_db_watched(port);
}
