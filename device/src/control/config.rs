//! The configuration file: export of the card's management state and
//! `apply` of a file, at start (`vnicd --config`) or at run time
//! (docs/management.md, "The configuration file").
//!
//! A file is checked as a whole before anything changes: names, ranges,
//! policies, and that the addresses it gives vNICs and static entries are
//! distinct in the state it describes and free of other owners now, or
//! owned by vNICs the file moves elsewhere (so a file may swap addresses
//! between vNICs, as a remapped migration configuration does). Then its
//! steps run in order:
//! static entries removed (when the file lists its own), the VTEP, VFs that
//! leave their VNI for another (or for VLAN) let go of it, NumVFs, each
//! function (its attribute last), static entries added.

use std::collections::HashMap;

use log::error;

use crate::card::Card;
use crate::control::api::{CardFile, CardSettings, FdbFile, FunctionFile, VnicFile};
use crate::control::ops::{OpError, OpResult};
use crate::model::{Direction, GuestAddr, Mac, Vlan, MAX_VLAN};
use crate::rate::{self, Limiter};
use crate::switch::{EntryKind, Port};
use crate::vxlan::Vni;
use crate::vxlan::{usable_ip, usable_mac};

fn bad(msg: String) -> OpError {
    OpError::Config(msg)
}

impl Card {
    /// The card's card-wide settings, as a configuration file states them.
    pub fn settings(&self) -> CardSettings {
        let c = self.config();
        CardSettings {
            vfs: c.vfs,
            queue_pairs: c.queue_pairs,
            card_id: c.card_id,
            vxlan_capacity: c.vxlan_capacity,
            vf_max_addrs: c.vf_max_addrs,
        }
    }

    /// Everything management set, in the configuration file schema.
    pub fn export(&self) -> CardFile {
        let functions = self
            .functions()
            .iter()
            .enumerate()
            .map(|(f, func)| {
                let p = func.policy();
                let vnics = func
                    .queue_pairs()
                    .iter()
                    .map(|qp| VnicFile {
                        mac: Some(qp.mac),
                        vlan: p.vnics[qp.index as usize].vlan,
                    })
                    .collect();
                FunctionFile {
                    name: func.name().to_string(),
                    vnics: Some(vnics),
                    spoof_check: Some(self.switch().spoof_check(f)),
                    trust: Some(p.trust),
                    link: Some(p.link),
                    tx_rate: Some(p.tx_rate.as_ref().map(Limiter::policy)),
                    rx_rate: Some(p.rx_rate.as_ref().map(Limiter::policy)),
                    vct: Some(func.vct())
                        .filter(|&a| a != 0)
                        .or(func.pending_vct())
                        .map(GuestAddr),
                    // VFs state their attribute (null: VLAN); the PF has
                    // none to state.
                    vni: (f != 0).then(|| self.vxlan().segments.vni_of(f).map(Vni::get)),
                }
            })
            .collect();
        let fdb = self
            .switch()
            .entries()
            .into_iter()
            .filter(|(_, _, e)| e.kind == EntryKind::Static)
            .map(|(mac, vlan, e)| FdbFile {
                mac,
                vlan,
                function: self.functions()[e.port.function].name().to_string(),
                vnic: e.port.qp,
            })
            .collect();
        CardFile {
            card: Some(self.settings()),
            num_vfs: Some(self.num_vfs()),
            functions,
            fdb: Some(fdb),
            vtep: self.vxlan().vtep,
        }
    }

    /// Applies a configuration file (see the module documentation).
    pub fn apply(&mut self, file: &CardFile) -> OpResult<()> {
        let plan = self.check_file(file)?;
        self.run_file(file, &plan).inspect_err(|e| {
            error!("configuration partly applied, then refused: {e}");
        })
    }

