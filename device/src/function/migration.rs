//! A function's live-migration mode (docs/migration.md, "Live
//! migration"): while it is on, the card writes the guest's memory only
//! through the client (vfio-user DMA_WRITE, crate::dma::relay), so
//! QEMU's dirty log sees every page the card changes during pre-copy.
//!
//! Order. QEMU carries out the requests of a connection one after the
//! other, so data written before a descriptor write-back, and a
//! write-back before a context, reach the guest in that order. An
//! interrupt does not travel on the socket: it waits until QEMU has
//! answered the last write made before it. The writes of one turn go as
//! one *batch*: every message but the last asks for no reply; the
//! last asks for one, and its reply acknowledges the whole batch.
//!
//! The mode ends when the switchover's flush is acknowledged (the function
//! then stays quiesced, and its vNICs' addresses leave the switch: frames
//! for them go by the uplink to where the guest now runs), when
//! management ends it (after the writes in flight are acknowledged), or
//! when the client goes.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{FnError, Function};
use crate::clientlog::Cause;
use crate::dma::relay::RelayedWrite;
pub use crate::model::MigrationState;
use crate::protocol::MessageHeader;
use crate::regs::IrqCause;

/// Counters of the mode, since the function was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStats {
    /// DMA_WRITE messages sent.
    pub writes: u64,
    /// Guest-memory bytes they carried.
    pub bytes: u64,
    /// Batches QEMU acknowledged.
    pub acked: u64,
    /// Error replies (QEMU did not make a write).
    pub errors: u64,
    /// Interrupts held until their batch was acknowledged.
    pub irqs_held: u64,
}

/// One DMA_WRITE for the server to send.
#[derive(Debug)]
pub struct DmaWriteRequest {
    pub id: u16,
    pub write: RelayedWrite,
    /// The batch's last message: QEMU answers it.
    pub reply: bool,
}

/// The mode's state.
#[derive(Debug, Default)]
pub struct Migration {
    state: MigrationState,
    /// Batches sent and acknowledged (sequence numbers, from 1).
    sent: u64,
    acked: u64,
    /// Interrupts waiting for a batch: (vector, batch).
    irqs: Vec<(u32, u64)>,
    /// The reply-asking message of each batch in flight: (id, batch).
    in_flight: VecDeque<(u16, u64)>,
    next_id: u16,
    stats: RelayStats,
    /// Its vNICs' addresses are out of the switch after a switchover.
    departed: bool,
    /// What the switch has been told: the addresses are released.
    released: bool,
    /// A state reached since the card last asked ([`Function::take_migration_change`]).
    changed: Option<MigrationState>,
}

impl Migration {
    /// The batch an interrupt raised now must wait for, if any.
    fn irq_wait(&self, writes_pending: bool) -> Option<u64> {
        if self.state == MigrationState::Off {
            return None;
        }
        if writes_pending {
            Some(self.sent + 1)
        } else {
            (self.acked < self.sent).then_some(self.sent)
        }
    }

    fn set_state(&mut self, state: MigrationState) {
        self.state = state;
        self.changed = Some(state);
    }
}

impl Function {
    pub fn migration_state(&self) -> MigrationState {
        self.migration.state
    }

    /// STATUS.MIGRATING: the mode is on (not yet ended).
    pub fn migrating(&self) -> bool {
        matches!(
            self.migration.state,
            MigrationState::Relaying | MigrationState::Flushing | MigrationState::Ending
        )
    }

    pub fn relay_stats(&self) -> RelayStats {
        self.migration.stats
    }

    /// Writes sent and not yet acknowledged, in batches.
    pub fn relay_unacked(&self) -> u64 {
        self.migration.sent - self.migration.acked
    }

    /// Enters migration mode: from now on every write into guest memory
    /// goes through the client. Needs a client that mapped memory.
    pub fn migrate_begin(&mut self) -> Result<(), FnError> {
        match self.migration.state {
            MigrationState::Off | MigrationState::Switched => {}
            MigrationState::Relaying => return Ok(()),
            s => return Err(FnError::Migration(format!("the mode is {s:?}"))),
        }
        if self.dma.is_empty() {
            return Err(FnError::Migration(
                "no client has mapped guest memory".into(),
            ));
        }
        self.dma.set_relay(true);
        self.migration.departed = false;
        self.migration.set_state(MigrationState::Relaying);
        // The driver watches its configuration closely from now on.
        self.notify(IrqCause::new().with_migration(true));
        self.log(
            Cause::Setup,
            format_args!("migration mode: guest-memory writes go through the client"),
        );
        Ok(())
    }

    /// The switchover (QEMU paused in `pre-switchover`): quiesces the
    /// function, its contexts written back through the client; the mode
    /// ends when QEMU has answered them. Returns the contexts written.
    pub fn migrate_switchover(&mut self) -> Result<usize, FnError> {
        if self.migration.state != MigrationState::Relaying {
            let s = self.migration.state;
            return Err(FnError::Migration(format!(
                "not in migration mode (state {s:?})"
            )));
        }
        let written = self.quiesce();
        self.migration.set_state(MigrationState::Flushing);
        self.check_flushed();
        Ok(written)
    }

    /// Ends the mode without a switchover (a cancelled migration): once
    /// the writes in flight are answered, writes are direct again.
    pub fn migrate_end(&mut self) -> MigrationState {
        if matches!(
            self.migration.state,
            MigrationState::Relaying | MigrationState::Flushing
        ) {
            self.migration.set_state(MigrationState::Ending);
            self.check_flushed();
        }
        self.migration.state
    }

