/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vnic - register interface of the emulated SR-IOV network card.
 *
 * PCI identity and the BAR0 register file. BAR0 is a 64-bit non-prefetchable
 * memory BAR of 64 KiB; all registers are 32 bits wide, little-endian and
 * must be accessed with aligned 4-byte accesses. Unknown offsets read as
 * all-ones and writes to them are dropped (and counted in BAD_ACCESS).
 *
 * Access types: RO read-only, RW read/write, WO write-only (reads return 0).
 * Keep in step with docs/registers.md and the device's register definitions.
 */
#ifndef _VNIC_REGS_H_
#define _VNIC_REGS_H_

#include <linux/bits.h>

/* PCI identity */
#define PCI_VENDOR_ID_VNIC		0x1ffe
#define PCI_DEVICE_ID_VNIC_PF		0x1000
#define PCI_DEVICE_ID_VNIC_VF		0x1001
#define VNIC_SUBSYS_VENDOR_ID		0x1ffe
#define VNIC_SUBSYS_ID			0x0001

/* BARs */
#define VNIC_BAR_REGS			0	/* register file */
#define VNIC_BAR_REGS_LEN		0x10000	/* 64 KiB */
#define VNIC_BAR_MSIX			2	/* MSI-X table at 0, PBA at 0x2000 */

/* Hard limit of the PCI spec: the MSI-X table size field holds 2047 + 1 */
#define VNIC_MAX_VECTORS		2048

/* MSI-X vector 0 is the misc/admin vector, vectors 1..X the queue pairs */
#define VNIC_MISC_VECTOR		0

/* 0x000 ID (RO): identifies the register file, "VNIC" */
#define VNIC_REG_ID			0x000
#define   VNIC_ID_MAGIC			0x564e4943

/* 0x004 VERSION (RO): register interface version, major << 16 | minor */
#define VNIC_REG_VERSION		0x004
#define   VNIC_VERSION_MAJOR(v)		((v) >> 16)
#define   VNIC_VERSION_MINOR(v)		((v) & 0xffff)
#define   VNIC_VERSION_MAJOR_SUPPORTED	1

/* 0x008 FUNC (RO): which function this is */
#define VNIC_REG_FUNC			0x008
#define   VNIC_FUNC_IS_VF		BIT(31)
#define   VNIC_FUNC_VF_INDEX_MASK	GENMASK(15, 0)	/* 0 on the PF */

/* 0x00C QP_MAX (RO): maximum queue pairs X (card-wide setting) */
#define VNIC_REG_QP_MAX			0x00c

/* 0x010 QP_NUM (RO): enabled queue pairs N, set by management, N <= X */
#define VNIC_REG_QP_NUM			0x010

/* 0x014 STATUS (RO) */
#define VNIC_REG_STATUS			0x014
#define   VNIC_STATUS_LINK_UP		BIT(0)

/* 0x018 CTRL (RW) */
#define VNIC_REG_CTRL			0x018
/* write 1: reset this function's registers; self-clearing */
#define   VNIC_CTRL_RESET		BIT(0)

/* 0x01C SCRATCH (RW): free for the driver, reset value 0 */
#define VNIC_REG_SCRATCH		0x01c

/* 0x020 MAC_LO (RO): MAC bytes 0..3, byte 0 in bits 7:0 */
#define VNIC_REG_MAC_LO			0x020

/* 0x024 MAC_HI (RO): MAC bytes 4..5 in bits 15:0 */
#define VNIC_REG_MAC_HI			0x024

/* 0x028 IRQ_TEST (WO, reads 0): writing v raises MSI-X vector v */
#define VNIC_REG_IRQ_TEST		0x028

/* 0x02C IRQ_TEST_COUNT (RO): number of test interrupts raised */
#define VNIC_REG_IRQ_TEST_COUNT		0x02c

/* 0x030 NUM_VECTORS (RO): MSI-X vectors, X + 1 */
#define VNIC_REG_NUM_VECTORS		0x030

/* 0x034 BAD_ACCESS (RO): count of rejected MMIO accesses */
#define VNIC_REG_BAD_ACCESS		0x034

/* Smallest BAR0 that holds every register above */
#define VNIC_REGS_MIN_LEN		(VNIC_REG_BAD_ACCESS + 4)

#endif /* _VNIC_REGS_H_ */
