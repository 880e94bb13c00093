// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - guest driver for the emulated SR-IOV network card.
 *
 * Probe and remove of the PF and VF functions, the PCI ID table and the
 * module entry points.
 *
 * Probe checks the card (ID, version, SCRATCH, the test interrupt), reads
 * the offloads it offers (FEATURES, used by vnic_netdev.c), builds the
 * device-state tables in guest memory and writes the VCT entry, then
 * registers one netdev per enabled queue pair, and from then on acts on the
 * card's events (misc vector). Last it saves the PCI configuration and starts
 * the watchdog that restores it if QEMU loses it (vnic_recovery.c). Remove
 * undoes it in reverse: watchdog, events, netdevs (which stops their
 * queues), VCT and tables, interrupts, BAR.
 */
#include <linux/bitfield.h>
#include <linux/dma-mapping.h>
#include <linux/etherdevice.h>
#include <linux/module.h>
#include <linux/sysfs.h>

#include "vnic.h"

static const struct pci_device_id vnic_pci_ids[] = {
	{ PCI_DEVICE(PCI_VENDOR_ID_VNIC, PCI_DEVICE_ID_VNIC_PF) },
	{ PCI_DEVICE(PCI_VENDOR_ID_VNIC, PCI_DEVICE_ID_VNIC_VF) },
	{ }
};
MODULE_DEVICE_TABLE(pci, vnic_pci_ids);

static int vnic_check_id(struct vnic_priv *priv)
{
	u32 id = vnic_rd32(priv, VNIC_REG_ID);

	if (id == ~0U) {
		pci_err(priv->pdev,
			"device not responding: ID register reads all-ones\n");
		return -ENODEV;
	}
	if (id != VNIC_ID_MAGIC) {
		pci_err(priv->pdev,
			"unexpected ID register 0x%08x (expected 0x%08x)\n",
			id, VNIC_ID_MAGIC);
		return -ENODEV;
	}

	return 0;
}

/*
 * The offloads the card offers. A card older than VERSION 1.1 has no
 * FEATURES register (reading it would be a bad access), and bits this
 * driver does not know are no use to it.
 */
static u32 vnic_read_features(struct vnic_priv *priv)
{
	u32 features;

	if (VNIC_VERSION_MINOR(priv->version) < VNIC_VERSION_MINOR_OFFLOADS)
		return 0;
	features = vnic_rd32(priv, VNIC_REG_FEATURES);
	if (features == ~0U)
		return 0;
	if (VNIC_VERSION_MINOR(priv->version) < VNIC_VERSION_MINOR_HEAD_WB)
		features &= ~VNIC_FEAT_HEAD_WB;
	return features & (VNIC_FEAT_ALL | VNIC_FEAT_HEAD_WB);
}

