//! The vfio-user wire format: message header, commands and their payloads.
//!
//! Everything that comes off a client socket is decoded here, and nothing is
//! allocated for a message before its header has been validated against the
//! negotiated limits. Fields are little-endian on the wire (vfio-user uses the
//! host's order, and vnicd only runs on little-endian hosts); decoding goes
//! through [`Reader`] so a short payload is an error value, never a panic.
//!
//! The structures mirror QEMU's `hw/vfio-user/protocol.h` and the payload
//! structs of `<linux/vfio.h>` (through `vfio-bindings`), as described in
//! QEMU's `docs/interop/vfio-user.rst`.

use std::mem::offset_of;

use bitfield_struct::bitfield;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vfio_bindings::bindings::vfio::{
    vfio_device_info, vfio_info_cap_header, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap,
    vfio_irq_info, vfio_irq_set, vfio_region_info,
};

const _: () = assert!(
    cfg!(target_endian = "little"),
    "vnicd needs a little-endian host"
);

/// Size of the header that starts every message.
pub const HEADER_SIZE: usize = 16;
/// Largest data payload of one REGION_READ/WRITE we accept (offered to clients
/// in VERSION as `max_data_xfer_size`; QEMU's default).
pub const MAX_DATA_XFER: u32 = 1 << 20;
/// Largest whole message we accept: a maximal region write plus its headers.
pub const MAX_MSG_SIZE: u32 = MAX_DATA_XFER + 64;
/// Most file descriptors one message may carry (`max_msg_fds`; QEMU's maximum).
pub const MAX_MSG_FDS: usize = 16;
/// Largest reply a client may send: the card's only requests are
/// DMA_WRITEs, whose answers are a header and at most their address and
/// count.
pub const MAX_REPLY_SIZE: u32 = 64;
/// Most DMA mappings one client may hold (`max_dma_maps`).
pub const MAX_DMA_MAPS: u32 = 256;
/// DMA page size offered in `pgsizes`.
pub const DMA_PAGE_SIZE: u64 = 4096;
/// Largest VERSION capability string we parse.
pub const MAX_VERSION_JSON: usize = 4096;
/// Protocol version we speak (QEMU checks `major == 0 && minor <= 0`).
pub const VERSION_MAJOR: u16 = 0;
pub const VERSION_MINOR: u16 = 0;

/// Entries in one REGION_WRITE_MULTI (QEMU's `VFIO_USER_MULTI_MAX`).
pub const WRITE_MULTI_MAX: u64 = 200;
/// Data bytes in one REGION_WRITE_MULTI entry (`VFIO_USER_MULTI_DATA`).
pub const WRITE_MULTI_DATA: usize = 8;

// Payload sizes. Most commands carry the `<linux/vfio.h>` struct of the
// matching ioctl after the header, so their sizes come from `vfio-bindings`;
// the assertions below pin them, as they are part of the wire format.

/// DMA_MAP: laid out as `vfio_iommu_type1_dma_map` (argsz, flags, then the
/// file offset where the kernel has `vaddr`, address, size).
const DMA_MAP_SIZE: usize = size_of::<vfio_iommu_type1_dma_map>();
/// DMA_UNMAP, request and reply: `vfio_iommu_type1_dma_unmap` up to its
/// dirty bitmap, which vnicd does not offer.
pub const DMA_UNMAP_SIZE: usize = offset_of!(vfio_iommu_type1_dma_unmap, data);
/// DEVICE_GET_INFO: `vfio_device_info` up to `cap_offset` (vfio-user's
/// carries no capability chain).
pub const DEVICE_INFO_SIZE: usize = offset_of!(vfio_device_info, cap_offset);
/// DEVICE_GET_REGION_INFO: `vfio_region_info`; region capabilities start
/// after it.
pub const REGION_INFO_SIZE: u32 = size_of::<vfio_region_info>() as u32;
/// DEVICE_GET_IRQ_INFO: `vfio_irq_info`.
pub const IRQ_INFO_SIZE: usize = size_of::<vfio_irq_info>();
/// DEVICE_SET_IRQS: `vfio_irq_set` up to its `data` (a bool array, if any;
/// eventfds travel as file descriptors).
pub const IRQ_SET_SIZE: usize = offset_of!(vfio_irq_set, data);
/// The header of each region capability.
const CAP_HEADER_SIZE: usize = size_of::<vfio_info_cap_header>();
/// REGION_READ and REGION_WRITE, before the data: vfio-user's own
/// `vfio_user_region_access` header (offset u64, region u32, count u32).
const REGION_ACCESS_SIZE: usize = 16;
/// REGION_WRITE_MULTI: its write count (u64), then the entries, each a
/// region access header and `WRITE_MULTI_DATA` bytes of data.
const WRITE_MULTI_COUNT: usize = size_of::<u64>();
const WRITE_MULTI_ENTRY: usize = REGION_ACCESS_SIZE + WRITE_MULTI_DATA;

