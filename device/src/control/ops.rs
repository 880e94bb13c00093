//! The card's management operations (docs/management.md). The control
//! socket, the configuration file and the PF admin mailbox all end here.
//!
//! Every operation checks everything first and only then changes the card,
//! so a refused request changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use log::info;
use serde_json::Value;

use crate::capture::{self, Capture, CaptureError, Scope};
use crate::card::Card;
use crate::control::api::{
    CaptureInfo, FdbEntry, FdbKind, FilterInfo, FunctionInfo, FunctionStatsInfo, Request,
    StatsInfo, VnicInfo, VnicStats,
};
use crate::fault::{Fault, FaultError, FaultInfo};
use crate::function::qp_counter;
use crate::model::{
    Direction, Event, GuestAddr, LinkState, Mac, RatePolicy, SuccessionInfo, Vlan, MAX_VLAN,
};
use crate::rate::{self, Limiter, PolicyError};
use crate::regs::{FnStat, QpStat};
use crate::switch::{EntryKind, Port, SwitchError};
use crate::vxlan::segment::SegmentError;
use crate::vxlan::{BadVni, Vni};

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no function {0:?} (functions are pf, vf0 ... vf{1})")]
    NoFunction(String, u16),
    #[error("{0} is disabled (NumVFs is {1})")]
    Disabled(String, u16),
    #[error("{name}: no vNIC {vnic} ({count} enabled)")]
    NoVnic { name: String, vnic: u16, count: u32 },
    #[error("{name}: {count} vNICs outside 1..={max}")]
    VnicCount { name: String, count: u32, max: u32 },
    #[error("the PF has one vNIC; N is set on VFs")]
    PfVnics,
    #[error("NumVFs {0} exceeds TotalVFs {1}")]
    TooManyVfs(u16, u16),
    #[error("{0} is not a usable unicast MAC address")]
    BadMac(Mac),
    #[error("VLAN {0} outside 0..={MAX_VLAN}")]
    BadVlan(Vlan),
    #[error("{0}: {1}")]
    Switch(String, SwitchError),
    #[error("{0} {1} rate policy: {2}")]
    Policy(String, Direction, PolicyError),
    #[error("a capture is already running into {0}")]
    CaptureRunning(PathBuf),
    #[error("no capture is running")]
    NoCapture,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{0}: {1}")]
    Migration(String, String),
    #[error("cannot hand the card over: {0}")]
    Succession(String),
    #[error("VLAN protocol {0:#06x} is not supported (only 802.1Q)")]
    VlanProtocol(u32),
    #[error(transparent)]
    Vni(#[from] BadVni),
    #[error("VNI {0} is already {1}'s (a VNI belongs to one VF)")]
    VniTaken(Vni, String),
    #[error("{0}: {1}")]
    Segment(String, SegmentError),
    #[error("the PF's attribute is VLAN; VxLAN is for VFs")]
    PfVxlan,
    #[error("a port VLAN goes with the VLAN attribute, not with VNI {0}")]
    VlanWithVni(Vni),
    #[error("no VxLAN entry for VNI {0} {1}")]
    NoVxlanEntry(Vni, Mac),
    #[error("{0}")]
    Vxlan(String),
    #[error("{0}: fault refused: {1}")]
    Fault(String, FaultError),
}

impl OpError {
    /// The errno the PF admin mailbox reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            OpError::NoFunction(..) | OpError::Disabled(..) => libc::ENODEV,
            OpError::Switch(_, SwitchError::Taken { .. })
            | OpError::Segment(_, SegmentError::Taken { .. }) => libc::EADDRINUSE,
            OpError::Unsupported(_) => libc::EOPNOTSUPP,
            OpError::VlanProtocol(_) => libc::EPROTONOSUPPORT,
            _ => libc::EINVAL,
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;

impl OpError {
    /// A vNIC's MAC that could not move, for function `name`.
    pub(crate) fn mac_move(name: String, e: crate::datapath::MacMoveError) -> OpError {
        match e {
            crate::datapath::MacMoveError::Switch(e) => OpError::Switch(name, e),
            crate::datapath::MacMoveError::Segment(e) => OpError::Segment(name, e),
        }
    }
}

impl From<crate::vxlan::BadEntry> for OpError {
    fn from(e: crate::vxlan::BadEntry) -> Self {
        match e {
            crate::vxlan::BadEntry::Mac(mac) => OpError::BadMac(mac),
            ip @ crate::vxlan::BadEntry::Ip(_) => OpError::Vxlan(ip.to_string()),
        }
    }
}

pub(crate) fn json<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("API types serialise")
}

