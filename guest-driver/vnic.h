/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vnic - guest driver for the emulated SR-IOV network card: shared state.
 */
#ifndef _VNIC_H_
#define _VNIC_H_

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/if_ether.h>
#include <linux/io.h>
#include <linux/pci.h>
#include <linux/types.h>

#include "vnic_regs.h"

#define VNIC_DRV_NAME		"vnic"

/* How long probe waits for the test interrupt */
#define VNIC_IRQ_TEST_TIMEOUT_MS	1000

/**
 * struct vnic_priv - per-function driver state
 * @pdev: the PCI function
 * @regs: BAR0 register file
 * @is_vf: the function is a virtual function
 * @vf_index: VF index reported by FUNC (0 on the PF)
 * @version: VERSION register
 * @qp_max: maximum queue pairs X
 * @qp_num: enabled queue pairs N
 * @num_vectors: MSI-X vectors the device reports (X + 1)
 * @nvecs: MSI-X vectors allocated
 * @mac: permanent MAC address reported by the card
 * @misc_irq: Linux IRQ number of the misc vector, 0 when not requested
 * @misc_irq_name: name of the misc IRQ in /proc/interrupts
 * @misc_irqs: interrupts received on the misc vector
 * @irq_test_done: completed by the misc handler
 */
struct vnic_priv {
	struct pci_dev *pdev;
	void __iomem *regs;

	bool is_vf;
	u16 vf_index;
	u32 version;
	u32 qp_max;
	u32 qp_num;
	u32 num_vectors;
	int nvecs;
	u8 mac[ETH_ALEN];

	unsigned int misc_irq;
	char misc_irq_name[32];
	atomic_t misc_irqs;
	struct completion irq_test_done;
};

static inline u32 vnic_rd32(struct vnic_priv *priv, u32 reg)
{
	return ioread32(priv->regs + reg);
}

static inline void vnic_wr32(struct vnic_priv *priv, u32 reg, u32 val)
{
	iowrite32(val, priv->regs + reg);
}

/* vnic_irq.c */
int vnic_irq_init(struct vnic_priv *priv);
void vnic_irq_exit(struct vnic_priv *priv);
int vnic_irq_self_test(struct vnic_priv *priv);

#endif /* _VNIC_H_ */