const _: () = assert!(DMA_MAP_SIZE == 32 && DMA_UNMAP_SIZE == 24, "DMA_MAP/UNMAP");
const _: () = assert!(DEVICE_INFO_SIZE == 16, "DEVICE_GET_INFO");
const _: () = assert!(
    REGION_INFO_SIZE == 32 && CAP_HEADER_SIZE == 8,
    "REGION_INFO"
);
const _: () = assert!(
    IRQ_INFO_SIZE == 16 && IRQ_SET_SIZE == 20,
    "IRQ_INFO/SET_IRQS"
);
const _: () = assert!(WRITE_MULTI_ENTRY == 24, "REGION_WRITE_MULTI entry");

/// Message type, in the low four bits of the header flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    Command = 0,
    Reply = 1,
}

/// The header's flags word.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct HeaderFlags {
    /// 0 = command, 1 = reply; anything else is invalid.
    #[bits(4)]
    pub msg_type: u8,
    /// The sender does not want a reply (posted writes, the card's
    /// DMA_WRITEs but the last of a batch).
    pub no_reply: bool,
    /// This reply carries an errno in `error`.
    pub error: bool,
    #[bits(26)]
    __: u32,
}

/// vfio-user commands. Numbers are fixed by the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Command {
    Version = 1,
    DmaMap = 2,
    DmaUnmap = 3,
    DeviceGetInfo = 4,
    DeviceGetRegionInfo = 5,
    DeviceGetRegionIoFds = 6,
    DeviceGetIrqInfo = 7,
    DeviceSetIrqs = 8,
    RegionRead = 9,
    RegionWrite = 10,
    DmaRead = 11,
    DmaWrite = 12,
    DeviceReset = 13,
    DirtyPages = 14,
    RegionWriteMulti = 15,
    DeviceFeature = 16,
    MigDataRead = 17,
    MigDataWrite = 18,
}

impl TryFrom<u16> for Command {
    type Error = ProtocolError;

    fn try_from(v: u16) -> Result<Self, ProtocolError> {
        use Command::*;
        const ALL: [Command; 18] = [
            Version,
            DmaMap,
            DmaUnmap,
            DeviceGetInfo,
            DeviceGetRegionInfo,
            DeviceGetRegionIoFds,
            DeviceGetIrqInfo,
            DeviceSetIrqs,
            RegionRead,
            RegionWrite,
            DmaRead,
            DmaWrite,
            DeviceReset,
            DirtyPages,
            RegionWriteMulti,
            DeviceFeature,
            MigDataRead,
            MigDataWrite,
        ];
        ALL.iter()
            .copied()
            .find(|c| *c as u16 == v)
            .ok_or(ProtocolError::UnknownCommand(v))
    }
}

/// Why a message was refused. Each maps to the errno sent back.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message size {0} outside 16..={MAX_MSG_SIZE}")]
    BadSize(u32),
    #[error("message type {0} is not a command (or a reply of at most {MAX_REPLY_SIZE} bytes)")]
    NotACommand(u8),
    #[error("unknown command {0}")]
    UnknownCommand(u16),
    #[error("command {0:?} is not supported")]
    Unsupported(Command),
    #[error("payload of {cmd:?} is {len} bytes, need {need}")]
    Short {
        cmd: Command,
        len: usize,
        need: usize,
    },
    #[error("argsz {argsz} too small for {cmd:?}")]
    ArgSz { cmd: Command, argsz: u32 },
    #[error("invalid capabilities: {0}")]
    Capabilities(String),
    #[error("incompatible version {0}.{1}")]
    Version(u16, u16),
    #[error("transfer of {0} bytes exceeds {MAX_DATA_XFER}")]
    TooLarge(u64),
    #[error("write count {count} does not match {len} payload bytes")]
    CountMismatch { count: u32, len: usize },
    #[error("{0}")]
    Invalid(&'static str),
}

impl ProtocolError {
    /// The errno a client sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            ProtocolError::UnknownCommand(_) | ProtocolError::Unsupported(_) => libc::ENOTSUP,
            ProtocolError::TooLarge(_) => libc::E2BIG,
            _ => libc::EINVAL,
        }
    }
}

/// A decoded message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    pub id: u16,
    pub command: u16,
    pub size: u32,
    pub flags: HeaderFlags,
    pub error: u32,
}

