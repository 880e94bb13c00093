/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vnic - guest driver for the emulated SR-IOV network card: shared state.
 *
 * A PCI function (struct vnic_priv) has N enabled queue pairs; each queue
 * pair is one vNIC, so the driver registers one netdev (struct vnic_port)
 * per queue pair, each with its own MSI-X vector, NAPI context and rings.
 * The queues' operating state lives in guest memory, in contexts the card
 * finds through the function's VCT entry, BAT, CLATs and blocks
 * (struct vnic_state, vnic_state.c). That is why a function whose PCI
 * configuration QEMU lost (loadvm, migration) can be restored in place, with
 * the same netdevs, rings and counters (vnic_recovery.c).
 */
#ifndef _VNIC_H_
#define _VNIC_H_

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/if_ether.h>
#include <linux/if_vlan.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/ktime.h>
#include <linux/mutex.h>
#include <linux/netdevice.h>
#include <linux/pci.h>
#include <linux/types.h>
#include <linux/u64_stats_sync.h>
#include <linux/workqueue.h>

#include "vnic_desc.h"
#include "vnic_regs.h"

#define VNIC_DRV_NAME		"vnic"

/* How long probe waits for the test interrupt */
#define VNIC_IRQ_TEST_TIMEOUT_MS	1000

/* How long the driver waits for QP_CTRL to take effect in QP_STATUS */
#define VNIC_QP_CTRL_TIMEOUT_MS		500

/* How often the watchdog checks that the function kept its PCI config */
#define VNIC_WATCHDOG_MS		500

/* Default ring sizes (ethtool -G changes them) */
#define VNIC_TX_RING_DEFAULT	256
#define VNIC_RX_RING_DEFAULT	256

/* Largest MTU: the card takes frames up to 9216 bytes (9000 + headers) */
#define VNIC_MAX_MTU		9000

/*
 * MTU of the exception netdev: its frames are the card's messages, 46 bytes
 * of headers and a whole frame, so it sends any message the exception send
 * queue takes (VNIC_EXC_MAX_FRAME, with the Ethernet header) and its receive
 * buffers hold the longest the card writes (a MISS of a 9216-byte frame is
 * 9262 bytes).
 */
#define VNIC_EXC_MTU		(VNIC_EXC_MAX_FRAME - ETH_HLEN)

/* Receive buffers hold one whole frame: MTU + Ethernet header + one tag */
#define VNIC_RX_BUF_ALIGN	64
#define VNIC_RX_BUF_LEN(mtu)	ALIGN((mtu) + ETH_HLEN + VLAN_HLEN, \
				      VNIC_RX_BUF_ALIGN)

/**
 * struct vnic_dma_chunk - one coherent DMA allocation
 * @va: kernel address, NULL when not allocated
 * @dma: bus address the card uses
 */
struct vnic_dma_chunk {
	void *va;
	dma_addr_t dma;
};

/**
 * struct vnic_svc_tables - the CLATs and blocks of one service type
 * @top: top-level CLAT, the one the BAT entry names
 * @l2: level-2 CLATs (two levels only), entry i of @top names @l2[i]
 * @nr_l2: number of @l2
 * @blocks: context blocks, in block-index order
 * @nr_blocks: number of @blocks
 */
struct vnic_svc_tables {
	struct vnic_dma_chunk top;
	struct vnic_dma_chunk *l2;
	unsigned int nr_l2;
	struct vnic_dma_chunk *blocks;
	unsigned int nr_blocks;
};

/**
 * struct vnic_state - the function's device state in guest memory
 * @bat: the Base Address Table
 * @svc: tables of each service type (VNIC_SVC_*)
 * @ctx_size: A, bytes per context slot
 * @block_size: B, bytes per block and per CLAT
 * @levels: CLAT levels, 1 or 2
 * @services: services of each type the tables hold (QP_MAX)
 * @vct_written: the VCT entry names @bat and must be cleared on exit
 * @vct_ok: the card accepted the BAT (VCT_STATUS read 0)
 */
