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
 *
 * The .c files are layered: each calls the non-static functions of lower
 * layers only, so no two files call each other, directly or round a circle.
 * From the top (vnic_<name>.c, declared at the end of this file in this
 * order):
 *
 *   main                 probe and remove, the PCI driver, module entry
 *   events               the misc vector's work: IRQ_CAUSE to netdev and
 *                        recovery
 *   netdev  recovery     the netdevs and their ndo_*; the watchdog that
 *                        restores a function's lost configuration
 *   ethtool health       ethtool_ops; the watchdog's queue checks
 *   port    irq          starting and stopping a port's queues; MSI-X
 *                        vectors, interrupt handlers and NAPI
 *   tx  rx  state        the send and receive rings; contexts, BAT and VCT
 *                        in guest memory
 *   doorbell qp adminq   doorbells; queue-pair register helpers; the PF's
 *   filter               admin mailbox (ndo_set_vf_*); address filtering
 *                        (ndo_set_rx_mode)
 *
 * The event work sits above the netdev and recovery code it runs;
 * vnic_events_kick(), which only queues it (as the misc handler does),
 * lives in vnic_irq.c, below the recovery that kicks it. ethtool -G and the
 * netdevs both restart a port through vnic_port.c, and only the netdevs call
 * into ethtool (to install its operations). A lower file that queues a work
 * item of an upper one does not call it: the misc handler and
 * vnic_events_kick() queue the event work, the health checks the netdevs'
 * reset task.
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

#include "vnic_compat.h"
#include "vnic_desc.h"
#include "vnic_regs.h"

#define VNIC_DRV_NAME		"vnic"

/* How long probe waits for the test interrupt */
#define VNIC_IRQ_TEST_TIMEOUT_MS	1000

/* How long the driver waits for QP_CTRL to take effect in QP_STATUS */
#define VNIC_QP_CTRL_TIMEOUT_MS		500

/* How often the watchdog checks that the function kept its PCI config */
#define VNIC_WATCHDOG_MS		500
/* ... and while the card says a live migration is under way */
#define VNIC_WATCHDOG_MIGRATING_MS	10
/* Announcements of the vNICs' addresses after a recovery, a tick apart */
#define VNIC_ANNOUNCE_ROUNDS		3

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

/*
 * Without MULTI_BUF a receive buffer holds one whole frame: MTU + Ethernet
 * header + one tag (vnic_rx.c)
 */
#define VNIC_RX_BUF_ALIGN	64
#define VNIC_RX_BUF_LEN(mtu)	ALIGN((mtu) + ETH_HLEN + VLAN_HLEN, \
				      VNIC_RX_BUF_ALIGN)

/*
 * The longest frame a vNIC's receive queue takes (its context's max_frame):
 * MTU + Ethernet header + one tag. The card drops and counts longer ones,
 * as a NIC whose receive limit follows the MTU does.
 */
#define VNIC_RX_MAX_FRAME(mtu)	((mtu) + ETH_HLEN + VLAN_HLEN)

/*
 * Received frames up to this long (after the per-frame header) are copied
 * into a new skb and their pages stay in the ring: cheaper than a page per
 * small packet.
 */
#define VNIC_RX_COPYBREAK	256
/* Longer ones: at most this many header bytes are copied into the head */
#define VNIC_RX_HDR_MAX		256

/*
 * With offloads a GSO frame needs up to MAX_SKB_FRAGS receive buffers posted
 * at once (it waits in the card until they are, and every frame behind it
 * too), and a ring keeps one slot empty: a smaller ring would stall.
 */
#define VNIC_RX_RING_MIN_GSO	32
static_assert(VNIC_RX_RING_MIN_GSO > MAX_SKB_FRAGS);

/*
 * With scatter-gather a frame takes one send descriptor for its head and
 * one per frag. The queue stops while fewer than VNIC_TX_SG_STOP slots are
 * free (the worst case and one to spare), and the ring must hold two such
 * frames or it would hardly ever run.
 */
#define VNIC_TX_SG_STOP		(MAX_SKB_FRAGS + 2)
#define VNIC_TX_RING_MIN_SG	64
static_assert(VNIC_TX_RING_MIN_SG >= 2 * VNIC_TX_SG_STOP);
static_assert(MAX_SKB_FRAGS + 1 <= VNIC_TX_MAX_DESCS);

