//! The file descriptor store: what the keeper holds for its workers across
//! their deaths (systemd's FileDescriptorStore, sd_pid_notify_with_fds(3)).
//!
//! Descriptors are stored under names, in the order they came; a worker is
//! given them at 3, 4, … in that order with their names in
//! `LISTEN_FDNAMES`. Storing a name again *replaces* what was stored under
//! it (the new descriptors go to the end). systemd instead keeps both, so
//! a name can stand for descriptors of several stores, until the service
//! removes them with `FDSTOREREMOVE=1`; vnicd's worker always removes a
//! name before storing it again, so the two behave alike for it.
//!
//! Entries are reference-counted so that a succession can keep the store
//! as it was ([`FdStore::clone`]) without duplicating descriptors, and put
//! it back if the new worker fails.

use std::os::fd::OwnedFd;
use std::rc::Rc;

use thiserror::Error;

/// Most descriptors the store holds (the FileDescriptorStoreMax= of
/// contrib/vnicd.service).
pub const MAX_FDS: usize = 4096;

/// Why a store request is refused (its descriptors are then closed).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("the store would hold {0} descriptors, more than {1}")]
    Full(usize, usize),
}

/// One name's descriptors.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    fds: Vec<Rc<OwnedFd>>,
}

/// Descriptors by name, in store order.
#[derive(Clone, Debug)]
pub struct FdStore {
    entries: Vec<Entry>,
    /// Most descriptors held.
    limit: usize,
}

impl Default for FdStore {
    fn default() -> Self {
        FdStore::with_limit(MAX_FDS)
    }
}

impl FdStore {
    /// An empty store holding at most `limit` descriptors ([`MAX_FDS`] by
    /// default).
    pub fn with_limit(limit: usize) -> Self {
        FdStore {
            entries: Vec::new(),
            limit,
        }
    }

    /// Stores `fds` under `name`, replacing what was stored under it.
    /// Returns how many descriptors were replaced. Storing no descriptors
    /// changes nothing.
    pub fn store(&mut self, name: &str, fds: Vec<OwnedFd>) -> Result<usize, StoreError> {
        if fds.is_empty() {
            return Ok(0);
        }
        let old = self.count(name);
        let would = self.len() - old + fds.len();
        if would > self.limit {
            return Err(StoreError::Full(would, self.limit));
        }
        self.remove(name);
        self.entries.push(Entry {
            name: name.to_string(),
            fds: fds.into_iter().map(Rc::new).collect(),
        });
        Ok(old)
    }

    /// Drops what is stored under `name`; returns how many descriptors
    /// that was (0 if the name is not stored).
    pub fn remove(&mut self, name: &str) -> usize {
        let old = self.count(name);
        self.entries.retain(|e| e.name != name);
        old
    }

    /// How many descriptors are stored under `name`.
    pub fn count(&self, name: &str) -> usize {
        self.entries
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.fds.len())
            .sum()
    }

    /// How many descriptors are stored.
    pub fn len(&self) -> usize {
        self.entries.iter().map(|e| e.fds.len()).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The stored descriptors with their names, in store order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OwnedFd)> {
        self.entries
            .iter()
            .flat_map(|e| e.fds.iter().map(move |fd| (e.name.as_str(), &**fd)))
    }

    /// `LISTEN_FDNAMES`: one name per descriptor, in store order, joined
    /// by `:`.
    pub fn listen_fdnames(&self) -> String {
        self.iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
            .join(":")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| {
                std::fs::File::open("/dev/null")
                    .expect("open /dev/null")
                    .into()
            })
            .collect()
    }

    #[test]
    fn names_keep_their_descriptors_in_store_order() {
        let mut s = FdStore::default();
        assert!(s.is_empty());
        assert_eq!(s.store("pf.listen", fds(1)), Ok(0));
        assert_eq!(s.store("state", fds(2)), Ok(0));
        assert_eq!(s.len(), 3);
        assert_eq!(s.count("state"), 2);
        assert_eq!(s.listen_fdnames(), "pf.listen:state:state");
    }

    #[test]
    fn storing_a_name_again_replaces_it_at_the_end() {
        let mut s = FdStore::default();
        s.store("a", fds(2)).unwrap();
        s.store("b", fds(1)).unwrap();
        let new = fds(1);
        let raw = new[0].as_raw_fd();
        assert_eq!(s.store("a", new), Ok(2), "two replaced");
        assert_eq!(s.listen_fdnames(), "b:a");
        assert_eq!(s.iter().last().map(|(_, fd)| fd.as_raw_fd()), Some(raw));
        assert_eq!(s.store("a", Vec::new()), Ok(0), "nothing to store");
        assert_eq!(s.count("a"), 1, "an empty store leaves the name alone");
    }

    #[test]
    fn removing_a_name_drops_its_descriptors() {
        let mut s = FdStore::default();
        s.store("a", fds(2)).unwrap();
        s.store("b", fds(1)).unwrap();
        assert_eq!(s.remove("a"), 2);
        assert_eq!(s.remove("a"), 0, "already gone");
        assert_eq!(s.remove("never"), 0);
        assert_eq!(s.listen_fdnames(), "b");
    }

    #[test]
    fn the_store_is_capped() {
        assert_eq!(FdStore::default().limit, MAX_FDS);
        let mut s = FdStore::with_limit(8);
        s.store("big", fds(7)).unwrap();
        assert_eq!(s.store("more", fds(2)), Err(StoreError::Full(9, 8)));
        assert_eq!(s.len(), 7, "a refused store changes nothing");
        // Replacing a name counts what it gives back.
        assert_eq!(s.store("big", fds(8)), Ok(7));
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn a_copy_keeps_the_store_as_it_was() {
        let mut s = FdStore::default();
        s.store("state", fds(1)).unwrap();
        let before = s.clone();
        s.remove("state");
        s.store("other", fds(1)).unwrap();
        assert_eq!(before.listen_fdnames(), "state");
        assert_eq!(s.listen_fdnames(), "other");
    }
}
