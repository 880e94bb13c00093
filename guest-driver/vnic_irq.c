// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - MSI-X setup and the test interrupt.
 *
 * The card has no INTx and no MSI: MSI-X only. Vector 0 is the misc/admin
 * vector; vectors 1..X belong to the queue pairs.
 */
#include <linux/interrupt.h>
#include <linux/jiffies.h>

#include "vnic.h"

static irqreturn_t vnic_misc_irq(int irq, void *data)
{
	struct vnic_priv *priv = data;

	atomic_inc(&priv->misc_irqs);
	complete(&priv->irq_test_done);

	return IRQ_HANDLED;
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
