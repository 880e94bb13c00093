//! The PF admin mailbox: the guest's `ip link set <pf> vf N …` operations,
//! passed by the driver's ndo_set_vf_* through ADMIN_CMD/ADMIN_ARGn, carried
//! out with the same card operations as the control socket
//! (docs/management.md, "The PF admin channel").

use log::debug;

use crate::card::Card;
use crate::clientlog::Cause;
use crate::control::ops::{OpError, OpResult};
use crate::function::FunctionKind;
use crate::model::{Direction, LinkState, Mac, RatePolicy};
use crate::rate::Limiter;
use crate::regs::{AdminCmd, ADMIN_ARGS};

/// Admin operations (ADMIN_CMD bits 7:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminOp {
    SetMac = 1,
    SetVlan = 2,
    SetRate = 3,
    SetSpoofChk = 4,
    SetTrust = 5,
    SetLink = 6,
    GetConfig = 7,
}

impl AdminOp {
    fn from_u8(op: u8) -> Option<Self> {
        Some(match op {
            1 => AdminOp::SetMac,
            2 => AdminOp::SetVlan,
            3 => AdminOp::SetRate,
            4 => AdminOp::SetSpoofChk,
            5 => AdminOp::SetTrust,
            6 => AdminOp::SetLink,
            7 => AdminOp::GetConfig,
            _ => return None,
        })
    }
}

/// 802.1Q and 802.1ad tag protocols, as ndo_set_vf_vlan passes them.
const ETH_P_8021Q: u32 = 0x8100;
/// ARG0 of SET_VLAN: VLAN ID in bits 11:0 (QoS above it is not used: the
/// card has no priority queues).
const VLAN_VID_MASK: u32 = 0x0fff;
/// IFLA_VF_LINK_STATE_* values.
const LINK_AUTO: u32 = 0;
const LINK_ENABLE: u32 = 1;
const LINK_DISABLE: u32 = 2;
/// A VF's smallest TX burst under `max_tx_rate`: 64 KiB, or 10 ms at the rate.
const MIN_ADMIN_BURST: u64 = 64 * 1024;

/// The TX policy `ip link set … vf N max_tx_rate M` (Mbit/s) stands for.
pub fn max_tx_rate_policy(mbps: u32) -> RatePolicy {
    let kbps = u64::from(mbps) * 1000;
    RatePolicy {
        avg_kbps: kbps,
        peak_kbps: kbps,
        // bytes in 10 ms: kbit/s * 1000 / 8 / 100
        burst_bytes: (kbps * 10 / 8).max(MIN_ADMIN_BURST),
    }
}

fn mac_of(args: &[u32; ADMIN_ARGS]) -> Mac {
    let (lo, hi) = (args[0].to_le_bytes(), args[1].to_le_bytes());
    Mac([lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]])
}

impl Card {
    /// Runs the admin command function `pf` wrote, if any: ADMIN_STATUS and
    /// the result arguments hold the outcome before the client's next
    /// message is read.
    pub fn run_admin(&mut self, pf: usize) {
        let Some((cmd, args)) = self.functions_mut()[pf].take_admin() else {
            return;
        };
        let (status, results) = match self.admin(cmd, &args) {
            Ok(r) => (0, r),
            Err(e) => {
                let what = format_args!("admin command {cmd:?} refused: {e}");
                self.functions_mut()[pf].log(Cause::Refused, what);
                (e.errno() as u32, None)
            }
        };
        debug!("pf: admin command {cmd:?}: status {status}");
        self.functions_mut()[pf].admin_done(status, results);
    }

    fn admin(
        &mut self,
        cmd: AdminCmd,
        args: &[u32; ADMIN_ARGS],
    ) -> OpResult<Option<[u32; ADMIN_ARGS]>> {
        let op = AdminOp::from_u8(cmd.op()).ok_or(OpError::Unsupported("unknown admin op"))?;
        let name = FunctionKind::Vf(cmd.vf()).name();
        let f = self.enabled_index(&name)?;
        match op {
            AdminOp::SetMac => self.set_vnic(f, 0, Some(mac_of(args)), None)?,
            AdminOp::SetVlan => {
                if args[1] != ETH_P_8021Q && args[1] != 0 {
                    return Err(OpError::VlanProtocol(args[1]));
                }
                let vlan = (args[0] & VLAN_VID_MASK) as u16;
                self.set_vf_vlan(f, vlan)?;
            }
            AdminOp::SetRate => {
                if args[0] != 0 {
                    return Err(OpError::Unsupported(
                        "the card guarantees no minimum TX rate",
                    ));
                }
                let policy = (args[1] != 0).then(|| max_tx_rate_policy(args[1]));
                self.set_rate(f, Direction::Tx, policy)?;
            }
            AdminOp::SetSpoofChk => self.set_spoof_check(f, args[0] != 0),
            AdminOp::SetTrust => self.set_trust(f, args[0] != 0),
            AdminOp::SetLink => {
                let state = match args[0] {
                    LINK_AUTO => LinkState::Auto,
                    LINK_ENABLE => LinkState::Up,
                    LINK_DISABLE => LinkState::Down,
                    _ => return Err(OpError::Unsupported("unknown link state")),
                };
                self.set_link(f, state);
            }
            AdminOp::GetConfig => return Ok(Some(self.vf_config(f))),
        }
        Ok(None)
    }

    /// A VF-wide port VLAN: every vNIC of the VF, including those N does not
    /// enable now (so they get it when N grows).
    fn set_vf_vlan(&mut self, f: usize, vlan: u16) -> OpResult<()> {
        let n = self.functions()[f].queue_pairs().len() as u16;
        for q in 0..n {
            let mac = self.functions()[f].policy().vnics[q as usize].mac;
            self.check_address(f, q, mac, vlan)?;
        }
        for q in 0..n {
            self.set_vnic(f, q, None, Some(vlan))?;
        }
        let p = self.functions_mut()[f].policy_mut();
        for cfg in p.vnics.iter_mut().skip(n as usize) {
            cfg.vlan = vlan;
        }
        Ok(())
    }

    /// GET_CONFIG results (docs/management.md).
    fn vf_config(&self, f: usize) -> [u32; ADMIN_ARGS] {
        let func = &self.functions()[f];
        let p = func.policy();
        let mac = p.vnics[0].mac.0;
        let max_rate = p
            .tx_rate
            .as_ref()
            .map_or(0, |l: &Limiter| (l.policy().avg_kbps / 1000) as u32);
        let link = match p.link {
            LinkState::Auto => LINK_AUTO,
            LinkState::Up => LINK_ENABLE,
            LinkState::Down => LINK_DISABLE,
        };
        let flags = u32::from(self.switch().spoof_check(f)) | u32::from(p.trust) << 1 | link << 2;
        [
            u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            u32::from_le_bytes([mac[4], mac[5], 0, 0]),
            u32::from(p.vnics[0].vlan) & VLAN_VID_MASK,
            max_rate,
            0,
            flags,
        ]
    }
}