/* Read what the device reports about itself; trust none of it blindly. */
static int vnic_read_config(struct vnic_priv *priv)
{
	struct pci_dev *pdev = priv->pdev;
	u32 func, mac_lo, mac_hi, status;
	bool id_is_vf;

	priv->version = vnic_rd32(priv, VNIC_REG_VERSION);
	if (VNIC_VERSION_MAJOR(priv->version) != VNIC_VERSION_MAJOR_SUPPORTED) {
		pci_err(pdev, "unsupported register interface v%u.%u\n",
			VNIC_VERSION_MAJOR(priv->version),
			VNIC_VERSION_MINOR(priv->version));
		return -ENODEV;
	}

	priv->features = vnic_read_features(priv);

	func = vnic_rd32(priv, VNIC_REG_FUNC);
	priv->is_vf = !!(func & VNIC_FUNC_IS_VF);
	priv->vf_index = FIELD_GET(VNIC_FUNC_VF_INDEX_MASK, func);
	id_is_vf = pdev->device == PCI_DEVICE_ID_VNIC_VF;
	if (priv->is_vf != id_is_vf) {
		pci_err(pdev, "FUNC 0x%08x does not match device ID 0x%04x\n",
			func, pdev->device);
		return -EINVAL;
	}

	priv->qp_max = vnic_rd32(priv, VNIC_REG_QP_MAX);
	priv->qp_num = vnic_rd32(priv, VNIC_REG_QP_NUM);
	/* A card older than EXC_QP reads all-ones there: none */
	if (!priv->is_vf) {
		priv->exc_qp = vnic_rd32(priv, VNIC_REG_EXC_QP);
		if (priv->exc_qp == ~0U)
			priv->exc_qp = 0;
	}
	priv->num_vectors = vnic_rd32(priv, VNIC_REG_NUM_VECTORS);
	status = vnic_rd32(priv, VNIC_REG_STATUS);
	priv->link_up = status & VNIC_STATUS_LINK_UP;
	/*
	 * Nothing would work: every queue lives in guest memory. Say why
	 * here, in one line, rather than fail at ip link set up.
	 */
	if (status & VNIC_STATUS_MEM_UNSHARED) {
		pci_err(pdev, "the card cannot reach guest memory: QEMU's RAM is not shared; run QEMU with -object memory-backend-memfd,id=mem,size=<RAM>,share=on -machine memory-backend=mem\n");
		return -EIO;
	}

	/* One vector per queue pair plus the misc vector must fit MSI-X */
	if (priv->qp_max < 1 || priv->qp_max > VNIC_MAX_VECTORS - 1) {
		pci_err(pdev, "QP_MAX %u out of range 1..%u\n",
			priv->qp_max, VNIC_MAX_VECTORS - 1);
		return -EINVAL;
	}
	if (priv->qp_num > priv->qp_max) {
		pci_err(pdev, "QP_NUM %u exceeds QP_MAX %u\n",
			priv->qp_num, priv->qp_max);
		return -EINVAL;
	}
	if (priv->num_vectors < 1 || priv->num_vectors > VNIC_MAX_VECTORS) {
		pci_err(pdev, "NUM_VECTORS %u out of range 1..%u\n",
			priv->num_vectors, VNIC_MAX_VECTORS);
		return -EINVAL;
	}
	if (priv->num_vectors != priv->qp_max + 1)
		pci_warn(pdev, "NUM_VECTORS %u, expected QP_MAX + 1 = %u\n",
			 priv->num_vectors, priv->qp_max + 1);

	mac_lo = vnic_rd32(priv, VNIC_REG_MAC_LO);
	mac_hi = vnic_rd32(priv, VNIC_REG_MAC_HI);
	put_unaligned_le32(mac_lo, &priv->mac[0]);
	put_unaligned_le16(mac_hi & 0xffff, &priv->mac[4]);
	if (!is_valid_ether_addr(priv->mac))
		pci_warn(pdev, "card reports an invalid MAC %pM\n", priv->mac);

	return 0;
}

/* Check that register writes reach the device and read back. */
static int vnic_scratch_test(struct vnic_priv *priv)
{
	static const u32 patterns[] = { 0xa5a55a5a, 0x5a5aa5a5, 0 };
	u32 val;
	int i;

	for (i = 0; i < ARRAY_SIZE(patterns); i++) {
		vnic_wr32(priv, VNIC_REG_SCRATCH, patterns[i]);
		val = vnic_rd32(priv, VNIC_REG_SCRATCH);
		if (val != patterns[i]) {
			pci_err(priv->pdev,
				"SCRATCH self-test: wrote 0x%08x, read 0x%08x\n",
				patterns[i], val);
			return -EIO;
		}
	}

	return 0;
}

static void vnic_log_identity(struct vnic_priv *priv)
{
	char name[16];

	if (priv->is_vf)
		snprintf(name, sizeof(name), "VF%u", priv->vf_index);
	else
		snprintf(name, sizeof(name), "PF");

	pci_info(priv->pdev,
		 "vnic %s v%u.%u, %u queue pairs max, %u enabled, MAC %pM, features 0x%x (offloads %s, completions %s)\n",
		 name, VNIC_VERSION_MAJOR(priv->version),
		 VNIC_VERSION_MINOR(priv->version), priv->qp_max,
		 priv->qp_num, priv->mac, priv->features,
		 (priv->features & VNIC_FEAT_ALL) == VNIC_FEAT_ALL ?
		 "on" : "off",
		 priv->features & VNIC_FEAT_HEAD_WB ? "by head" : "by DONE");
}

