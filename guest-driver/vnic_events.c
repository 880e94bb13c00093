// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - card events: the work of the misc vector.
 *
 * The misc vector carries the test interrupt and card events (vnic_irq.c).
 * IRQ_CAUSE says which events: reading and clearing it, and acting on it,
 * takes MMIO (slow over vfio-user) and RTNL, so the handler leaves all of it
 * to a work item, this file's. The work reads the current state rather than
 * trusting the cause alone, so an event that arrives while it runs (and
 * fires the vector again) is never lost. The driver queues causes of its own
 * to the same work (vnic_events_kick(), the check after a recovery), which
 * keeps every netdev change in one place.
 *
 * A function whose configuration was lost (QEMU loadvm) reads all-ones, or
 * nothing useful, until the watchdog restores it: an all-ones IRQ_CAUSE is
 * no cause at all, and the netdev changes wait for the function to run.
 *
 * The work hands RESUMED to the recovery (vnic_recovery.c), CONFIG and LINK
 * to the netdevs (vnic_netdev.c); it sits above both.
 */
#include <linux/atomic.h>
#include <linux/interrupt.h>
#include <linux/workqueue.h>

#include "vnic.h"

#define VNIC_IRQ_CAUSE_KNOWN	(VNIC_IRQ_CAUSE_CONFIG | VNIC_IRQ_CAUSE_LINK | \
				 VNIC_IRQ_CAUSE_RESUMED | VNIC_IRQ_CAUSE_MIGRATION)

/* The card's causes, cleared, and the driver's own */
static u32 vnic_event_causes(struct vnic_priv *priv)
{
	u32 cause;

	cause = vnic_rd32(priv, VNIC_REG_IRQ_CAUSE);
	/*
	 * All-ones: a card without IRQ_CAUSE (the read is a bad access), one
	 * that is gone, or one whose BAR is not decoded. Not "every cause":
	 * there is nothing to act on.
	 */
	if (cause == ~0U)
		cause = 0;
	/* RW1C: clear what was read before acting, so nothing new is lost */
	if (cause)
		vnic_wr32(priv, VNIC_REG_IRQ_CAUSE, cause);
	if (cause & ~VNIC_IRQ_CAUSE_KNOWN)
		pci_dbg(priv->pdev, "IRQ_CAUSE 0x%08x: unknown causes ignored\n",
			cause);

	return cause | atomic_xchg(&priv->sw_causes, 0);
}

static void vnic_event_task(struct work_struct *work)
{
	struct vnic_priv *priv = container_of(work, struct vnic_priv,
					      event_task);
	u32 cause;

	cause = vnic_event_causes(priv);
	/* First, so that a CONFIG raised with it finds the function running */
	if (cause & VNIC_IRQ_CAUSE_RESUMED)
		vnic_recovery_resumed(priv);
	if (cause & VNIC_IRQ_CAUSE_CONFIG)
		vnic_netdevs_config_changed(priv);
	if (cause & VNIC_IRQ_CAUSE_LINK)
		vnic_netdevs_link_changed(priv);
	if (cause & VNIC_IRQ_CAUSE_MIGRATION)
		vnic_recovery_migration(priv);
}

/**
 * vnic_events_init - prepare the event work
 * @priv: driver state
 *
 * Until vnic_events_start() nothing queues the work: neither the misc
 * handler nor vnic_events_kick().
 */
void vnic_events_init(struct vnic_priv *priv)
{
	INIT_WORK(&priv->event_task, vnic_event_task);
}

/**
 * vnic_events_start - act on card events from now on
 * @priv: driver state, netdevs created
 *
 * A cause the card raised before (while probe read the configuration) is
 * still latched in IRQ_CAUSE: look at it once now.
 */
void vnic_events_start(struct vnic_priv *priv)
{
	WRITE_ONCE(priv->events_on, true);
	schedule_work(&priv->event_task);
}

/**
 * vnic_events_stop - stop acting on card events; undo vnic_events_start()
 * @priv: driver state
 *
 * On return the event work is neither queued nor running, and the misc
 * handler no longer queues it.
 */
void vnic_events_stop(struct vnic_priv *priv)
{
	WRITE_ONCE(priv->events_on, false);
	/* A handler that still saw events_on has queued the work by now */
	if (priv->misc_irq)
		synchronize_irq(priv->misc_irq);
	cancel_work_sync(&priv->event_task);
}
