/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vnic - register interface of the emulated SR-IOV network card.
 *
 * PCI identity and the BAR0 register file. BAR0 is a 64-bit non-prefetchable
 * memory BAR of 64 KiB; all registers are 32 bits wide, little-endian and
 * must be accessed with aligned 4-byte accesses. Unknown offsets read as
 * all-ones and writes to them are dropped (and counted in BAD_ACCESS).
 *
 * Access types: RO read-only, RW read/write, WO write-only (reads return 0),
 * RW1C read, write 1 to clear.
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
#define VNIC_QP_VECTOR(q)		((q) + 1)

/* 0x000 ID (RO): identifies the register file, "VNIC" */
#define VNIC_REG_ID			0x000
#define   VNIC_ID_MAGIC			0x564e4943

/* 0x004 VERSION (RO): register interface version, major << 16 | minor */
#define VNIC_REG_VERSION		0x004
#define   VNIC_VERSION_MAJOR(v)		((v) >> 16)
#define   VNIC_VERSION_MINOR(v)		((v) & 0xffff)
#define   VNIC_VERSION_MAJOR_SUPPORTED	1
/* First minor version with FEATURES and the offload counters (0x178..) */
#define   VNIC_VERSION_MINOR_OFFLOADS	1
/* First minor version with DB_PAGE and the doorbell page */
#define   VNIC_VERSION_MINOR_DB_PAGE	2
/* First minor version with QP_ITR.TX_USECS */
#define   VNIC_VERSION_MINOR_TX_USECS	3
/* First minor version that takes a doorbell page in guest memory */
#define   VNIC_VERSION_MINOR_GUEST_DB	4
/* First minor version with address filtering (QP_RX_MODE, QP_ADDR_STATUS) */
#define   VNIC_VERSION_MINOR_RX_FILTER	5
/* First minor version with LINK_SPEED */
#define   VNIC_VERSION_MINOR_LINK_SPEED	6
/* First minor version with VNIC_FEAT_HEAD_WB (completions up to the head) */
#define   VNIC_VERSION_MINOR_HEAD_WB	7
/* First minor version with STATUS.MIGRATING and IRQ_CAUSE.MIGRATION */
#define   VNIC_VERSION_MINOR_MIGRATING	8

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
/*
 * Interface 1.5: QEMU offered the guest's RAM without a file descriptor (not
 * shared): the card refused it and cannot reach the guest's memory
 */
#define   VNIC_STATUS_MEM_UNSHARED	BIT(1)
/*
 * Interface 1.8: the function is in live-migration mode (the card writes
 * guest memory through QEMU): check the configuration often, so that the
 * destination finds it lost at once
 */
#define   VNIC_STATUS_MIGRATING		BIT(2)

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

/*
 * 0x038 LINK_SPEED (RO, interface 1.6): nominal speed in Mb/s, the port's or
 * the function's TX rate limit if lower; full duplex
 */
#define VNIC_REG_LINK_SPEED		0x038

/*
 * 0x040 VCT_LO (RW), 0x044 VCT_HI (RW): this function's VCT entry, the guest
 * address of its BAT (docs/datapath.md). Write LO first: writing HI commits
 * the entry, the card drops its cached contexts, checks the BAT and reloads
 * every context marked RUNNING. 0 means no entry.
 */
#define VNIC_REG_VCT_LO			0x040
#define VNIC_REG_VCT_HI			0x044

/* 0x048 VCT_STATUS (RO): 0 = BAT usable (or VCT is 0), else an error code */
#define VNIC_REG_VCT_STATUS		0x048
#define   VNIC_VCT_OK			0
#define   VNIC_VCT_ERR_UNREADABLE	1	/* BAT not in mapped memory */
#define   VNIC_VCT_ERR_MAGIC		2	/* BAT magic is not "BAT1" */
#define   VNIC_VCT_ERR_TYPE		3	/* bad service-type entry */

/*
 * 0x04C IRQ_CAUSE (RW1C): why the misc vector fired. The card sets a bit,
 * then raises vector 0; the driver reads the register, writes the bits it
 * read back to clear them, then reads the current state and acts on it.
 */
