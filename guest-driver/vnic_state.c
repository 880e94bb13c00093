// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - device state in guest memory: the BAT, CLATs and context blocks.
 *
 * The card keeps no queue state of its own that matters: each queue's
 * context (ring base and size, head, tail, counters, state flags) lives in
 * guest memory, and the card finds it by walking
 *
 *   VCT[function] -> BAT -> CLAT (-> CLAT) -> block -> context slot
 *
 * so that all of it travels with guest memory when the VM migrates; on the
 * destination only the VCT entry has to be written again. The layout is the
 * contract of docs/datapath.md.
 *
 * With A bytes per context slot and B bytes per block, a block holds B / A
 * contexts and a CLAT B / 8 addresses. Service number n (1-based; queue pair
 * q is n = q + 1) lives in block (n - 1) / (B / A), slot (n - 1) % (B / A);
 * the block index written in base B / 8 gives the offset at each CLAT level.
 * The driver sizes the tables for QP_MAX services, not QP_NUM, so queue
 * pairs enabled later find their contexts already in place.
 */
#include <linux/dma-mapping.h>
#include <linux/log2.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>

#include "vnic.h"

/* B: blocks and CLATs are one page, the smallest the card accepts */
#define VNIC_BLOCK_SIZE		VNIC_BLOCK_SIZE_MIN

static unsigned int clat_levels = 1;
module_param(clat_levels, uint, 0444);
MODULE_PARM_DESC(clat_levels,
		 "CLAT levels of the context tables, 1 (default) or 2");

static unsigned int context_size = VNIC_CTX_SIZE_MIN;
module_param(context_size, uint, 0444);
MODULE_PARM_DESC(context_size,
		 "Bytes per queue-context slot: a power of two, 64 (default) to 4096; larger slots spread few queues over several blocks");

static int vnic_chunk_alloc(struct vnic_priv *priv,
			    struct vnic_dma_chunk *chunk, size_t size)
{
	/* Zeroed, and aligned to its (power-of-two) size by the DMA API */
	chunk->va = dma_alloc_coherent(&priv->pdev->dev, size, &chunk->dma,
				       GFP_KERNEL);
	if (!chunk->va)
		return -ENOMEM;
	if (WARN_ON_ONCE(chunk->dma & (size - 1))) {
		dma_free_coherent(&priv->pdev->dev, size, chunk->va,
				  chunk->dma);
		chunk->va = NULL;
		return -ENOMEM;
	}
	return 0;
}

static void vnic_chunk_free(struct vnic_priv *priv,
			    struct vnic_dma_chunk *chunk, size_t size)
{
	if (!chunk->va)
		return;
	dma_free_coherent(&priv->pdev->dev, size, chunk->va, chunk->dma);
	chunk->va = NULL;
}

static void vnic_svc_free(struct vnic_priv *priv, struct vnic_svc_tables *svc)
{
	struct vnic_state *st = &priv->state;
	unsigned int i;

	if (svc->blocks) {
		for (i = 0; i < svc->nr_blocks; i++)
			vnic_chunk_free(priv, &svc->blocks[i], st->block_size);
		kfree(svc->blocks);
		svc->blocks = NULL;
	}
	if (svc->l2) {
		for (i = 0; i < svc->nr_l2; i++)
			vnic_chunk_free(priv, &svc->l2[i], st->block_size);
		kfree(svc->l2);
		svc->l2 = NULL;
	}
	vnic_chunk_free(priv, &svc->top, st->block_size);
	svc->nr_blocks = 0;
	svc->nr_l2 = 0;
}

/* Build the CLAT tree and blocks of one service type. */
static int vnic_svc_alloc(struct vnic_priv *priv, struct vnic_svc_tables *svc)
{
	struct vnic_state *st = &priv->state;
	u32 per_block = st->block_size / st->ctx_size;
	u32 per_clat = st->block_size / sizeof(__le64);
	__le64 *clat;
	unsigned int i;
	int err;

	svc->nr_blocks = DIV_ROUND_UP(st->services, per_block);
	svc->nr_l2 = st->levels == 2 ? DIV_ROUND_UP(svc->nr_blocks, per_clat) : 0;
	if (svc->nr_blocks > per_clat * (st->levels == 2 ? per_clat : 1))
		return -E2BIG;

	svc->blocks = kcalloc(svc->nr_blocks, sizeof(*svc->blocks), GFP_KERNEL);
	if (!svc->blocks)
		return -ENOMEM;
	if (svc->nr_l2) {
		svc->l2 = kcalloc(svc->nr_l2, sizeof(*svc->l2), GFP_KERNEL);
		if (!svc->l2) {
			err = -ENOMEM;
			goto abort;
		}
	}

	err = vnic_chunk_alloc(priv, &svc->top, st->block_size);
	if (err)
		goto abort;
	for (i = 0; i < svc->nr_l2; i++) {
		err = vnic_chunk_alloc(priv, &svc->l2[i], st->block_size);
		if (err)
			goto abort;
		clat = svc->top.va;
		clat[i] = cpu_to_le64(svc->l2[i].dma);
	}
	for (i = 0; i < svc->nr_blocks; i++) {
		err = vnic_chunk_alloc(priv, &svc->blocks[i], st->block_size);
		if (err)
			goto abort;
		/* The last level lists the blocks in block-index order */
		if (svc->nr_l2)
			clat = svc->l2[i / per_clat].va;
		else
			clat = svc->top.va;
		clat[i % per_clat] = cpu_to_le64(svc->blocks[i].dma);
	}
	return 0;

abort:
	vnic_svc_free(priv, svc);
	return err;
}

