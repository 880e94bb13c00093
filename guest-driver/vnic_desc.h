/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vnic - structures the driver shares with the card through guest memory:
 * send and receive descriptors, queue contexts, and the BAT that leads the
 * card from its VCT entry to those contexts.
 *
 * All little-endian. The layouts are the contract of docs/datapath.md; the
 * device's Rust definitions must match them byte for byte, which is why every
 * size and field offset is asserted here at compile time.
 */
#ifndef _VNIC_DESC_H_
#define _VNIC_DESC_H_

#include <linux/bits.h>
#include <linux/build_bug.h>
#include <linux/stddef.h>
#include <linux/types.h>

/* Ring sizes the card accepts: a power of two in this range */
#define VNIC_RING_MIN			8
#define VNIC_RING_MAX			4096
/* Ring base alignment the card requires */
#define VNIC_RING_ALIGN			16

/* Frame limits of a send queue: an Ethernet header .. MTU 9000 + headers */
#define VNIC_TX_MIN_FRAME		14
#define VNIC_TX_MAX_FRAME		9216
/*
 * The PF's exception send queue takes longer frames: a 46-byte message
 * header before a frame of up to 9280 bytes (docs/vxlan.md)
 */
#define VNIC_EXC_MAX_FRAME		9326
/* Most descriptors one frame may span, on either ring (the card's limit) */
#define VNIC_TX_MAX_DESCS		32
#define VNIC_RX_MAX_DESCS		32
/* A descriptor's length field is 16 bits wide */
#define VNIC_DESC_MAX_LEN		0xffff

/* Receive buffer sizes the card accepts */
#define VNIC_RX_MIN_BUF			64
#define VNIC_RX_MAX_BUF			16384

/**
 * struct vnic_tx_desc - send descriptor (16 bytes)
 * @addr: guest (DMA) address of the buffer; driver
 * @len: bytes in the buffer, at least 1; the frame's buffers together hold
 *	at most VNIC_TX_MAX_FRAME bytes (VNIC_EXC_MAX_FRAME on the PF's
 *	exception queue pair, VNIC_GSO_MAX_FRAME for a GSO frame, the
 *	per-frame header not counted); driver
 * @flags: VNIC_TXD_F_*; driver
 * @status: VNIC_TXD_S_* and the queue error code; card
 * @reserved: 0
 */
struct vnic_tx_desc {
	__le64 addr;
	__le16 len;
	__le16 flags;
	__le16 status;
	__le16 reserved;
};

#define VNIC_TXD_F_EOP			BIT(0)	/* last buffer of the frame */

#define VNIC_TXD_S_DONE			BIT(0)	/* the card is done with it */
#define VNIC_TXD_S_DROPPED		BIT(1)	/* the switch dropped it */
/* error code of the queue, when it failed on this descriptor */
#define VNIC_TXD_S_ERR_CODE		GENMASK(15, 8)

static_assert(sizeof(struct vnic_tx_desc) == 16);
static_assert(offsetof(struct vnic_tx_desc, addr) == 0);
static_assert(offsetof(struct vnic_tx_desc, len) == 8);
static_assert(offsetof(struct vnic_tx_desc, flags) == 10);
static_assert(offsetof(struct vnic_tx_desc, status) == 12);
static_assert(offsetof(struct vnic_tx_desc, reserved) == 14);

/**
 * struct vnic_rx_desc - receive descriptor (16 bytes)
 * @addr: guest (DMA) address of an empty buffer; driver
 * @buf_len: buffer size, VNIC_RX_MIN_BUF..VNIC_RX_MAX_BUF; driver
 * @len: length of the frame placed in the buffer; card
 * @status: VNIC_RXD_S_*; card
 * @reserved: 0
 *
 * The card writes @len and @status with one 8-byte store after the frame
 * bytes, so the driver reads @status first and @len after a dma_rmb().
 */
struct vnic_rx_desc {
	__le64 addr;
	__le16 buf_len;
	__le16 len;
	__le16 status;
	__le16 reserved;
};

#define VNIC_RXD_S_DONE			BIT(0)	/* frame bytes in the buffer */
/*
 * Last buffer of the frame. Only meaningful on a queue with
 * VNIC_FEAT_MULTI_BUF: a card older than the offloads never sets it.
 */
#define VNIC_RXD_S_EOP			BIT(1)

