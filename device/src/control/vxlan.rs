//! Uplink and VxLAN operations (docs/vxlan.md): the VTEP, the per-VF
//! attribute, the tables, and the host's answers to the card's requests
//! (`vxlan-send`, `vxlan-deliver`, `uplink-send`).
//!
//! As everywhere in management, each operation checks everything first and
//! only then changes the card.

use log::info;
use serde_json::Value;

use crate::card::Card;
use crate::control::api::{
    EvictedInfo, Request, TunnelInfo, VxlanAddInfo, VxlanDeliverInfo, VxlanListInfo, VxlanMacInfo,
    VxlanSendInfo,
};
use crate::control::ops::{json, OpError, OpResult};
use crate::model::{Event, Frame, Mac, Vlan, Vtep, MAX_VLAN};
use crate::switch::{Port, SwitchError};
use crate::vxlan::exception::MIN_FRAME;
use crate::vxlan::table::Remote;
use crate::vxlan::{usable_ip, usable_mac, Vni};

fn short_frame(frame: &Frame) -> OpResult<()> {
    if frame.0.len() < MIN_FRAME {
        return Err(OpError::Vxlan(format!(
            "a frame of {} bytes is shorter than an Ethernet header ({MIN_FRAME})",
            frame.0.len()
        )));
    }
    Ok(())
}

impl Card {
    /// Carries out an uplink or VxLAN request (dispatched from
    /// [`Card::handle`]).
    pub(crate) fn handle_vxlan(&mut self, req: Request) -> OpResult<Value> {
        let done = Value::Null;
        Ok(match req {
            Request::SetVtep { mac, ip } => {
                self.set_vtep(Vtep { mac, ip })?;
                done
            }
            Request::SetAttr {
                function,
                vni,
                vlan,
            } => {
                let f = self.enabled_index(&function)?;
                let vni = vni.map(Vni::new).transpose()?;
                self.set_attr(f, vni, vlan)?;
                done
            }
            Request::VxlanList {} => json(self.vxlan_list()),
            Request::VxlanAdd {
                vni,
                mac,
                remote_ip,
                remote_mac,
            } => {
                let remote = Remote {
                    ip: remote_ip,
                    mac: remote_mac,
                };
                json(self.vxlan_add(Vni::new(vni)?, mac, remote)?)
            }
            Request::VxlanDel { vni, mac } => {
                self.vxlan_del(Vni::new(vni)?, mac)?;
                done
            }
            Request::VxlanSend { vni, frame } => {
                let vni = Vni::new(vni)?;
                short_frame(&frame)?;
                json(VxlanSendInfo {
                    sent: self.vxlan_send(vni, &frame.0),
                })
            }
            Request::VxlanDeliver { vni, frame } => {
                let vni = Vni::new(vni)?;
                short_frame(&frame)?;
                json(VxlanDeliverInfo {
                    delivered: self.vxlan_deliver(vni, &frame.0),
                })
            }
            Request::UplinkSend { frame } => {
                short_frame(&frame)?;
                self.uplink_send(&frame.0);
                done
            }
            _ => return Err(OpError::Unsupported("not an uplink or VxLAN request")),
        })
    }

    /// Sets the card's VTEP.
    pub fn set_vtep(&mut self, vtep: Vtep) -> OpResult<()> {
        usable_mac(vtep.mac)?;
        usable_ip(vtep.ip)?;
        info!("VTEP {} {}", vtep.mac, vtep.ip);
        self.vxlan_mut().vtep = Some(vtep);
        Ok(())
    }

    /// The vNICs function `f` has on the switch or in a segment now (none
    /// while it is disabled).
    fn live_ports(&self, f: usize) -> Vec<Port> {
        if !self.functions()[f].policy().enabled {
            return Vec::new();
        }
        self.functions()[f]
            .queue_pairs()
            .iter()
            .map(|qp| Port {
                function: f,
                qp: qp.index,
            })
            .collect()
    }

    /// Sets VF `f`'s attribute: VxLAN with `vni`, or VLAN (then `vlan`, if
    /// given, becomes the port VLAN of all its vNICs). Its vNICs move
    /// between the VLAN switch and the VNI segment; moving into a segment
    /// takes them out of every VLAN, with the static entries that point at
    /// them.
    pub fn set_attr(&mut self, f: usize, vni: Option<Vni>, vlan: Option<Vlan>) -> OpResult<()> {
        match vni {
            Some(_) if f == 0 => Err(OpError::PfVxlan),
            Some(v) if vlan.is_some() => Err(OpError::VlanWithVni(v)),
            Some(v) => self.attr_vxlan(f, v),
            None => self.attr_vlan(f, vlan),
        }
    }

    fn attr_vxlan(&mut self, f: usize, vni: Vni) -> OpResult<()> {
        if let Some(other) = self.vxlan_mut().segments.function_with(vni) {
            if other == f {
                return Ok(());
            }
            return Err(OpError::VniTaken(
                vni,
                self.functions()[other].name().into(),
            ));
        }
        let ports = self.live_ports(f);
        for &port in &ports {
            let mac = self.functions()[f].policy().vnics[port.qp as usize].mac;
            self.vxlan_mut()
                .segments
                .check(vni, port, mac)
                .map_err(|e| OpError::Segment(self.functions()[f].name().into(), e))?;
        }
        for &port in &ports {
            self.remove_port(port);
        }
        self.vxlan_mut().segments.set_attr(f, Some(vni));
        for port in ports {
            self.add_port(f, port.qp)?;
        }
        info!("{}: attribute VxLAN, VNI {vni}", self.functions()[f].name());
        self.push_event(Event::PolicyChanged {
            function: self.functions()[f].name().into(),
        });
        Ok(())
    }