static void vnic_state_free(struct vnic_priv *priv)
{
	struct vnic_state *st = &priv->state;
	int t;

	for (t = 0; t < VNIC_SVC_TYPES; t++)
		vnic_svc_free(priv, &st->svc[t]);
	vnic_chunk_free(priv, &st->db, VNIC_DB_PAGE_LEN);
	vnic_chunk_free(priv, &st->bat, VNIC_BAT_ALIGN);
}

static const char *vnic_vct_error_name(u32 code)
{
	switch (code) {
	case VNIC_VCT_ERR_UNREADABLE:
		return "BAT unreadable";
	case VNIC_VCT_ERR_MAGIC:
		return "bad BAT magic";
	case VNIC_VCT_ERR_TYPE:
		return "bad service-type entry";
	case ~0U:
		return "device not responding";
	default:
		return "unknown error";
	}
}

/**
 * vnic_state_write_vct - point the function's VCT entry at the BAT
 * @priv: driver state, tables built
 *
 * The card drops its cached contexts, checks the BAT and reloads every
 * context marked RUNNING.
 *
 * Return: 0 when VCT_STATUS reads 0 afterwards, -EIO otherwise.
 */
int vnic_state_write_vct(struct vnic_priv *priv)
{
	struct vnic_state *st = &priv->state;
	u32 status;

	/* LO first: writing HI commits the entry */
	vnic_wr32(priv, VNIC_REG_VCT_LO, lower_32_bits(st->bat.dma));
	vnic_wr32(priv, VNIC_REG_VCT_HI, upper_32_bits(st->bat.dma));
	st->vct_written = true;

	status = vnic_rd32(priv, VNIC_REG_VCT_STATUS);
	st->vct_ok = status == VNIC_VCT_OK;
	if (!st->vct_ok) {
		pci_err(priv->pdev, "card rejected the BAT at %pad: VCT_STATUS 0x%x (%s)\n",
			&st->bat.dma, status, vnic_vct_error_name(status));
		return -EIO;
	}
	return 0;
}

static void vnic_state_clear_vct(struct vnic_priv *priv)
{
	struct vnic_state *st = &priv->state;

	if (!st->vct_written)
		return;
	vnic_wr32(priv, VNIC_REG_VCT_LO, 0);
	vnic_wr32(priv, VNIC_REG_VCT_HI, 0);
	/* A read flushes the posted writes before the tables are freed */
	vnic_rd32(priv, VNIC_REG_VCT_STATUS);
	st->vct_written = false;
	st->vct_ok = false;
}

/**
 * vnic_state_init - build the BAT, CLATs and blocks and write the VCT entry
 * @priv: driver state, @priv->qp_max read from the card
 *
 * A card that rejects the BAT is logged and leaves @priv->state.vct_ok
 * clear: the function still probes, and starting a queue retries the VCT.
 *
 * Return: 0, or a negative errno when the tables cannot be built.
 */
