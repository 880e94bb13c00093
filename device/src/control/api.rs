//! The control socket's messages: requests, answers, events and the
//! configuration file, as serde types (docs/management.md is the same schema
//! in prose). vnicd and vnicctl share these definitions, so the two cannot
//! drift apart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::fault::{Fault, FaultInfo};
pub use crate::function::RelayStats;
pub use crate::model::MigrationState;
use crate::model::{
    Direction, Frame, GuestAddr, LinkState, Mac, RatePolicy, VctState, Vtep, WorkerInfo,
    DEFAULT_VF_MAX_ADDRS, DEFAULT_VXLAN_CAPACITY,
};

/// Longest request line the card reads.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// A request: one JSON object per line, `op` names the operation.
/// Operations without fields are empty struct variants (`List {}`) so that
/// unknown fields are refused for them too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    List {},
    Show {
        function: String,
    },
    SetNumVfs {
        count: u16,
    },
    SetVnics {
        function: String,
        count: u32,
    },
    SetVnic {
        function: String,
        vnic: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<Mac>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
    FdbAdd {
        mac: Mac,
        #[serde(default)]
        vlan: u16,
        function: String,
        vnic: u16,
    },
    FdbDel {
        mac: Mac,
        #[serde(default)]
        vlan: u16,
    },
    FdbList {},
    SetRate {
        function: String,
        direction: Direction,
        policy: Option<RatePolicy>,
    },
    SetSpoofCheck {
        function: String,
        on: bool,
    },
    SetTrust {
        function: String,
        on: bool,
    },
    SetLink {
        function: String,
        state: LinkState,
    },
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
    },
    CaptureStart {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
    },
    CaptureStop {},
    Export {},
    Apply {
        config: Box<CardFile>,
    },
    Subscribe {},
    /// Stops the queues of one function (all when absent) at a frame
    /// boundary and writes their contexts back (docs/migration.md).
    Quiesce {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
    },
    /// Hands the card over to a new worker from the same binary
    /// (docs/restart.md, "Planned restart and upgrade").
    Restart {},
    /// Hands the card over to a new worker from the binary at `path`.
    Upgrade {
        path: PathBuf,
    },
    /// Ends a quiesce.
    Resume {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
    },
    /// Live migration (docs/migration.md): `begin` puts the function in
    /// migration mode (its guest-memory writes go through the client);
    /// `switchover` quiesces it and ends the mode once QEMU answered the
    /// last writes; `end` leaves the mode (a cancelled migration);
    /// `status` reports.
    Migrate {
        function: String,
        action: MigrateAction,
    },
    /// Management writes a function's VCT entry (0 clears it).
    VctSet {
        function: String,
        address: GuestAddr,
    },
    /// The card's VTEP: outer source MAC and IPv4 address (docs/vxlan.md).
    SetVtep {
        mac: Mac,
        ip: Ipv4Addr,
    },
    /// A VF's attribute: VxLAN with `vni`, or VLAN (`vni` null), then
    /// optionally the port VLAN of all its vNICs.
    SetAttr {
        function: String,
        #[serde(default)]
        vni: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
    VxlanList {},
    /// Installs (vni, mac) → tunnel (remote_ip, remote_mac).
    VxlanAdd {
        vni: u32,
        mac: Mac,
        remote_ip: Ipv4Addr,
        remote_mac: Mac,
    },
    VxlanDel {
        vni: u32,
        mac: Mac,
    },
    /// Variant A: the host returns a missed inner frame for the card to
    /// look up again and encapsulate.
    VxlanSend {
        vni: u32,
        frame: Frame,
    },
    /// The host returns a punted inner frame for delivery to the VNI's
    /// local vNICs.
    VxlanDeliver {
        vni: u32,
        frame: Frame,
    },
    /// Variant B: a frame the host built whole, sent out the uplink as is.
    UplinkSend {
        frame: Frame,
    },
    /// Injects a fault into one function (docs/fault-injection.md);
    /// answers its [`FaultInfo`].
    FaultInject {
        function: String,
        fault: Fault,
    },
    /// Disarms a function's counted faults (not a removal, not the link).
    FaultClear {
        function: String,
    },
    /// What is armed on a function and what was injected so far.
    FaultStatus {
        function: String,
    },
}

/// One tunnel in `vxlan-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelInfo {
    pub id: u32,
    pub remote_ip: Ipv4Addr,
    pub remote_mac: Mac,
    pub uses: u64,
}

