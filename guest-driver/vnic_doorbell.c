// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - doorbell pages.
 *
 * Every write to a BAR0 register is a vfio-user message: a sendmsg() in the
 * vCPU thread and a wake-up of vnicd. A doorbell page is memory the card
 * reads on its own: the driver stores its tails there, and the card polls
 * the page while a queue pair is busy and says so in the slot's WATCH word;
 * when it goes idle it clears WATCH and the driver rings the register
 * (notification suppression, as virtio's event index). The protocol, per
 * doorbell:
 *
 *   store the tail (or IRQ_SEQ + 1) into the slot;
 *   full barrier; read WATCH;
 *   WATCH != 1: write the register too (the card then reads the slot;
 *   the value written is the same, the card ignores it).
 *
 * The card clears WATCH, issues a full barrier and reads the slot once
 * more, so either it sees the store or the driver sees WATCH cleared: no
 * doorbell is lost.
 *
 * Two places for the page:
 *
 * - in guest memory (interface 1.4, module parameter guest_doorbells): a
 *   coherent page of ours that the BAT header names (vnic_state.c). The
 *   card reaches it as it reaches the rings; nothing changes in QEMU, which
 *   keeps posting register writes. The page is found again from the BAT
 *   wherever the VCT entry is committed (recovery, migration); the card
 *   clears WATCH when it takes the page, so the driver rings until the card
 *   polls again.
 * - in BAR0 (interface 1.2, vnicd --doorbell-page, module parameter
 *   doorbell_page): the last page of BAR0, which QEMU maps. QEMU then sends
 *   every other register write non-posted. A reset or a new card clears
 *   ENABLE and zeroes the page: WATCH reads 0, so the driver rings the
 *   registers until it enables the page again (vnic_recovery.c). A card
 *   without the page reads all-ones there.
 */

#include "vnic.h"

static bool guest_doorbells = true;
module_param(guest_doorbells, bool, 0444);
MODULE_PARM_DESC(guest_doorbells,
		 "Store doorbells into a page of guest memory the card polls (interface 1.4; default: on)");

static bool doorbell_page = true;
module_param(doorbell_page, bool, 0444);
MODULE_PARM_DESC(doorbell_page,
		 "Store doorbells into the card's doorbell page in BAR0 when it has one and no guest page is in use (default: on)");

/**
 * vnic_db_guest_wanted - whether the BAT should name a doorbell page
 * @priv: the function, VERSION read
 */
bool vnic_db_guest_wanted(struct vnic_priv *priv)
{
	return guest_doorbells &&
	       VNIC_VERSION_MINOR(priv->version) >= VNIC_VERSION_MINOR_GUEST_DB;
}

/*
 * The card did not take the page the BAT names (it refused it, or rejected
 * the whole BAT): stop naming it, so that a later VCT commit (the retry at
 * open, a recovery) cannot turn on a page the ports do not store into. The
 * card would take register doorbells for kicks and the slots' stale tails
 * for doorbells.
 */
static void vnic_db_unname(struct vnic_priv *priv)
{
	struct vnic_bat *bat = priv->state.bat.va;

	WRITE_ONCE(bat->hdr.doorbells, 0);
}

/* BAR0's page, if the card has one: turn it on */
static bool vnic_db_bar_enable(struct vnic_priv *priv)
{
	u32 v;

	if (!doorbell_page ||
	    VNIC_VERSION_MINOR(priv->version) < VNIC_VERSION_MINOR_DB_PAGE ||
	    priv->regs_len < VNIC_DB_PAGE_OFFSET + VNIC_DB_PAGE_LEN)
		return false;
	v = vnic_rd32(priv, VNIC_REG_DB_PAGE);
	if (v == ~0U || !(v & VNIC_DB_PAGE_PRESENT))
		return false;
	vnic_wr32(priv, VNIC_REG_DB_PAGE, VNIC_DB_PAGE_ENABLE);
	v = vnic_rd32(priv, VNIC_REG_DB_PAGE);
	return v != ~0U && (v & VNIC_DB_PAGE_ENABLE);
}

/**
 * vnic_db_enable - find out which doorbell page the card polls, if any
 * @priv: the function; its ports quiet (probe, or recovery); the VCT entry
 *	written, so a card that takes the BAT's page has done so
 *
 * The card starts every slot from the queues' current tails, so this runs
 * after the tails were handed over through the registers.
 */
void vnic_db_enable(struct vnic_priv *priv)
{
	const char *how = "off";
	u32 v, q;

	priv->db_page = false;
	priv->db_guest = false;
	if (priv->state.db.va) {
		v = vnic_rd32(priv, VNIC_REG_DB_PAGE);
		priv->db_guest = v != ~0U && (v & VNIC_DB_PAGE_ENABLE) &&
				 (v & VNIC_DB_PAGE_GUEST);
		priv->db_page = priv->db_guest;
		if (priv->db_guest) {
			how = "on (guest memory)";
		} else {
			vnic_db_unname(priv);
			how = "refused";
		}
	}
	if (!priv->db_page && vnic_db_bar_enable(priv)) {
		priv->db_page = true;
		how = "on";
	}
	for (q = 0; q < priv->nr_ports; q++)
		vnic_db_port_init(priv->ports[q]);
	if (priv->db_page || priv->state.db.va)
		pci_info(priv->pdev, "doorbell page %s\n", how);
}

/**
 * vnic_db_port_init - point a port at its slot (or at none)
 * @port: the port, not ringing doorbells meanwhile
 */
void vnic_db_port_init(struct vnic_port *port)
{
	struct vnic_priv *priv = port->priv;

	port->db_slot = NULL;
	port->db_mem = NULL;
	if (!priv->db_page || port->q >= VNIC_DB_PAGE_LEN / 0x10)
		return;
	if (priv->db_guest) {
		port->db_mem = (__le32 *)priv->state.db.va + port->q * 4;
		/* The card counts rearms from what the slot holds now */
		port->db_irq_seq =
			le32_to_cpu(READ_ONCE(port->db_mem[VNIC_DB_IRQ_SEQ / 4]));
		return;
	}
	port->db_slot = priv->regs + VNIC_DB_SLOT(port->q);
	port->db_irq_seq = ioread32(port->db_slot + VNIC_DB_IRQ_SEQ);
}

/* Store @v into word @off of the port's slot, wherever the page is */
static void vnic_db_store(struct vnic_port *port, u32 off, u32 v)
{
	if (port->db_mem)
		WRITE_ONCE(port->db_mem[off / 4], cpu_to_le32(v));
	else
		iowrite32(v, port->db_slot + off);
}

/* After a store into the slot: does the card poll it, or must we ring? */
static bool vnic_db_watched(struct vnic_port *port)
{
	/* Pairs with the card's barrier between clearing WATCH and its last look */
	mb();
	if (port->db_mem)
		return le32_to_cpu(READ_ONCE(port->db_mem[VNIC_DB_WATCH / 4])) ==
		       VNIC_DB_WATCHING;
	return ioread32(port->db_slot + VNIC_DB_WATCH) == VNIC_DB_WATCHING;
}

static bool vnic_db_on(struct vnic_port *port)
{
	return port->db_slot || port->db_mem;
}

/**
 * vnic_db_tx - send doorbell
 * @port: the port
 * @tail: the new send tail
 */
void vnic_db_tx(struct vnic_port *port, u32 tail)
{
	if (vnic_db_on(port)) {
		/*
		 * The card reads the descriptors after it sees the tail
		 * (iowrite32() orders them itself for BAR0's page)
		 */
		dma_wmb();
		vnic_db_store(port, VNIC_DB_TX_TAIL, tail);
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
	if (!vnic_db_on(port))
		return false;
	/* Buffers posted, and completions reaped, before the card sees it */
	dma_wmb();
	if (post)
		vnic_db_store(port, VNIC_DB_RX_TAIL, tail);
	if (rearm)
		vnic_db_store(port, VNIC_DB_IRQ_SEQ, ++port->db_irq_seq);
	return vnic_db_watched(port);
}
