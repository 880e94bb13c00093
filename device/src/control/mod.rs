//! Management (docs/management.md): the control socket's messages
//! ([`api`]), the card operations they run ([`ops`]), the configuration file
//! ([`config`]), the PF admin mailbox ([`admin`]), migration ([`migration`],
//! docs/migration.md), uplink and VxLAN operations ([`vxlan`],
//! docs/vxlan.md) and the control socket itself ([`socket`]).

pub mod admin;
pub mod api;
pub mod config;
pub mod migration;
pub mod ops;
pub mod socket;
pub mod vxlan;
