//! Helpers shared by vnic integration tests.