    /// Checks a file; returns each listed function's index.
    fn check_file(&self, file: &CardFile) -> OpResult<Vec<usize>> {
        if let Some(s) = file.card {
            if s != self.settings() {
                return Err(bad(format!(
                    "written for a card with {s:?}; this card has {:?}",
                    self.settings()
                )));
            }
        }
        let num_vfs = file.num_vfs.unwrap_or(self.num_vfs());
        if num_vfs > self.config().vfs {
            return Err(OpError::TooManyVfs(num_vfs, self.config().vfs));
        }
        let mut plan = Vec::new();
        for ff in &file.functions {
            let f = self.function_index(&ff.name)?;
            if plan.contains(&f) {
                return Err(bad(format!("{} is listed twice", ff.name)));
            }
            self.check_function(f, ff)?;
            plan.push(f);
        }
        self.check_addresses(file, &plan, num_vfs)?;
        self.check_vxlan(file, &plan)?;
        Ok(plan)
    }

    /// The VTEP is usable and every VNI the file leaves is a valid one of
    /// one VF.
    fn check_vxlan(&self, file: &CardFile, plan: &[usize]) -> OpResult<()> {
        if let Some(v) = file.vtep {
            usable_mac(v.mac)?;
            usable_ip(v.ip)?;
        }
        let mut owners: HashMap<Vni, usize> = HashMap::new();
        for f in 0..self.functions().len() {
            let listed = plan.iter().position(|&p| p == f);
            let vni = match listed.and_then(|i| file.functions[i].vni) {
                Some(v) => v.map(Vni::new).transpose()?,
                None => self.vxlan().segments.vni_of(f),
            };
            let Some(vni) = vni else { continue };
            if f == 0 {
                return Err(OpError::PfVxlan);
            }
            if let Some(other) = owners.insert(vni, f) {
                return Err(bad(format!(
                    "VNI {vni} is given to {} and {}",
                    self.functions()[other].name(),
                    self.functions()[f].name()
                )));
            }
        }
        Ok(())
    }

    /// Listed VFs whose VNI the file changes let go of it first, so VNIs
    /// may move between VFs in one file (a remapped configuration).
    fn release_vnis(&mut self, file: &CardFile, plan: &[usize]) -> OpResult<()> {
        for (ff, &f) in file.functions.iter().zip(plan) {
            let Some(want) = ff.vni else { continue };
            let now = self.vxlan_mut().segments.vni_of(f);
            if now.is_some() && now.map(Vni::get) != want {
                self.set_attr(f, None, None)?;
            }
        }
        Ok(())
    }

    fn check_function(&self, f: usize, ff: &FunctionFile) -> OpResult<()> {
        if let Some(v) = &ff.vnics {
            let max = if f == 0 {
                1
            } else {
                self.functions()[f].qp_max()
            };
            if !(1..=max).contains(&(v.len() as u32)) {
                return Err(OpError::VnicCount {
                    name: ff.name.clone(),
                    count: v.len() as u32,
                    max,
                });
            }
            for vn in v {
                if let Some(mac) = vn.mac.filter(|m| m.is_multicast() || *m == Mac::default()) {
                    return Err(OpError::BadMac(mac));
                }
                if vn.vlan > MAX_VLAN {
                    return Err(OpError::BadVlan(vn.vlan));
                }
            }
        }
        for (dir, p) in [(Direction::Tx, &ff.tx_rate), (Direction::Rx, &ff.rx_rate)] {
            if let Some(Some(p)) = p {
                rate::validate(p).map_err(|e| OpError::Policy(ff.name.clone(), dir, e))?;
            }
        }
        Ok(())
    }

    /// The (MAC, VLAN) of every vNIC in the state the file describes.
    fn final_addresses(
        &self,
        file: &CardFile,
        plan: &[usize],
        num_vfs: u16,
    ) -> Vec<(Mac, Vlan, Port)> {
        let mut out = Vec::new();
        for (f, func) in self.functions().iter().enumerate() {
            if f > usize::from(num_vfs) {
                continue;
            }
            let listed = plan
                .iter()
                .position(|&p| p == f)
                .and_then(|i| file.functions[i].vnics.as_ref());
            let count = listed.map_or(func.queue_pairs().len(), Vec::len);
            for q in 0..count {
                let cfg = func.policy().vnics[q];
                let (mac, vlan) = match listed.map(|v| v[q]) {
                    Some(v) => (v.mac.unwrap_or(cfg.mac), v.vlan),
                    None => (cfg.mac, cfg.vlan),
                };
                out.push((
                    mac,
                    vlan,
                    Port {
                        function: f,
                        qp: q as u16,
                    },
                ));
            }
        }
        out
    }

