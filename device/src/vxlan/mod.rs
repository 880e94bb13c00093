//! VxLAN offload (docs/vxlan.md): the wire format ([`wire`]) and the
//! card's tunnel tables ([`table`]).

pub mod table;
pub mod wire;