static_assert(sizeof(struct vnic_rx_desc) == 16);
static_assert(offsetof(struct vnic_rx_desc, addr) == 0);
static_assert(offsetof(struct vnic_rx_desc, buf_len) == 8);
static_assert(offsetof(struct vnic_rx_desc, len) == 10);
static_assert(offsetof(struct vnic_rx_desc, status) == 12);
static_assert(offsetof(struct vnic_rx_desc, reserved) == 14);

/*
 * Queue error codes: a queue whose ring breaks the rules stops in the error
 * state; QP_STATUS and the descriptor it failed on carry the code.
 */
#define VNIC_QERR_NONE			0
#define VNIC_QERR_RING			1	/* ring size, alignment, memory */
#define VNIC_QERR_DMA			2	/* buffer outside guest memory */
#define VNIC_QERR_LENGTH		3	/* buffer or frame length */
#define VNIC_QERR_INDEX			4	/* doorbell >= ring size */
#define VNIC_QERR_CHAIN			5	/* frame too long or no EOP */
#define VNIC_QERR_CONTEXT		6	/* context not found or unreadable */
#define VNIC_QERR_FEATURES		7	/* context features refused */

/*
 * Offloads (docs/datapath.md, "Offloads"): the bits of a queue context's
 * @features and of the FEATURES register, which says which the card offers.
 * CSUM and GSO need VNET_HDR, GSO needs CSUM, a receive queue with GSO needs
 * MULTI_BUF, and a send queue never has MULTI_BUF.
 */
#define VNIC_FEAT_VNET_HDR		BIT(0)	/* virtio_net_hdr first */
#define VNIC_FEAT_CSUM			BIT(1)	/* NEEDS_CSUM frames */
#define VNIC_FEAT_GSO			BIT(2)	/* TCPv4/v6 GSO frames */
#define VNIC_FEAT_MULTI_BUF		BIT(3)	/* RQ: frames span buffers */
#define VNIC_FEAT_ALL			(VNIC_FEAT_VNET_HDR | VNIC_FEAT_CSUM | \
					 VNIC_FEAT_GSO | VNIC_FEAT_MULTI_BUF)
/*
 * Not an offload (interface 1.7): the driver takes completions only up to
 * the @head the card writes into the context; the card writes a batch's
 * descriptors, then the receivers' heads, then the senders', then fires
 * the interrupts, so what the driver takes is what the card recorded and a
 * restarted card resumes exactly (docs/restart.md, "Crash consistency").
 */
#define VNIC_FEAT_HEAD_WB		BIT(4)

/*
 * On a queue with VNIC_FEAT_VNET_HDR every frame, in both directions, starts
 * with Linux's struct virtio_net_hdr (little-endian, csum_start counted from
 * the Ethernet header); the frame limits above do not count it.
 */
#define VNIC_VNET_HDR_LEN		10
/* Longest GSO frame a send queue with VNIC_FEAT_GSO takes */
#define VNIC_GSO_MAX_FRAME		65600

/**
 * struct vnic_queue_ctx - operating state of one queue (64 bytes)
 * @ring: guest address of the descriptor ring; driver
 * @size: ring entries; driver
 * @state: VNIC_QCTX_STATE_*; card
 * @head: next descriptor the card processes; card
 * @tail: last doorbell value the card accepted; card
 * @error: VNIC_QERR_* code, 0 = none; card
 * @reserved0: 0
 * @features: VNIC_FEAT_* the queue uses, read when it starts; driver
 * @max_frame: receive queue: longest frame it takes (MTU + Ethernet header +
 *	one VLAN tag), longer ones the card drops and counts; 0 = no limit but
 *	the buffers'. Send queue: 0. Read when it starts; driver
 * @reserved2: 0
 * @packets: frames sent (SQ) or received (RQ); card
 * @bytes: bytes of those frames; card
 * @drops: SQ: frames the switch dropped; RQ: frames lost; card
 * @errors: times the queue entered the error state; card
 * @reserved1: 0
 *
 * It sits at the start of an A-byte slot of a context block; the driver
 * writes @ring, @size, @features and @max_frame with everything else zero
 * before it enables the queue, the card keeps the rest up to date while the
 * queue runs.
 */
struct vnic_queue_ctx {
	__le64 ring;
	__le16 size;
	__le16 state;
	__le16 head;
	__le16 tail;
	u8 error;
	u8 reserved0;
	__le16 features;
	__le16 max_frame;
	__le16 reserved2;
	__le64 packets;
	__le64 bytes;
	__le64 drops;
	__le64 errors;
	__le64 reserved1;
};

#define VNIC_QCTX_STATE_RUNNING		BIT(0)
#define VNIC_QCTX_STATE_ERROR		BIT(1)