impl Card {
    /// Carries out one control request (all but `subscribe`, which belongs
    /// to the connection) and returns its result.
    pub fn handle(&mut self, req: Request) -> OpResult<Value> {
        let done = Value::Null;
        Ok(match req {
            req @ (Request::SetVtep { .. }
            | Request::SetAttr { .. }
            | Request::VxlanList {}
            | Request::VxlanAdd { .. }
            | Request::VxlanDel { .. }
            | Request::VxlanSend { .. }
            | Request::VxlanDeliver { .. }
            | Request::UplinkSend { .. }) => self.handle_vxlan(req)?,
            Request::List {} => json(self.list()),
            Request::Show { function } => {
                let f = self.function_index(&function)?;
                json(self.function_info(f))
            }
            Request::SetNumVfs { count } => {
                self.set_num_vfs(count)?;
                done
            }
            Request::SetVnics { function, count } => {
                let f = self.enabled_index(&function)?;
                self.set_vnics(f, count)?;
                done
            }
            Request::SetVnic {
                function,
                vnic,
                mac,
                vlan,
            } => {
                let f = self.enabled_index(&function)?;
                self.set_vnic(f, vnic, mac, vlan)?;
                done
            }
            Request::FdbAdd {
                mac,
                vlan,
                function,
                vnic,
            } => {
                let f = self.enabled_index(&function)?;
                self.fdb_add(mac, vlan, f, vnic)?;
                done
            }
            Request::FdbDel { mac, vlan } => {
                self.switch_mut()
                    .remove_static(mac, vlan)
                    .map_err(|e| OpError::Switch("fdb".into(), e))?;
                done
            }
            Request::FdbList {} => json(self.fdb_list()),
            Request::SetRate {
                function,
                direction,
                policy,
            } => {
                let f = self.enabled_index(&function)?;
                self.set_rate(f, direction, policy)?;
                done
            }
            Request::SetSpoofCheck { function, on } => {
                let f = self.enabled_index(&function)?;
                self.set_spoof_check(f, on);
                done
            }
            Request::SetTrust { function, on } => {
                let f = self.enabled_index(&function)?;
                self.set_trust(f, on);
                done
            }
            Request::SetLink { function, state } => {
                let f = self.enabled_index(&function)?;
                self.set_link(f, state);
                done
            }
            Request::Stats { function } => {
                let only = function.map(|n| self.function_index(&n)).transpose()?;
                json(self.stats(only))
            }
            Request::CaptureStart { path, function } => {
                let scope = match function.as_deref() {
                    None => Scope::All,
                    Some(capture::UPLINK) => Scope::Uplink,
                    Some(name) => Scope::Function(self.function_index(name)?),
                };
                self.capture_start(path, scope)?;
                done
            }
            Request::CaptureStop {} => json(self.capture_stop()?),
            Request::Export {} => json(self.export()),
            Request::Apply { config } => {
                self.apply(&config)?;
                done
            }
            Request::Subscribe {} => {
                return Err(OpError::Unsupported("subscribe is a connection request"))
            }
            Request::Quiesce { function } => json(self.quiesce(function.as_deref())?),
            Request::Restart {} => {
                let exe = std::env::current_exe()
                    .map_err(|e| OpError::Succession(format!("cannot find vnicd's binary: {e}")))?;
                json(self.succeed(exe, false)?)
            }
            Request::Upgrade { path } => json(self.succeed(path, true)?),
            Request::Resume { function } => json(self.resume(function.as_deref())?),
            Request::Migrate { function, action } => {
                let f = self.enabled_index(&function)?;
                json(self.migrate(f, action)?)
            }
            Request::VctSet { function, address } => {
                let f = self.enabled_index(&function)?;
                json(self.vct_set(f, address))
            }
            Request::FaultInject { function, fault } => {
                let f = self.enabled_index(&function)?;
                json(self.fault_inject(f, fault)?)
            }
            Request::FaultClear { function } => {
                let f = self.enabled_index(&function)?;
                let name = self.name(f);
                self.functions_mut()[f].faults_mut().clear(&name);
                json(self.fault_info(f))
            }
            Request::FaultStatus { function } => {
                let f = self.function_index(&function)?;
                json(self.fault_info(f))
            }
        })
    }

    /// The index of the function called `name`.
    pub fn function_index(&self, name: &str) -> OpResult<usize> {
        self.functions()
            .iter()
            .position(|f| f.name() == name)
            .ok_or_else(|| OpError::NoFunction(name.into(), self.config().vfs.saturating_sub(1)))
    }

    /// Like [`Card::function_index`], but refuses a disabled VF.
    pub fn enabled_index(&self, name: &str) -> OpResult<usize> {
        let f = self.function_index(name)?;
        if !self.functions()[f].policy().enabled {
            return Err(OpError::Disabled(name.into(), self.num_vfs()));
        }
        Ok(f)
    }

    fn name(&self, f: usize) -> String {
        self.functions()[f].name().to_string()
    }