/*
 * Largest GSO packet the stack may build for a port (netif_set_tso_max_size).
 * With an Ethernet header and a tag it stays under VNIC_GSO_MAX_FRAME, and
 * not exceeding the legacy 64 KiB keeps IPv6 BIG TCP off: its jumbo frames
 * (payload length 0) are refused by the card.
 */
#define VNIC_TSO_MAX_SIZE	GSO_LEGACY_MAX_SIZE
static_assert(VNIC_TSO_MAX_SIZE + VLAN_ETH_HLEN <= VNIC_GSO_MAX_FRAME);

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
 * @db: the doorbell page the BAT header names, if any (vnic_doorbell.c)
 * @vct_written: the VCT entry names @bat and must be cleared on exit
 * @vct_ok: the card accepted the BAT (VCT_STATUS read 0)
 */
struct vnic_state {
	struct vnic_dma_chunk bat;
	struct vnic_svc_tables svc[VNIC_SVC_TYPES];
	struct vnic_dma_chunk db;
	u32 ctx_size;
	u32 block_size;
	u32 levels;
	u32 services;
	bool vct_written;
	bool vct_ok;
};

/**
 * struct vnic_tx_buf - what the driver remembers about a send slot
 * @skb: the frame, on its last slot only (NULL on the others)
 * @dma: the mapping the slot's descriptor points at
 * @len: mapped length; 0 when the slot is free
 * @bytes: on the last slot, the frame's length without the per-frame
 *	header, as BQL and the statistics count it
 * @page: @dma is a frag's mapping (skb_frag_dma_map()), not the head's
 *
 * The driver unmaps from this copy, never from what the card wrote back.
 */
struct vnic_tx_buf {
	struct sk_buff *skb;
	dma_addr_t dma;
	u32 len;
	u32 bytes;
	bool page;
};

/**
 * struct vnic_rx_buf - the empty buffer of a receive slot
 * @page: the buffer, a (compound) page of rx->page_order
 * @dma: its mapping, the whole page
 */
struct vnic_rx_buf {
	struct page *page;
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
 * @stop_thresh: the queue stops while fewer slots than this are free: the
 *	most one frame can need (1, or VNIC_TX_SG_STOP with scatter-gather)
 * @vnet_hdr: every frame starts with a struct virtio_net_hdr
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
	u32 stop_thresh;
	bool vnet_hdr;
};

/**
 * struct vnic_rx_ring - a receive queue
 * @desc: descriptor ring
 * @dma: its bus address
 * @bufs: per-slot buffers; every slot always holds one
 * @size: entries, a power of two
 * @mask: @size - 1
 * @buf_len: bytes per buffer (buf_len of the descriptors)
 * @page_order: order of the buffers' pages
 * @truesize: bytes of memory per buffer, what a frag costs an skb
 * @hdr_len: bytes of per-frame header (VNIC_VNET_HDR_LEN or 0)
 * @max_bufs: most buffers a frame may span: 1 without MULTI_BUF, else as
 *	many as an skb has frags
 * @multi_buf: the queue has VNIC_FEAT_MULTI_BUF: a frame ends at EOP
 * @next_to_clean: next slot the card fills
 * @post_pending: slots were cleaned since the last receive doorbell
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
	u32 page_order;
	u32 truesize;
	u32 hdr_len;
	u32 max_bufs;
	bool multi_buf;
	u32 next_to_clean;
	bool post_pending;
};

/**
 * struct vnic_napi_stats - counters written from NAPI poll only
 * @syncp: guards 64-bit reads on 32-bit machines
 * @rx_packets: frames passed up
 * @rx_bytes: their bytes
 * @rx_alloc_fail: frames dropped because no new buffer could be allocated
 * @rx_bad_len: frames with a buffer length out of bounds (card bug)
 * @rx_bad_chain: frames without EOP where it had to be (card bug)
 * @rx_too_many_bufs: frames spanning more buffers than an skb has frags
 * @rx_hdr_errors: frames whose virtio_net_hdr the stack refused
 * @rx_gso: GSO frames passed up
 * @rx_multi_buf: frames that spanned more than one buffer
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
	u64_stats_t rx_bad_chain;
	u64_stats_t rx_too_many_bufs;
	u64_stats_t rx_hdr_errors;
	u64_stats_t rx_gso;
	u64_stats_t rx_multi_buf;
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
 * @dropped: frames dropped by the driver (length, header, mapping)
 * @gso: GSO frames handed to the card
 */
