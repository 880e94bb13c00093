//! vnic: an emulated PCIe SR-IOV network card, served over vfio-user.
//!
//! The card ([`card::Card`]) has one PF and several VFs ([`function::Function`]),
//! each a PCI function with real configuration space ([`pci`]), a BAR0
//! register file ([`regs`]), MSI-X ([`pci::msix`]) and DMA into the guest's
//! memory ([`dma`]). [`server::Server`] serves every function's vfio-user
//! socket ([`protocol`]) from one event loop. The card's uplink
//! ([`uplink`]) is its physical port; VFs with the VxLAN attribute reach it
//! through the card's VxLAN offload ([`vxlan`]).

pub mod agent;
pub(crate) mod capture;
pub mod card;
pub(crate) mod checksum;
pub(crate) mod clientlog;
pub mod control;
pub(crate) mod datapath;
pub mod dma;
pub mod doorbell;
pub(crate) mod fault;
pub mod function;
pub mod keeper;
#[cfg(test)]
mod layering_check;
#[cfg(test)]
mod layout_check;
pub mod model;
pub mod offload;
pub(crate) mod pci;
pub mod protocol;
pub(crate) mod queue;
pub(crate) mod rate;
pub mod regs;
pub mod restart;
pub mod ring;
pub mod server;
pub mod state;
pub mod switch;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod uplink;
pub mod vxlan;
