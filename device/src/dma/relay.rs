//! Writes into guest memory made through the client (docs/migration.md,
//! "Live migration").
//!
//! During a live migration QEMU copies guest memory while the guest runs,
//! and copies again only the pages its dirty log marks. A write the card
//! makes through its own mapping of guest memory is not in that log: the
//! destination would get the page as it was before. So while a function
//! is in migration mode its [`super::DmaSpace`] writes nothing itself:
//! every write (frame data, descriptor write-backs, queue contexts, the
//! doorbell page) is kept here, in the order the card made it, and the
//! server sends it to the client as a vfio-user DMA_WRITE, which QEMU
//! carries out with its memory API (and so marks the page dirty). Reads
//! stay direct: the card reads what the guest wrote, never what it wrote
//! itself and has not yet seen acknowledged.
//!
//! Adjacent writes made one after the other go in one message, up to
//! [`MAX_RELAYED_WRITE`] bytes.

use std::cell::RefCell;

/// Most bytes one DMA_WRITE carries: well under the 1 MiB
/// `max_data_xfer_size` QEMU negotiates (a larger request makes QEMU drop
/// the connection, SPEC section 11), and a whole frame with room to
/// spare.
pub const MAX_RELAYED_WRITE: usize = 64 << 10;

/// One write into guest memory, to be sent as a DMA_WRITE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayedWrite {
    pub address: u64,
    pub data: Vec<u8>,
}

/// The writes made since the server last took them, in order.
#[derive(Debug, Default)]
pub struct Relay {
    writes: RefCell<Vec<RelayedWrite>>,
}

impl Relay {
    /// Keeps a write of `data` at `address` (already checked against the
    /// mappings), after every write kept before it.
    pub fn push(&self, address: u64, data: &[u8]) {
        let mut writes = self.writes.borrow_mut();
        if let Some(last) = writes.last_mut() {
            let follows = last.address.checked_add(last.data.len() as u64) == Some(address);
            if follows && last.data.len() + data.len() <= MAX_RELAYED_WRITE {
                last.data.extend_from_slice(data);
                return;
            }
        }
        // A write larger than one message is cut.
        let mut at = address;
        for chunk in data.chunks(MAX_RELAYED_WRITE) {
            writes.push(RelayedWrite {
                address: at,
                data: chunk.to_vec(),
            });
            at += chunk.len() as u64;
        }
    }

    /// The writes kept so far, oldest first; the relay is empty after.
    pub fn take(&self) -> Vec<RelayedWrite> {
        std::mem::take(&mut *self.writes.borrow_mut())
    }

    /// Whether writes wait to be taken.
    pub fn is_empty(&self) -> bool {
        self.writes.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_writes_merge_and_others_keep_their_order() {
        let r = Relay::default();
        r.push(0x1000, &[1, 2]);
        r.push(0x1002, &[3]);
        r.push(0x2000, &[4]);
        r.push(0x1003, &[5]);
        let w = r.take();
        assert_eq!(
            w,
            vec![
                RelayedWrite {
                    address: 0x1000,
                    data: vec![1, 2, 3]
                },
                RelayedWrite {
                    address: 0x2000,
                    data: vec![4]
                },
                RelayedWrite {
                    address: 0x1003,
                    data: vec![5]
                },
            ]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn no_message_exceeds_the_bound() {
        let r = Relay::default();
        r.push(0, &vec![7; MAX_RELAYED_WRITE - 10]);
        r.push((MAX_RELAYED_WRITE - 10) as u64, &[8; 20]);
        r.push(1 << 30, &vec![9; 2 * MAX_RELAYED_WRITE + 1]);
        let w = r.take();
        let sizes: Vec<usize> = w.iter().map(|w| w.data.len()).collect();
        assert_eq!(
            sizes,
            vec![
                MAX_RELAYED_WRITE - 10,
                20,
                MAX_RELAYED_WRITE,
                MAX_RELAYED_WRITE,
                1
            ]
        );
        assert_eq!(w[1].address, (MAX_RELAYED_WRITE - 10) as u64);
        assert_eq!(w[4].address, (1 << 30) + 2 * MAX_RELAYED_WRITE as u64);
    }
}