static_assert(sizeof(struct vnic_queue_ctx) == 64);
static_assert(offsetof(struct vnic_queue_ctx, ring) == 0);
static_assert(offsetof(struct vnic_queue_ctx, size) == 8);
static_assert(offsetof(struct vnic_queue_ctx, state) == 10);
static_assert(offsetof(struct vnic_queue_ctx, head) == 12);
static_assert(offsetof(struct vnic_queue_ctx, tail) == 14);
static_assert(offsetof(struct vnic_queue_ctx, error) == 16);
static_assert(offsetof(struct vnic_queue_ctx, features) == 18);
static_assert(offsetof(struct vnic_queue_ctx, max_frame) == 20);
static_assert(offsetof(struct vnic_queue_ctx, reserved2) == 22);
static_assert(offsetof(struct vnic_queue_ctx, packets) == 24);
static_assert(offsetof(struct vnic_queue_ctx, bytes) == 32);
static_assert(offsetof(struct vnic_queue_ctx, drops) == 40);
static_assert(offsetof(struct vnic_queue_ctx, errors) == 48);
static_assert(offsetof(struct vnic_queue_ctx, reserved1) == 56);

/* Service types: which kind of context a BAT entry leads to */
#define VNIC_SVC_SQ_CTX			0
#define VNIC_SVC_RQ_CTX			1
#define VNIC_SVC_TYPES			2

/* The service number of queue pair q: service numbers are 1-based */
#define VNIC_SVC_NUM(q)			((q) + 1)

/**
 * struct vnic_bat_hdr - header of the Base Address Table (16 bytes)
 * @magic: VNIC_BAT_MAGIC
 * @types: number of struct vnic_bat_entry that follow, >= VNIC_SVC_TYPES
 * @doorbells: bus address of the driver's doorbell page (interface 1.4,
 *	vnic_doorbell.c), 4 KiB-aligned; 0: doorbells are register writes
 */
struct vnic_bat_hdr {
	__le32 magic;
	__le32 types;
	__le64 doorbells;
};

#define VNIC_BAT_MAGIC			0x31544142	/* "BAT1" */
#define VNIC_BAT_ALIGN			4096

static_assert(sizeof(struct vnic_bat_hdr) == 16);
static_assert(offsetof(struct vnic_bat_hdr, magic) == 0);
static_assert(offsetof(struct vnic_bat_hdr, types) == 4);
static_assert(offsetof(struct vnic_bat_hdr, doorbells) == 8);

/**
 * struct vnic_bat_entry - one service type of the BAT (32 bytes)
 * @clat: guest address of the top-level CLAT of this type
 * @entry_size: A, context slot size: a power of two, 64..@block_size
 * @block_size: B, block and CLAT size: a power of two, 4 KiB..2 MiB
 * @levels: CLAT levels, 1..VNIC_CLAT_MAX_LEVELS
 * @services: services of this type the tables hold
 * @reserved: 0
 *
 * Entry t of the BAT is at offset 16 + 32 * t. A CLAT holds B / 8 guest
 * addresses (__le64): of blocks at the last level, of CLATs above it.
 */
struct vnic_bat_entry {
	__le64 clat;
	__le32 entry_size;
	__le32 block_size;
	__le32 levels;
	__le32 services;
	__le64 reserved;
};

#define VNIC_CTX_SIZE_MIN		64
#define VNIC_BLOCK_SIZE_MIN		4096
#define VNIC_BLOCK_SIZE_MAX		(2 * 1024 * 1024)
#define VNIC_CLAT_MAX_LEVELS		4

static_assert(sizeof(struct vnic_bat_entry) == 32);
static_assert(offsetof(struct vnic_bat_entry, clat) == 0);
static_assert(offsetof(struct vnic_bat_entry, entry_size) == 8);
static_assert(offsetof(struct vnic_bat_entry, block_size) == 12);
static_assert(offsetof(struct vnic_bat_entry, levels) == 16);
static_assert(offsetof(struct vnic_bat_entry, services) == 20);
static_assert(offsetof(struct vnic_bat_entry, reserved) == 24);

/**
 * struct vnic_bat - the BAT as this driver lays it out
 * @hdr: header
 * @entry: one entry per service type
 */
struct vnic_bat {
	struct vnic_bat_hdr hdr;
	struct vnic_bat_entry entry[VNIC_SVC_TYPES];
};

static_assert(offsetof(struct vnic_bat, entry[1]) == 16 + 32);

#endif /* _VNIC_DESC_H_ */