struct vnic_state {
	struct vnic_dma_chunk bat;
	struct vnic_svc_tables svc[VNIC_SVC_TYPES];
	u32 ctx_size;
	u32 block_size;
	u32 levels;
	u32 services;
	bool vct_written;
	bool vct_ok;
};

/**
 * struct vnic_tx_buf - what the driver remembers about a send slot
 * @skb: the frame, NULL when the slot is free
 * @dma: its mapping
 * @len: mapped (and sent) length
 *
 * The driver unmaps from this copy, never from what the card wrote back.
 */
struct vnic_tx_buf {
	struct sk_buff *skb;
	dma_addr_t dma;
	u32 len;
};

/**
 * struct vnic_rx_buf - the empty buffer of a receive slot
 * @skb: the buffer
 * @dma: its mapping, rx->buf_len bytes
 */
struct vnic_rx_buf {
	struct sk_buff *skb;
	dma_addr_t dma;
};

/**
 * struct vnic_tx_ring - a send queue
 * @desc: descriptor ring
 * @dma: its bus address
 * @bufs: per-slot driver state
 * @size: entries, a power of two
 * @mask: @size - 1
 * @tail: next slot ndo_start_xmit fills (the driver's producer index)
 * @next_to_clean: oldest slot not yet reclaimed (written by NAPI only)
 * @kicked: last tail written to QP_TX_TAIL
 *
 * The driver owns tail .. head - 1, the card head .. tail - 1; one slot
 * always stays empty, so the ring is full when tail + 1 == next_to_clean.
 */
struct vnic_tx_ring {
	struct vnic_tx_desc *desc;
	dma_addr_t dma;
	struct vnic_tx_buf *bufs;
	u32 size;
	u32 mask;
	u32 tail;
	u32 next_to_clean;
	u32 kicked;
};

/**
 * struct vnic_rx_ring - a receive queue
 * @desc: descriptor ring
 * @dma: its bus address
 * @bufs: per-slot buffers; every slot always holds one
 * @size: entries, a power of two
 * @mask: @size - 1
 * @buf_len: bytes per buffer
 * @next_to_clean: next slot the card fills
 *
 * Every slot but one is posted at all times: after cleaning, the driver
 * writes tail = next_to_clean - 1.
 */
struct vnic_rx_ring {
	struct vnic_rx_desc *desc;
	dma_addr_t dma;
	struct vnic_rx_buf *bufs;
	u32 size;
	u32 mask;
	u32 buf_len;
	u32 next_to_clean;
};

/**
 * struct vnic_napi_stats - counters written from NAPI poll only
 * @syncp: guards 64-bit reads on 32-bit machines
 * @rx_packets: frames passed up
 * @rx_bytes: their bytes
 * @rx_alloc_fail: frames dropped because no new buffer could be allocated
 * @rx_bad_len: completions whose length was out of bounds (card bug)
 * @tx_packets: frames the card completed
 * @tx_bytes: their bytes
 * @tx_switch_drops: completions with DROPPED (spoof or VLAN check)
 * @tx_desc_errors: completions carrying a queue error code
 * @polls: NAPI polls
 */
struct vnic_napi_stats {
	struct u64_stats_sync syncp;
	u64_stats_t rx_packets;
	u64_stats_t rx_bytes;
	u64_stats_t rx_alloc_fail;
	u64_stats_t rx_bad_len;
	u64_stats_t tx_packets;
	u64_stats_t tx_bytes;
	u64_stats_t tx_switch_drops;
	u64_stats_t tx_desc_errors;
	u64_stats_t polls;
};

/**
 * struct vnic_xmit_stats - counters written from ndo_start_xmit only
 * @syncp: guards 64-bit reads on 32-bit machines
 * @busy: ndo_start_xmit found the ring full (returned NETDEV_TX_BUSY)
 * @stopped: the queue was stopped for want of descriptors
 * @dropped: frames dropped by the driver (length, mapping)
 */