#define VNIC_REG_IRQ_CAUSE		0x04c
#define   VNIC_IRQ_CAUSE_CONFIG		BIT(0)	/* QP_NUM or a vNIC MAC changed */
#define   VNIC_IRQ_CAUSE_LINK		BIT(1)	/* STATUS.LINK_UP changed */
/* management's VCT entry was committed: the queues resumed (migration) */
#define   VNIC_IRQ_CAUSE_RESUMED	BIT(2)
#define   VNIC_IRQ_CAUSE_MIGRATION	BIT(3)	/* STATUS.MIGRATING changed */

/* 0x050 NUM_VFS (RO): enabled VFs of the card (PF), 0 on a VF */
#define VNIC_REG_NUM_VFS		0x050

/*
 * 0x054 EXC_QP (RO): on the PF, the exception queue pair (1): the card hands
 * the PF driver its VxLAN requests (misses and punts) there and takes the
 * answers from it, as 0x88B5 frames (docs/vxlan.md). 0 when there is none,
 * and on every VF. Not a vNIC: QP_NUM does not count it.
 */
#define VNIC_REG_EXC_QP			0x054

/*
 * 0x058 FEATURES (RO): the offloads the card offers, VNIC_FEAT_* of
 * vnic_desc.h (the bits of a queue context's features). Only from
 * VERSION 1.1 on: on an older card the offset is a bad access.
 */
#define VNIC_REG_FEATURES		0x058

/*
 * 0x05C DB_PAGE (RW, interface 1.2): PRESENT (RO) when the card has a
 * doorbell page in BAR0 (vnicd --doorbell-page); ENABLE: the driver stores
 * its doorbells into a page (vnic_doorbell.c). A reset clears ENABLE.
 * Interface 1.4: GUEST (RO) while the page in use is the one the BAT header
 * names in guest memory; REFUSED (RO) when the card could not use that
 * page (not writable guest memory, or unmapped since).
 */
#define VNIC_REG_DB_PAGE		0x05c
#define   VNIC_DB_PAGE_ENABLE		BIT(0)
#define   VNIC_DB_PAGE_PRESENT		BIT(1)
#define   VNIC_DB_PAGE_GUEST		BIT(2)
#define   VNIC_DB_PAGE_REFUSED		BIT(3)

/*
 * A doorbell page: a page of guest memory the BAT header names (interface
 * 1.4), or the last 4 KiB of BAR0, memory QEMU maps; a store into either
 * is no message. 16 bytes per queue pair: the driver's TX_TAIL, RX_TAIL
 * and IRQ_SEQ (one more per rearm), and the card's WATCH: 1 while the card
 * polls the slot; anything else means "ring the register".
 */
#define VNIC_DB_PAGE_OFFSET		0xf000
#define VNIC_DB_PAGE_LEN		0x1000
#define VNIC_DB_SLOT(q)			(VNIC_DB_PAGE_OFFSET + (q) * 0x10)
#define   VNIC_DB_TX_TAIL		0x0
#define   VNIC_DB_RX_TAIL		0x4
#define   VNIC_DB_IRQ_SEQ		0x8
#define   VNIC_DB_WATCH			0xc
#define   VNIC_DB_WATCHING		1

/*
 * PF admin mailbox (PF only; on a VF every command ends with EPERM). Write
 * the arguments, then ADMIN_CMD: the command runs while the write is handled,
 * so the next read of ADMIN_STATUS returns its result. GET_CONFIG leaves its
 * results in the argument registers.
 */

/* 0x060 ADMIN_CMD (WO): writing it runs the command */
#define VNIC_REG_ADMIN_CMD		0x060
#define   VNIC_ADMIN_CMD_OP		GENMASK(7, 0)
#define   VNIC_ADMIN_CMD_VF		GENMASK(31, 16)

/* 0x064 ADMIN_STATUS (RO): 0, or the positive errno of the last command */
#define VNIC_REG_ADMIN_STATUS		0x064