static int vnic_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vnic_priv *priv;
	int err;

	priv = kzalloc(sizeof(*priv), GFP_KERNEL);
	if (!priv)
		return -ENOMEM;
	priv->pdev = pdev;
	atomic_set(&priv->misc_irqs, 0);
	atomic_set(&priv->sw_causes, 0);
	init_completion(&priv->irq_test_done);
	vnic_events_init(priv);
	mutex_init(&priv->admin_lock);
	pci_set_drvdata(pdev, priv);

	err = vnic_recovery_init(priv);
	if (err)
		goto err_free_priv;

	err = pci_enable_device_mem(pdev);
	if (err) {
		pci_err(pdev, "cannot enable the device: %d\n", err);
		goto err_free_priv;
	}

	if (!(pci_resource_flags(pdev, VNIC_BAR_REGS) & IORESOURCE_MEM) ||
	    pci_resource_len(pdev, VNIC_BAR_REGS) < VNIC_REGS_MIN_LEN) {
		pci_err(pdev, "BAR%d is not a memory BAR of at least %u bytes\n",
			VNIC_BAR_REGS, VNIC_REGS_MIN_LEN);
		err = -ENODEV;
		goto err_disable_device;
	}

	err = pci_request_mem_regions(pdev, VNIC_DRV_NAME);
	if (err) {
		pci_err(pdev, "cannot request memory regions: %d\n", err);
		goto err_disable_device;
	}

	err = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (err) {
		pci_err(pdev, "no usable 64-bit DMA configuration\n");
		goto err_release_regions;
	}

	pci_set_master(pdev);

	priv->regs = pci_iomap(pdev, VNIC_BAR_REGS, 0);
	if (!priv->regs) {
		pci_err(pdev, "cannot map BAR%d\n", VNIC_BAR_REGS);
		err = -ENOMEM;
		goto err_clear_master;
	}
	priv->regs_len = pci_resource_len(pdev, VNIC_BAR_REGS);

	err = vnic_check_id(priv);
	if (err)
		goto err_unmap;

	err = vnic_read_config(priv);
	if (err)
		goto err_unmap;
	vnic_log_identity(priv);

	err = vnic_scratch_test(priv);
	if (err)
		goto err_unmap;

	err = vnic_irq_init(priv);
	if (err)
		goto err_unmap;

	err = vnic_irq_self_test(priv);
	if (err)
		goto err_irq_exit;

	err = vnic_state_init(priv);
	if (err)
		goto err_irq_exit;

	vnic_db_enable(priv);
	err = vnic_netdevs_create(priv);
	if (err)
		goto err_state_exit;

	vnic_events_start(priv);
	vnic_recovery_start(priv);
	return 0;

err_state_exit:
	vnic_state_exit(priv);
err_irq_exit:
	vnic_irq_exit(priv);
err_unmap:
	pci_iounmap(pdev, priv->regs);
err_clear_master:
	pci_clear_master(pdev);
err_release_regions:
	pci_release_mem_regions(pdev);
err_disable_device:
	pci_disable_device(pdev);
err_free_priv:
	pci_set_drvdata(pdev, NULL);
	mutex_destroy(&priv->admin_lock);
	kfree(priv);
	return err;
}

static void vnic_remove(struct pci_dev *pdev)
{
	struct vnic_priv *priv = pci_get_drvdata(pdev);

	/* First: the watchdog touches the netdevs, the card and config space */
	vnic_recovery_stop(priv);
	vnic_events_stop(priv);
	vnic_netdevs_destroy(priv);
	vnic_state_exit(priv);
	vnic_irq_exit(priv);
	pci_iounmap(pdev, priv->regs);
	pci_clear_master(pdev);
	pci_release_mem_regions(pdev);
	pci_disable_device(pdev);
	pci_set_drvdata(pdev, NULL);
	mutex_destroy(&priv->admin_lock);
	kfree(priv);
}

/* sysfs: interrupts received on the misc vector */
static ssize_t vnic_misc_irqs_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	struct vnic_priv *priv = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%d\n", atomic_read(&priv->misc_irqs));
}
static DEVICE_ATTR_RO(vnic_misc_irqs);

/* sysfs: bus address of the BAT, what "vnicctl vct set" needs */
static ssize_t vnic_bat_show(struct device *dev, struct device_attribute *attr,
			     char *buf)
{
	struct vnic_priv *priv = dev_get_drvdata(dev);

	return sysfs_emit(buf, "0x%llx\n", (u64)priv->state.bat.dma);
}
static DEVICE_ATTR_RO(vnic_bat);

/* sysfs: times the function was recovered after losing its configuration */
static ssize_t vnic_recoveries_show(struct device *dev,
				    struct device_attribute *attr, char *buf)
{
	struct vnic_priv *priv = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", READ_ONCE(priv->recoveries));
}
static DEVICE_ATTR_RO(vnic_recoveries);

static struct attribute *vnic_attrs[] = {
	&dev_attr_vnic_misc_irqs.attr,
	&dev_attr_vnic_bat.attr,
	&dev_attr_vnic_recoveries.attr,
	NULL
};
ATTRIBUTE_GROUPS(vnic);

static struct pci_driver vnic_driver = {
	.name = VNIC_DRV_NAME,
	.id_table = vnic_pci_ids,
	.probe = vnic_probe,
	.remove = vnic_remove,
	.dev_groups = vnic_groups,
};

static int __init vnic_init(void)
{
	return pci_register_driver(&vnic_driver);
}

static void __exit vnic_exit(void)
{
	pci_unregister_driver(&vnic_driver);
}

module_init(vnic_init);
module_exit(vnic_exit);

MODULE_DESCRIPTION("Driver for the vnic emulated SR-IOV network card");
MODULE_LICENSE("GPL");