struct vnic_xmit_stats {
	struct u64_stats_sync syncp;
	u64_stats_t busy;
	u64_stats_t stopped;
	u64_stats_t dropped;
};

/**
 * struct vnic_port - one queue pair, one vNIC, one netdev (netdev_priv)
 * @priv: the PCI function
 * @netdev: the netdev
 * @napi: NAPI context of the queue pair's vector
 * @qp_regs: the queue pair's area in BAR0
 * @q: queue pair number, 0-based
 * @exc: the PF's exception queue pair (EXC_QP), not a vNIC: its netdev
 *	carries the card's VxLAN requests and the answers to them
 * @max_frame: longest frame its send queue takes (VNIC_TX_MAX_FRAME, or
 *	VNIC_EXC_MAX_FRAME for @exc)
 * @irq: Linux IRQ number of MSI-X vector q + 1, 0 when not requested
 * @irq_name: its name in /proc/interrupts
 * @up: rings allocated and the queues enabled (changed under RTNL)
 * @gone: the card removed the queue pair (QP_NUM shrank): its BAR0 area no
 *	longer answers, so teardown writes no queue-pair register
 * @tx_ring_size: send ring entries used at the next start
 * @rx_ring_size: receive ring entries used at the next start
 * @itr: interrupt moderation interval, us (QP_ITR)
 * @card_mac: the MAC the card last reported for the queue pair (QP_MAC);
 *	the netdev's address differs from it when set in software only
 * @mac_refused_logged: the card refused a MAC write and it was logged
 * @sq_ctx: send-queue context in guest memory
 * @rq_ctx: receive-queue context in guest memory
 * @tx: send queue
 * @rx: receive queue
 * @nstats: NAPI-side counters
 * @xstats: transmit-side counters
 * @restarts: ring restarts after a transmit timeout (under RTNL)
 * @active_vlans: VLANs joined through QP_VLAN
 * @nr_vlans: bits set in @active_vlans
 * @reset_task: restarts the rings after a transmit timeout
 */
struct vnic_port {
	struct vnic_priv *priv;
	struct net_device *netdev;
	struct napi_struct napi;
	void __iomem *qp_regs;
	u32 q;
	bool exc;
	u32 max_frame;

	unsigned int irq;
	char irq_name[32];

	bool up;
	bool gone;
	u32 tx_ring_size;
	u32 rx_ring_size;
	u32 itr;
	u8 card_mac[ETH_ALEN];
	bool mac_refused_logged;

	struct vnic_queue_ctx *sq_ctx;
	struct vnic_queue_ctx *rq_ctx;

	struct vnic_tx_ring tx ____cacheline_aligned_in_smp;
	struct vnic_rx_ring rx ____cacheline_aligned_in_smp;

	struct vnic_napi_stats nstats;
	struct vnic_xmit_stats xstats;
	u64 restarts;

	DECLARE_BITMAP(active_vlans, VLAN_N_VID);
	unsigned int nr_vlans;

	struct work_struct reset_task;
};

/**
 * enum vnic_fn_state - is the function usable (vnic_recovery.c)
 * @VNIC_FN_RUNNING: configured; the normal state
 * @VNIC_FN_WAITING: PCI configuration restored after it was lost, netdevs
 *	detached until management's VCT entry resumes the queues (recovery=1)
 * @VNIC_FN_STOPPED: configuration lost and not restored (recovery=0, or the
 *	restore failed); netdevs detached for good
 */
enum vnic_fn_state {
	VNIC_FN_RUNNING,
	VNIC_FN_WAITING,
	VNIC_FN_STOPPED,
};

