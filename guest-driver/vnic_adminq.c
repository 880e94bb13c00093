// SPDX-License-Identifier: GPL-2.0
/*
 * vnic - the PF admin channel: VF configuration through the PF's mailbox.
 *
 * QEMU hides the SR-IOV capability, so the kernel counts no VFs on the PF;
 * rtnetlink still passes "ip link set <pf> vf N ..." to the ndo_set_vf_*
 * operations, which the PF's netdevs implement here. Each is one mailbox
 * command: the arguments into ADMIN_ARG0.., the operation and VF number into
 * ADMIN_CMD (the card runs the command while it handles that write), the
 * result from ADMIN_STATUS, 0 or a positive errno. A mutex keeps commands
 * (and GET_CONFIG's results) from interleaving.
 *
 * The card checks every request itself; the driver checks the VF number
 * against NUM_VFS and what it can check without the card (a unicast MAC,
 * the VLAN protocol, ranges) first, and trusts no status value it reads.
 */
#include <linux/bitfield.h>
#include <linux/err.h>
#include <linux/etherdevice.h>
#include <linux/if_link.h>
#include <linux/if_vlan.h>
#include <linux/netdevice.h>

#include "vnic.h"

static const char *vnic_admin_op_name(u32 op)
{
	switch (op) {
	case VNIC_ADMIN_OP_SET_MAC:
		return "SET_MAC";
	case VNIC_ADMIN_OP_SET_VLAN:
		return "SET_VLAN";
	case VNIC_ADMIN_OP_SET_RATE:
		return "SET_RATE";
	case VNIC_ADMIN_OP_SET_SPOOFCHK:
		return "SET_SPOOFCHK";
	case VNIC_ADMIN_OP_SET_TRUST:
		return "SET_TRUST";
	case VNIC_ADMIN_OP_SET_LINK:
		return "SET_LINK";
	case VNIC_ADMIN_OP_GET_CONFIG:
		return "GET_CONFIG";
	default:
		return "unknown";
	}
}

/*
 * Is @vf a VF the card has enabled? A VF that does not exist is -ENODEV, as
 * the card answers for one (docs/management.md), not -EINVAL.
 */
static int vnic_admin_check_vf(struct vnic_priv *priv, int vf)
{
	u32 num_vfs;

	if (priv->is_vf)
		return -EOPNOTSUPP;
	num_vfs = vnic_rd32(priv, VNIC_REG_NUM_VFS);
	/* All-ones: a card without the admin mailbox, or one that is gone */
	if (num_vfs == ~0U)
		return -EOPNOTSUPP;
	if (vf < 0 || (u32)vf >= num_vfs || vf > FIELD_MAX(VNIC_ADMIN_CMD_VF))
		return -ENODEV;
	return 0;
}

/**
 * vnic_admin_cmd - run one admin mailbox command
 * @priv: driver state of the PF
 * @op: VNIC_ADMIN_OP_*
 * @vf: VF number, checked against NUM_VFS
 * @args: arguments for ADMIN_ARG0 on
 * @nargs: number of @args
 * @res: results read from ADMIN_ARG0 on when the command succeeded
 * @nres: number of @res
 *
 * Return: 0, the negative errno the card returned, or -EOPNOTSUPP / -ENODEV
 * / -EIO when the card has no mailbox, @vf does not exist, or the status is
 * not an errno.
 */
