//! Management: the control socket's messages ([`api`]).

pub mod api;
