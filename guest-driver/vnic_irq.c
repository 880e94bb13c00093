// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - MSI-X setup, the test interrupt, queue-pair interrupts and NAPI.
 *
 * The card has no INTx and no MSI: MSI-X only. Vector 0 is the misc/admin
 * vector; vector q + 1 belongs to queue pair q.
 *
 * The misc vector carries the test interrupt and card events. Its handler
 * only counts the interrupt, completes the test and, once events are on,
 * queues the event work (vnic_events.c), which reads IRQ_CAUSE and acts on
 * it; vnic_events_kick() queues the same work for causes the driver raises
 * itself. This file queues the work but calls none of what it runs (netdev
 * and recovery code), so the recovery may kick it.
 *
 * A queue pair's vector masks itself in the card when it fires, so the hard
 * IRQ handler has nothing to mask: it only schedules NAPI. The poll cleans
 * the send queue, then up to budget received frames (reposting their
 * buffers), and when it is done writes QP_IRQ REARM. The card fires again at
 * once on a rearm if anything completed since the last interrupt, so work
 * that raced with the end of the poll is not lost and the poll need not look
 * again itself.
 */
#include <linux/interrupt.h>
#include <linux/jiffies.h>
#include <linux/netdevice.h>
#include <linux/workqueue.h>

#include "vnic.h"

static irqreturn_t vnic_misc_irq(int irq, void *data)
{
	struct vnic_priv *priv = data;

	atomic_inc(&priv->misc_irqs);
	complete(&priv->irq_test_done);
	if (READ_ONCE(priv->events_on))
		schedule_work(&priv->event_task);

	return IRQ_HANDLED;
}

/**
 * vnic_events_kick - have the event work act on causes the driver raises
 * @priv: driver state
 * @cause: IRQ_CAUSE bits
 *
 * Like the misc handler, it queues the work only while events are on
 * (vnic_events.c): nothing happens once they are stopped.
 */
void vnic_events_kick(struct vnic_priv *priv, u32 cause)
{
	atomic_or(cause, &priv->sw_causes);
	if (READ_ONCE(priv->events_on))
		schedule_work(&priv->event_task);
}

/**
 * vnic_irq_init - allocate MSI-X vectors and request the misc vector
 * @priv: driver state; @priv->num_vectors already read from the device
 *
 * Return: 0 or a negative errno; on error nothing is left allocated.
 */
int vnic_irq_init(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	int table_size, nvecs, irq, err;

	if (!pdev->msix_cap) {
		pci_err(pdev, "device has no MSI-X capability\n");
		return -ENODEV;
	}

	/* NUM_VECTORS and the MSI-X capability must agree */
	table_size = pci_msix_vec_count(pdev);
	if (table_size < 0) {
		pci_err(pdev, "cannot read the MSI-X table size: %d\n",
			table_size);
		return table_size;
	}
	if (priv->num_vectors > table_size) {
		pci_err(pdev, "NUM_VECTORS %u exceeds the MSI-X table size %d\n",
			priv->num_vectors, table_size);
		return -EINVAL;
	}

	nvecs = pci_alloc_irq_vectors(pdev, 1, priv->num_vectors,
				      PCI_IRQ_MSIX);
	if (nvecs < 0) {
		pci_err(pdev, "cannot allocate MSI-X vectors: %d\n", nvecs);
		return nvecs;
	}
	priv->nvecs = nvecs;
	if (nvecs < priv->num_vectors)
		pci_info(pdev, "using %d of %u MSI-X vectors\n", nvecs,
			 priv->num_vectors);

	snprintf(priv->misc_irq_name, sizeof(priv->misc_irq_name),
		 VNIC_DRV_NAME "-misc@%s", pci_name(pdev));

	irq = pci_irq_vector(pdev, VNIC_MISC_VECTOR);
	if (irq < 0) {
		err = irq;
		goto err_free_vectors;
	}

	err = request_irq(irq, vnic_misc_irq, 0, priv->misc_irq_name, priv);
	if (err) {
		pci_err(pdev, "cannot request the misc IRQ %d: %d\n", irq, err);
		goto err_free_vectors;
	}
	priv->misc_irq = irq;

	return 0;

err_free_vectors:
	pci_free_irq_vectors(pdev);
	priv->nvecs = 0;
	return err;
}