    fn attr_vlan(&mut self, f: usize, vlan: Option<Vlan>) -> OpResult<()> {
        if let Some(v) = vlan.filter(|&v| v > MAX_VLAN) {
            return Err(OpError::BadVlan(v));
        }
        let nqp = self.functions()[f].queue_pairs().len() as u16;
        if !self.vxlan().is_vxlan_vf(f) {
            // Already VLAN: only the port VLANs may change.
            if let Some(v) = vlan {
                if self.functions()[f].policy().enabled {
                    for q in 0..nqp {
                        self.set_vnic(f, q, None, Some(v))?;
                    }
                } else {
                    for cfg in &mut self.functions_mut()[f].policy_mut().vnics {
                        cfg.vlan = v;
                    }
                }
            }
            return Ok(());
        }
        let ports = self.live_ports(f);
        for &port in &ports {
            let cfg = self.functions()[f].policy().vnics[port.qp as usize];
            let v = vlan.unwrap_or(cfg.vlan);
            if self.switch().lookup(cfg.mac, v).is_some() {
                let e = SwitchError::Taken {
                    mac: cfg.mac,
                    vlan: v,
                };
                return Err(OpError::Switch(self.functions()[f].name().into(), e));
            }
        }
        if let Some(v) = vlan {
            for cfg in &mut self.functions_mut()[f].policy_mut().vnics {
                cfg.vlan = v;
            }
        }
        for &port in &ports {
            self.remove_port(port);
        }
        self.vxlan_mut().segments.set_attr(f, None);
        let name = self.functions()[f].name().to_string();
        for port in ports {
            self.add_port(f, port.qp)?;
            let cfg = self.functions()[f].policy().vnics[port.qp as usize];
            self.push_event(Event::VnicChanged {
                function: name.clone(),
                vnic: port.qp,
                mac: cfg.mac,
                vlan: cfg.vlan,
            });
        }
        info!("{name}: attribute VLAN");
        self.push_event(Event::PolicyChanged { function: name });
        Ok(())
    }

    /// `set-vnic` on a VxLAN VF (after its checks): the MAC changes in the
    /// segment; the port VLAN is kept for when the VF returns to VLAN.
    pub(crate) fn set_vxlan_vnic(
        &mut self,
        f: usize,
        q: u16,
        mac: Mac,
        vlan: Vlan,
    ) -> OpResult<()> {
        let port = Port { function: f, qp: q };
        let name = self.functions()[f].name().to_string();
        let cur = self.functions()[f].policy().vnics[q as usize];
        if mac != cur.mac {
            self.move_vnic_mac(port, mac)
                .map_err(|e| OpError::mac_move(name.clone(), e))?;
        }
        self.functions_mut()[f].policy_mut().vnics[q as usize].vlan = vlan;
        info!("{name}: vNIC {q} MAC {mac} (VxLAN; port VLAN {vlan} kept for VLAN)");
        self.push_event(Event::VnicChanged {
            function: name,
            vnic: q,
            mac,
            vlan,
        });
        Ok(())
    }

    pub fn vxlan_list(&self) -> VxlanListInfo {
        let t = &self.vxlan().tables;
        VxlanListInfo {
            vtep: self.vxlan().vtep,
            capacity: t.capacity() as u32,
            tunnels: t
                .tunnels()
                .into_iter()
                .map(|t| TunnelInfo {
                    id: t.id,
                    remote_ip: t.remote.ip,
                    remote_mac: t.remote.mac,
                    uses: t.uses,
                })
                .collect(),
            macs: t
                .macs()
                .into_iter()
                .map(|m| VxlanMacInfo {
                    vni: m.vni.get(),
                    mac: m.mac,
                    tunnel: m.tunnel,
                    uses: m.uses,
                })
                .collect(),
        }
    }

    /// Installs (vni, mac) → `remote`; entries evicted to make room are
    /// counted, announced (`vxlan-evicted`) and listed in the answer.
    pub fn vxlan_add(&mut self, vni: Vni, mac: Mac, remote: Remote) -> OpResult<VxlanAddInfo> {
        let installed = self.vxlan_mut().add(vni, mac, remote)?;
        let mut evicted = Vec::new();
        for e in installed.evicted {
            self.push_event(Event::VxlanEvicted {
                vni: e.vni.get(),
                mac: e.mac,
                tunnel: e.tunnel,
            });
            evicted.push(EvictedInfo {
                vni: e.vni.get(),
                mac: e.mac,
                tunnel: e.tunnel,
            });
        }
        Ok(VxlanAddInfo {
            tunnel: installed.tunnel,
            evicted,
        })
    }

    pub fn vxlan_del(&mut self, vni: Vni, mac: Mac) -> OpResult<()> {
        self.vxlan_mut()
            .tables
            .remove(vni, mac)
            .map(|_| ())
            .ok_or(OpError::NoVxlanEntry(vni, mac))
    }
}