impl MessageHeader {
    /// Decodes a header without judging it; see [`MessageHeader::validate`].
    pub fn decode(b: &[u8; HEADER_SIZE]) -> MessageHeader {
        let mut r = Reader::new(b);
        // The reader cannot run short on a fixed 16-byte array.
        MessageHeader {
            id: r.u16().unwrap_or_default(),
            command: r.u16().unwrap_or_default(),
            size: r.u32().unwrap_or_default(),
            flags: HeaderFlags::from_bits(r.u32().unwrap_or_default()),
            error: r.u32().unwrap_or_default(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.command.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.flags.into_bits().to_le_bytes());
        out.extend_from_slice(&self.error.to_le_bytes());
    }

    /// Checks what can be checked before reading the payload: the size bound
    /// (so nothing larger than [`MAX_MSG_SIZE`] is ever allocated), and
    /// that the client sent a command, or a short reply (the answer to a
    /// DMA_WRITE of the card's, [`dma_write`]: QEMU 11.1.3 sends the
    /// header and the request's address and count; the payload is not
    /// read, see [`MAX_REPLY_SIZE`]).
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if (self.size as usize) < HEADER_SIZE || self.size > MAX_MSG_SIZE {
            return Err(ProtocolError::BadSize(self.size));
        }
        let t = self.flags.msg_type();
        if t == MsgType::Reply as u8 && self.size <= MAX_REPLY_SIZE {
            return Ok(());
        }
        if t != MsgType::Command as u8 {
            return Err(ProtocolError::NotACommand(t));
        }
        Ok(())
    }

    pub fn body_len(&self) -> usize {
        (self.size as usize).saturating_sub(HEADER_SIZE)
    }
}

/// Bounds-checked little-endian cursor over a payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        bytes.try_into().ok()
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }
}

/// Capabilities exchanged in VERSION (`{"capabilities": {...}}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionCaps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_fds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_xfer_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgsizes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dma_maps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_multiple: Option<bool>,
    /// Migration capabilities of a client; vnicd does not offer
    /// vfio-user migration (state travels in guest memory instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<serde_json::Value>,
}

impl VersionCaps {
    /// What vnicd offers.
    pub fn server() -> Self {
        VersionCaps {
            capabilities: Some(Capabilities {
                max_msg_fds: Some(MAX_MSG_FDS as u64),
                max_data_xfer_size: Some(MAX_DATA_XFER as u64),
                pgsizes: Some(DMA_PAGE_SIZE),
                max_dma_maps: Some(MAX_DMA_MAPS as u64),
                write_multiple: Some(true),
                migration: None,
            }),
        }
    }
}

/// One write of a REGION_WRITE_MULTI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiWrite {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
    pub data: [u8; WRITE_MULTI_DATA],
}

impl MultiWrite {
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.count as usize]
    }
}

/// A validated request. Borrowed data points into the message body.
#[derive(Debug)]
pub enum Decoded<'a> {
    Version {
        major: u16,
        minor: u16,
        caps: VersionCaps,
    },
    DmaMap {
        flags: u32,
        offset: u64,
        address: u64,
        size: u64,
    },
    DmaUnmap {
        argsz: u32,
        flags: u32,
        address: u64,
        size: u64,
    },
    DeviceGetInfo {
        argsz: u32,
    },
    GetRegionInfo(vfio_region_info),
    GetIrqInfo(vfio_irq_info),
    SetIrqs {
        set: vfio_irq_set,
        data: &'a [u8],
    },
    RegionRead {
        offset: u64,
        region: u32,
        count: u32,
    },
    RegionWrite {
        offset: u64,
        region: u32,
        data: &'a [u8],
    },
    RegionWriteMulti(Vec<MultiWrite>),
    DeviceReset,
}

fn short(cmd: Command, len: usize, need: usize) -> ProtocolError {
    ProtocolError::Short { cmd, len, need }
}