    /// The next batch of writes for the client, if writes wait.
    pub fn relay_batch(&mut self) -> Vec<DmaWriteRequest> {
        let writes = self.dma.take_relayed();
        if writes.is_empty() {
            return Vec::new();
        }
        let m = &mut self.migration;
        m.sent += 1;
        let last = writes.len() - 1;
        let mut out = Vec::with_capacity(writes.len());
        for (i, write) in writes.into_iter().enumerate() {
            let id = m.next_id;
            m.next_id = m.next_id.wrapping_add(1);
            m.stats.writes += 1;
            m.stats.bytes += write.data.len() as u64;
            if i == last {
                m.in_flight.push_back((id, m.sent));
            }
            out.push(DmaWriteRequest {
                id,
                write,
                reply: i == last,
            });
        }
        out
    }

    /// A reply from the client: the answer to a batch's last DMA_WRITE, or
    /// an error for any of them.
    pub fn relay_reply(&mut self, header: &MessageHeader) {
        if header.flags.error() {
            self.migration.stats.errors += 1;
            let (id, errno) = (header.id, header.error);
            self.log(
                Cause::Refused,
                format_args!(
                    "the client did not make DMA_WRITE {id} (errno {errno}): \
                     that guest memory may be stale"
                ),
            );
        }
        let Some(pos) = self
            .migration
            .in_flight
            .iter()
            .position(|&(id, _)| id == header.id)
        else {
            if !header.flags.error() {
                self.count_protocol_error();
                let id = header.id;
                self.log(
                    Cause::Refused,
                    format_args!("a reply (id {id}) to no request of the card's: ignored"),
                );
            }
            return;
        };
        // QEMU answers in order: this batch and every earlier one are done.
        let (_, batch) = self.migration.in_flight[pos];
        self.migration.in_flight.drain(..=pos);
        self.migration.acked = self.migration.acked.max(batch);
        self.migration.stats.acked += 1;
        self.send_acked_irqs();
        self.check_flushed();
    }

    /// Holds interrupt `vector` while writes it follows are not
    /// acknowledged; true if it was held.
    pub(super) fn hold_irq_for_relay(&mut self, vector: u32) -> bool {
        let pending = self.dma.relay_pending();
        let Some(batch) = self.migration.irq_wait(pending) else {
            return false;
        };
        let irqs = &mut self.migration.irqs;
        if let Some(held) = irqs.iter_mut().find(|(v, _)| *v == vector) {
            held.1 = held.1.max(batch);
        } else {
            irqs.push((vector, batch));
            self.migration.stats.irqs_held += 1;
        }
        true
    }

    fn send_acked_irqs(&mut self) {
        let acked = self.migration.acked;
        let (due, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.migration.irqs)
            .into_iter()
            .partition(|&(_, b)| b <= acked);
        self.migration.irqs = wait;
        for (vector, _) in due {
            self.send_irq_now(vector);
        }
    }

    /// Ends a flush once every write made so far is answered: nothing
    /// waits to be sent, nothing is in flight. (A write made directly
    /// while an older relayed one to the same place is in flight would be
    /// overwritten by it; a write still in the relay would be lost.)
    fn check_flushed(&mut self) {
        let m = &self.migration;
        let flushing = matches!(m.state, MigrationState::Flushing | MigrationState::Ending);
        let nothing_left = !self.dma.relay_pending() && m.in_flight.is_empty();
        if !flushing || !nothing_left {
            return;
        }
        self.dma.set_relay(false);
        let switched = m.state == MigrationState::Flushing;
        self.migration.departed = switched;
        self.migration.set_state(if switched {
            MigrationState::Switched
        } else {
            MigrationState::Off
        });
        let irqs = std::mem::take(&mut self.migration.irqs);
        for (vector, _) in irqs {
            self.send_irq_now(vector);
        }
        if !switched {
            // A cancelled migration: the driver's watchdog slows down.
            self.notify(IrqCause::new().with_migration(true));
        }
        let stats = self.migration.stats;
        self.log(
            Cause::Setup,
            format_args!(
                "migration mode ended{}: {} DMA_WRITEs, {} bytes, {} errors",
                if switched {
                    " at the switchover (quiesced, addresses released)"
                } else {
                    ""
                },
                stats.writes,
                stats.bytes,
                stats.errors
            ),
        );
    }

    /// The client is gone: what waited for it cannot be sent.
    pub(super) fn migration_client_gone(&mut self) {
        if self.dma.relaying() {
            let lost = self.dma.set_relay(false).len();
            let in_flight = self.migration.in_flight.len();
            self.log(
                Cause::Connection,
                format_args!(
                    "client gone in migration mode: {lost} writes unsent, \
                     {in_flight} batches unanswered"
                ),
            );
        }
        let m = &mut self.migration;
        m.in_flight.clear();
        m.irqs.clear();
        m.acked = m.sent;
        if m.state != MigrationState::Off && m.state != MigrationState::Switched {
            m.set_state(MigrationState::Off);
        }
    }

    /// A VCT entry was committed: the function serves a guest here again.
    pub(super) fn migration_arrived(&mut self) {
        self.migration.departed = false;
        if self.migration.state == MigrationState::Switched {
            self.migration.set_state(MigrationState::Off);
        }
    }

    /// Whether its vNICs' addresses belong in the switch: not while a VCT
    /// entry from management waits (the guest still runs elsewhere: frames
    /// for it go by the uplink), nor after its switchover (it runs
    /// elsewhere now).
    pub fn claims_addresses(&self) -> bool {
        self.pending_vct.is_none() && !self.migration.departed
    }

    /// Whether the switch holds its addresses (as last applied).
    pub fn addresses_released(&self) -> bool {
        self.migration.released
    }

    pub fn set_addresses_released(&mut self, released: bool) {
        self.migration.released = released;
    }

    /// The state the mode reached since the last call, for an event.
    pub fn take_migration_change(&mut self) -> Option<MigrationState> {
        self.migration.changed.take()
    }
}