    fn check_addresses(&self, file: &CardFile, plan: &[usize], num_vfs: u16) -> OpResult<()> {
        let vnics = self.final_addresses(file, plan, num_vfs);
        let moving = self.moving_ports(file, plan, num_vfs);
        let mut owners: HashMap<(Mac, Vlan), Port> = HashMap::new();
        for &(mac, vlan, port) in &vnics {
            if owners.insert((mac, vlan), port).is_some() {
                return Err(bad(format!("{mac} VLAN {vlan} is given to two vNICs")));
            }
            // Free now, apart from the vNIC itself, vNICs the file moves
            // elsewhere (swaps are fine) and statics the file replaces.
            let now = self.switch().entries_for(mac, vlan);
            if let Some(e) = now.filter(|e| {
                e.port != port
                    && !(e.kind != EntryKind::Static && moving.contains(&e.port))
                    && !(file.fdb.is_some() && e.kind == EntryKind::Static)
            }) {
                return Err(bad(format!(
                    "{mac} VLAN {vlan} belongs to {} vNIC {}",
                    self.functions()[e.port.function].name(),
                    e.port.qp
                )));
            }
        }
        for s in file.fdb.iter().flatten() {
            let f = self.function_index(&s.function)?;
            let port = Port {
                function: f,
                qp: s.vnic,
            };
            if !vnics.iter().any(|&(_, _, p)| p == port) {
                return Err(bad(format!(
                    "static entry {} VLAN {}: {} has no vNIC {}",
                    s.mac, s.vlan, s.function, s.vnic
                )));
            }
            if s.mac.is_multicast() || s.vlan > MAX_VLAN {
                return Err(bad(format!(
                    "static entry {} VLAN {} is not usable",
                    s.mac, s.vlan
                )));
            }
            if owners.insert((s.mac, s.vlan), port).is_some() {
                return Err(bad(format!("{} VLAN {} is given twice", s.mac, s.vlan)));
            }
        }
        Ok(())
    }

    /// Existing vNICs whose address (MAC, port VLAN) the file changes.
    fn moving_ports(&self, file: &CardFile, plan: &[usize], num_vfs: u16) -> Vec<Port> {
        self.final_addresses(file, plan, num_vfs)
            .into_iter()
            .filter(|&(mac, vlan, port)| {
                let func = &self.functions()[port.function];
                let cur = func.policy().vnics[port.qp as usize];
                usize::from(port.qp) < func.queue_pairs().len()
                    && self.switch().has_port(port)
                    && (cur.mac, cur.vlan) != (mac, vlan)
            })
            .map(|(_, _, port)| port)
            .collect()
    }

    fn run_file(&mut self, file: &CardFile, plan: &[usize]) -> OpResult<()> {
        // vNICs that change address let go of it first, so that addresses
        // can move between them in one file; they take their new ones back
        // at the end.
        let moving = self.moving_ports(file, plan, file.num_vfs.unwrap_or(self.num_vfs()));
        for &port in &moving {
            self.switch_mut().release(port);
        }
        let result = self.run_steps(file, plan);
        for port in moving {
            if let Err(e) = self.switch_mut().reclaim(port) {
                let name = self.functions()[port.function].name();
                error!("{name}: vNIC {} lost its address: {e}", port.qp);
            }
        }
        result
    }