/**
 * vnic_irq_exit - undo vnic_irq_init()
 * @priv: driver state
 */
void vnic_irq_exit(struct vnic_priv *priv)
{
	if (priv->misc_irq) {
		free_irq(priv->misc_irq, priv);
		priv->misc_irq = 0;
	}
	if (priv->nvecs) {
		pci_free_irq_vectors(priv->pdev);
		priv->nvecs = 0;
	}
}

/**
 * vnic_irq_self_test - raise the test interrupt on the misc vector
 * @priv: driver state, misc IRQ requested
 *
 * Return: 0 when the handler ran, -ETIMEDOUT when it did not within
 * VNIC_IRQ_TEST_TIMEOUT_MS.
 */
int vnic_irq_self_test(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	unsigned long timeout = msecs_to_jiffies(VNIC_IRQ_TEST_TIMEOUT_MS);
	unsigned long left;
	u32 raised;

	reinit_completion(&priv->irq_test_done);
	vnic_wr32(priv, VNIC_REG_IRQ_TEST, VNIC_MISC_VECTOR);

	left = wait_for_completion_timeout(&priv->irq_test_done, timeout);
	raised = vnic_rd32(priv, VNIC_REG_IRQ_TEST_COUNT);
	if (!left) {
		pci_warn(pdev,
			 "test interrupt not received within %u ms (IRQ_TEST_COUNT %u)\n",
			 VNIC_IRQ_TEST_TIMEOUT_MS, raised);
		return -ETIMEDOUT;
	}

	pci_info(pdev, "test interrupt received (IRQ_TEST_COUNT %u)\n",
		 raised);
	return 0;
}

static irqreturn_t vnic_qp_irq(int irq, void *data)
{
	struct vnic_port *port = data;

	napi_schedule_irqoff(&port->napi);
	return IRQ_HANDLED;
}

/**
 * vnic_qp_irq_request - request MSI-X vector q + 1 for a port
 * @port: the port, its NAPI context added (and disabled until open)
 *
 * Return: 0 or a negative errno.
 */
int vnic_qp_irq_request(struct vnic_port *port)
{
	struct pci_dev *pdev = port->priv->pdev;
	int irq, err;

	snprintf(port->irq_name, sizeof(port->irq_name),
		 VNIC_DRV_NAME "-q%u@%s", port->q, pci_name(pdev));

	irq = pci_irq_vector(pdev, VNIC_QP_VECTOR(port->q));
	if (irq < 0)
		return irq;

	err = request_irq(irq, vnic_qp_irq, 0, port->irq_name, port);
	if (err) {
		pci_err(pdev, "cannot request the IRQ %d of queue pair %u: %d\n",
			irq, port->q, err);
		return err;
	}
	port->irq = irq;
	return 0;
}

/**
 * vnic_qp_irq_free - undo vnic_qp_irq_request()
 * @port: the port
 */
void vnic_qp_irq_free(struct vnic_port *port)
{
	if (!port->irq)
		return;
	free_irq(port->irq, port);
	port->irq = 0;
}

/**
 * vnic_napi_poll - NAPI poll of a queue pair
 * @napi: the port's NAPI context
 * @budget: most received frames to process; 0 from netpoll (send only)
 *
 * Return: received frames processed.
 */
int vnic_napi_poll(struct napi_struct *napi, int budget)
{
	struct vnic_port *port = container_of(napi, struct vnic_port, napi);
	int done;

	u64_stats_update_begin(&port->nstats.syncp);
	u64_stats_inc(&port->nstats.polls);
	u64_stats_update_end(&port->nstats.syncp);

	vnic_tx_clean(port, budget);
	done = vnic_rx_clean(port, budget);

	/*
	 * Stay scheduled (vector still masked) while the budget is used up.
	 * A queue pair the card removed has no register left to rearm.
	 */
	if (done < budget && napi_complete_done(napi, done) &&
	    !READ_ONCE(port->gone))
		vnic_rx_post(port, true);
	else
		vnic_rx_post(port, false);

	return done;
}