/**
 * struct vnic_priv - per-function driver state
 * @pdev: the PCI function
 * @regs: BAR0 register file
 * @regs_len: length of BAR0
 * @is_vf: the function is a virtual function
 * @vf_index: VF index reported by FUNC (0 on the PF)
 * @version: VERSION register
 * @qp_max: maximum queue pairs X
 * @qp_num: enabled queue pairs N
 * @exc_qp: the exception queue pair (EXC_QP, the PF's queue pair 1), served
 *	by the netdev after the vNICs'; 0 when there is none (VFs, a card
 *	with one queue pair)
 * @num_vectors: MSI-X vectors the device reports (X + 1)
 * @nvecs: MSI-X vectors allocated
 * @mac: permanent MAC address reported by the card
 * @misc_irq: Linux IRQ number of the misc vector, 0 when not requested
 * @misc_irq_name: name of the misc IRQ in /proc/interrupts
 * @misc_irqs: interrupts received on the misc vector
 * @irq_test_done: completed by the misc handler
 * @event_task: reads IRQ_CAUSE and acts on it, scheduled by the misc handler
 * @events_on: the misc handler may schedule @event_task
 * @sw_causes: IRQ_CAUSE bits the driver raised itself for @event_task
 * @link_up: STATUS.LINK_UP as the last LINK cause found it
 * @admin_lock: serialises PF admin mailbox commands
 * @state: BAT, CLATs and context blocks
 * @ports: one slot per queue pair the driver can serve (@qp_limit); the
 *	first @nr_ports hold registered netdevs
 * @nr_ports: netdevs registered (queue pairs 0 .. @nr_ports - 1): the
 *	vNICs', then the exception queue pair's if @exc_qp; changed under RTNL
 * @qp_limit: queue pairs the driver can serve: at most QP_MAX, and each
 *	needs an MSI-X vector and an area inside BAR0
 * @fn_state: VNIC_FN_*; changed under RTNL
 * @watchdog: checks every VNIC_WATCHDOG_MS that the function still has its
 *	PCI configuration, and restores it (vnic_recovery.c)
 * @pci_state: copy of the config space saved at the end of probe
 * @lost_at: when the watchdog found the configuration lost
 * @recoveries: recoveries completed (sysfs vnic_recoveries)
 */
struct vnic_priv {
	struct pci_dev *pdev;
	void __iomem *regs;
	resource_size_t regs_len;

	bool is_vf;
	u16 vf_index;
	u32 version;
	u32 qp_max;
	u32 qp_num;
	u32 exc_qp;
	u32 num_vectors;
	int nvecs;
	u8 mac[ETH_ALEN];

	unsigned int misc_irq;
	char misc_irq_name[32];
	atomic_t misc_irqs;
	struct completion irq_test_done;
	struct work_struct event_task;
	bool events_on;
	atomic_t sw_causes;
	bool link_up;
	struct mutex admin_lock;	/* one mailbox command at a time */

	struct vnic_state state;

	struct vnic_port **ports;
	u32 nr_ports;
	u32 qp_limit;

	enum vnic_fn_state fn_state;
	struct delayed_work watchdog;
	struct pci_saved_state *pci_state;
	ktime_t lost_at;
	u32 recoveries;
};

static inline u32 vnic_rd32(struct vnic_priv *priv, u32 reg)
{
	return ioread32(priv->regs + reg);
}

static inline void vnic_wr32(struct vnic_priv *priv, u32 reg, u32 val)
{
	iowrite32(val, priv->regs + reg);
}

/* 64-bit counters: two dwords, low first, as docs/registers.md asks */
static inline u64 vnic_rd64(struct vnic_priv *priv, u32 reg)
{
	return ioread64_lo_hi(priv->regs + reg);
}

static inline u32 vnic_qp_rd32(struct vnic_port *port, u32 reg)
{
	return ioread32(port->qp_regs + reg);
}

static inline void vnic_qp_wr32(struct vnic_port *port, u32 reg, u32 val)
{
	iowrite32(val, port->qp_regs + reg);
}

static inline u64 vnic_qp_rd64(struct vnic_port *port, u32 reg)
{
	return ioread64_lo_hi(port->qp_regs + reg);
}

