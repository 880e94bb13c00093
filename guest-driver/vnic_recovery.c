// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - recovery of a function that lost its PCI configuration.
 *
 * Why: QEMU's vfio-user-pci is not in the migration stream. After savevm and
 * loadvm, or a migration to a file, the guest carries on where it stopped,
 * but a new vnicd serves its functions and QEMU has forgotten their config
 * space: the command register reads 0 (no Memory Space, no Bus Master), BAR0
 * is unassigned and MSI-X is off. The queues survived nonetheless: their
 * contexts (ring base and size, head, tail, counters, RUNNING) are in guest
 * memory, which QEMU saved, and the card finds them through the function's
 * VCT entry. So the driver only gives the function its configuration back
 * and points the new card at the BAT; netdevs, rings, buffers and counters
 * carry on (docs/migration.md).
 *
 * How: a watchdog reads PCI_COMMAND every VNIC_WATCHDOG_MS. When Memory
 * Space Enable is clear, or the ID register does not read "VNIC" (all-ones
 * from a card that is gone, 0 from an unassigned BAR), it runs under RTNL:
 *
 *  1. log, and detach every netdev that is up (nothing transmits; each
 *     keeps its ifindex, addresses, rings and counters);
 *  2. pci_restore_state() of the config space saved at the end of probe
 *     (BARs, command, MSI-X), then pci_save_state() again;
 *  3. check ID, read FUNC (a different VF index is logged);
 *  4. recovery=2: rewrite the VCT entry with the same BAT: the card reloads
 *     every context and resumes the queues that were running;
 *  5. rewrite what the card keeps per queue pair: QP_ITR, the QP_VLAN
 *     joins and the address filter of every netdev; for every netdev that
 *     is up, ring QP_TX_TAIL and QP_RX_TAIL with the tails the driver last
 *     posted and write QP_IRQ REARM;
 *  6. carrier from STATUS.LINK_UP, attach the netdevs, schedule NAPI to
 *     reap what the card completed while interrupts were off, and queue
 *     the configuration check of IRQ_CAUSE.CONFIG to the event work.
 *
 * A function whose BAR0 still reads all-ones after step 2 is gone (a
 * surprise removal, as the card's fault injection makes one): the netdevs
 * stay detached with the carrier off, nothing touches the device, and the
 * watchdog only reads ID until the function answers again. A function that
 * comes back is a fresh device (the card reset it), so all the steps run.
 *
 * Each tick of a running function also checks its queues (vnic_health.c).
 *
 * With recovery=1 the VCT entry is management's: when no queue runs after
 * step 5, the netdevs stay detached with the carrier off until the card
 * raises IRQ_CAUSE.RESUMED (or the watchdog finds the queues running); then
 * steps 5 and 6 run. With recovery=0 the driver logs once and detaches its
 * netdevs: the function stays stopped. Until the function runs again, no
 * netdev opens (vnic_port_start()).
 *
 * RTNL serialises all of it with ndo_open/ndo_stop, ethtool, the event
 * work's netdev changes and the PF's ndo_set_vf_* (whose mailbox commands
 * are also kept out of the restore by admin_lock). Detached netdevs refuse
 * open, MTU, MAC and ethtool requests in the core.
 */
#include <linux/bitfield.h>
#include <linux/bottom_half.h>
#include <linux/moduleparam.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include "vnic.h"

#define VNIC_RECOVERY_OFF	0	/* log, leave the function stopped */
#define VNIC_RECOVERY_PCI	1	/* the VCT entry is management's */
#define VNIC_RECOVERY_FULL	2	/* the driver rewrites the VCT entry */

static int recovery = VNIC_RECOVERY_FULL;
module_param(recovery, int, 0444);
MODULE_PARM_DESC(recovery,
		 "When a function loses its PCI configuration (loadvm, migration): 0 log and leave it stopped, 1 restore config and registers but leave the VCT entry to management, 2 (default) also rewrite the VCT entry");

/* Lost: Memory Space is off, or BAR0 does not answer (ID not "VNIC") */
static bool vnic_config_lost(struct vnic_priv *priv, u16 *cmd)
{
	/* A failed read leaves all-ones, and the ID read decides */
	pci_read_config_word(priv->pdev, PCI_COMMAND, cmd);
	if (!(*cmd & PCI_COMMAND_MEMORY))
		return true;
	return !vnic_card_answers(priv);
}

/* Written under RTNL; the watchdog peeks without it */
static void vnic_set_fn_state(struct vnic_priv *priv, enum vnic_fn_state state)
{
	WRITE_ONCE(priv->fn_state, state);
}

/*
 * Stop every netdev that is up from transmitting; they stay registered. The
 * others have no queue to stop, and vnic_port_start() refuses to open them
 * until the function runs again. (Attaching a netdev wakes its queue, which
 * one without rings must not get.)
 */
static void vnic_recovery_detach(struct vnic_priv *priv)
{
	struct net_device *netdev;
	u32 q;

	for (q = 0; q < priv->nr_ports; q++) {
		if (!priv->ports[q]->up)
			continue;
		netdev = priv->ports[q]->netdev;
		netif_device_detach(netdev);
		/* Takes the transmit lock: no xmit rings a doorbell after it */
		netif_tx_disable(netdev);
	}
}

/* Undo vnic_recovery_detach(); a netdev closed meanwhile just turns present */
static void vnic_recovery_attach(struct vnic_priv *priv)
{
	struct net_device *netdev;
	u32 q;

	for (q = 0; q < priv->nr_ports; q++) {
		netdev = priv->ports[q]->netdev;
		if (!netif_device_present(netdev))
			netif_device_attach(netdev);
	}
}

static void vnic_recovery_carrier_off(struct vnic_priv *priv)
{
	u32 q;

	for (q = 0; q < priv->nr_ports; q++)
		netif_carrier_off(priv->ports[q]->netdev);
}

/* Netdevs stay detached, carrier off: the function is left alone */
static void vnic_recovery_give_up(struct vnic_priv *priv)
{
	vnic_recovery_carrier_off(priv);
	vnic_set_fn_state(priv, VNIC_FN_STOPPED);
}

/* Step 3: the card answers, and is the same kind of function */
static int vnic_recovery_check_card(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	u32 id, func;
	u16 vf;

	id = vnic_rd32(priv, VNIC_REG_ID);
	if (id == ~0U)
		return -ENXIO;	/* nobody answers: gone */
	if (id != VNIC_ID_MAGIC) {
		pci_err(pdev, "ID register reads 0x%08x after restoring\n", id);
		return -ENODEV;
	}
	func = vnic_rd32(priv, VNIC_REG_FUNC);
	if (!(func & VNIC_FUNC_IS_VF) != !priv->is_vf) {
		pci_err(pdev, "FUNC reads 0x%08x after restoring: not a %s\n",
			func, priv->is_vf ? "VF" : "PF");
		return -ENODEV;
	}
	vf = FIELD_GET(VNIC_FUNC_VF_INDEX_MASK, func);
	if (vf != priv->vf_index) {
		pci_info(pdev, "now served as VF%u (was VF%u)\n", vf,
			 priv->vf_index);
		priv->vf_index = vf;
	}
	return 0;
}

/* Steps 2 to 4; admin_lock held */
static int vnic_recovery_restore(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	int err;

	/* Reload probe's copy: the PCI core may have consumed its own since */
	if (priv->pci_state) {
		err = pci_load_saved_state(pdev, priv->pci_state);
		if (err)
			return err;
	}
	pci_restore_state(pdev);
	/* Restoring consumes the saved state: keep one for the next time */
	pci_save_state(pdev);

	err = vnic_recovery_check_card(priv);
	if (err || recovery != VNIC_RECOVERY_FULL)
		return err;
	/* Same BAT: the card reloads the contexts and resumes the queues */
	return vnic_state_write_vct(priv);
}

/* Step 5 for one port: what the card keeps per queue pair */
static void vnic_port_rewrite(struct vnic_port *port)
{
	struct vnic_tx_ring *tx = &port->tx;
	struct vnic_rx_ring *rx = &port->rx;
	unsigned int vid;

	vnic_write_itr(port);
	/* Joins are the switch's; a down netdev keeps its VLANs too */
	for_each_set_bit(vid, port->active_vlans, VLAN_N_VID)
		vnic_qp_wr32(port, VNIC_QP_VLAN,
			     FIELD_PREP(VNIC_QP_VLAN_VID, vid));
	/* And so are the extra addresses, groups and modes */
	vnic_filter_rewrite(port);
	if (!port->up)
		return;

	/* NAPI moves the receive tail: keep it still while it is rung */
	napi_disable(&port->napi);
	tx->kicked = tx->tail;
	/* Through the page if it is still on (no reset), else the registers */
	vnic_db_tx(port, tx->tail);
	if (!vnic_db_rx(port, true, (rx->next_to_clean - 1) & rx->mask, true)) {
		vnic_qp_wr32(port, VNIC_QP_RX_TAIL,
			     (rx->next_to_clean - 1) & rx->mask);
		vnic_qp_wr32(port, VNIC_QP_IRQ, VNIC_QP_IRQ_REARM);
	}
	napi_enable(&port->napi);
}

static void vnic_recovery_rewrite(struct vnic_priv *priv)
{
	u32 q;

	for (q = 0; q < priv->nr_ports; q++)
		vnic_port_rewrite(priv->ports[q]);
}

static u32 vnic_port_status(struct vnic_port *port)
{
	return vnic_qp_rd32(port, VNIC_QP_STATUS);
}

/* The card holds a committed VCT entry (a pending one reads 0) */
static bool vnic_recovery_vct_set(struct vnic_priv *priv)
{
	u32 lo = vnic_rd32(priv, VNIC_REG_VCT_LO);
	u32 hi = vnic_rd32(priv, VNIC_REG_VCT_HI);

	return (lo || hi) && (lo & hi) != ~0U;
}

/*
 * Has management's VCT entry been committed: does the card run the queues
 * of a netdev that is up? With no netdev up, whether the card has an entry.
 */
static bool vnic_recovery_queues_resumed(struct vnic_priv *priv)
{
	const u32 running = VNIC_QP_STATUS_TX_RUNNING |
			    VNIC_QP_STATUS_RX_RUNNING;
	bool any_up = false;
	u32 q, status;

	for (q = 0; q < priv->nr_ports; q++) {
		if (!priv->ports[q]->up)
			continue;
		any_up = true;
		status = vnic_port_status(priv->ports[q]);
		if (status != ~0U && (status & running))
			return true;
	}
	return !any_up && vnic_recovery_vct_set(priv);
}

/* Carrier of every netdev that is up, from STATUS.LINK_UP */
static void vnic_recovery_link(struct vnic_priv *priv)
{
	u32 status = vnic_rd32(priv, VNIC_REG_STATUS);
	struct vnic_port *port;
	u32 q;

	priv->link_up = status != ~0U && (status & VNIC_STATUS_LINK_UP);
	for (q = 0; q < priv->nr_ports; q++) {
		port = priv->ports[q];
		if (port->up && priv->link_up)
			netif_carrier_on(port->netdev);
		else
			netif_carrier_off(port->netdev);
	}
}

/* A netdev that is up whose queues the card did not resume is logged */
static u32 vnic_recovery_check_ports(struct vnic_priv *priv)
{
	const u32 both = VNIC_QP_STATUS_TX_RUNNING | VNIC_QP_STATUS_RX_RUNNING;
	struct vnic_port *port;
	u32 q, status, up = 0;

	for (q = 0; q < priv->nr_ports; q++) {
		port = priv->ports[q];
		if (!port->up)
			continue;
		up++;
		status = vnic_port_status(port);
		if (status == ~0U || (status & both) != both)
			vnic_log_qp_status(port, "queues did not resume",
					   status);
	}
	return up;
}

/* Step 6: the function runs again */
/*
 * The guest may run on another card, behind another switch port, now (a
 * migration): a gratuitous ARP and unsolicited neighbour advertisements for
 * every vNIC that is up, as virtio-net's announce, so that peers and
 * switches learn the new place at once. Done again at the next watchdog
 * ticks (VNIC_ANNOUNCE_ROUNDS in all, 500 ms apart), as QEMU's announce
 * repeats: a peer whose own function resumes a moment later still hears
 * it. RTNL held.
 */
static void vnic_recovery_announce(struct vnic_priv *priv)
{
	u32 q;

	ASSERT_RTNL();
	for (q = 0; q < priv->nr_ports; q++)
		if (priv->ports[q]->up)
			__netdev_notify_peers(priv->ports[q]->netdev);
}

static void vnic_recovery_complete(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	u32 q, up;

	up = vnic_recovery_check_ports(priv);
	/* A reset or a new card turned the doorbell page off: on again */
	vnic_db_enable(priv);
	vnic_recovery_link(priv);
	vnic_set_fn_state(priv, VNIC_FN_RUNNING);
	vnic_recovery_attach(priv);

	/* Reap what completed while interrupts were off */
	local_bh_disable();
	for (q = 0; q < priv->nr_ports; q++)
		if (priv->ports[q]->up)
			napi_schedule(&priv->ports[q]->napi);
	local_bh_enable();

	vnic_recovery_announce(priv);
	priv->announce_left = VNIC_ANNOUNCE_ROUNDS - 1;

	/* Management may have changed QP_NUM or MACs: check as for CONFIG */
	vnic_events_kick(priv, VNIC_IRQ_CAUSE_CONFIG);
	/* The card now serving says whether a migration goes on */
	vnic_recovery_migration(priv);

	WRITE_ONCE(priv->recoveries, priv->recoveries + 1);
	if (priv->is_vf)
		pci_info(pdev, "recovered in %u ms (VF%u, %u queue pairs, addresses announced)\n",
			 (u32)ktime_ms_delta(ktime_get(), priv->lost_at),
			 priv->vf_index, up);
	else
		pci_info(pdev, "recovered in %u ms (PF, %u queue pairs, addresses announced)\n",
			 (u32)ktime_ms_delta(ktime_get(), priv->lost_at), up);
}

/* The configuration is lost: restore it (all steps); RTNL held */
static void vnic_recover(struct vnic_priv *priv, u16 cmd)
{
	struct pci_dev *pdev = priv->pdev;
	int err;

	ASSERT_RTNL();
	if (priv->fn_state == VNIC_FN_STOPPED)
		return;
	/* A function that comes back counts its time from when it went */
	if (priv->fn_state != VNIC_FN_GONE)
		priv->lost_at = ktime_get();
	vnic_recovery_detach(priv);
	if (recovery == VNIC_RECOVERY_OFF) {
		pci_warn(pdev, "lost its PCI configuration (command 0x%04x); recovery is disabled (recovery=0): the function stays stopped\n",
			 cmd);
		vnic_recovery_give_up(priv);
		return;
	}

	pci_warn(pdev, "lost its PCI configuration (command 0x%04x, %u ms after the last check); restoring\n",
		 cmd, (u32)ktime_ms_delta(priv->lost_at, priv->checked_at));
	mutex_lock(&priv->admin_lock);
	err = vnic_recovery_restore(priv);
	if (!err)
		vnic_recovery_rewrite(priv);
	mutex_unlock(&priv->admin_lock);
	if (err == -ENXIO) {
		pci_err(pdev, "BAR0 reads all-ones with its configuration restored: the function is gone (surprise removal?); netdevs detached until it answers again\n");
		vnic_recovery_carrier_off(priv);
		vnic_set_fn_state(priv, VNIC_FN_GONE);
		return;
	}
	if (err) {
		pci_err(pdev, "cannot restore the function (%d): it stays stopped\n",
			err);
		vnic_recovery_give_up(priv);
		return;
	}

	if (recovery == VNIC_RECOVERY_PCI &&
	    !vnic_recovery_queues_resumed(priv)) {
		pci_info(pdev, "waiting for management to write the VCT entry (BAT at 0x%llx)\n",
			 (u64)priv->state.bat.dma);
		vnic_recovery_carrier_off(priv);
		vnic_set_fn_state(priv, VNIC_FN_WAITING);
		return;
	}
	vnic_recovery_complete(priv);
}

/* Management's VCT entry resumed the queues: steps 5 and 6; RTNL held */
static void vnic_recovery_finish(struct vnic_priv *priv)
{
	ASSERT_RTNL();
	if (priv->fn_state != VNIC_FN_WAITING)
		return;
	vnic_recovery_rewrite(priv);
	vnic_recovery_complete(priv);
}

/**
 * vnic_recovery_resumed - act on IRQ_CAUSE.RESUMED
 * @priv: driver state
 *
 * Management committed the function's VCT entry and the card resumed the
 * queues. A function that waits for that (recovery=1) runs again; in any
 * other state there is nothing to do.
 */
void vnic_recovery_resumed(struct vnic_priv *priv)
{
	rtnl_lock();
	if (priv->fn_state == VNIC_FN_WAITING)
		pci_info(priv->pdev, "management wrote the VCT entry\n");
	vnic_recovery_finish(priv);
	rtnl_unlock();
}

/*
 * A gone function is left alone until its ID reads right again, or until
 * its configuration space answers with Memory Space Enable clear: a new
 * QEMU that took the guest over (-incoming, after vnicd died and was
 * restarted) presents the function with its configuration lost. While
 * nobody answers, the command register reads all-ones or what QEMU makes
 * of a failed read, with the memory bit set. Either way the function comes
 * back as a fresh device, whose configuration the recovery restores.
 */
static bool vnic_watchdog_gone(struct vnic_priv *priv, bool *lost, u16 *cmd)
{
	pci_read_config_word(priv->pdev, PCI_COMMAND, cmd);
	if ((*cmd & PCI_COMMAND_MEMORY) && !vnic_card_answers(priv))
		return true;
	pci_info(priv->pdev, "the function answers again after %u ms (command 0x%04x): setting it up\n",
		 (u32)ktime_ms_delta(ktime_get(), priv->lost_at), *cmd);
	*lost = true;
	return false;
}

static void vnic_watchdog_check(struct vnic_priv *priv)
{
	enum vnic_fn_state state = READ_ONCE(priv->fn_state);
	struct device *dev = &priv->pdev->dev;
	bool lost;
	u16 cmd;

	if (state == VNIC_FN_GONE) {
		if (vnic_watchdog_gone(priv, &lost, &cmd))
			return;
	} else {
		lost = vnic_config_lost(priv, &cmd);
	}
	if (!lost && state == VNIC_FN_RUNNING) {
		priv->checked_at = ktime_get();
		if (READ_ONCE(priv->announce_left) && device_trylock(dev)) {
			rtnl_lock();
			if (priv->announce_left) {
				priv->announce_left--;
				vnic_recovery_announce(priv);
			}
			rtnl_unlock();
			device_unlock(dev);
		}
		vnic_health_check(priv);
		return;
	}
	/*
	 * Held by a reset through the PCI core (which saves, clears and
	 * restores the command register itself), and by remove, which
	 * cancels this work: try again at the next tick.
	 */
	if (!device_trylock(dev))
		return;

	rtnl_lock();
	if (lost)
		vnic_recover(priv, cmd);
	else if (priv->fn_state == VNIC_FN_WAITING &&
		 vnic_recovery_queues_resumed(priv))
		/* RESUMED not seen (yet): the queues run, so carry on */
		vnic_recovery_finish(priv);
	rtnl_unlock();
	device_unlock(dev);
}

static unsigned int vnic_watchdog_period(struct vnic_priv *priv)
{
	return READ_ONCE(priv->migrating) ? VNIC_WATCHDOG_MIGRATING_MS :
					    VNIC_WATCHDOG_MS;
}

static void vnic_watchdog(struct work_struct *work)
{
	struct vnic_priv *priv = container_of(to_delayed_work(work),
					      struct vnic_priv, watchdog);

	vnic_watchdog_check(priv);
	/* A stopped function is left alone for good */
	if (READ_ONCE(priv->fn_state) != VNIC_FN_STOPPED)
		schedule_delayed_work(&priv->watchdog,
				      msecs_to_jiffies(vnic_watchdog_period(priv)));
}

/**
 * vnic_recovery_migration - act on IRQ_CAUSE.MIGRATION
 * @priv: driver state
 *
 * While the card says the function is in live-migration mode, the watchdog
 * checks the configuration every VNIC_WATCHDOG_MIGRATING_MS instead of
 * every VNIC_WATCHDOG_MS: this memory, and the watchdog's period with it,
 * travel to the destination, where the function's configuration is lost
 * at the switchover (QEMU does not migrate vfio-user-pci), and the guest
 * then finds it lost within that period of running instead of half a
 * second. Also called after a recovery, with the card now serving.
 */
void vnic_recovery_migration(struct vnic_priv *priv)
{
	u32 status = vnic_rd32(priv, VNIC_REG_STATUS);
	bool on = status != ~0U && (status & VNIC_STATUS_MIGRATING);

	if (on == READ_ONCE(priv->migrating))
		return;
	WRITE_ONCE(priv->migrating, on);
	pci_info(priv->pdev, "live migration %s: configuration checked every %u ms\n",
		 on ? "under way" : "over", vnic_watchdog_period(priv));
	if (on)
		mod_delayed_work(system_wq, &priv->watchdog,
				 msecs_to_jiffies(VNIC_WATCHDOG_MIGRATING_MS));
}

/**
 * vnic_recovery_init - check the parameter, prepare the watchdog
 * @priv: driver state
 *
 * Return: 0, or -EINVAL for a recovery parameter out of range.
 */
int vnic_recovery_init(struct vnic_priv *priv)
{
	if (recovery < VNIC_RECOVERY_OFF || recovery > VNIC_RECOVERY_FULL) {
		pci_err(priv->pdev, "recovery=%d: must be 0, 1 or 2\n",
			recovery);
		return -EINVAL;
	}
	priv->fn_state = VNIC_FN_RUNNING;
	priv->checked_at = ktime_get();
	INIT_DELAYED_WORK(&priv->watchdog, vnic_watchdog);
	return 0;
}

/**
 * vnic_recovery_start - save the PCI configuration and start the watchdog
 * @priv: driver state; BARs, bus mastering and MSI-X set up
 */
void vnic_recovery_start(struct vnic_priv *priv)
{
	pci_save_state(priv->pdev);
	/* NULL (no memory) leaves the PCI core's saved state to restore */
	priv->pci_state = pci_store_saved_state(priv->pdev);
	schedule_delayed_work(&priv->watchdog,
			      msecs_to_jiffies(VNIC_WATCHDOG_MS));
}

/**
 * vnic_recovery_stop - undo vnic_recovery_start()
 * @priv: driver state
 *
 * On return the watchdog is neither queued nor running.
 */
void vnic_recovery_stop(struct vnic_priv *priv)
{
	cancel_delayed_work_sync(&priv->watchdog);
	kfree(priv->pci_state);
	priv->pci_state = NULL;
}