static int vnic_admin_cmd(struct vnic_priv *priv, u32 op, int vf,
			  const u32 *args, unsigned int nargs,
			  u32 *res, unsigned int nres)
{
	unsigned int i;
	u32 status;
	int err;

	if (WARN_ON_ONCE(nargs > VNIC_ADMIN_NUM_ARGS ||
			 nres > VNIC_ADMIN_NUM_ARGS))
		return -EINVAL;
	err = vnic_admin_check_vf(priv, vf);
	if (err)
		return err;

	mutex_lock(&priv->admin_lock);
	for (i = 0; i < nargs; i++)
		vnic_wr32(priv, VNIC_REG_ADMIN_ARG(i), args[i]);
	vnic_wr32(priv, VNIC_REG_ADMIN_CMD,
		  FIELD_PREP(VNIC_ADMIN_CMD_OP, op) |
		  FIELD_PREP(VNIC_ADMIN_CMD_VF, vf));
	/* Same channel, in order: the read returns this command's result */
	status = vnic_rd32(priv, VNIC_REG_ADMIN_STATUS);
	if (!status)
		for (i = 0; i < nres; i++)
			res[i] = vnic_rd32(priv, VNIC_REG_ADMIN_ARG(i));
	mutex_unlock(&priv->admin_lock);

	if (!status)
		return 0;
	if (status > MAX_ERRNO) {
		pci_err(priv->pdev, "admin %s for VF %d: ADMIN_STATUS 0x%08x is not an errno\n",
			vnic_admin_op_name(op), vf, status);
		return -EIO;
	}
	pci_dbg(priv->pdev, "admin %s for VF %d: card says %d\n",
		vnic_admin_op_name(op), vf, -(int)status);
	return -(int)status;
}

static struct vnic_priv *vnic_admin_priv(struct net_device *netdev)
{
	struct vnic_port *port = netdev_priv(netdev);

	return port->priv;
}

/**
 * vnic_set_vf_mac - ndo_set_vf_mac: the MAC of the VF's vNIC 0
 * @netdev: a PF netdev
 * @vf: VF number
 * @mac: the new MAC, unicast
 *
 * Return: 0 or a negative errno.
 */
int vnic_set_vf_mac(struct net_device *netdev, int vf, u8 *mac)
{
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 args[2];
	int err;

	if (!is_valid_ether_addr(mac))
		return -EINVAL;
	args[0] = get_unaligned_le32(&mac[0]);
	args[1] = get_unaligned_le16(&mac[4]);
	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_SET_MAC, vf, args, 2, NULL, 0);
	if (!err)
		netdev_info(netdev, "VF %d: MAC %pM\n", vf, mac);
	return err;
}

/**
 * vnic_set_vf_vlan - ndo_set_vf_vlan: port VLAN of every vNIC of the VF
 * @netdev: a PF netdev
 * @vf: VF number
 * @vlan: VLAN ID, 0 for none
 * @qos: 802.1p priority (accepted, not used by the card)
 * @proto: tag protocol, 802.1Q only
 *
 * Return: 0 or a negative errno.
 */
int vnic_set_vf_vlan(struct net_device *netdev, int vf, u16 vlan, u8 qos,
		     __be16 proto)
{
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 args[2];
	int err;

	if (proto != htons(ETH_P_8021Q))
		return -EPROTONOSUPPORT;
	if (vlan > FIELD_MAX(VNIC_ADMIN_VLAN_VID) ||
	    qos > FIELD_MAX(VNIC_ADMIN_VLAN_QOS))
		return -EINVAL;
	args[0] = FIELD_PREP(VNIC_ADMIN_VLAN_VID, vlan) |
		  FIELD_PREP(VNIC_ADMIN_VLAN_QOS, qos);
	args[1] = ETH_P_8021Q;
	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_SET_VLAN, vf, args, 2,
			     NULL, 0);
	if (!err)
		netdev_info(netdev, "VF %d: port VLAN %u, QoS %u\n", vf, vlan,
			    qos);
	return err;
}

/**
 * vnic_set_vf_rate - ndo_set_vf_rate: the VF's send rate limit
 * @netdev: a PF netdev
 * @vf: VF number
 * @min_tx_rate: guaranteed rate, Mbit/s (the card guarantees none: 0 only)
 * @max_tx_rate: rate limit, Mbit/s, 0 for none
 *
 * Return: 0 or a negative errno.
 */
int vnic_set_vf_rate(struct net_device *netdev, int vf, int min_tx_rate,
		     int max_tx_rate)
{
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 args[2];
	int err;

	if (min_tx_rate < 0 || max_tx_rate < 0)
		return -EINVAL;
	args[0] = min_tx_rate;
	args[1] = max_tx_rate;
	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_SET_RATE, vf, args, 2,
			     NULL, 0);
	if (!err)
		netdev_info(netdev, "VF %d: TX rate min %d, max %d Mbit/s\n",
			    vf, min_tx_rate, max_tx_rate);
	return err;
}