/* 0x068 .. 0x07C ADMIN_ARG0 .. ADMIN_ARG5 (RW): arguments and results */
#define VNIC_REG_ADMIN_ARG0		0x068
#define VNIC_REG_ADMIN_ARG1		0x06c
#define VNIC_REG_ADMIN_ARG2		0x070
#define VNIC_REG_ADMIN_ARG3		0x074
#define VNIC_REG_ADMIN_ARG4		0x078
#define VNIC_REG_ADMIN_ARG5		0x07c
#define VNIC_REG_ADMIN_ARG(i)		(VNIC_REG_ADMIN_ARG0 + 4 * (i))
#define VNIC_ADMIN_NUM_ARGS		6

/* ADMIN_CMD operations; arguments ARG0 .. ARG5 */
#define VNIC_ADMIN_OP_SET_MAC		1	/* MAC bytes 0-3, bytes 4-5 */
#define VNIC_ADMIN_OP_SET_VLAN		2	/* VID and QoS, protocol */
#define VNIC_ADMIN_OP_SET_RATE		3	/* min, max TX rate, Mbit/s */
#define VNIC_ADMIN_OP_SET_SPOOFCHK	4	/* 0 off, 1 on */
#define VNIC_ADMIN_OP_SET_TRUST		5	/* 0 off, 1 on */
#define VNIC_ADMIN_OP_SET_LINK		6	/* IFLA_VF_LINK_STATE_* */
#define VNIC_ADMIN_OP_GET_CONFIG	7	/* results, see below */

/* SET_VLAN ARG0 and GET_CONFIG ARG2: VLAN ID and QoS */
#define   VNIC_ADMIN_VLAN_VID		GENMASK(11, 0)
#define   VNIC_ADMIN_VLAN_QOS		GENMASK(14, 12)

/*
 * GET_CONFIG results: ARG0/ARG1 MAC of vNIC 0 (as SET_MAC), ARG2 VLAN and
 * QoS, ARG3 max_tx_rate, ARG4 min_tx_rate, ARG5 the flags below.
 */
#define   VNIC_ADMIN_CFG_SPOOFCHK	BIT(0)
#define   VNIC_ADMIN_CFG_TRUST		BIT(1)
#define   VNIC_ADMIN_CFG_LINK		GENMASK(3, 2)

/* Smallest BAR0 that holds every register above */
#define VNIC_REGS_MIN_LEN		(VNIC_REG_ADMIN_ARG5 + 4)

/*
 * Function statistics (RO, 64 bits): read as two dwords, low first, or as
 * one qword. Reset with the function. Sums over the function's queues plus
 * the counters that belong to no queue.
 */
#define VNIC_REG_FN_TX_PACKETS		0x100	/* frames taken from its SQs */
#define VNIC_REG_FN_TX_BYTES		0x108
#define VNIC_REG_FN_RX_PACKETS		0x110	/* frames written to its RQs */
#define VNIC_REG_FN_RX_BYTES		0x118
#define VNIC_REG_FN_TX_DROPS		0x120	/* dropped by the switch */
#define VNIC_REG_FN_RX_DROPS		0x128	/* no buffer, too small, stopped */
#define VNIC_REG_FN_SPOOF_DROPS		0x130	/* source MAC not the vNIC's */
#define VNIC_REG_FN_VLAN_DROPS		0x138	/* VLAN the vNIC did not join */
#define VNIC_REG_FN_TO_UPLINK		0x140	/* unknown unicast, flood copy */
#define VNIC_REG_FN_QUEUE_ERRORS	0x148	/* queue error-state entries */
/* From VERSION 1.1 on (VNIC_VERSION_MINOR_OFFLOADS): */
#define VNIC_REG_FN_OFFLOAD_DROPS	0x178	/* offload header refused */
#define VNIC_REG_FN_TX_GSO		0x180	/* GSO frames sent */
#define VNIC_REG_FN_SW_SEGMENTS		0x188	/* segments the card cut */
#define VNIC_REG_FN_SW_CSUM		0x190	/* checksums it completed */
/* From VERSION 1.5 on (VNIC_VERSION_MINOR_RX_FILTER): */
#define VNIC_REG_FN_ADDR_REFUSED	0x198	/* extra addresses refused */
#define VNIC_REG_FN_PROMISC_REFUSED	0x1a0	/* promiscuous mode refused */