/// One MAC entry in `vxlan-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanMacInfo {
    pub vni: u32,
    pub mac: Mac,
    pub tunnel: u32,
    pub uses: u64,
}

/// The answer to `vxlan-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanListInfo {
    pub vtep: Option<Vtep>,
    /// Tunnel IDs, and as many MAC entries.
    pub capacity: u32,
    pub tunnels: Vec<TunnelInfo>,
    pub macs: Vec<VxlanMacInfo>,
}

/// A MAC entry an install pushed out of a full table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvictedInfo {
    pub vni: u32,
    pub mac: Mac,
    pub tunnel: u32,
}

/// The answer to `vxlan-add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanAddInfo {
    /// The tunnel ID the entry uses (shared by entries with the same
    /// remote IP and MAC).
    pub tunnel: u32,
    pub evicted: Vec<EvictedInfo>,
}

/// The answer to `vxlan-send`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSendInfo {
    /// False: the tables missed again (or no VTEP); the frame was dropped
    /// and counted, and no new request was made.
    pub sent: bool,
}

/// The answer to `vxlan-deliver`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanDeliverInfo {
    /// vNICs the frame was written to (0: none of the VNI's vNICs has the
    /// destination MAC, or their receive queues are stopped).
    pub delivered: u32,
}

/// What a `migrate` request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateAction {
    Begin,
    Switchover,
    End,
    Status,
}

/// The answer to `migrate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInfo {
    pub function: String,
    pub state: MigrationState,
    /// Queue contexts written back (through the client) by a switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contexts_written: Option<usize>,
    /// Batches of writes sent and not answered yet.
    pub unanswered: u64,
    /// Whether the function's vNICs' addresses are out of the switch.
    pub addresses_released: bool,
    pub relay: RelayStats,
}

/// The answer to `vct-set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VctInfo {
    pub function: String,
    pub address: GuestAddr,
    pub state: VctState,
    /// VCT_STATUS after the request.
    pub vct_status: u32,
}

/// One function in the answer to `quiesce`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiesceInfo {
    pub function: String,
    /// Running queue contexts written back to guest memory.
    pub contexts_written: usize,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
        }
    }
}

/// One vNIC in `list`/`show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicInfo {
    pub vnic: u16,
    pub mac: Mac,
    /// Port VLAN (0: none).
    pub vlan: u16,
    /// VLANs the guest joined through QP_VLAN.
    pub joined: Vec<u16>,
    pub tx_running: bool,
    pub rx_running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_error: Option<String>,
    /// What the card grants of the receive filter the guest's driver
    /// asked for (QP_RX_MODE); none: it never asked, and the vNIC gets
    /// every multicast frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterInfo>,
}

/// A vNIC's receive filter as the card applies it (docs/datapath.md,
/// "Address filtering").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterInfo {
    pub promisc: bool,
    pub allmulti: bool,
    /// Extra unicast addresses it receives and may send from.
    pub unicast: Vec<Mac>,
    /// Multicast groups it joined.
    pub multicast: Vec<Mac>,
}

/// One function in `list`/`show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    /// False for a VF beyond NumVFs.
    pub enabled: bool,
    /// A vfio-user client is connected.
    pub attached: bool,
    /// Its client offered the guest's memory without a descriptor (QEMU
    /// without `share=on`): the card cannot reach it.
    #[serde(default)]
    pub memory_unshared: bool,
    /// X.
    pub max_vnics: u32,
    pub vnics: Vec<VnicInfo>,
    pub link: LinkState,
    pub link_up: bool,
    pub spoof_check: bool,
    pub trust: bool,
    /// Extra unicast addresses its vNICs have together.
    #[serde(default)]
    pub addresses: u32,
    /// How many it may have unless trusted (`vnicd --vf-max-addrs`).
    #[serde(default)]
    pub max_addrs: u32,
    pub tx_rate: Option<RatePolicy>,
    pub rx_rate: Option<RatePolicy>,
    /// The VCT entry (BAT address), 0 if none.
    pub vct: u64,
    /// VCT_STATUS: why the last entry was refused (0: it was not).
    #[serde(default)]
    pub vct_status: u32,
    /// A VCT entry from management waiting for the guest
    /// (docs/migration.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vct_pending: Option<GuestAddr>,
    /// Stopped by `quiesce`.
    #[serde(default)]
    pub quiesced: bool,
    /// The VF's VNI when its attribute is VxLAN; null: VLAN.
    #[serde(default)]
    pub vni: Option<u32>,
}