/*
 * Does BAR0 answer? A function whose configuration QEMU lost reads 0 (BAR
 * unassigned) or all-ones (gone) until the watchdog restores it.
 */
static inline bool vnic_card_answers(struct vnic_priv *priv)
{
	return vnic_rd32(priv, VNIC_REG_ID) == VNIC_ID_MAGIC;
}

/* vnic_irq.c */
int vnic_irq_init(struct vnic_priv *priv);
void vnic_irq_exit(struct vnic_priv *priv);
int vnic_irq_self_test(struct vnic_priv *priv);
void vnic_events_start(struct vnic_priv *priv);
void vnic_events_stop(struct vnic_priv *priv);
void vnic_events_kick(struct vnic_priv *priv, u32 cause);
int vnic_qp_irq_request(struct vnic_port *port);
void vnic_qp_irq_free(struct vnic_port *port);
int vnic_napi_poll(struct napi_struct *napi, int budget);

/* vnic_state.c */
int vnic_state_init(struct vnic_priv *priv);
void vnic_state_exit(struct vnic_priv *priv);
int vnic_state_write_vct(struct vnic_priv *priv);
struct vnic_queue_ctx *vnic_state_ctx(struct vnic_priv *priv, u32 type,
				      u32 q);
void vnic_state_ctx_reset(struct vnic_priv *priv, struct vnic_queue_ctx *ctx,
			  dma_addr_t ring, u32 size);
void vnic_state_ctx_stopped(struct vnic_queue_ctx *ctx);

/* vnic_netdev.c */
int vnic_netdevs_create(struct vnic_priv *priv);
void vnic_netdevs_destroy(struct vnic_priv *priv);
void vnic_netdevs_config_changed(struct vnic_priv *priv);
void vnic_netdevs_link_changed(struct vnic_priv *priv);
int vnic_port_restart(struct vnic_port *port);
const char *vnic_qerr_name(u32 code);
void vnic_log_qp_status(struct vnic_port *port, const char *what,
			u32 status);

/* vnic_tx.c */
int vnic_tx_ring_alloc(struct vnic_port *port);
void vnic_tx_ring_free(struct vnic_port *port);
netdev_tx_t vnic_start_xmit(struct sk_buff *skb, struct net_device *netdev);
void vnic_tx_clean(struct vnic_port *port, int napi_budget);

/* vnic_rx.c */
int vnic_rx_ring_alloc(struct vnic_port *port);
void vnic_rx_ring_free(struct vnic_port *port);
void vnic_rx_post_all(struct vnic_port *port);
int vnic_rx_clean(struct vnic_port *port, int budget);

/* vnic_adminq.c: ndo_set_vf_* and ndo_get_vf_config of the PF */
int vnic_set_vf_mac(struct net_device *netdev, int vf, u8 *mac);
int vnic_set_vf_vlan(struct net_device *netdev, int vf, u16 vlan, u8 qos,
		     __be16 proto);
int vnic_set_vf_rate(struct net_device *netdev, int vf, int min_tx_rate,
		     int max_tx_rate);
int vnic_set_vf_spoofchk(struct net_device *netdev, int vf, bool setting);
int vnic_set_vf_trust(struct net_device *netdev, int vf, bool setting);
int vnic_set_vf_link_state(struct net_device *netdev, int vf, int link_state);
int vnic_get_vf_config(struct net_device *netdev, int vf,
		       struct ifla_vf_info *ivi);

/* vnic_recovery.c */
int vnic_recovery_init(struct vnic_priv *priv);
void vnic_recovery_start(struct vnic_priv *priv);
void vnic_recovery_stop(struct vnic_priv *priv);
void vnic_recovery_resumed(struct vnic_priv *priv);

/* vnic_ethtool.c */
void vnic_set_ethtool_ops(struct net_device *netdev);

#endif /* _VNIC_H_ */