impl<'a> Decoded<'a> {
    /// Decodes and validates the body of a command whose header passed
    /// [`MessageHeader::validate`]. Only the fixed fields are checked here; whether a
    /// region, IRQ index or address exists is the function's business.
    pub fn parse(cmd: Command, body: &'a [u8]) -> Result<Decoded<'a>, ProtocolError> {
        let mut r = Reader::new(body);
        let len = body.len();
        match cmd {
            Command::Version => Self::parse_version(&mut r, len),
            Command::DmaMap => {
                let need = DMA_MAP_SIZE;
                let (argsz, flags, offset, address, size) =
                    (|| Some((r.u32()?, r.u32()?, r.u64()?, r.u64()?, r.u64()?)))()
                        .ok_or_else(|| short(cmd, len, need))?;
                if argsz < need as u32 {
                    return Err(ProtocolError::ArgSz { cmd, argsz });
                }
                Ok(Decoded::DmaMap {
                    flags,
                    offset,
                    address,
                    size,
                })
            }
            Command::DmaUnmap => {
                let need = DMA_UNMAP_SIZE;
                let (argsz, flags, address, size) =
                    (|| Some((r.u32()?, r.u32()?, r.u64()?, r.u64()?)))()
                        .ok_or_else(|| short(cmd, len, need))?;
                if argsz < need as u32 {
                    return Err(ProtocolError::ArgSz { cmd, argsz });
                }
                Ok(Decoded::DmaUnmap {
                    argsz,
                    flags,
                    address,
                    size,
                })
            }
            Command::DeviceGetInfo => {
                let argsz = r.u32().ok_or_else(|| short(cmd, len, 4))?;
                if argsz < DEVICE_INFO_SIZE as u32 {
                    return Err(ProtocolError::ArgSz { cmd, argsz });
                }
                Ok(Decoded::DeviceGetInfo { argsz })
            }
            Command::DeviceGetRegionInfo => {
                let info = (|| {
                    Some(vfio_region_info {
                        argsz: r.u32()?,
                        flags: r.u32()?,
                        index: r.u32()?,
                        cap_offset: r.u32()?,
                        size: r.u64()?,
                        offset: r.u64()?,
                    })
                })()
                .ok_or_else(|| short(cmd, len, REGION_INFO_SIZE as usize))?;
                if info.argsz < REGION_INFO_SIZE {
                    return Err(ProtocolError::ArgSz {
                        cmd,
                        argsz: info.argsz,
                    });
                }
                Ok(Decoded::GetRegionInfo(info))
            }
            Command::DeviceGetIrqInfo => {
                let info = (|| {
                    Some(vfio_irq_info {
                        argsz: r.u32()?,
                        flags: r.u32()?,
                        index: r.u32()?,
                        count: r.u32()?,
                    })
                })()
                .ok_or_else(|| short(cmd, len, IRQ_INFO_SIZE))?;
                if info.argsz < IRQ_INFO_SIZE as u32 {
                    return Err(ProtocolError::ArgSz {
                        cmd,
                        argsz: info.argsz,
                    });
                }
                Ok(Decoded::GetIrqInfo(info))
            }
            Command::DeviceSetIrqs => {
                let set = (|| {
                    Some(vfio_irq_set {
                        argsz: r.u32()?,
                        flags: r.u32()?,
                        index: r.u32()?,
                        start: r.u32()?,
                        count: r.u32()?,
                        ..Default::default()
                    })
                })()
                .ok_or_else(|| short(cmd, len, IRQ_SET_SIZE))?;
                if set.argsz < IRQ_SET_SIZE as u32 {
                    return Err(ProtocolError::ArgSz {
                        cmd,
                        argsz: set.argsz,
                    });
                }
                Ok(Decoded::SetIrqs {
                    set,
                    data: r.rest(),
                })
            }
            Command::RegionRead => {
                let (offset, region, count) = (|| Some((r.u64()?, r.u32()?, r.u32()?)))()
                    .ok_or_else(|| short(cmd, len, REGION_ACCESS_SIZE))?;
                if count > MAX_DATA_XFER {
                    return Err(ProtocolError::TooLarge(count.into()));
                }
                Ok(Decoded::RegionRead {
                    offset,
                    region,
                    count,
                })
            }
            Command::RegionWrite => {
                let (offset, region, count) = (|| Some((r.u64()?, r.u32()?, r.u32()?)))()
                    .ok_or_else(|| short(cmd, len, REGION_ACCESS_SIZE))?;
                let data = r.rest();
                if count as usize != data.len() {
                    return Err(ProtocolError::CountMismatch {
                        count,
                        len: data.len(),
                    });
                }
                Ok(Decoded::RegionWrite {
                    offset,
                    region,
                    data,
                })
            }
            Command::RegionWriteMulti => Self::parse_write_multi(&mut r, len),
            Command::DeviceReset => Ok(Decoded::DeviceReset),
            other => Err(ProtocolError::Unsupported(other)),
        }
    }

    fn parse_version(r: &mut Reader<'a>, len: usize) -> Result<Decoded<'a>, ProtocolError> {
        let cmd = Command::Version;
        let (major, minor) = (|| Some((r.u16()?, r.u16()?)))().ok_or_else(|| short(cmd, len, 4))?;
        if major != VERSION_MAJOR {
            return Err(ProtocolError::Version(major, minor));
        }
        let json = r.rest();
        let caps = if json.is_empty() {
            VersionCaps::default()
        } else {
            if json.len() > MAX_VERSION_JSON {
                return Err(ProtocolError::Capabilities("longer than 4096 bytes".into()));
            }
            let Some((0, text)) = json.split_last() else {
                return Err(ProtocolError::Capabilities("not NUL-terminated".into()));
            };
            // The spec's capabilities are a UTF-8 JSON string; serde_json
            // alone would let invalid UTF-8 through inside ignored values.
            let text = std::str::from_utf8(text)
                .map_err(|e| ProtocolError::Capabilities(format!("not UTF-8: {e}")))?;
            serde_json::from_str(text).map_err(|e| ProtocolError::Capabilities(e.to_string()))?
        };
        Ok(Decoded::Version { major, minor, caps })
    }

    fn parse_write_multi(r: &mut Reader<'a>, len: usize) -> Result<Decoded<'a>, ProtocolError> {
        let cmd = Command::RegionWriteMulti;
        let count = r.u64().ok_or_else(|| short(cmd, len, WRITE_MULTI_COUNT))?;
        if count == 0 || count > WRITE_MULTI_MAX {
            return Err(ProtocolError::Invalid(
                "REGION_WRITE_MULTI count outside 1..=200",
            ));
        }
        let need = WRITE_MULTI_COUNT + count as usize * WRITE_MULTI_ENTRY;
        if len < need {
            return Err(short(cmd, len, need));
        }
        let mut writes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (offset, region, wcount, data) =
                (|| Some((r.u64()?, r.u32()?, r.u32()?, r.take::<WRITE_MULTI_DATA>()?)))()
                    .ok_or_else(|| short(cmd, len, need))?;
            if wcount as usize > WRITE_MULTI_DATA {
                return Err(ProtocolError::Invalid(
                    "REGION_WRITE_MULTI entry larger than 8 bytes",
                ));
            }
            writes.push(MultiWrite {
                offset,
                region,
                count: wcount,
                data,
            });
        }
        Ok(Decoded::RegionWriteMulti(writes))
    }
}

/// Builds a reply to `req` carrying `payload`.
pub fn reply(req: &MessageHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    MessageHeader {
        id: req.id,
        command: req.command,
        size: (HEADER_SIZE + payload.len()) as u32,
        flags: HeaderFlags::new().with_msg_type(MsgType::Reply as u8),
        error: 0,
    }
    .encode(&mut out);
    out.extend_from_slice(payload);
    out
}

/// A DMA_WRITE request of the card's (live migration, crate::dma::relay):
/// `data` for guest address `address`. Without `reply` it carries
/// NO_REPLY (QEMU answers only an error).
pub fn dma_write(id: u16, address: u64, data: &[u8], reply: bool) -> Vec<u8> {
    let size = HEADER_SIZE + 16 + data.len();
    let mut out = Vec::with_capacity(size);
    MessageHeader {
        id,
        command: Command::DmaWrite as u16,
        size: size as u32,
        flags: HeaderFlags::new()
            .with_msg_type(MsgType::Command as u8)
            .with_no_reply(!reply),
        error: 0,
    }
    .encode(&mut out);
    out.extend_from_slice(&address.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Whether the first bytes of a connection start a vfio-user message: its
/// command field (bytes 2–3) names a vfio-user command. None until 4 bytes
/// are in. Every command number is below 0x20, so the field's high byte is
/// 0: JSON or any other text never has it.
pub fn starts_vfio_user(first: &[u8]) -> Option<bool> {
    let b = first.get(..4)?;
    Some(Command::try_from(u16::from_le_bytes([b[2], b[3]])).is_ok())
}

/// Whether the first bytes of a connection to a vfio-user socket are a
/// JSON object instead (a control client, such as vnicctl, at the wrong
/// socket): they start with `{` and bytes 2–3 are no vfio-user command.
/// None while that cannot be told yet (a `{` and fewer than 4 bytes).
pub fn starts_json(first: &[u8]) -> Option<bool> {
    match first.first()? {
        b'{' => starts_vfio_user(first).map(|v| !v),
        _ => Some(false),
    }
}

/// The error reply to a message whose first `first.len()` bytes (at least
/// 4: its ID and command) are all that was read of it.
pub fn error_reply_to_start(first: &[u8], errno: i32) -> Vec<u8> {
    let mut hdr = [0u8; HEADER_SIZE];
    let n = first.len().min(HEADER_SIZE);
    hdr[..n].copy_from_slice(&first[..n]);
    error_reply(&MessageHeader::decode(&hdr), errno)
}

/// Builds an error reply to `req` carrying a positive errno.
pub fn error_reply(req: &MessageHeader, errno: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE);
    MessageHeader {
        id: req.id,
        command: req.command,
        size: HEADER_SIZE as u32,
        flags: HeaderFlags::new()
            .with_msg_type(MsgType::Reply as u8)
            .with_error(true),
        error: errno as u32,
    }
    .encode(&mut out);
    out
}

/// Little-endian payload builder for replies.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// Encodes a `vfio_region_info` ([`REGION_INFO_SIZE`] bytes).
pub fn encode_region_info(info: &vfio_region_info, w: &mut Writer) {
    w.u32(info.argsz)
        .u32(info.flags)
        .u32(info.index)
        .u32(info.cap_offset)
        .u64(info.size)
        .u64(info.offset);
}

/// One region capability: id, version and the bytes after its
/// `vfio_info_cap_header`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionCap {
    pub id: u16,
    pub version: u16,
    pub body: Vec<u8>,
}

/// Encodes a capability chain as it follows `vfio_region_info` in a
/// GET_REGION_INFO reply: each header's `next` is the offset of the next
/// capability from the start of `vfio_region_info` (0 ends the chain).
pub fn encode_region_caps(caps: &[RegionCap]) -> Vec<u8> {
    let mut w = Writer::default();
    for (i, cap) in caps.iter().enumerate() {
        let end = REGION_INFO_SIZE as usize + w.0.len() + CAP_HEADER_SIZE + cap.body.len();
        let next = if i + 1 < caps.len() { end as u32 } else { 0 };
        w.u16(cap.id).u16(cap.version).u32(next).bytes(&cap.body);
    }
    w.0
}

/// The GET_REGION_INFO reply payload. vfio's argsz protocol: if the client's
/// buffer (`client_argsz`) cannot hold the capabilities, the reply carries
/// only `vfio_region_info` with `argsz` set to the size needed, and the
/// client asks again with a larger buffer. Unlike the kernel, the CAPS flag
/// is set only when the chain is included: QEMU's vfio-user client refuses a
/// reply with CAPS set and `cap_offset` 0. The flag returned says whether the
/// reply is complete (the client's buffer held everything).
pub fn region_info_payload(
    mut info: vfio_region_info,
    client_argsz: u32,
    caps: &[RegionCap],
) -> (Vec<u8>, bool) {
    let chain = encode_region_caps(caps);
    let total = REGION_INFO_SIZE + chain.len() as u32;
    let fits = client_argsz >= total;
    info.argsz = total;
    if !chain.is_empty() && fits {
        info.flags |= vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_CAPS;
        info.cap_offset = REGION_INFO_SIZE;
    }
    let mut w = Writer::default();
    encode_region_info(&info, &mut w);
    if fits {
        w.bytes(&chain);
    }
    (w.0, fits)
}

/// Payload of the VERSION reply: our version and capabilities.
pub fn version_payload() -> Vec<u8> {
    let json = serde_json::to_string(&VersionCaps::server()).unwrap_or_default();
    let mut w = Writer::default();
    w.u16(VERSION_MAJOR)
        .u16(VERSION_MINOR)
        .bytes(json.as_bytes())
        .bytes(&[0]);
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_vfio_user_are_told_apart_by_their_first_four_bytes() {
        let mut version = Vec::new();
        MessageHeader {
            id: 0x7b, // '{'
            command: Command::Version as u16,
            size: 32,
            flags: HeaderFlags::new(),
            error: 0,
        }
        .encode(&mut version);
        assert_eq!(starts_vfio_user(&version), Some(true));
        assert_eq!(
            starts_json(&version),
            Some(false),
            "an ID of 0x7b is no JSON"
        );
        let line = b"{\"op\":\"list\"}\n";
        assert_eq!(starts_vfio_user(line), Some(false));
        assert_eq!(starts_json(line), Some(true));
        assert_eq!(starts_json(b"{\""), None, "not yet");
        assert_eq!(starts_vfio_user(b"this is not json\n"), Some(false));
        assert_eq!(starts_json(b"\x01\x00\x01\x00"), Some(false));
        let reply = error_reply_to_start(&version[..4], libc::EBUSY);
        let h = MessageHeader::decode(reply[..HEADER_SIZE].try_into().unwrap());
        assert_eq!((h.id, h.command, h.size), (0x7b, 1, 16));
        assert!(h.flags.error());
        assert_eq!(h.error, libc::EBUSY as u32);
    }

    fn hdr(cmd: u16, size: u32, flags: u32) -> [u8; 16] {
        let mut v = Vec::new();
        MessageHeader {
            id: 7,
            command: cmd,
            size,
            flags: HeaderFlags::from_bits(flags),
            error: 0,
        }
        .encode(&mut v);
        v.try_into().unwrap()
    }

    #[test]
    fn header_roundtrips_and_validates() {
        let h = MessageHeader::decode(&hdr(9, 32, 0x10));
        assert_eq!(h.id, 7);
        assert_eq!(h.command, 9);
        assert!(h.flags.no_reply());
        assert!(h.validate().is_ok());
        assert_eq!(h.body_len(), 16);
    }

    #[test]
    fn header_rejects_sizes_below_header_and_above_cap() {
        assert_eq!(
            MessageHeader::decode(&hdr(1, 15, 0)).validate(),
            Err(ProtocolError::BadSize(15))
        );
        let big = MAX_MSG_SIZE + 1;
        assert_eq!(
            MessageHeader::decode(&hdr(1, big, 0)).validate(),
            Err(ProtocolError::BadSize(big))
        );
        assert_eq!(
            MessageHeader::decode(&hdr(1, u32::MAX, 0)).validate(),
            Err(ProtocolError::BadSize(u32::MAX))
        );
    }

    #[test]
    fn dma_write_is_a_command_with_address_count_and_data() {
        let m = dma_write(7, 0x1234_5000, &[1, 2, 3], false);
        let h = MessageHeader::decode(m[..HEADER_SIZE].try_into().unwrap());
        assert_eq!((h.id, h.command, h.size), (7, 12, 35));
        assert!(h.flags.no_reply());
        assert_eq!(h.flags.msg_type(), 0);
        assert_eq!(&m[16..24], &0x1234_5000u64.to_le_bytes());
        assert_eq!(&m[24..32], &3u64.to_le_bytes());
        assert_eq!(&m[32..], &[1, 2, 3]);
        let last = dma_write(8, 0, &[], true);
        assert!(!MessageHeader::decode(last[..16].try_into().unwrap())
            .flags
            .no_reply());
    }

    #[test]
    fn header_takes_bare_replies_and_rejects_others_and_unknown_types() {
        assert_eq!(MessageHeader::decode(&hdr(1, 16, 1)).validate(), Ok(()));
        assert_eq!(MessageHeader::decode(&hdr(12, 32, 1)).validate(), Ok(()));
        assert_eq!(
            MessageHeader::decode(&hdr(1, 65, 1)).validate(),
            Err(ProtocolError::NotACommand(1))
        );
        assert_eq!(
            MessageHeader::decode(&hdr(1, 16, 7)).validate(),
            Err(ProtocolError::NotACommand(7))
        );
    }

    #[test]
    fn unknown_command_numbers_are_errors() {
        assert_eq!(Command::try_from(0), Err(ProtocolError::UnknownCommand(0)));
        assert_eq!(
            Command::try_from(19),
            Err(ProtocolError::UnknownCommand(19))
        );
        assert_eq!(Command::try_from(10), Ok(Command::RegionWrite));
    }

    #[test]
    fn version_parses_qemu_capabilities() {
        let json = br#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"migration":{"pgsize":4096,"max_bitmap_size":268435456},"write_multiple":true}}"#;
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice(json);
        body.push(0);
        let Decoded::Version { caps, .. } = Decoded::parse(Command::Version, &body).unwrap() else {
            panic!("not a version")
        };
        assert_eq!(caps.capabilities.unwrap().max_msg_fds, Some(16));
    }

    #[test]
    fn version_rejects_missing_nul_bad_json_and_major() {
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice(b"{}");
        assert!(matches!(
            Decoded::parse(Command::Version, &body),
            Err(ProtocolError::Capabilities(_))
        ));
        let body = [0, 0, 0, 0, b'{', 0];
        assert!(matches!(
            Decoded::parse(Command::Version, &body),
            Err(ProtocolError::Capabilities(_))
        ));
        let body = [1, 0, 0, 0];
        assert_eq!(
            Decoded::parse(Command::Version, &body).unwrap_err(),
            ProtocolError::Version(1, 0)
        );
        assert!(matches!(
            Decoded::parse(Command::Version, &[0]),
            Err(ProtocolError::Short { .. })
        ));
    }

    #[test]
    fn version_rejects_capabilities_that_are_not_utf8() {
        for json in [
            &b"{\"capabilities\":{},\"x\":\"\xff\xfe\"}"[..],
            b"{\"migration\":\"\xc3\x28\"}",
            b"{\"capabilities\":{\"max_msg_fds\":16}}\xff",
        ] {
            let mut body = vec![0, 0, 0, 0];
            body.extend_from_slice(json);
            body.push(0);
            let e = Decoded::parse(Command::Version, &body).unwrap_err();
            assert!(
                matches!(&e, ProtocolError::Capabilities(why) if why.contains("UTF-8")),
                "{e}"
            );
        }
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice("{\"x\":\"caf\u{e9}\"}".as_bytes());
        body.push(0);
        assert!(
            Decoded::parse(Command::Version, &body).is_ok(),
            "UTF-8 is fine"
        );
    }

    #[test]
    fn version_payload_is_nul_terminated_json() {
        let p = version_payload();
        assert_eq!(&p[..4], &[0, 0, 0, 0]);
        assert_eq!(*p.last().unwrap(), 0);
        let caps: VersionCaps = serde_json::from_slice(&p[4..p.len() - 1]).unwrap();
        assert_eq!(caps, VersionCaps::server());
    }

    #[test]
    fn region_write_count_must_match_payload() {
        let mut w = Writer::default();
        w.u64(0).u32(0).u32(8).bytes(&[1, 2, 3, 4]);
        assert_eq!(
            Decoded::parse(Command::RegionWrite, &w.0).unwrap_err(),
            ProtocolError::CountMismatch { count: 8, len: 4 }
        );
    }

    #[test]
    fn region_read_over_transfer_cap_is_e2big() {
        let mut w = Writer::default();
        w.u64(0).u32(0).u32(MAX_DATA_XFER + 1);
        let e = Decoded::parse(Command::RegionRead, &w.0).unwrap_err();
        assert_eq!(e.errno(), libc::E2BIG);
    }

    #[test]
    fn short_payloads_are_errors_for_every_command() {
        for cmd in [
            Command::DmaMap,
            Command::DmaUnmap,
            Command::DeviceGetInfo,
            Command::DeviceGetRegionInfo,
            Command::DeviceGetIrqInfo,
            Command::DeviceSetIrqs,
            Command::RegionRead,
            Command::RegionWrite,
            Command::RegionWriteMulti,
        ] {
            assert!(Decoded::parse(cmd, &[1, 2, 3]).is_err(), "{cmd:?}");
        }
    }

    #[test]
    fn write_multi_checks_count_and_entry_sizes() {
        let mut w = Writer::default();
        w.u64(2);
        for i in 0..2u64 {
            w.u64(i * 4).u32(0).u32(4).bytes(&[i as u8; 8]);
        }
        let Decoded::RegionWriteMulti(ws) =
            Decoded::parse(Command::RegionWriteMulti, &w.0).unwrap()
        else {
            panic!()
        };
        assert_eq!(ws.len(), 2);
        assert_eq!(ws[1].bytes(), &[1, 1, 1, 1]);

        let mut w = Writer::default();
        w.u64(201);
        assert!(Decoded::parse(Command::RegionWriteMulti, &w.0).is_err());
        let mut w = Writer::default();
        w.u64(1).u64(0).u32(0).u32(9).bytes(&[0; 8]);
        assert!(Decoded::parse(Command::RegionWriteMulti, &w.0).is_err());
    }

    #[test]
    fn region_caps_chain_links_by_offset_from_region_info() {
        let caps = [
            RegionCap {
                id: 3,
                version: 1,
                body: vec![],
            },
            RegionCap {
                id: 1,
                version: 1,
                body: vec![0; 8],
            },
        ];
        let b = encode_region_caps(&caps);
        assert_eq!(b.len(), 24);
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()),
            40,
            "next = 32 + 8"
        );
        assert_eq!(u32::from_le_bytes(b[12..16].try_into().unwrap()), 0, "last");
    }