/// Who made a forwarding entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdbKind {
    /// A vNIC's own address, untagged or in its port VLAN.
    Own,
    /// A vNIC's own address in a VLAN the guest joined.
    Joined,
    /// Added by management.
    Static,
}

/// A forwarding entry in `fdb-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub mac: Mac,
    pub vlan: u16,
    pub function: String,
    pub vnic: u16,
    pub kind: FdbKind,
}

/// Counters of one vNIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicStats {
    pub vnic: u16,
    pub counters: BTreeMap<String, u64>,
}

/// Counters of one function and its vNICs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionStatsInfo {
    pub name: String,
    pub counters: BTreeMap<String, u64>,
    pub vnics: Vec<VnicStats>,
}

/// The answer to `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsInfo {
    pub card: BTreeMap<String, u64>,
    /// The process serving the card (absent from an older vnicd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureInfo>,
    pub functions: Vec<FunctionStatsInfo>,
}

/// A capture in progress, or the summary of a stopped one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub frames: u64,
}

/// Card-wide settings in a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardSettings {
    pub vfs: u16,
    pub queue_pairs: u32,
    #[serde(default)]
    pub card_id: u8,
    /// VxLAN tunnel IDs (and MAC entries) the card holds.
    #[serde(default = "default_vxlan_capacity")]
    pub vxlan_capacity: u32,
    /// Extra unicast addresses an untrusted VF may have.
    #[serde(default = "default_vf_max_addrs")]
    pub vf_max_addrs: u32,
}

fn default_vxlan_capacity() -> u32 {
    DEFAULT_VXLAN_CAPACITY
}

fn default_vf_max_addrs() -> u32 {
    DEFAULT_VF_MAX_ADDRS
}

/// A vNIC in a configuration file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnicFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default)]
    pub vlan: u16,
}

/// A function in a configuration file. Absent fields keep their values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnics: Option<Vec<VnicFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoof_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkState>,
    /// `null` removes the policy; absent keeps it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "explicit_null"
    )]
    pub tx_rate: Option<Option<RatePolicy>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "explicit_null"
    )]
    pub rx_rate: Option<Option<RatePolicy>>,
    /// The VCT entry (BAT address) management gives the function
    /// (docs/migration.md); absent keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vct: Option<GuestAddr>,
    /// The VF's attribute: a VNI (VxLAN), `null` (VLAN); absent keeps it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "explicit_null"
    )]
    pub vni: Option<Option<u32>>,
}

/// A static forwarding entry in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbFile {
    pub mac: Mac,
    #[serde(default)]
    pub vlan: u16,
    pub function: String,
    pub vnic: u16,
}

/// The configuration file, `export` and `apply` (docs/management.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_vfs: Option<u16>,
    #[serde(default)]
    pub functions: Vec<FunctionFile>,
    /// Static entries; when present they replace the card's static entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdb: Option<Vec<FdbFile>>,
    /// The VTEP; absent keeps the card's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<Vtep>,
}