struct vnic_xmit_stats {
	struct u64_stats_sync syncp;
	u64_stats_t busy;
	u64_stats_t stopped;
	u64_stats_t dropped;
	u64_stats_t gso;
};

/**
 * struct vnic_filter - a port's receive filter (vnic_filter.c)
 * @lock: guards @mode, @count and @addrs, the snapshot ndo_set_rx_mode
 *	takes in atomic context
 * @mode: VNIC_RX_MODE_PROMISC and VNIC_RX_MODE_ALLMULTI of the snapshot
 * @count: addresses in @addrs
 * @addrs: the unicast, then the multicast addresses of the snapshot
 * @work: hands the snapshot to the card
 * @mutex: serialises @list and the registers between @work and the
 *	recovery
 * @list: the list in guest memory the card reads; not allocated on a card
 *	older than 1.5 and for the exception queue pair
 * @rx_mode: the QP_RX_MODE value that goes with @list
 * @status: QP_ADDR_STATUS after the last hand-over
 * @written: QP_RX_MODE was written since the port was created
 */
struct vnic_filter {
	spinlock_t lock;	/* the snapshot */
	u32 mode;
	u32 count;
	u8 addrs[VNIC_FILTER_MAX_ADDRS][ETH_ALEN];
	struct work_struct work;
	struct mutex mutex;	/* the list and the registers */
	struct vnic_dma_chunk list;
	u32 rx_mode;
	u32 status;
	bool written;
};

/**
 * struct vnic_port - one queue pair, one vNIC, one netdev (netdev_priv)
 * @priv: the PCI function
 * @netdev: the netdev
 * @napi: NAPI context of the queue pair's vector
 * @qp_regs: the queue pair's area in BAR0
 * @db_slot: its slot in BAR0's doorbell page, or NULL (vnic_doorbell.c)
 * @db_mem: its slot in the doorbell page in guest memory, or NULL
 * @db_irq_seq: the IRQ_SEQ it stored last
 * @q: queue pair number, 0-based
 * @exc: the PF's exception queue pair (EXC_QP), not a vNIC: its netdev
 *	carries the card's VxLAN requests and the answers to them
 * @max_frame: longest frame its send queue takes (VNIC_TX_MAX_FRAME, or
 *	VNIC_EXC_MAX_FRAME for @exc), GSO frames aside
 * @sq_features: VNIC_FEAT_* of its send queue's context
 * @rq_features: VNIC_FEAT_* of its receive queue's context
 * @irq: Linux IRQ number of MSI-X vector q + 1, 0 when not requested
 * @irq_name: its name in /proc/interrupts
 * @up: rings allocated and the queues enabled (changed under RTNL)
 * @gone: the card removed the queue pair (QP_NUM shrank): its BAR0 area no
 *	longer answers, so teardown writes no queue-pair register
 * @tx_ring_size: send ring entries used at the next start
 * @rx_ring_size: receive ring entries used at the next start
 * @itr: interrupt moderation interval, us (QP_ITR)
 * @itr_adaptive: let the card adapt the interval to the load (ethtool -C
 *	adaptive-rx on; off by default, docs/performance.md step G2)
 * @tx_itr: how long a send completion may wait for the interrupt, us
 *	(QP_ITR.TX_USECS, ethtool -C tx-usecs; 0 on a card older than 1.3)
 * @card_mac: the MAC the card last reported for the queue pair (QP_MAC),
 *	the netdev's address
 * @sq_ctx: send-queue context in guest memory
 * @rq_ctx: receive-queue context in guest memory
 * @tx: send queue
 * @rx: receive queue
 * @nstats: NAPI-side counters
 * @xstats: transmit-side counters
 * @restarts: ring restarts after a transmit timeout (under RTNL)
 * @irq_rescues: polls the watchdog scheduled for completions no interrupt
 *	reported (vnic_health.c)
 * @queue_error_restarts: restarts the watchdog asked for because the card
 *	stopped a queue with an error (vnic_health.c)
 * @wd_tx_ntc: send next_to_clean the watchdog saw with work pending
 * @wd_rx_ntc: receive next_to_clean the watchdog saw with work pending
 * @wd_pending: the watchdog saw completed work not yet reaped
 * @active_vlans: VLANs joined through QP_VLAN
 * @nr_vlans: bits set in @active_vlans
 * @filter: the addresses and modes handed to the card (vnic_filter.c)
 * @reset_task: restarts the rings after a transmit timeout
 */