    #[test]
    fn region_info_reports_needed_argsz_when_caps_do_not_fit() {
        let caps = [RegionCap {
            id: 3,
            version: 1,
            body: vec![],
        }];
        let info = vfio_region_info {
            index: 2,
            size: 0x4000,
            flags: 3,
            ..Default::default()
        };
        let (small, complete) = region_info_payload(info, 32, &caps);
        assert!(!complete);
        assert_eq!(small.len(), 32);
        let mut r = Reader::new(&small);
        assert_eq!(r.u32(), Some(40), "argsz needed");
        assert_eq!(
            r.u32(),
            Some(3),
            "no CAPS flag without the chain (QEMU refuses that)"
        );
        assert_eq!(r.u32(), Some(2));
        assert_eq!(r.u32(), Some(0), "no cap_offset without room");
        let (full, complete) = region_info_payload(info, 40, &caps);
        assert!(complete);
        assert_eq!(full.len(), 40);
        assert_eq!(
            u32::from_le_bytes(full[4..8].try_into().unwrap()),
            3 | 8,
            "CAPS flag"
        );
        assert_eq!(u32::from_le_bytes(full[12..16].try_into().unwrap()), 32);
        assert_eq!(u16::from_le_bytes(full[32..34].try_into().unwrap()), 3);
        let (none, complete) = region_info_payload(info, 32, &[]);
        assert!(complete);
        assert_eq!(
            u32::from_le_bytes(none[4..8].try_into().unwrap()),
            3,
            "no CAPS flag"
        );
    }

    #[test]
    fn unsupported_commands_get_enotsup() {
        let e = Decoded::parse(Command::DmaRead, &[]).unwrap_err();
        assert_eq!(e, ProtocolError::Unsupported(Command::DmaRead));
        assert_eq!(e.errno(), libc::ENOTSUP);
    }

    #[test]
    fn error_reply_sets_flags_and_errno() {
        let req = MessageHeader::decode(&hdr(5, 48, 0));
        let r = error_reply(&req, libc::EINVAL);
        let h = MessageHeader::decode(r[..16].try_into().unwrap());
        assert!(h.flags.error());
        assert_eq!(h.flags.msg_type(), MsgType::Reply as u8);
        assert_eq!(h.error, libc::EINVAL as u32);
        assert_eq!(h.id, 7);
    }
}
