//! Receive filters on the card: what a vNIC's driver handed over through
//! QP_RX_MODE, granted in the switch or in the vNIC's VNI segment as far
//! as its function may have it (docs/datapath.md, "Address filtering").

use crate::function::{Function, FunctionKind};
use crate::switch::{Allowance, Port, Switch};
use crate::vxlan::Vxlan;

/// Applies the receive filter vNIC `port`'s driver handed over (if it
/// did) with what its function may be granted, in the switch or in its
/// VNI segment, and tells the function what became of it. Runs again when
/// the function's trust changes and when the vNIC comes back onto the
/// switch.
pub fn apply_filter(
    switch: &mut Switch,
    vxlan: &mut Vxlan,
    func: &mut Function,
    port: Port,
) -> Result<(), String> {
    let Some(request) = func.rx_filter(port.qp).cloned() else {
        return Ok(());
    };
    let allow = Allowance {
        trusted: func.kind() == FunctionKind::Pf || func.policy().trust,
        max_unicast: func.policy().max_addrs as usize,
    };
    let grant = if vxlan.is_vxlan_vf(port.function) {
        vxlan
            .segments
            .set_filter(port, &request, allow)
            .map_err(|e| e.to_string())?
    } else {
        switch
            .set_filter(port, &request, allow)
            .map_err(|e| e.to_string())?
    };
    func.filter_granted(port.qp, &grant);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::card::{Card, CardConfig};
    use crate::model::{Mac, Vtep};
    use crate::queue::AddrStatus;
    use crate::regs::{FnStat, Reg};
    use crate::switch::Port;
    use crate::test_utils::guest::{card, eth, fn_stat, mac, qp_reg, rd, wr, Vm};
    use crate::uplink::Uplink;
    use crate::vxlan::Vni;

    const EXTRA: Mac = Mac([2, 0, 0, 0, 0xee, 1]);
    const FAR: Mac = Mac([2, 1, 2, 3, 4, 5]);
    const GROUP: Mac = Mac([1, 0, 0x5e, 1, 2, 3]);
    const OTHER_GROUP: Mac = Mac([1, 0, 0x5e, 1, 2, 4]);

    fn status(v: u32) -> AddrStatus {
        AddrStatus::from_bits(v)
    }

    /// A macvlan's address on an untrusted VF: frames to it reach the vNIC
    /// and frames from it pass the spoof check; before the driver handed
    /// it over, they went to the uplink and were dropped as spoofed.
    #[test]
    fn an_extra_address_is_forwarded_to_the_vnic_and_may_send() {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        let sa = mac(&c, 1, 0);
        a.send(&mut c, 0, &[eth(EXTRA, sa, None, 60)]);
        b.send(&mut c, 0, &[eth(sa, EXTRA, None, 60)]);
        assert!(b.received(0).is_empty() && a.received(0).is_empty());
        assert_eq!(c.uplink_mut().take_sent().len(), 1, "unknown unicast");
        assert_eq!(fn_stat(&c, 2, FnStat::SpoofDrops), 1);

        let st = status(b.set_filter(&mut c, 0, false, false, &[EXTRA]));
        assert_eq!(
            (st.unicast(), st.over_limit(), st.taken()),
            (1, false, false)
        );
        let to = eth(EXTRA, sa, None, 60);
        a.send(&mut c, 0, std::slice::from_ref(&to));
        assert_eq!(b.received(0), vec![to]);
        let from = eth(sa, EXTRA, None, 60);
        b.send(&mut c, 0, std::slice::from_ref(&from));
        assert_eq!(a.received(0), vec![from]);
        assert_eq!(fn_stat(&c, 2, FnStat::SpoofDrops), 1, "no new drop");
        assert!(c.uplink_mut().take_sent().is_empty());
        // Another vNIC, of this VF or another, cannot take it.
        let st = status(a.set_filter(&mut c, 0, false, false, &[EXTRA]));
        assert!(st.taken() && st.unicast() == 0);
        assert_eq!(fn_stat(&c, 1, FnStat::AddrRefused), 1);
        // Nor can management give it to a vNIC.
        assert!(c.set_vnic(1, 1, Some(EXTRA), None).is_err());
    }

    /// An untrusted VF has at most its limit over all its vNICs; the
    /// refusal is counted and flagged; trusting it grants the rest.
    #[test]
    fn an_untrusted_vf_gets_its_limit_and_trust_lifts_it() {
        let mut c = Card::new(CardConfig {
            vf_max_addrs: 2,
            ..CardConfig::default()
        })
        .unwrap();
        let mut b = Vm::attach(&mut c, 2, 8);
        let macs: Vec<Mac> = (1..=3).map(|n| Mac([2, 0, 0, 0, 0xee, n])).collect();
        let st = status(b.set_filter(&mut c, 0, false, false, &macs[..2]));
        assert_eq!((st.unicast(), st.over_limit()), (2, false));
        let st = status(b.set_filter(&mut c, 1, false, false, &macs[2..]));
        assert_eq!((st.unicast(), st.over_limit()), (0, true));
        assert_eq!(fn_stat(&c, 2, FnStat::AddrRefused), 1);
        assert_eq!(c.function_info(2).addresses, 2);
        c.set_trust(2, true);
        let st = status(rd(&mut c, 2, qp_reg(1, 0x2c)));
        assert_eq!((st.unicast(), st.over_limit()), (1, false));
        assert_eq!(c.function_info(2).addresses, 3);
        // Trust off again: the vNIC that asked last loses what is over.
        c.set_trust(2, false);
        assert_eq!(c.function_info(2).addresses, 2);
    }

    /// A vNIC whose driver handed over a filter receives the groups it
    /// joined and broadcasts; one that never did receives every group;
    /// all-multicast brings every group back.
    #[test]
    fn multicast_reaches_only_the_vnics_that_joined() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 16);
        b.set_filter(&mut c, 0, false, false, &[GROUP]);
        let sa = mac(&c, 1, 0);
        let frames: Vec<Vec<u8>> = [GROUP, OTHER_GROUP, Mac::BROADCAST]
            .iter()
            .map(|&g| eth(g, sa, None, 60))
            .collect();
        a.send(&mut c, 0, &frames);
        assert_eq!(b.received(0), vec![frames[0].clone(), frames[2].clone()]);
        assert_eq!(b.received(1), frames, "no filter: every group");
        let st = status(b.set_filter(&mut c, 0, false, true, &[]));
        assert!(st.allmulti());
        a.send(&mut c, 0, &frames[1..2]);
        assert_eq!(b.received(0).len(), 3);
    }

    /// Promiscuous mode: refused and counted on an untrusted VF, which
    /// then sees its own traffic only; granted to a trusted one, which
    /// receives the VLAN's unknown unicast from the vNICs and the uplink.
    #[test]
    fn promiscuous_mode_needs_trust_and_brings_unknown_unicast() {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = &mut Vm::attach(&mut c, 2, 8);
        let st = status(b.set_filter(&mut c, 0, true, false, &[]));
        assert!(st.promisc_refused() && !st.promisc());
        assert_eq!(fn_stat(&c, 2, FnStat::PromiscRefused), 1);
        let sa = mac(&c, 1, 0);
        let unknown = eth(FAR, sa, None, 60);
        a.send(&mut c, 0, std::slice::from_ref(&unknown));
        assert!(b.received(0).is_empty());

        c.set_trust(2, true);
        let st = status(rd(&mut c, 2, qp_reg(0, 0x2c)));
        assert!(st.promisc() && !st.promisc_refused());
        c.uplink_mut().take_sent();
        a.send(&mut c, 0, std::slice::from_ref(&unknown));
        assert_eq!(b.received(0), vec![unknown.clone()]);
        assert_eq!(c.uplink_mut().take_sent(), vec![unknown], "and out");
        let from_wire = eth(FAR, Mac([2, 9, 9, 9, 9, 9]), None, 60);
        c.uplink_mut().inject(from_wire.clone());
        c.run_uplink();
        assert_eq!(b.received(0)[1], from_wire);
        // Known unicast to another vNIC is not copied.
        let known = eth(mac(&c, 2, 1), sa, None, 60);
        a.send(&mut c, 0, &[known]);
        assert_eq!(b.received(0).len(), 2);
        // Another VLAN's unknown unicast is not either.
        c.set_vnic(1, 0, None, Some(10)).unwrap();
        a.send(&mut c, 0, &[eth(FAR, sa, None, 60)]);
        assert_eq!(b.received(0).len(), 2);
    }

    /// A reset forgets the filters; a list that is too long or outside
    /// guest memory changes nothing and says so.
    #[test]
    fn reset_forgets_and_a_bad_list_changes_nothing() {
        let mut c = card();
        let mut b = Vm::attach(&mut c, 2, 8);
        b.set_filter(&mut c, 0, false, false, &[EXTRA]);
        let port = Port { function: 2, qp: 0 };
        wr(&mut c, 2, qp_reg(0, 0x70), 0x7000_0000);
        wr(&mut c, 2, qp_reg(0, 0x74), 0);
        wr(&mut c, 2, qp_reg(0, 0x78), 1 << 16);
        let st = status(rd(&mut c, 2, qp_reg(0, 0x2c)));
        assert!(st.list_error() && st.unicast() == 1, "{st:?}");
        wr(&mut c, 2, qp_reg(0, 0x78), 257 << 16);
        assert!(status(rd(&mut c, 2, qp_reg(0, 0x2c))).list_error());
        assert_eq!(c.switch().filter(port).unwrap().unicast, vec![EXTRA]);

        wr(&mut c, 2, Reg::Ctrl as u64, 1);
        assert!(c.switch().filter(port).is_none());
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x2c)), 0);
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x78)), 0);
    }

    /// QP_ADDR_STATUS says why a QP_MAC write was refused; the PF needs no
    /// trust to change its MAC.
    #[test]
    fn a_refused_mac_write_says_why() {
        let mut c = card();
        let (lo, hi) = (0x0000_0202u32, 0x4455u32);
        wr(&mut c, 2, qp_reg(0, 0x00), lo);
        let _ = c.functions_mut()[2].region_write(
            crate::function::REGION_BAR0,
            qp_reg(0, 0x04),
            &hi.to_le_bytes(),
        );
        c.after_io(2);
        let st = status(rd(&mut c, 2, qp_reg(0, 0x2c)));
        assert!(st.mac_untrusted() && !st.mac_taken());
        c.set_trust(2, true);
        let taken = mac(&c, 1, 0).0;
        wr(
            &mut c,
            2,
            qp_reg(0, 0x00),
            u32::from_le_bytes(taken[..4].try_into().unwrap()),
        );
        wr(
            &mut c,
            2,
            qp_reg(0, 0x04),
            u32::from(taken[4]) | u32::from(taken[5]) << 8,
        );
        let st = status(rd(&mut c, 2, qp_reg(0, 0x2c)));
        assert!(st.mac_taken() && !st.mac_untrusted());
        // The PF.
        wr(&mut c, 0, qp_reg(0, 0x00), lo);
        wr(&mut c, 0, qp_reg(0, 0x04), hi);
        assert_eq!(mac(&c, 0, 0), Mac([2, 2, 0, 0, 0x55, 0x44]));
        assert_eq!(rd(&mut c, 0, qp_reg(0, 0x2c)), 0);
    }

    /// In a VNI segment too: the extra address is delivered locally and
    /// from the far VTEP, and may send.
    #[test]
    fn an_extra_address_works_in_a_vni_segment() {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        c.set_vtep(Vtep {
            mac: Mac([2, 0x76, 0x6e, 0xff, 0, 1]),
            ip: std::net::Ipv4Addr::new(10, 1, 0, 1),
        })
        .unwrap();
        let vni = Vni::new(100).unwrap();
        c.set_attr(1, Some(vni), None).unwrap();
        let mut a = Vm::attach(&mut c, 1, 8);
        let st = status(a.set_filter(&mut c, 1, false, false, &[EXTRA]));
        assert_eq!(st.unicast(), 1);
        let to = eth(EXTRA, mac(&c, 1, 0), None, 60);
        a.send(&mut c, 0, std::slice::from_ref(&to));
        assert_eq!(a.received(1), vec![to.clone()]);
        assert_eq!(c.vxlan_deliver(vni, &to), 1);
        let from = eth(mac(&c, 1, 0), EXTRA, None, 60);
        a.send(&mut c, 1, std::slice::from_ref(&from));
        assert_eq!(a.received(0), vec![from]);
        assert_eq!(fn_stat(&c, 1, FnStat::SpoofDrops), 0);
    }
}