int vnic_state_init(struct vnic_priv *priv)
{
	struct vnic_state *st = &priv->state;
	struct pci_dev *pdev = priv->pdev;
	struct vnic_bat *bat;
	int t, err;

	if (clat_levels < 1 || clat_levels > 2) {
		pci_err(pdev, "clat_levels=%u: must be 1 or 2\n", clat_levels);
		return -EINVAL;
	}
	if (!is_power_of_2(context_size) ||
	    context_size < VNIC_CTX_SIZE_MIN ||
	    context_size > VNIC_BLOCK_SIZE) {
		pci_err(pdev, "context_size=%u: must be a power of two in %u..%u\n",
			context_size, VNIC_CTX_SIZE_MIN, VNIC_BLOCK_SIZE);
		return -EINVAL;
	}

	memset(st, 0, sizeof(*st));
	st->ctx_size = context_size;
	st->block_size = VNIC_BLOCK_SIZE;
	st->levels = clat_levels;
	st->services = priv->qp_max;

	err = vnic_chunk_alloc(priv, &st->bat, VNIC_BAT_ALIGN);
	if (err)
		return err;

	for (t = 0; t < VNIC_SVC_TYPES; t++) {
		err = vnic_svc_alloc(priv, &st->svc[t]);
		if (err) {
			pci_err(pdev, "cannot build the context tables of service type %d: %d\n",
				t, err);
			goto abort;
		}
	}

	/* The doorbell page is an option: without it, register doorbells */
	if (vnic_db_guest_wanted(priv) &&
	    vnic_chunk_alloc(priv, &st->db, VNIC_DB_PAGE_LEN))
		pci_warn(pdev, "no memory for the doorbell page: register doorbells\n");

	bat = st->bat.va;
	bat->hdr.magic = cpu_to_le32(VNIC_BAT_MAGIC);
	bat->hdr.types = cpu_to_le32(VNIC_SVC_TYPES);
	bat->hdr.doorbells = cpu_to_le64(st->db.va ? st->db.dma : 0);
	for (t = 0; t < VNIC_SVC_TYPES; t++) {
		bat->entry[t].clat = cpu_to_le64(st->svc[t].top.dma);
		bat->entry[t].entry_size = cpu_to_le32(st->ctx_size);
		bat->entry[t].block_size = cpu_to_le32(st->block_size);
		bat->entry[t].levels = cpu_to_le32(st->levels);
		bat->entry[t].services = cpu_to_le32(st->services);
	}

	pci_info(pdev, "context tables: %u services per type, %u-byte slots, %u-byte blocks, %u block(s) per type, %u CLAT level(s)\n",
		 st->services, st->ctx_size, st->block_size,
		 st->svc[0].nr_blocks, st->levels);

	/* The iowrite32() of the VCT orders the table writes before it */
	vnic_state_write_vct(priv);
	return 0;

abort:
	vnic_state_free(priv);
	return err;
}

/**
 * vnic_state_exit - clear the VCT entry and free the tables
 * @priv: driver state; every queue already stopped
 */
void vnic_state_exit(struct vnic_priv *priv)
{
	vnic_state_clear_vct(priv);
	vnic_state_free(priv);
}

/**
 * vnic_state_ctx - the context of a queue
 * @priv: driver state
 * @type: VNIC_SVC_SQ_CTX or VNIC_SVC_RQ_CTX
 * @q: queue pair, < @priv->state.services
 *
 * Return: the context at the start of the queue's slot, or NULL.
 */
struct vnic_queue_ctx *vnic_state_ctx(struct vnic_priv *priv, u32 type,
				      u32 q)
{
	struct vnic_state *st = &priv->state;
	u32 per_block = st->block_size / st->ctx_size;
	u32 i = VNIC_SVC_NUM(q) - 1;
	struct vnic_svc_tables *svc;

	if (type >= VNIC_SVC_TYPES || q >= st->services)
		return NULL;
	svc = &st->svc[type];
	if (i / per_block >= svc->nr_blocks)
		return NULL;
	return svc->blocks[i / per_block].va + (i % per_block) * st->ctx_size;
}

/**
 * vnic_state_ctx_reset - prepare a stopped queue's context for enabling
 * @priv: driver state
 * @ctx: the context
 * @ring: bus address of the descriptor ring
 * @size: ring entries
 * @features: VNIC_FEAT_* offloads the queue uses (0: none)
 * @max_frame: a receive queue's longest frame (0: no limit; 0 for a send
 *	queue)
 *
 * Everything but the ring base, size, features and max_frame is zero: the
 * queue starts with head and tail 0 and fresh counters. QP_CTRL (an
 * iowrite32) orders these writes before the card reads the context. The
 * features and max_frame stay in the context, so a queue resumed from it
 * (migration) keeps them.
 */
void vnic_state_ctx_reset(struct vnic_priv *priv, struct vnic_queue_ctx *ctx,
			  dma_addr_t ring, u32 size, u16 features,
			  u16 max_frame)
{
	memset(ctx, 0, priv->state.ctx_size);
	ctx->ring = cpu_to_le64(ring);
	ctx->size = cpu_to_le16(size);
	ctx->features = cpu_to_le16(features);
	ctx->max_frame = cpu_to_le16(max_frame);
}

/**
 * vnic_state_ctx_stopped - mark a context as not running
 * @ctx: the context of a queue the card does not run
 *
 * The card clears RUNNING itself when it stops a queue; this covers a card
 * that never loaded the context. The rest stays for the card to read.
 */
void vnic_state_ctx_stopped(struct vnic_queue_ctx *ctx)
{
	u16 state = le16_to_cpu(READ_ONCE(ctx->state));

	WRITE_ONCE(ctx->state, cpu_to_le16(state & ~VNIC_QCTX_STATE_RUNNING));
}
