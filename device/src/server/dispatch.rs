//! From a validated message to the function's answer: one handler per
//! vfio-user command, each returning the reply payload or an errno.

use vfio_bindings::bindings::vfio::{
    vfio_region_info, VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_PCI_BAR0_REGION_INDEX,
    VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
};

use super::connection::{Message, Reply};
use crate::clientlog::Cause;
use crate::doorbell;
use crate::function::{FnError, Function};
use crate::protocol::{
    error_reply, region_info_payload, reply, version_payload, Command, Decoded, ProtocolError,
    Writer, DEVICE_INFO_SIZE, DMA_UNMAP_SIZE, IRQ_INFO_SIZE, IRQ_SET_SIZE,
};
use crate::regs;

/// Why a request failed: an errno for the client plus a log message.
struct Failure {
    errno: i32,
    why: String,
}

impl From<ProtocolError> for Failure {
    fn from(e: ProtocolError) -> Self {
        Failure {
            errno: e.errno(),
            why: e.to_string(),
        }
    }
}

impl From<FnError> for Failure {
    fn from(e: FnError) -> Self {
        Failure {
            errno: e.errno(),
            why: e.to_string(),
        }
    }
}

fn invalid(why: &str) -> Failure {
    Failure {
        errno: libc::EINVAL,
        why: why.into(),
    }
}

/// Whether a request may change what the state record keeps
/// (crate::restart): anything but reads, information and doorbells.
fn durable(req: &Decoded<'_>) -> bool {
    let doorbell = |region: u32, offset: u64, len: usize| {
        region == VFIO_PCI_BAR0_REGION_INDEX
            && (regs::is_doorbell(offset) || doorbell::in_page(offset, len))
    };
    match req {
        Decoded::RegionRead { .. }
        | Decoded::DeviceGetInfo { .. }
        | Decoded::GetRegionInfo(_)
        | Decoded::GetIrqInfo(_) => false,
        Decoded::RegionWrite {
            offset,
            region,
            data,
        } => !doorbell(*region, *offset, data.len()),
        Decoded::RegionWriteMulti(writes) => writes
            .iter()
            .any(|w| !doorbell(w.region, w.offset, w.bytes().len())),
        _ => true,
    }
}

/// Handles one message for `func`. Returns the bytes to send back, or None
/// when the client asked for no reply (posted writes). Never panics on
/// client input: every failure becomes an error reply and a log line.
/// Sets `changed` if the message may have changed what the state record
/// keeps.
pub fn handle(
    func: &mut Function,
    versioned: &mut bool,
    msg: Message,
    changed: &mut bool,
) -> Option<Reply> {
    let header = msg.header;
    let no_reply = header.flags.no_reply();
    let result = Command::try_from(header.command)
        .map_err(Failure::from)
        .and_then(|cmd| {
            if !*versioned && cmd != Command::Version {
                return Err(invalid("VERSION must be negotiated first"));
            }
            let req = Decoded::parse(cmd, &msg.body)?;
            *changed |= durable(&req);
            execute(func, versioned, req, msg.fds)
        });
    match result {
        Ok((payload, fd)) if !no_reply => Some(Reply {
            bytes: reply(&header, &payload),
            fd,
        }),
        Ok(_) => None,
        Err(f) => {
            func.count_protocol_error();
            let command = header.command;
            func.log(
                Cause::Refused,
                format_args!("command {command} refused: {}", f.why),
            );
            (!no_reply).then(|| error_reply(&header, f.errno).into())
        }
    }
}

/// A reply's payload, and the descriptor it carries.
type Answer = (Vec<u8>, Option<std::fs::File>);

fn execute(
    func: &mut Function,
    versioned: &mut bool,
    req: Decoded<'_>,
    fds: Vec<std::fs::File>,
) -> Result<Answer, Failure> {
    let takes_fds = matches!(req, Decoded::DmaMap { .. } | Decoded::SetIrqs { .. });
    if !takes_fds && !fds.is_empty() {
        // Dropping them closes them.
        return Err(invalid("unexpected file descriptors"));
    }
    if let Decoded::GetRegionInfo(info) = req {
        return region_info(func, info);
    }
    execute_plain(func, versioned, req, fds).map(|payload| (payload, None))
}

