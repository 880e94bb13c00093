//! PCI function model: configuration space, capabilities and MSI-X.

pub mod caps;
pub mod config;
pub mod msix;