struct vnic_port {
	struct vnic_priv *priv;
	struct net_device *netdev;
	struct napi_struct napi;
	void __iomem *qp_regs;
	void __iomem *db_slot;
	__le32 *db_mem;
	u32 db_irq_seq;
	u32 q;
	bool exc;
	u32 max_frame;
	u16 sq_features;
	u16 rq_features;
	bool head_wb;

	unsigned int irq;
	char irq_name[32];

	bool up;
	bool gone;
	u32 tx_ring_size;
	u32 rx_ring_size;
	u32 itr;
	bool itr_adaptive;
	u32 tx_itr;
	u8 card_mac[ETH_ALEN];

	struct vnic_queue_ctx *sq_ctx;
	struct vnic_queue_ctx *rq_ctx;

	struct vnic_tx_ring tx ____cacheline_aligned_in_smp;
	struct vnic_rx_ring rx ____cacheline_aligned_in_smp;

	struct vnic_napi_stats nstats;
	struct vnic_xmit_stats xstats;
	u64 restarts;
	u64 irq_rescues;
	u64 queue_error_restarts;
	u32 wd_tx_ntc;
	u32 wd_rx_ntc;
	bool wd_pending;

	DECLARE_BITMAP(active_vlans, VLAN_N_VID);
	unsigned int nr_vlans;

	struct vnic_filter filter;
	struct work_struct reset_task;
};

/**
 * enum vnic_fn_state - is the function usable (vnic_recovery.c)
 * @VNIC_FN_RUNNING: configured; the normal state
 * @VNIC_FN_WAITING: PCI configuration restored after it was lost, netdevs
 *	detached until management's VCT entry resumes the queues (recovery=1)
 * @VNIC_FN_STOPPED: configuration lost and not restored (recovery=0, or the
 *	restore failed); netdevs detached for good
 * @VNIC_FN_GONE: BAR0 reads all-ones even after restoring the configuration
 *	(surprise removal): netdevs detached, carrier off, nothing touches the
 *	device until the watchdog finds it answering again
 */
enum vnic_fn_state {
	VNIC_FN_RUNNING,
	VNIC_FN_WAITING,
	VNIC_FN_STOPPED,
	VNIC_FN_GONE,
};

/**
 * struct vnic_priv - per-function driver state
 * @pdev: the PCI function
 * @regs: BAR0 register file
 * @regs_len: length of BAR0
 * @is_vf: the function is a virtual function
 * @vf_index: VF index reported by FUNC (0 on the PF)
 * @version: VERSION register
 * @db_page: the card polls a doorbell page for this driver (DB_PAGE
 *	ENABLE), so its ports store their doorbells there
 * @db_guest: that page is @state.db, in guest memory (DB_PAGE GUEST)
 * @features: FEATURES register, the offloads the card offers (0 on a card
 *	older than VERSION 1.1)
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
 * @event_task: reads IRQ_CAUSE and acts on it (vnic_events.c), scheduled by
 *	the misc handler
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
 * @checked_at: when the watchdog last found it in place
 * @recoveries: recoveries completed (sysfs vnic_recoveries)
 * @announce_left: announcements still to make after a recovery
 * @migrating: STATUS.MIGRATING as last read: the watchdog checks every
 *	VNIC_WATCHDOG_MIGRATING_MS
 */
struct vnic_priv {
	struct pci_dev *pdev;
	void __iomem *regs;
	resource_size_t regs_len;