    fn check_vnic(&self, f: usize, vnic: u16) -> OpResult<()> {
        let count = self.functions()[f].queue_pairs().len() as u32;
        if u32::from(vnic) >= count {
            return Err(OpError::NoVnic {
                name: self.name(f),
                vnic,
                count,
            });
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<FunctionInfo> {
        (0..self.functions().len())
            .map(|f| self.function_info(f))
            .collect()
    }

    /// vNIC `port`'s receive filter, from the switch or its VNI segment.
    fn filter_info(&self, port: Port) -> Option<FilterInfo> {
        let view = self
            .switch()
            .filter(port)
            .or_else(|| self.vxlan().segments.filter(port))?;
        Some(FilterInfo {
            promisc: view.promisc,
            allmulti: view.allmulti,
            unicast: view.unicast,
            multicast: view.multicast,
        })
    }

    pub fn function_info(&self, f: usize) -> FunctionInfo {
        let func = &self.functions()[f];
        let p = func.policy();
        let vnics = func
            .queue_pairs()
            .iter()
            .map(|qp| {
                let port = Port {
                    function: f,
                    qp: qp.index,
                };
                VnicInfo {
                    vnic: qp.index,
                    mac: qp.mac,
                    vlan: p.vnics[qp.index as usize].vlan,
                    joined: self.switch().joined(port),
                    tx_running: qp.tx.running(),
                    rx_running: qp.rx.running(),
                    tx_error: qp.tx.error().map(|e| e.to_string()),
                    rx_error: qp.rx.error().map(|e| e.to_string()),
                    filter: self.filter_info(port),
                }
            })
            .collect();
        FunctionInfo {
            name: func.name().to_string(),
            enabled: p.enabled,
            attached: p.attached,
            memory_unshared: func.memory_unshared(),
            max_vnics: func.qp_max(),
            vnics,
            link: p.link,
            link_up: func.link_up(),
            spoof_check: self.switch().spoof_check(f),
            trust: p.trust,
            addresses: (self.switch().extra_addresses(f) + self.vxlan().segments.extra_addresses(f))
                as u32,
            max_addrs: p.max_addrs,
            tx_rate: p.tx_rate.as_ref().map(Limiter::policy),
            rx_rate: p.rx_rate.as_ref().map(Limiter::policy),
            vct: func.vct(),
            vct_status: func.vct_status(),
            vct_pending: func.pending_vct().map(GuestAddr),
            quiesced: func.quiesced(),
            vni: self.vxlan().segments.vni_of(f).map(Vni::get),
        }
    }

    /// Checks that vNIC `q` of function `f` can take `mac` in port VLAN
    /// `vlan`: a usable address that nothing else holds there (in the VNI
    /// segment instead, for a VF whose attribute is VxLAN).
    pub(crate) fn check_address(&self, f: usize, q: u16, mac: Mac, vlan: Vlan) -> OpResult<()> {
        if mac.is_multicast() || mac == Mac::default() {
            return Err(OpError::BadMac(mac));
        }
        if vlan > MAX_VLAN {
            return Err(OpError::BadVlan(vlan));
        }
        let port = Port { function: f, qp: q };
        if let Some(vni) = self.vxlan().segments.vni_of(f) {
            return self
                .vxlan()
                .segments
                .check(vni, port, mac)
                .map_err(|e| OpError::Segment(self.name(f), e));
        }
        if self.switch().lookup(mac, vlan).is_some_and(|p| p != port) {
            return Err(OpError::Switch(
                self.name(f),
                SwitchError::Taken { mac, vlan },
            ));
        }
        Ok(())
    }

    /// Puts vNIC `q` of function `f` on the switch with its configuration
    /// (into its VNI segment, for a VF whose attribute is VxLAN).
    pub(crate) fn add_port(&mut self, f: usize, q: u16) -> OpResult<()> {
        let cfg = self.functions()[f].policy().vnics[q as usize];
        let port = Port { function: f, qp: q };
        let name = self.name(f);
        if let Some(vni) = self.vxlan_mut().segments.vni_of(f) {
            self.vxlan_mut()
                .segments
                .add_port(vni, port, cfg.mac)
                .map_err(|e| OpError::Segment(name, e))?;
        } else {
            self.switch_mut()
                .add_port(port, cfg.mac)
                .and_then(|()| self.switch_mut().set_pvid(port, cfg.vlan))
                .map_err(|e| {
                    self.switch_mut().remove_port(port);
                    OpError::Switch(name, e)
                })?;
        }
        // Its driver's receive filter comes along.
        self.reapply_filter(port);
        Ok(())
    }

    /// Takes a vNIC off the switch or out of its VNI segment.
    pub(crate) fn remove_port(&mut self, port: Port) {
        self.switch_mut().remove_port(port);
        self.vxlan_mut().segments.remove_port(port);
    }

    /// SR-IOV NumVFs: VFs `0..count` enabled, the rest disabled. The
    /// server then removes or creates their sockets.
    pub fn set_num_vfs(&mut self, count: u16) -> OpResult<()> {
        let total = self.config().vfs;
        if count > total {
            return Err(OpError::TooManyVfs(count, total));
        }
        // VFs being enabled must get their addresses back.
        let mut claimed = Vec::new();
        for f in 1..=usize::from(count) {
            if self.functions()[f].policy().enabled {
                continue;
            }
            let vnics: Vec<u16> = self.functions()[f]
                .queue_pairs()
                .iter()
                .map(|qp| qp.index)
                .collect();
            for vnic in vnics {
                let cfg = self.functions()[f].policy().vnics[usize::from(vnic)];
                self.check_address(f, vnic, cfg.mac, cfg.vlan)?;
                if claimed.contains(&(cfg.mac, cfg.vlan)) {
                    let e = SwitchError::Taken {
                        mac: cfg.mac,
                        vlan: cfg.vlan,
                    };
                    return Err(OpError::Switch(self.name(f), e));
                }
                claimed.push((cfg.mac, cfg.vlan));
            }
        }
        for f in 1..self.functions().len() {
            let enable = f <= usize::from(count);
            if self.functions()[f].policy().enabled == enable {
                continue;
            }
            self.functions_mut()[f].policy_mut().enabled = enable;
            let nqp = self.functions()[f].queue_pairs().len() as u16;
            for q in 0..nqp {
                if enable {
                    self.add_port(f, q)?;
                } else {
                    self.remove_port(Port { function: f, qp: q });
                }
            }
            info!(
                "{}: {}",
                self.name(f),
                if enable { "enabled" } else { "disabled" }
            );
        }
        self.record_num_vfs(count);
        self.functions_mut()[0].set_num_vfs(count);
        self.push_event(Event::VfsChanged { num_vfs: count });
        Ok(())
    }

    /// Changes N of VF `f`; raises the configuration-change interrupt.
    pub fn set_vnics(&mut self, f: usize, count: u32) -> OpResult<()> {
        if f == 0 {
            return Err(OpError::PfVnics);
        }
        let max = self.functions()[f].qp_max();
        if !(1..=max).contains(&count) {
            return Err(OpError::VnicCount {
                name: self.name(f),
                count,
                max,
            });
        }
        let old = self.functions()[f].queue_pairs().len() as u32;
        for q in old..count {
            let cfg = self.functions()[f].policy().vnics[q as usize];
            self.check_address(f, q as u16, cfg.mac, cfg.vlan)?;
        }
        for q in self.functions_mut()[f].set_qp_num(count) {
            self.remove_port(Port { function: f, qp: q });
        }
        for q in old..count {
            self.add_port(f, q as u16)?;
        }
        if !self.functions()[f].any_kicked() {
            self.datapath_mut().unqueue(f);
        }
        self.push_event(Event::VnicsChanged {
            function: self.name(f),
            count,
        });
        Ok(())
    }

    /// Sets a vNIC's MAC and/or port VLAN.
    pub fn set_vnic(
        &mut self,
        f: usize,
        q: u16,
        mac: Option<Mac>,
        vlan: Option<Vlan>,
    ) -> OpResult<()> {
        self.check_vnic(f, q)?;
        let cur = self.functions()[f].policy().vnics[q as usize];
        let (mac, vlan) = (mac.unwrap_or(cur.mac), vlan.unwrap_or(cur.vlan));
        self.check_address(f, q, mac, vlan)?;
        let port = Port { function: f, qp: q };
        let name = self.name(f);
        if self.vxlan().is_vxlan_vf(f) {
            return self.set_vxlan_vnic(f, q, mac, vlan);
        }
        if vlan == cur.vlan && mac != cur.mac {
            // The VLANs the guest joined move with the MAC: all must be free.
            self.switch_mut()
                .check_mac(port, mac)
                .map_err(|e| OpError::Switch(name.clone(), e))?;
        }
        if vlan != cur.vlan {
            // Leaves the joined VLANs, so the MAC below has only its home.
            self.switch_mut()
                .set_pvid(port, vlan)
                .map_err(|e| OpError::Switch(name.clone(), e))?;
            self.functions_mut()[f].policy_mut().vnics[q as usize].vlan = vlan;
        }
        if mac != cur.mac {
            self.move_vnic_mac(port, mac)
                .map_err(|e| OpError::mac_move(name.clone(), e))?;
        }
        info!("{name}: vNIC {q} MAC {mac} VLAN {vlan}");
        self.push_event(Event::VnicChanged {
            function: name,
            vnic: q,
            mac,
            vlan,
        });
        Ok(())
    }

    pub fn fdb_add(&mut self, mac: Mac, vlan: Vlan, f: usize, q: u16) -> OpResult<()> {
        self.check_vnic(f, q)?;
        if vlan > MAX_VLAN {
            return Err(OpError::BadVlan(vlan));
        }
        let port = Port { function: f, qp: q };
        self.switch_mut()
            .add_static(mac, vlan, port)
            .map_err(|e| OpError::Switch("fdb".into(), e))
    }

    pub fn fdb_list(&self) -> Vec<FdbEntry> {
        self.switch()
            .entries()
            .into_iter()
            .map(|(mac, vlan, e)| FdbEntry {
                mac,
                vlan,
                function: self.name(e.port.function),
                vnic: e.port.qp,
                kind: match e.kind {
                    EntryKind::Own => FdbKind::Own,
                    EntryKind::Joined => FdbKind::Joined,
                    EntryKind::Static => FdbKind::Static,
                },
            })
            .collect()
    }

    pub fn set_rate(
        &mut self,
        f: usize,
        direction: Direction,
        policy: Option<RatePolicy>,
    ) -> OpResult<()> {
        if let Some(p) = &policy {
            rate::validate(p).map_err(|e| OpError::Policy(self.name(f), direction, e))?;
        }
        let limiter = policy.map(|p| Limiter::new(p, Instant::now()));
        let pol = self.functions_mut()[f].policy_mut();
        match direction {
            Direction::Tx => pol.tx_rate = limiter,
            Direction::Rx => pol.rx_rate = limiter,
        }
        if direction == Direction::Tx && policy.is_none() {
            // Nothing holds the function back any more.
            self.datapath_mut().release(f);
            self.queue_tx(f);
        }
        info!("{}: {direction} rate policy {policy:?}", self.name(f));
        self.push_event(Event::PolicyChanged {
            function: self.name(f),
        });
        Ok(())
    }

    pub fn set_spoof_check(&mut self, f: usize, on: bool) {
        self.switch_mut().set_spoof_check(f, on);
        info!(
            "{}: spoof check {}",
            self.name(f),
            if on { "on" } else { "off" }
        );
        self.push_event(Event::PolicyChanged {
            function: self.name(f),
        });
    }

    pub fn set_trust(&mut self, f: usize, on: bool) {
        self.functions_mut()[f].policy_mut().trust = on;
        info!("{}: trust {}", self.name(f), if on { "on" } else { "off" });
        // What its vNICs may receive changes with it.
        for qp in 0..self.functions()[f].queue_pairs().len() as u16 {
            self.reapply_filter(Port { function: f, qp });
        }
        self.push_event(Event::PolicyChanged {
            function: self.name(f),
        });
    }

    pub fn set_link(&mut self, f: usize, state: LinkState) {
        let was = self.functions()[f].link_up();
        self.functions_mut()[f].set_link(state);
        let up = self.functions()[f].link_up();
        if up != was {
            self.push_event(Event::LinkChanged {
                function: self.name(f),
                up,
            });
        }
    }

    /// Injects `fault` into function `f` (docs/fault-injection.md): the
    /// link and removal at once, the counted faults armed for the data and
    /// interrupt paths.
    pub fn fault_inject(&mut self, f: usize, fault: Fault) -> OpResult<FaultInfo> {
        let name = self.name(f);
        fault
            .validate()
            .map_err(|e| OpError::Fault(name.clone(), e))?;
        let removed = self.functions()[f].faults().removed();
        match fault {
            Fault::LinkDown {} => self.set_link(f, LinkState::Down),
            Fault::LinkUp {} => self.set_link(f, LinkState::Auto),
            Fault::Remove {} if removed => return Err(OpError::Fault(name, FaultError::Removed)),
            Fault::Remove {} => {
                self.functions_mut()[f].remove();
                self.datapath_mut().unqueue(f);
            }
            Fault::Reinsert {} if !removed => {
                return Err(OpError::Fault(name, FaultError::NotRemoved))
            }
            Fault::Reinsert {} => {
                self.functions_mut()[f].reinsert();
                self.apply_switch_ops(f);
            }
            _ => self.functions_mut()[f].faults_mut().arm(&name, fault),
        }
        Ok(self.fault_info(f))
    }

    /// What is armed on function `f` and what was injected so far.
    pub fn fault_info(&self, f: usize) -> FaultInfo {
        let faults = self.functions()[f].faults();
        FaultInfo {
            function: self.name(f),
            armed: faults.armed(),
            counters: faults.counters(),
        }
    }

    /// `restart`, `upgrade`: checks that a keeper can start a worker from
    /// `binary`, then asks for the hand-over.
    fn succeed(&mut self, binary: PathBuf, upgrade: bool) -> OpResult<SuccessionInfo> {
        if let Some(f) = self.functions().iter().find(|f| f.migrating()) {
            // The mode's batches, held interrupts and unanswered writes are
            // not in the state record: a new worker would write directly.
            return Err(OpError::Succession(format!(
                "{} is in live-migration mode: end it (vnicctl migrate switchover or end) \
                 before a restart",
                f.name()
            )));
        }
        let w = self.worker();
        if !w.kept {
            return Err(OpError::Succession(
                "this vnicd runs without a keeper (--no-keeper): nothing would outlive the \
                 worker"
                    .into(),
            ));
        }
        if !w.keeper && upgrade {
            return Err(OpError::Succession(
                "under systemd the new binary is the one ExecStart= names: install it there \
                 and run vnicctl restart"
                    .into(),
            ));
        }
        if !binary.is_absolute() {
            return Err(OpError::Succession(format!(
                "{} is not an absolute path",
                binary.display()
            )));
        }
        let meta = std::fs::metadata(&binary)
            .map_err(|e| OpError::Succession(format!("{}: {e}", binary.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(OpError::Succession(format!(
                "{} is not an executable file",
                binary.display()
            )));
        }
        let pid = w.pid;
        self.request_succession(binary.clone());
        Ok(SuccessionInfo {
            pid,
            successor: binary,
        })
    }

    pub fn stats(&self, only: Option<usize>) -> StatsInfo {
        let c = *self.counters();
        let card = [
            ("frames_switched", c.datapath.switched),
            ("flooded", c.datapath.flooded),
            ("unknown_unicast", c.datapath.unknown_unicast),
            ("fast_path", c.datapath.fast_path),
            ("fdb_entries", self.switch().len() as u64),
            ("num_vfs", u64::from(self.num_vfs())),
            ("vxlan_macs", self.vxlan().tables.len() as u64),
            ("vxlan_tunnels", self.vxlan().tables.tunnel_count() as u64),
            ("worker_restarts", u64::from(self.worker().restarts)),
        ]
        .into_iter()
        .chain(self.uplink().counters.named())
        .chain(self.vxlan().counters.named())
        .chain(self.vxlan().exception.named())
        .chain(c.control.named());
        let functions = (0..self.functions().len())
            .filter(|f| only.is_none_or(|o| o == *f))
            .map(|f| self.function_stats(f))
            .collect();
        StatsInfo {
            card: card.map(|(k, v)| (k.to_string(), v)).collect(),
            worker: Some(self.worker().clone()),
            capture: self.capture_info(),
            functions,
        }
    }

    fn function_stats(&self, f: usize) -> FunctionStatsInfo {
        let func = &self.functions()[f];
        let c = func.counters();
        let s = func.stats();
        let mut counters: std::collections::BTreeMap<String, u64> = FnStat::ALL
            .iter()
            .map(|&st| (st.name().to_string(), c.get(st)))
            .collect();
        for (k, v) in func.faults().counters().named() {
            counters.insert(k.into(), v);
        }
        for (k, v) in [
            ("bad_mmio", s.bad_mmio),
            ("protocol_errors", s.protocol_errors),
            ("dma_lost", s.dma_lost),
            ("irqs_sent", s.irqs_sent),
            ("irqs_dropped", s.irqs_dropped),
            ("resets", s.resets),
        ] {
            counters.insert(k.into(), v);
        }
        let vnics = func
            .queue_pairs()
            .iter()
            .map(|qp| VnicStats {
                vnic: qp.index,
                counters: QpStat::ALL
                    .iter()
                    .map(|&st| (st.name().to_string(), qp_counter(qp, st)))
                    .collect(),
            })
            .collect();
        FunctionStatsInfo {
            name: func.name().to_string(),
            counters,
            vnics,
        }
    }

    fn capture_info(&self) -> Option<CaptureInfo> {
        self.capture().map(|c| CaptureInfo {
            path: c.path().to_path_buf(),
            function: match c.scope() {
                Scope::All => None,
                Scope::Function(f) => Some(self.name(f)),
                Scope::Uplink => Some(capture::UPLINK.to_string()),
            },
            frames: c.frames(),
        })
    }

    pub fn capture_start(&mut self, path: PathBuf, scope: Scope) -> OpResult<()> {
        if let Some(c) = self.capture() {
            return Err(OpError::CaptureRunning(c.path().to_path_buf()));
        }
        *self.capture_mut() = Some(Capture::start(&path, scope)?);
        info!("capture into {} started", path.display());
        self.push_event(Event::CaptureStarted { path });
        Ok(())
    }

    pub fn capture_stop(&mut self) -> OpResult<CaptureInfo> {
        let info = self.capture_info().ok_or(OpError::NoCapture)?;
        let frames = self.capture_mut().take().map_or(0, Capture::stop);
        info!(
            "capture into {} stopped: {frames} frames",
            info.path.display()
        );
        self.push_event(Event::CaptureStopped {
            path: info.path.clone(),
            frames,
        });
        Ok(CaptureInfo { frames, ..info })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardConfig;
    use crate::regs::{IrqCause, Reg};

    fn card() -> Card {
        Card::new(CardConfig::default()).unwrap()
    }

    fn req(card: &mut Card, json: &str) -> OpResult<Value> {
        card.handle(serde_json::from_str(json).expect("request parses"))
    }

    fn err(card: &mut Card, json: &str) -> String {
        req(card, json).expect_err(json).to_string()
    }

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    fn cause(card: &Card, f: usize) -> IrqCause {
        IrqCause::from_bits(card.functions()[f].bar0().read_reg(Reg::IrqCause))
    }

    #[test]
    fn list_and_show_describe_every_function() {
        let mut c = card();
        let list: Vec<FunctionInfo> =
            serde_json::from_value(req(&mut c, r#"{"op":"list"}"#).unwrap()).unwrap();
        assert_eq!(list.len(), 5);
        assert_eq!(list[1].name, "vf0");
        assert_eq!(list[1].vnics.len(), 2);
        assert_eq!(list[1].max_vnics, 8);
        assert!(list[1].enabled && !list[1].attached && list[1].spoof_check);
        let show: FunctionInfo =
            serde_json::from_value(req(&mut c, r#"{"op":"show","function":"vf1"}"#).unwrap())
                .unwrap();
        assert_eq!(show.vnics[1].mac, mac("02:76:6e:00:02:01"));
        assert!(err(&mut c, r#"{"op":"show","function":"vf9"}"#).contains("no function"));
    }

    #[test]
    fn set_vnics_grows_and_shrinks_with_a_config_interrupt() {
        let mut c = card();
        req(&mut c, r#"{"op":"set-vnics","function":"vf0","count":3}"#).unwrap();
        assert_eq!(c.functions()[1].queue_pairs().len(), 3);
        assert_eq!(c.functions()[1].bar0().read_reg(Reg::QpNum), 3);
        assert!(cause(&c, 1).config());
        let new = mac("02:76:6e:00:01:02");
        assert_eq!(c.switch().lookup(new, 0), Some(Port { function: 1, qp: 2 }));
        req(&mut c, r#"{"op":"set-vnics","function":"vf0","count":1}"#).unwrap();
        assert_eq!(c.functions()[1].queue_pairs().len(), 1);
        assert_eq!(
            c.switch().lookup(new, 0),
            None,
            "removed vNICs leave the switch"
        );
        assert_eq!(
            c.take_events().last(),
            Some(&Event::VnicsChanged {
                function: "vf0".into(),
                count: 1
            })
        );
    }

    #[test]
    fn set_vnics_refuses_bad_counts_the_pf_and_taken_addresses() {
        let mut c = card();
        assert!(
            err(&mut c, r#"{"op":"set-vnics","function":"vf0","count":9}"#)
                .contains("9 vNICs outside 1..=8")
        );
        assert!(
            err(&mut c, r#"{"op":"set-vnics","function":"vf0","count":0}"#).contains("0 vNICs")
        );
        assert!(err(&mut c, r#"{"op":"set-vnics","function":"pf","count":2}"#).contains("PF"));
        // A static entry holds vNIC 2's default address: growing is refused.
        req(
            &mut c,
            r#"{"op":"fdb-add","mac":"02:76:6e:00:01:02","function":"vf1","vnic":0}"#,
        )
        .unwrap();
        assert!(
            err(&mut c, r#"{"op":"set-vnics","function":"vf0","count":3}"#)
                .contains("already belongs")
        );
        assert_eq!(c.functions()[1].queue_pairs().len(), 2, "unchanged");
        assert!(!cause(&c, 1).config());
    }

    #[test]
    fn set_vnic_changes_mac_and_port_vlan_or_nothing() {
        let mut c = card();
        req(
            &mut c,
            r#"{"op":"set-vnic","function":"vf1","vnic":0,"mac":"02:00:00:00:00:42","vlan":7}"#,
        )
        .unwrap();
        let p = Port { function: 2, qp: 0 };
        assert_eq!(c.switch().lookup(mac("02:00:00:00:00:42"), 7), Some(p));
        assert_eq!(c.switch().pvid(p), 7);
        assert_eq!(
            c.functions()[2].queue_pairs()[0].mac,
            mac("02:00:00:00:00:42")
        );
        assert_eq!(c.functions()[2].bar0().read_reg(Reg::MacHi), 0x4200);
        assert!(cause(&c, 2).config());
        for (bad, why) in [
            (r#""mac":"01:00:5e:00:00:01""#, "not a usable unicast"),
            (r#""mac":"00:00:00:00:00:00""#, "not a usable unicast"),
            (r#""vlan":4095"#, "VLAN 4095"),
            (r#""mac":"02:76:6e:00:01:00","vlan":0"#, "already belongs"),
        ] {
            let r = format!(r#"{{"op":"set-vnic","function":"vf1","vnic":0,{bad}}}"#);
            assert!(err(&mut c, &r).contains(why), "{bad}");
        }
        assert!(err(
            &mut c,
            r#"{"op":"set-vnic","function":"vf1","vnic":2,"vlan":1}"#
        )
        .contains("no vNIC 2"));
        assert_eq!(c.switch().pvid(p), 7, "unchanged");
    }

    #[test]
    fn fdb_add_list_del_and_their_errors() {
        let mut c = card();
        req(
            &mut c,
            r#"{"op":"fdb-add","mac":"02:00:00:00:00:09","vlan":3,"function":"vf2","vnic":1}"#,
        )
        .unwrap();
        let list: Vec<FdbEntry> =
            serde_json::from_value(req(&mut c, r#"{"op":"fdb-list"}"#).unwrap()).unwrap();
        let s: Vec<_> = list.iter().filter(|e| e.kind == FdbKind::Static).collect();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].function.as_str(), s[0].vnic, s[0].vlan),
            ("vf2", 1, 3)
        );
        assert_eq!(list.iter().filter(|e| e.kind == FdbKind::Own).count(), 9);
        assert!(err(
            &mut c,
            r#"{"op":"fdb-add","mac":"02:00:00:00:00:09","vlan":3,"function":"vf1","vnic":0}"#
        )
        .contains("already belongs"));
        assert!(err(
            &mut c,
            r#"{"op":"fdb-add","mac":"02:00:00:00:00:0a","function":"vf1","vnic":5}"#
        )
        .contains("no vNIC 5"));
        assert!(err(
            &mut c,
            r#"{"op":"fdb-add","mac":"ff:ff:ff:ff:ff:ff","function":"vf1","vnic":0}"#
        )
        .contains("multicast"));
        assert!(err(&mut c, r#"{"op":"fdb-del","mac":"02:76:6e:00:01:00"}"#)
            .contains("change the vNIC instead"));
        req(
            &mut c,
            r#"{"op":"fdb-del","mac":"02:00:00:00:00:09","vlan":3}"#,
        )
        .unwrap();
        assert!(err(
            &mut c,
            r#"{"op":"fdb-del","mac":"02:00:00:00:00:09","vlan":3}"#
        )
        .contains("no static entry"));
    }

    #[test]
    fn rate_policies_are_checked_set_and_cleared() {
        let mut c = card();
        req(
            &mut c,
            r#"{"op":"set-rate","function":"vf0","direction":"rx","policy":{"avg_kbps":1000,"peak_kbps":2000,"burst_bytes":20000}}"#,
        )
        .unwrap();
        let p = c.functions()[1].policy().rx_rate.as_ref().unwrap().policy();
        assert_eq!(
            (p.avg_kbps, p.peak_kbps, p.burst_bytes),
            (1000, 2000, 20000)
        );
        for (bad, why) in [
            (r#"{"avg_kbps":0,"burst_bytes":20000}"#, "above 0"),
            (
                r#"{"avg_kbps":10,"peak_kbps":5,"burst_bytes":20000}"#,
                "below the average",
            ),
            (
                r#"{"avg_kbps":10,"burst_bytes":100}"#,
                "smaller than one maximum frame",
            ),
        ] {
            let r =
                format!(r#"{{"op":"set-rate","function":"vf0","direction":"tx","policy":{bad}}}"#);
            assert!(err(&mut c, &r).contains(why), "{bad}");
        }
        assert!(c.functions()[1].policy().tx_rate.is_none(), "unchanged");
        req(
            &mut c,
            r#"{"op":"set-rate","function":"vf0","direction":"rx","policy":null}"#,
        )
        .unwrap();
        assert!(c.functions()[1].policy().rx_rate.is_none());
    }

    #[test]
    fn spoof_check_trust_and_link() {
        let mut c = card();
        req(
            &mut c,
            r#"{"op":"set-spoof-check","function":"vf1","on":false}"#,
        )
        .unwrap();
        assert!(!c.switch().spoof_check(2));
        req(&mut c, r#"{"op":"set-trust","function":"vf1","on":true}"#).unwrap();
        assert!(c.functions()[2].policy().trust);
        req(
            &mut c,
            r#"{"op":"set-link","function":"vf1","state":"down"}"#,
        )
        .unwrap();
        assert!(!c.functions()[2].link_up());
        assert!(cause(&c, 2).link());
        assert_eq!(c.functions()[2].bar0().read_reg(Reg::Status) & 1, 0);
        req(
            &mut c,
            r#"{"op":"set-link","function":"vf1","state":"auto"}"#,
        )
        .unwrap();
        assert!(c.functions()[2].link_up());
        assert!(serde_json::from_str::<Request>(
            r#"{"op":"set-link","function":"vf1","state":"sideways"}"#
        )
        .is_err());
        let e = c.take_events();
        assert!(e.contains(&Event::LinkChanged {
            function: "vf1".into(),
            up: false
        }));
    }

    #[test]
    fn num_vfs_disables_and_reenables_vfs_in_the_sriov_capability() {
        let mut c = card();
        req(&mut c, r#"{"op":"set-num-vfs","count":1}"#).unwrap();
        assert!(c.functions()[1].policy().enabled);
        assert!(!c.functions()[2].policy().enabled);
        assert_eq!(c.switch().lookup(mac("02:76:6e:00:02:00"), 0), None);
        assert_eq!(c.functions()[0].bar0().read_reg(Reg::NumVfs), 1);
        let cfg = c.functions()[0].config();
        let (_, o) = crate::pci::caps::walk_ext(cfg.bytes())
            .into_iter()
            .find(|(id, _)| *id == crate::pci::caps::EXT_CAP_ID_SRIOV)
            .unwrap();
        assert_eq!(cfg.u16(o + crate::pci::caps::sriov::NUM_VFS), 1);
        assert!(
            err(&mut c, r#"{"op":"set-trust","function":"vf2","on":true}"#).contains("disabled")
        );
        assert!(err(&mut c, r#"{"op":"set-num-vfs","count":5}"#).contains("TotalVFs 4"));
        req(&mut c, r#"{"op":"set-num-vfs","count":0}"#).unwrap();
        let cfg = c.functions()[0].config();
        assert_eq!(
            cfg.u16(o + crate::pci::caps::sriov::CTRL) & crate::pci::caps::sriov::CTRL_VFE,
            0
        );
        req(&mut c, r#"{"op":"set-num-vfs","count":4}"#).unwrap();
        assert_eq!(
            c.switch().lookup(mac("02:76:6e:00:02:00"), 0),
            Some(Port { function: 2, qp: 0 })
        );
    }

    #[test]
    fn stats_report_every_drop_reason_per_function_and_queue() {
        let mut c = card();
        let s: StatsInfo =
            serde_json::from_value(req(&mut c, r#"{"op":"stats","function":"vf0"}"#).unwrap())
                .unwrap();
        assert_eq!(s.functions.len(), 1);
        let f = &s.functions[0];
        for k in [
            "spoof_drops",
            "vlan_drops",
            "malformed_drops",
            "hairpin_drops",
            "link_drops",
            "rx_rate_drops",
            "rx_drops",
            "queue_errors",
            "tx_shaped",
        ] {
            assert!(f.counters.contains_key(k), "{k}");
        }
        assert_eq!(f.vnics.len(), 2);
        assert!(f.vnics[0].counters.contains_key("rx_drops"));
        assert!(s.card.contains_key("frames_switched"));
    }

    #[test]
    fn fault_requests_arm_report_and_refuse_bad_arguments() {
        let mut c = card();
        let info: FaultInfo = serde_json::from_value(
            req(
                &mut c,
                r#"{"op":"fault-inject","function":"vf0","fault":{"type":"drop-frames","direction":"rx","count":3}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (info.function.as_str(), info.armed.drop_frames.rx),
            ("vf0", 3)
        );
        req(
            &mut c,
            r#"{"op":"fault-inject","function":"vf0","fault":{"type":"link-down"}}"#,
        )
        .unwrap();
        assert!(!c.functions()[1].link_up() && cause(&c, 1).link());
        for (bad, why) in [
            (
                r#""vf0","fault":{"type":"drop-irqs","count":0}"#,
                "count 0 outside",
            ),
            (r#""vf0","fault":{"type":"delay-irqs","us":0}"#, "delay 0"),
            (r#""vf0","fault":{"type":"reinsert"}"#, "not removed"),
            (r#""vf9","fault":{"type":"remove"}"#, "no function"),
        ] {
            let r = format!(r#"{{"op":"fault-inject","function":{bad}}}"#);
            assert!(err(&mut c, &r).contains(why), "{bad}");
        }
        assert!(serde_json::from_str::<Request>(
            r#"{"op":"fault-inject","function":"vf0","fault":{"type":"explode"}}"#
        )
        .is_err());
        let info: FaultInfo = serde_json::from_value(
            req(&mut c, r#"{"op":"fault-clear","function":"vf0"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(info.armed, crate::fault::Armed::default());
        let s = c.stats(Some(1));
        assert!(s.functions[0].counters.contains_key("fault_irqs_dropped"));
        req(&mut c, r#"{"op":"fault-status","function":"vf1"}"#).unwrap();
    }

    #[test]
    fn capture_start_stop_and_their_errors() {
        let mut c = card();
        let dir = std::env::temp_dir().join(format!("vnic-ops-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.pcap");
        let r = format!(r#"{{"op":"capture-start","path":"{}"}}"#, path.display());
        req(&mut c, &r).unwrap();
        assert!(err(&mut c, &r).contains("already running"));
        let info: CaptureInfo =
            serde_json::from_value(req(&mut c, r#"{"op":"capture-stop"}"#).unwrap()).unwrap();
        assert_eq!(info.frames, 0);
        assert!(err(&mut c, r#"{"op":"capture-stop"}"#).contains("no capture"));
        assert!(err(
            &mut c,
            r#"{"op":"capture-start","path":"/nonexistent/x.pcap"}"#
        )
        .contains("cannot create"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