/// GET_REGION_INFO. A mappable region's reply carries its file, but only
/// the reply that includes the capabilities (the one QEMU keeps, after the
/// argsz round), so a client never receives a descriptor it drops.
fn region_info(func: &Function, info: vfio_region_info) -> Result<Answer, Failure> {
    let (flags, size) = func.region_info(info.index)?;
    let out = vfio_region_info {
        flags,
        index: info.index,
        size,
        ..Default::default()
    };
    let (payload, complete) = region_info_payload(out, info.argsz, &func.region_caps(info.index));
    let fd = match func.region_fd(info.index).filter(|_| complete) {
        Some(file) => Some(file.try_clone().map_err(|e| Failure {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            why: format!("duplicating the region's file: {e}"),
        })?),
        None => None,
    };
    Ok((payload, fd))
}

fn execute_plain(
    func: &mut Function,
    versioned: &mut bool,
    req: Decoded<'_>,
    mut fds: Vec<std::fs::File>,
) -> Result<Vec<u8>, Failure> {
    let mut w = Writer::default();
    match req {
        Decoded::Version { .. } => {
            if *versioned {
                return Err(invalid("VERSION sent twice"));
            }
            *versioned = true;
            return Ok(version_payload());
        }
        Decoded::DmaMap {
            flags,
            offset,
            address,
            size,
        } => {
            if fds.len() > 1 {
                return Err(invalid("DMA_MAP with more than one descriptor"));
            }
            // A refusal is logged once, rate-limited, by handle().
            func.dma_map(address, size, offset, flags, fds.pop())?;
        }
        Decoded::DmaUnmap {
            argsz,
            flags,
            address,
            size,
        } => {
            let all = flags == VFIO_DMA_UNMAP_FLAG_ALL;
            if flags != 0 && !all {
                return Err(invalid(
                    "DMA_UNMAP flags other than UNMAP_ALL are unsupported",
                ));
            }
            if all && (address != 0 || size != 0) {
                return Err(invalid("DMA_UNMAP_ALL with an address range"));
            }
            func.dma_unmap(address, size, all)?;
            w.u32(argsz.min(DMA_UNMAP_SIZE as u32))
                .u32(flags)
                .u64(address)
                .u64(size);
        }
        Decoded::DeviceGetInfo { .. } => {
            w.u32(DEVICE_INFO_SIZE as u32)
                .u32(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET)
                .u32(VFIO_PCI_NUM_REGIONS)
                .u32(VFIO_PCI_NUM_IRQS);
        }
        Decoded::GetRegionInfo(_) => unreachable!("answered by region_info"),
        Decoded::GetIrqInfo(info) => {
            let (flags, count) = func.irq_info(info.index)?;
            w.u32(IRQ_INFO_SIZE as u32)
                .u32(flags)
                .u32(info.index)
                .u32(count);
        }
        Decoded::SetIrqs { set, data } => {
            if set.flags & VFIO_IRQ_SET_DATA_TYPE_MASK == VFIO_IRQ_SET_DATA_BOOL
                && (set.argsz as usize) < IRQ_SET_SIZE + set.count as usize
            {
                return Err(invalid("SET_IRQS argsz too small for the bool array"));
            }
            func.set_irqs(set.flags, set.index, set.start, set.count, data, fds)?;
        }
        Decoded::RegionRead {
            offset,
            region,
            count,
        } => {
            let mut buf = vec![0; count as usize];
            func.region_read(region, offset, &mut buf)?;
            w.u64(offset).u32(region).u32(count).bytes(&buf);
        }
        Decoded::RegionWrite {
            offset,
            region,
            data,
        } => {
            func.region_write(region, offset, data)?;
            w.u64(offset).u32(region).u32(data.len() as u32);
        }
        Decoded::RegionWriteMulti(writes) => {
            for wr in &writes {
                func.region_write(wr.region, wr.offset, wr.bytes())?;
            }
            // The reply (if asked for) carries wr_cnt: the writes completed.
            w.u64(writes.len() as u64);
        }
        Decoded::DeviceReset => func.reset(),
    }
    Ok(w.0)
}