    fn run_steps(&mut self, file: &CardFile, plan: &[usize]) -> OpResult<()> {
        if file.fdb.is_some() {
            for (mac, vlan, e) in self.switch().entries() {
                if e.kind == EntryKind::Static {
                    let _ = self.switch_mut().remove_static(mac, vlan);
                }
            }
        }
        if let Some(v) = file.vtep {
            self.set_vtep(v)?;
        }
        self.release_vnis(file, plan)?;
        if let Some(n) = file.num_vfs.filter(|&n| n != self.num_vfs()) {
            self.set_num_vfs(n)?;
        }
        for (ff, &f) in file.functions.iter().zip(plan) {
            self.run_function(f, ff)?;
        }
        for s in file.fdb.iter().flatten() {
            let f = self.function_index(&s.function)?;
            self.fdb_add(s.mac, s.vlan, f, s.vnic)?;
        }
        Ok(())
    }

    fn run_function(&mut self, f: usize, ff: &FunctionFile) -> OpResult<()> {
        if let Some(v) = &ff.vnics {
            if f != 0 && v.len() != self.functions()[f].queue_pairs().len() {
                self.set_vnics(f, v.len() as u32)?;
            }
            for (q, vn) in v.iter().enumerate() {
                let cur = self.functions()[f].policy().vnics[q];
                let mac = vn.mac.unwrap_or(cur.mac);
                if (mac, vn.vlan) != (cur.mac, cur.vlan) {
                    self.set_vnic(f, q as u16, Some(mac), Some(vn.vlan))?;
                }
            }
        }
        if let Some(on) = ff.spoof_check {
            if on != self.switch_mut().spoof_check(f) {
                self.set_spoof_check(f, on);
            }
        }
        if let Some(on) = ff.trust {
            if on != self.functions()[f].policy().trust {
                self.set_trust(f, on);
            }
        }
        if let Some(state) = ff.link {
            self.set_link(f, state);
        }
        if let Some(p) = ff.tx_rate {
            self.set_rate(f, Direction::Tx, p)?;
        }
        if let Some(p) = ff.rx_rate {
            self.set_rate(f, Direction::Rx, p)?;
        }
        if let Some(a) = ff.vct {
            // The entry the function already has (an export applied back)
            // is not walked again.
            let func = &self.functions_mut()[f];
            let unchanged = match a.0 {
                0 => func.vct() == 0 && func.pending_vct().is_none(),
                _ => a.0 == func.vct() || Some(a.0) == func.pending_vct(),
            };
            if !unchanged {
                self.vct_set(f, a);
            }
        }
        if let Some(want) = ff.vni {
            let vni = want.map(Vni::new).transpose()?;
            if vni != self.vxlan_mut().segments.vni_of(f) {
                self.set_attr(f, vni, None)?;
            }
        }
        Ok(())
    }
}

impl CardFile {
    /// Swaps the entries of the functions in each pair `(a, b)`: their
    /// settings, VCT entries and static forwarding entries. A migration
    /// manager restoring a guest's vf0 onto vf2 starts the destination card
    /// from the source's export remapped with `vf0=vf2` (docs/migration.md).
    pub fn remap(&mut self, pairs: &[(String, String)]) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for (a, b) in pairs {
            for name in [a, b] {
                let Some(index) = vf_index(name) else {
                    return Err(format!("{name}: only VFs (vf0, vf1, ...) can be remapped"));
                };
                if let Some(card) = self.card.filter(|c| index >= c.vfs) {
                    return Err(format!("{name}: the card has {} VFs", card.vfs));
                }
                if seen.contains(&name.as_str()) {
                    return Err(format!("{name} appears in more than one pair"));
                }
                seen.push(name);
            }
            if a == b {
                return Err(format!("{a}={b} maps a function onto itself"));
            }
        }
        let swap = |name: &mut String| {
            for (a, b) in pairs {
                if name == a {
                    *name = b.clone();
                    return;
                }
                if name == b {
                    *name = a.clone();
                    return;
                }
            }
        };
        for f in &mut self.functions {
            swap(&mut f.name);
        }
        for e in self.fdb.iter_mut().flatten() {
            swap(&mut e.function);
        }
        Ok(())
    }
}