	bool is_vf;
	u16 vf_index;
	u32 version;
	u32 features;
	bool db_page;
	bool db_guest;
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
	ktime_t checked_at;
	u32 recoveries;
	u8 announce_left;
	bool migrating;
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

/* Does the card take receive filters and report QP_ADDR_STATUS (1.5)? */
static inline bool vnic_has_rx_filter(struct vnic_priv *priv)
{
	return VNIC_VERSION_MINOR(priv->version) >= VNIC_VERSION_MINOR_RX_FILTER;
}

/* Does the card take QP_ITR.TX_USECS (interface 1.3)? */
static inline bool vnic_has_tx_itr(struct vnic_priv *priv)
{
	return VNIC_VERSION_MINOR(priv->version) >= VNIC_VERSION_MINOR_TX_USECS;
}

/*
 * Does BAR0 answer? A function whose configuration QEMU lost reads 0 (BAR
 * unassigned) or all-ones (gone) until the watchdog restores it.
 */
static inline bool vnic_card_answers(struct vnic_priv *priv)
{
	return vnic_rd32(priv, VNIC_REG_ID) == VNIC_ID_MAGIC;
}

/* vnic_events.c */
void vnic_events_init(struct vnic_priv *priv);
void vnic_events_start(struct vnic_priv *priv);
void vnic_events_stop(struct vnic_priv *priv);

/* vnic_netdev.c */
int vnic_netdevs_create(struct vnic_priv *priv);
void vnic_netdevs_destroy(struct vnic_priv *priv);
void vnic_netdevs_config_changed(struct vnic_priv *priv);
void vnic_netdevs_link_changed(struct vnic_priv *priv);

/* vnic_recovery.c */
int vnic_recovery_init(struct vnic_priv *priv);
void vnic_recovery_start(struct vnic_priv *priv);
void vnic_recovery_stop(struct vnic_priv *priv);
void vnic_recovery_resumed(struct vnic_priv *priv);
void vnic_recovery_migration(struct vnic_priv *priv);

/* vnic_ethtool.c */
void vnic_set_ethtool_ops(struct net_device *netdev);

/* vnic_health.c */
void vnic_health_check(struct vnic_priv *priv);

/* vnic_port.c */
int vnic_port_start(struct vnic_port *port);
void vnic_port_stop(struct vnic_port *port);
int vnic_port_restart(struct vnic_port *port);

/* vnic_irq.c */
int vnic_irq_init(struct vnic_priv *priv);
void vnic_irq_exit(struct vnic_priv *priv);
int vnic_irq_self_test(struct vnic_priv *priv);
void vnic_events_kick(struct vnic_priv *priv, u32 cause);
int vnic_qp_irq_request(struct vnic_port *port);
void vnic_qp_irq_free(struct vnic_port *port);
int vnic_napi_poll(struct napi_struct *napi, int budget);

/* vnic_tx.c */
int vnic_tx_ring_alloc(struct vnic_port *port);
void vnic_tx_ring_free(struct vnic_port *port);
netdev_tx_t vnic_start_xmit(struct sk_buff *skb, struct net_device *netdev);
netdev_features_t vnic_features_check(struct sk_buff *skb,
				      struct net_device *netdev,
				      netdev_features_t features);
void vnic_tx_clean(struct vnic_port *port, int napi_budget);
u32 vnic_tx_ring_min(const struct vnic_port *port);

/* vnic_rx.c */
int vnic_rx_ring_alloc(struct vnic_port *port);
void vnic_rx_ring_free(struct vnic_port *port);
void vnic_rx_post_all(struct vnic_port *port);
int vnic_rx_clean(struct vnic_port *port, int budget);
void vnic_rx_post(struct vnic_port *port, bool rearm);
u32 vnic_rx_ring_min(const struct vnic_port *port);

/* vnic_state.c */
int vnic_state_init(struct vnic_priv *priv);
void vnic_state_exit(struct vnic_priv *priv);
int vnic_state_write_vct(struct vnic_priv *priv);
struct vnic_queue_ctx *vnic_state_ctx(struct vnic_priv *priv, u32 type,
				      u32 q);
void vnic_state_ctx_reset(struct vnic_priv *priv, struct vnic_queue_ctx *ctx,
			  dma_addr_t ring, u32 size, u16 features,
			  u16 max_frame);
void vnic_state_ctx_stopped(struct vnic_queue_ctx *ctx);

/* vnic_doorbell.c */
bool vnic_db_guest_wanted(struct vnic_priv *priv);
void vnic_db_enable(struct vnic_priv *priv);
void vnic_db_port_init(struct vnic_port *port);
void vnic_db_tx(struct vnic_port *port, u32 tail);
bool vnic_db_rx(struct vnic_port *port, bool post, u32 tail, bool rearm);

/* vnic_qp.c: queue-pair register helpers, calling nothing else */
const char *vnic_qerr_name(u32 code);
void vnic_log_qp_status(struct vnic_port *port, const char *what,
			u32 status);
void vnic_write_itr(struct vnic_port *port);

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

/* vnic_filter.c: ndo_set_rx_mode and the list the card reads */
int vnic_filter_init(struct vnic_port *port);
void vnic_filter_free(struct vnic_port *port);
void vnic_set_rx_mode(struct net_device *netdev);
void vnic_filter_rewrite(struct vnic_port *port);

#endif /* _VNIC_H_ */