/*
 * Queue-pair areas: queue pair q (0 <= q < QP_NUM) has 128 bytes at
 * 0x1000 + 0x80 * q. The areas of queue pairs that are not enabled are bad
 * accesses. VNIC_QP_REG(q, reg) is the BAR0 offset of a register of the area.
 */
#define VNIC_QP_AREA_BASE		0x1000
#define VNIC_QP_AREA_STRIDE		0x80
#define VNIC_QP_REG(q, reg)		(VNIC_QP_AREA_BASE + \
					 VNIC_QP_AREA_STRIDE * (q) + (reg))

/*
 * +0x00 QP_MAC_LO, +0x04 QP_MAC_HI: this vNIC's MAC, as MAC_LO/HI. The PF
 * and a trusted VF may write them (LO first: writing HI commits); the card
 * refuses an untrusted VF's writes (BAD_ACCESS, and from interface 1.5
 * QP_ADDR_STATUS.MAC_UNTRUSTED) and an address another vNIC has
 * (QP_ADDR_STATUS.MAC_TAKEN), and keeps its MAC.
 */
#define VNIC_QP_MAC_LO			0x00
#define VNIC_QP_MAC_HI			0x04

/*
 * +0x08 QP_CTRL (RW): an enable bit going 0 -> 1 loads the queue's context
 * from guest memory and starts it; 1 -> 0 writes it back and stops it.
 * Disabling and re-enabling also clears a queue's error state.
 */
#define VNIC_QP_CTRL			0x08
#define   VNIC_QP_CTRL_TX_ENABLE	BIT(0)
#define   VNIC_QP_CTRL_RX_ENABLE	BIT(1)

/* +0x0C QP_STATUS (RO); error codes are VNIC_QERR_* in vnic_desc.h */
#define VNIC_QP_STATUS			0x0c
#define   VNIC_QP_STATUS_TX_RUNNING	BIT(0)
#define   VNIC_QP_STATUS_RX_RUNNING	BIT(1)
#define   VNIC_QP_STATUS_TX_ERROR	BIT(2)
#define   VNIC_QP_STATUS_RX_ERROR	BIT(3)
#define   VNIC_QP_STATUS_TX_CODE	GENMASK(15, 8)
#define   VNIC_QP_STATUS_RX_CODE	GENMASK(23, 16)

/* +0x10 QP_TX_TAIL (WO), +0x14 QP_RX_TAIL (WO): doorbells, the new tail */
#define VNIC_QP_TX_TAIL			0x10
#define VNIC_QP_RX_TAIL			0x14

/*
 * +0x18 QP_IRQ (WO): the queue pair's vector masks itself when it fires;
 * REARM re-enables it, and fires it again at once if anything completed
 * since the last interrupt.
 */
#define VNIC_QP_IRQ			0x18
#define   VNIC_QP_IRQ_REARM		BIT(0)
/*
 * From VERSION 1.1 on: RX_TAIL makes the write a receive doorbell for TAIL
 * too (before the rearm), so a NAPI poll ends with one write, not two
 */
#define   VNIC_QP_IRQ_RX_TAIL		BIT(1)
#define   VNIC_QP_IRQ_TAIL		GENMASK(27, 16)

/*
 * +0x1C QP_ITR (RW): interrupt moderation interval in us, 0 = off; with
 * ADAPTIVE (interface 1.1) the card picks the interval from the load and
 * USECS reads back its last choice. TX_USECS (interface 1.3): how long a
 * send completion may wait for the interrupt unless a received frame fires
 * it first; 0 = as long as a receive.
 */
#define VNIC_QP_ITR			0x1c
#define   VNIC_QP_ITR_USECS		GENMASK(15, 0)
#define   VNIC_QP_ITR_TX_USECS		GENMASK(30, 16)
#define   VNIC_QP_ITR_ADAPTIVE		BIT(31)
#define   VNIC_QP_ITR_DEFAULT		20