/// The index of a VF named "vf" and a decimal number.
fn vf_index(name: &str) -> Option<u16> {
    let n = name.strip_prefix("vf")?;
    n.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| n.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardConfig;
    use crate::model::{LinkState, RatePolicy};

    fn card() -> Card {
        Card::new(CardConfig::default()).unwrap()
    }

    fn file(json: &str) -> CardFile {
        serde_json::from_str(json).expect("file parses")
    }

    #[test]
    fn export_then_apply_on_a_fresh_card_reproduces_it() {
        let mut a = card();
        a.set_num_vfs(3).unwrap();
        a.set_vnics(1, 3).unwrap();
        a.set_vnic(1, 2, Some("02:00:00:00:00:22".parse().unwrap()), Some(12))
            .unwrap();
        a.set_spoof_check(2, false);
        a.set_trust(2, true);
        a.set_link(3, LinkState::Down);
        let p = RatePolicy {
            avg_kbps: 20_000,
            peak_kbps: 40_000,
            burst_bytes: 65_536,
        };
        a.set_rate(2, Direction::Tx, Some(p)).unwrap();
        a.fdb_add("02:00:00:00:00:99".parse().unwrap(), 0, 2, 1)
            .unwrap();
        let exported = a.export();
        let text = serde_json::to_string_pretty(&exported).unwrap();
        let mut b = card();
        b.apply(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(b.export(), exported);
        assert_eq!(b.fdb_list(), a.fdb_list());
    }

    #[test]
    fn vct_entries_travel_in_the_file_and_wait_on_a_fresh_card() {
        let mut a = card();
        a.vct_set(1, GuestAddr(0x3e8a000));
        let exported = a.export();
        let text = serde_json::to_string(&exported).unwrap();
        assert!(text.contains(r#""vct":"0x3e8a000""#), "{text}");
        assert_eq!(exported.functions[0].vct, None, "pf has none");
        let mut b = card();
        b.apply(&file(&text)).unwrap();
        assert_eq!(b.functions()[1].pending_vct(), Some(0x3e8a000));
        assert_eq!(b.export(), exported);
        // Applied again, the same entry is not set again.
        b.apply(&file(&text)).unwrap();
        assert_eq!(b.functions()[1].pending_vct(), Some(0x3e8a000));
        b.apply(&file(r#"{"functions":[{"name":"vf0","vct":0}]}"#))
            .unwrap();
        assert_eq!(b.functions()[1].pending_vct(), None);
    }

    #[test]
    fn a_file_may_swap_addresses_between_vnics() {
        let mut c = card();
        let (m0, m1) = (
            c.functions()[1].policy().vnics[0].mac,
            c.functions()[2].policy().vnics[0].mac,
        );
        c.switch_mut()
            .join(Port { function: 2, qp: 0 }, 30)
            .unwrap();
        c.apply(&file(&format!(
            r#"{{"functions":[{{"name":"vf0","vnics":[{{"mac":"{m1}"}},{{}}]}},
                {{"name":"vf1","vnics":[{{"mac":"{m0}"}},{{}}]}}]}}"#
        )))
        .unwrap();
        let p = |function| Port { function, qp: 0 };
        assert_eq!(c.switch().lookup(m1, 0), Some(p(1)));
        assert_eq!(c.switch().lookup(m0, 0), Some(p(2)));
        assert_eq!(
            c.switch().lookup(m0, 30),
            Some(p(2)),
            "the join moved along"
        );
        assert_eq!(c.switch().lookup(m1, 30), None);
        assert_eq!(c.functions()[1].queue_pairs()[0].mac, m1);
    }

    #[test]
    fn remap_swaps_functions_settings_vct_and_static_entries() {
        let mut a = card();
        a.set_vnic(1, 0, Some("02:00:00:00:00:10".parse().unwrap()), Some(7))
            .unwrap();
        a.vct_set(1, GuestAddr(0x5000));
        a.fdb_add("02:00:00:00:00:99".parse().unwrap(), 0, 1, 1)
            .unwrap();
        let mut f = a.export();
        f.remap(&[("vf0".into(), "vf2".into())]).unwrap();
        let mut b = card();
        b.apply(&f).unwrap();
        assert_eq!(b.functions()[3].pending_vct(), Some(0x5000));
        assert_eq!(b.functions()[3].policy().vnics[0].vlan, 7);
        assert_eq!(
            b.functions()[3].queue_pairs()[0].mac,
            "02:00:00:00:00:10".parse().unwrap()
        );
        assert_eq!(b.functions()[1].pending_vct(), None, "vf2 had none");
        let statics: Vec<_> = b
            .fdb_list()
            .into_iter()
            .filter(|e| e.kind == crate::control::api::FdbKind::Static)
            .collect();
        assert_eq!((statics.len(), statics[0].function.as_str()), (1, "vf2"));
        for bad in [
            vec![("pf".to_string(), "vf1".to_string())],
            vec![("vf1".into(), "vf1".into())],
            vec![("vf0".into(), "vf1".into()), ("vf1".into(), "vf2".into())],
            vec![("vf0".into(), "vfx".into())],
            vec![("vf0".into(), "vf4".into())],
            vec![("vf0".into(), "vf".into())],
        ] {
            assert!(a.export().remap(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_partial_file_changes_only_what_it_names() {
        let mut c = card();
        c.apply(&file(
            r#"{"functions":[{"name":"vf1","vnics":[{},{},{"vlan":5}],
                "tx_rate":{"avg_kbps":20000,"burst_bytes":65536}}]}"#,
        ))
        .unwrap();
        assert_eq!(c.functions()[2].queue_pairs().len(), 3);
        assert_eq!(c.functions()[2].policy().vnics[2].vlan, 5);
        assert!(c.functions()[2].policy().tx_rate.is_some());
        assert_eq!(c.functions()[1].queue_pairs().len(), 2, "vf0 untouched");
        c.apply(&file(r#"{"functions":[{"name":"vf1","tx_rate":null}]}"#))
            .unwrap();
        assert!(c.functions()[2].policy().tx_rate.is_none());
    }

    #[test]
    fn a_bad_file_is_refused_whole() {
        let before = card().export();
        for (json, why) in [
            (
                r#"{"card":{"vfs":9,"queue_pairs":8}}"#,
                "written for a card",
            ),
            (r#"{"num_vfs":7}"#, "TotalVFs"),
            (r#"{"functions":[{"name":"vf7"}]}"#, "no function"),
            (r#"{"functions":[{"name":"vf0"},{"name":"vf0"}]}"#, "twice"),
            (
                r#"{"functions":[{"name":"vf0","vnics":[{},{},{},{},{},{},{},{},{}]}]}"#,
                "9 vNICs",
            ),
            (
                r#"{"functions":[{"name":"pf","vnics":[{},{}]}]}"#,
                "2 vNICs",
            ),
            (
                r#"{"functions":[{"name":"vf0","trust":true},{"name":"vf1","vnics":[{"mac":"02:76:6e:00:01:00"}]}]}"#,
                "given to two vNICs",
            ),
            (
                r#"{"functions":[{"name":"vf0","vnics":[{"mac":"02:76:6e:00:02:00"}]}]}"#,
                "belongs to vf1 vNIC 0",
            ),
            (
                r#"{"functions":[{"name":"vf0","rx_rate":{"avg_kbps":0,"burst_bytes":65536}}]}"#,
                "above 0",
            ),
            (
                r#"{"fdb":[{"mac":"02:00:00:00:00:01","function":"vf0","vnic":5}]}"#,
                "no vNIC 5",
            ),
        ] {
            let mut c = card();
            let e = c.apply(&file(json)).expect_err(json).to_string();
            assert!(e.contains(why), "{json}: {e}");
            assert_eq!(c.export(), before, "{json} changed the card");
        }
        assert!(serde_json::from_str::<CardFile>(r#"{"functons":[]}"#).is_err());
    }
}