/// `Option<Option<T>>` that tells an absent field (outer None) from an
/// explicit `null` (Some(None)).
mod explicit_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BadFrame, Event, PuntReason, MAX_FRAME_BYTES};

    #[test]
    fn requests_round_trip_through_json() {
        let r: Request =
            serde_json::from_str(r#"{"op":"set-vnics","function":"vf0","count":3}"#).unwrap();
        assert_eq!(
            r,
            Request::SetVnics {
                function: "vf0".into(),
                count: 3
            }
        );
        let back = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&back).unwrap(), r);
        let r: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(r, Request::List {});
        assert!(serde_json::from_str::<Request>(r#"{"op":"list","x":1}"#).is_err());
    }

    #[test]
    fn unknown_ops_and_fields_and_bad_macs_are_refused() {
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
        assert!(serde_json::from_str::<Request>(
            r#"{"op":"set-vnics","function":"vf0","count":3,"force":true}"#
        )
        .is_err());
        let e =
            serde_json::from_str::<Request>(r#"{"op":"fdb-del","mac":"02:00:00:00:00","vlan":0}"#)
                .unwrap_err();
        assert!(e.to_string().contains("bad MAC"), "{e}");
    }

    #[test]
    fn rate_null_differs_from_absent_in_a_config_file() {
        let f: FunctionFile = serde_json::from_str(r#"{"name":"vf0","tx_rate":null}"#).unwrap();
        assert_eq!(f.tx_rate, Some(None));
        assert_eq!(f.rx_rate, None);
        let f: FunctionFile = serde_json::from_str(
            r#"{"name":"vf0","tx_rate":{"avg_kbps":20000,"burst_bytes":65536}}"#,
        )
        .unwrap();
        assert_eq!(
            f.tx_rate,
            Some(Some(RatePolicy {
                avg_kbps: 20000,
                peak_kbps: 0,
                burst_bytes: 65536
            }))
        );
    }

    #[test]
    fn guest_addresses_are_hex_strings_and_accept_numbers() {
        let r: Request =
            serde_json::from_str(r#"{"op":"vct-set","function":"vf0","address":"0x3e8a000"}"#)
                .unwrap();
        let back = serde_json::to_string(&r).unwrap();
        assert!(back.contains(r#""address":"0x3e8a000""#), "{back}");
        let n: GuestAddr = serde_json::from_str("65536").unwrap();
        assert_eq!(n, GuestAddr(0x10000));
        assert_eq!("4096".parse::<GuestAddr>(), Ok(GuestAddr(4096)));
        for bad in ["", "0x", "0xg", "-1", "1.5", "0x1ffffffffffffffff"] {
            assert!(bad.parse::<GuestAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_are_lowercase_hex_and_bad_hex_is_refused() {
        let r: Request = serde_json::from_str(r#"{"op":"uplink-send","frame":"00FFa0"}"#).unwrap();
        assert_eq!(
            r,
            Request::UplinkSend {
                frame: Frame(vec![0, 0xff, 0xa0])
            }
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"uplink-send","frame":"00ffa0"}"#
        );
        assert_eq!("abc".parse::<Frame>(), Err(BadFrame::OddLength));
        assert_eq!("zz".parse::<Frame>(), Err(BadFrame::NotHex));
        assert_eq!("é".parse::<Frame>(), Err(BadFrame::NotHex));
        let huge = "00".repeat(MAX_FRAME_BYTES + 1);
        assert_eq!(
            huge.parse::<Frame>(),
            Err(BadFrame::TooLong(MAX_FRAME_BYTES + 1))
        );
        assert_eq!(
            "00".repeat(MAX_FRAME_BYTES)
                .parse::<Frame>()
                .unwrap()
                .0
                .len(),
            MAX_FRAME_BYTES
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"op":"vxlan-send","vni":1,"frame":5}"#).is_err()
        );
    }

    #[test]
    fn vxlan_requests_and_events_use_the_documented_names() {
        let r: Request = serde_json::from_str(
            r#"{"op":"vxlan-add","vni":100,"mac":"02:00:00:00:00:01","remote_ip":"10.1.0.2","remote_mac":"02:00:00:00:00:02"}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::VxlanAdd { vni: 100, .. }));
        let r: Request =
            serde_json::from_str(r#"{"op":"set-attr","function":"vf0","vni":null}"#).unwrap();
        assert_eq!(
            r,
            Request::SetAttr {
                function: "vf0".into(),
                vni: None,
                vlan: None
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"op":"set-vtep","mac":"02:76:6e:ff:00:01","ip":"10.1.0.1"}"#)
                .unwrap();
        assert!(matches!(r, Request::SetVtep { .. }));
        let e = Event::VxlanPunt {
            vni: 7,
            outer_src_ip: Ipv4Addr::new(10, 1, 0, 2),
            outer_src_mac: Mac([2, 0, 0, 0, 0, 2]),
            reason: PuntReason::Moved,
            frame: Frame(vec![1]),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"vxlan-punt","vni":7,"outer_src_ip":"10.1.0.2","outer_src_mac":"02:00:00:00:00:02","reason":"moved","frame":"01"}"#
        );
    }

    #[test]
    fn vni_null_differs_from_absent_and_capacity_has_a_default() {
        let f: FunctionFile = serde_json::from_str(r#"{"name":"vf0","vni":null}"#).unwrap();
        assert_eq!(f.vni, Some(None));
        let f: FunctionFile = serde_json::from_str(r#"{"name":"vf0","vni":5}"#).unwrap();
        assert_eq!(f.vni, Some(Some(5)));
        let f: FunctionFile = serde_json::from_str(r#"{"name":"vf0"}"#).unwrap();
        assert_eq!(f.vni, None);
        let s: CardSettings = serde_json::from_str(r#"{"vfs":2,"queue_pairs":4}"#).unwrap();
        assert_eq!(s.vxlan_capacity, DEFAULT_VXLAN_CAPACITY);
    }

    #[test]
    fn events_carry_their_name() {
        let e = Event::VnicsChanged {
            function: "vf0".into(),
            count: 3,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"vnics-changed","function":"vf0","count":3}"#
        );
    }
}