/**
 * vnic_set_vf_spoofchk - ndo_set_vf_spoofchk
 * @netdev: a PF netdev
 * @vf: VF number
 * @setting: spoof check on
 *
 * Return: 0 or a negative errno.
 */
int vnic_set_vf_spoofchk(struct net_device *netdev, int vf, bool setting)
{
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 arg = setting;
	int err;

	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_SET_SPOOFCHK, vf, &arg, 1,
			     NULL, 0);
	if (!err)
		netdev_info(netdev, "VF %d: spoof check %s\n", vf,
			    setting ? "on" : "off");
	return err;
}

/**
 * vnic_set_vf_trust - ndo_set_vf_trust
 * @netdev: a PF netdev
 * @vf: VF number
 * @setting: trusted: the VF's driver may change its vNICs' MACs
 *
 * Return: 0 or a negative errno.
 */
int vnic_set_vf_trust(struct net_device *netdev, int vf, bool setting)
{
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 arg = setting;
	int err;

	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_SET_TRUST, vf, &arg, 1,
			     NULL, 0);
	if (!err)
		netdev_info(netdev, "VF %d: trust %s\n", vf,
			    setting ? "on" : "off");
	return err;
}

/**
 * vnic_set_vf_link_state - ndo_set_vf_link_state
 * @netdev: a PF netdev
 * @vf: VF number
 * @link_state: IFLA_VF_LINK_STATE_AUTO, _ENABLE or _DISABLE
 *
 * Return: 0 or a negative errno.
 */
int vnic_set_vf_link_state(struct net_device *netdev, int vf, int link_state)
{
	static const char * const names[] = {
		[IFLA_VF_LINK_STATE_AUTO] = "auto",
		[IFLA_VF_LINK_STATE_ENABLE] = "up",
		[IFLA_VF_LINK_STATE_DISABLE] = "down",
	};
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 arg;
	int err;

	if (link_state < 0 || (u32)link_state >= ARRAY_SIZE(names))
		return -EINVAL;
	arg = link_state;
	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_SET_LINK, vf, &arg, 1,
			     NULL, 0);
	if (!err)
		netdev_info(netdev, "VF %d: link %s\n", vf, names[link_state]);
	return err;
}

/**
 * vnic_get_vf_config - ndo_get_vf_config
 * @netdev: a PF netdev
 * @vf: VF number
 * @ivi: filled from GET_CONFIG
 *
 * Return: 0 or a negative errno.
 */
int vnic_get_vf_config(struct net_device *netdev, int vf,
		       struct ifla_vf_info *ivi)
{
	struct vnic_priv *priv = vnic_admin_priv(netdev);
	u32 res[VNIC_ADMIN_NUM_ARGS];
	int err;

	err = vnic_admin_cmd(priv, VNIC_ADMIN_OP_GET_CONFIG, vf, NULL, 0,
			     res, VNIC_ADMIN_NUM_ARGS);
	if (err)
		return err;

	ivi->vf = vf;
	put_unaligned_le32(res[0], &ivi->mac[0]);
	put_unaligned_le16(res[1] & 0xffff, &ivi->mac[4]);
	ivi->vlan = FIELD_GET(VNIC_ADMIN_VLAN_VID, res[2]);
	ivi->qos = FIELD_GET(VNIC_ADMIN_VLAN_QOS, res[2]);
	ivi->vlan_proto = htons(ETH_P_8021Q);
	ivi->max_tx_rate = res[3];
	ivi->min_tx_rate = res[4];
	ivi->spoofchk = !!(res[5] & VNIC_ADMIN_CFG_SPOOFCHK);
	ivi->trusted = !!(res[5] & VNIC_ADMIN_CFG_TRUST);
	ivi->linkstate = FIELD_GET(VNIC_ADMIN_CFG_LINK, res[5]);
	if (ivi->linkstate > IFLA_VF_LINK_STATE_DISABLE) {
		netdev_warn(netdev, "VF %d: card reports link state %u, showing auto\n",
			    vf, ivi->linkstate);
		ivi->linkstate = IFLA_VF_LINK_STATE_AUTO;
	}
	return 0;
}
