//! What a sent frame's offload header asks of the card (docs/datapath.md,
//! "Offloads"): the header checked against what its send queue negotiated
//! ([`check`]), and whether a receive queue takes the frame as it is
//! ([`takes`]). The data path acts on the answer (`crate::datapath`).

use crate::ring::{Features, MAX_FRAME};

use super::{GsoType, OffloadError, VirtioNetHdr, HDR_LEN};

/// Why the card refused a sent frame's offload header.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(transparent)]
    Header(#[from] OffloadError),
    #[error("checksum request on a send queue without CSUM")]
    CsumNotNegotiated,
    #[error("GSO request on a send queue without GSO")]
    GsoNotNegotiated,
    #[error("{0}-byte frame without GSO (at most {MAX_FRAME})")]
    TooLong(usize),
}

/// What a sent frame's header asks of the card, once accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffloadRequest {
    pub hdr: VirtioNetHdr,
    pub gso: bool,
}

impl OffloadRequest {
    /// The request after an 802.1Q tag went in (`by` = 4) or out (-4).
    pub fn moved(self, by: i16) -> Self {
        OffloadRequest {
            hdr: self.hdr.moved(by),
            ..self
        }
    }
}

/// Whether a receive queue with `features` takes a frame with `request`
/// as it is (a checksum still to complete, a GSO frame unsegmented).
pub(crate) fn takes(features: Features, request: &OffloadRequest) -> bool {
    (!request.hdr.flags.needs_csum() || features.csum()) && (!request.gso || features.gso())
}

/// Checks a sent frame's header against its queue's features: what it
/// asks of the card (None: nothing), or why the card refuses it.
pub(crate) fn check(
    features: Features,
    header: &[u8; HDR_LEN],
    len: usize,
) -> Result<Option<OffloadRequest>, Refusal> {
    // The header of most frames: no request, nothing to check but the
    // length (what parsing it would find, without the parsing).
    if *header == [0; HDR_LEN] && len <= MAX_FRAME {
        return Ok(None);
    }
    let hdr = VirtioNetHdr::parse(header, len)?;
    let gso = hdr.gso_type != GsoType::None;
    if hdr.flags.needs_csum() && !features.csum() {
        return Err(Refusal::CsumNotNegotiated);
    }
    if gso && !features.gso() {
        return Err(Refusal::GsoNotNegotiated);
    }
    if !gso && len > MAX_FRAME {
        return Err(Refusal::TooLong(len));
    }
    Ok(hdr.requests().then_some(OffloadRequest { hdr, gso }))
}