/*
 * +0x20 QP_VLAN (WO): join VID (adds the switch entry own MAC + VID), or
 * leave it with LEAVE. VID 0 is ignored; at most VNIC_QP_MAX_VLANS each.
 */
#define VNIC_QP_VLAN			0x20
#define   VNIC_QP_VLAN_VID		GENMASK(11, 0)
#define   VNIC_QP_VLAN_LEAVE		BIT(31)
#define   VNIC_QP_MAX_VLANS		64

/* +0x24 QP_TX_HEAD (RO), +0x28 QP_RX_HEAD (RO): the card's heads (debug) */
#define VNIC_QP_TX_HEAD			0x24
#define VNIC_QP_RX_HEAD			0x28

/*
 * Address filtering (interface 1.5, docs/datapath.md): what the vNIC
 * receives besides frames to its own MAC and broadcasts.
 *
 * +0x70 QP_FILTER_LO (RW), +0x74 QP_FILTER_HI (RW): guest address of the
 * filter list, COUNT entries of 8 bytes: a MAC (unicast: an extra address
 * the vNIC receives and may send from; multicast: a group it joined) and
 * two bytes of 0. +0x78 QP_RX_MODE (RW): writing it hands the list and the
 * flags to the card, which reads the list at once; a vNIC that never wrote
 * it receives every multicast frame. +0x2C QP_ADDR_STATUS (RO): what the
 * card granted of the last QP_RX_MODE, and why it refused the last QP_MAC
 * write. Promiscuous mode and extra unicast addresses beyond the VF's
 * limit need the VF to be trusted; the PF always is.
 */
#define VNIC_QP_ADDR_STATUS		0x2c
#define   VNIC_ADDR_ST_PROMISC		BIT(0)	/* promiscuous granted */
#define   VNIC_ADDR_ST_ALLMULTI		BIT(1)	/* all-multicast granted */
#define   VNIC_ADDR_ST_PROMISC_REFUSED	BIT(2)	/* VF not trusted */
#define   VNIC_ADDR_ST_OVER_LIMIT	BIT(3)	/* addresses beyond the limit */
#define   VNIC_ADDR_ST_TAKEN		BIT(4)	/* another vNIC's addresses */
#define   VNIC_ADDR_ST_LIST_ERROR	BIT(5)	/* list unreadable, too long */
#define   VNIC_ADDR_ST_MAC_UNTRUSTED	BIT(8)	/* QP_MAC refused: untrusted */
#define   VNIC_ADDR_ST_MAC_TAKEN	BIT(9)	/* QP_MAC refused: taken */
#define   VNIC_ADDR_ST_UNICAST		GENMASK(31, 16)	/* extra in effect */
#define VNIC_QP_FILTER_LO		0x70
#define VNIC_QP_FILTER_HI		0x74
#define VNIC_QP_RX_MODE			0x78
#define   VNIC_RX_MODE_PROMISC		BIT(0)
#define   VNIC_RX_MODE_ALLMULTI		BIT(1)
#define   VNIC_RX_MODE_COUNT		GENMASK(31, 16)
/* Most entries of one list */
#define VNIC_FILTER_MAX_ADDRS		256
#define VNIC_FILTER_ENTRY_LEN		8

/*
 * Queue counters (RO, 64 bits, low dword first): the contexts' counters,
 * kept in guest memory, so they restart from the values in the contexts
 * when a queue is (re)started.
 */
#define VNIC_QP_TX_PACKETS		0x30
#define VNIC_QP_TX_BYTES		0x38
#define VNIC_QP_TX_DROPS		0x40
#define VNIC_QP_TX_ERRORS		0x48
#define VNIC_QP_RX_PACKETS		0x50
#define VNIC_QP_RX_BYTES		0x58
#define VNIC_QP_RX_DROPS		0x60
#define VNIC_QP_RX_ERRORS		0x68

#endif /* _VNIC_REGS_H_ */
