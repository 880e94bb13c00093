//! Log lines a client can cause, and how many of them are written.
//!
//! Anything a vfio-user client or its guest does — a refused command, a bad
//! register access, a malformed message, a queue the driver set up wrong, a
//! connection, a reset — it can do again in a loop. Each such line goes
//! through a [`ClientLog`], which counts lines per [`Cause`] and writes the
//! first [`FIRST`] of each, then every [`EVERY`]th, so a hostile client
//! cannot flood the log (docs/protocol.md, "Limits and bad input").
//! Counters (BAD_ACCESS, protocol errors, queue errors) still count every
//! event.
//!
//! Every function keeps one for the card's lifetime (a client that
//! reconnects does not start its counts again); a queue pair keeps its own
//! for its errors and starts. Lines whose count already is a card counter
//! (offload drops, the PF's exception queue pair, injected faults) apply
//! the same rule, [`rate_limited`], to that counter. All lines written here
//! have the log target `vnic::clientlog`. Nothing here depends on the rest
//! of the crate, so every layer may use it.

use std::fmt;

use log::Level;

/// Lines of one cause that are always written.
pub const FIRST: u64 = 10;
/// After [`FIRST`], one line in this many is written.
pub const EVERY: u64 = 1000;

/// Whether the `count`th event of a kind is logged: the first [`FIRST`],
/// then every [`EVERY`]th. The one rule for everything a guest, a client or
/// an injected fault can repeat.
pub fn rate_limited(count: u64) -> bool {
    count <= FIRST || count % EVERY == 0
}

/// What kind of line a client caused. Each has its own count, so a flood of
/// one kind does not hide the first lines of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A vfio-user command refused: an error reply, or a posted write that
    /// failed (DMA_MAP and DMA_UNMAP refusals included).
    Refused,
    /// A BAR access no register answers (all-ones, dropped, BAD_ACCESS).
    BadAccess,
    /// A client disconnected for breaking the framing or the limits, or a
    /// second client turned away.
    Dropped,
    /// The driver's mistake found in its registers or memory: a queue
    /// error, a VCT entry or doorbell page refused, a switch request
    /// refused.
    GuestError,
    /// A client connected or disconnected.
    Connection,
    /// A function reset (DEVICE_RESET, FLR, CTRL.RESET, client gone).
    Reset,
    /// The driver setting things up: a VCT entry, a doorbell page, a queue
    /// pair started, a ROM mapped, a trusted VF's MAC.
    Setup,
}

impl Cause {
    const COUNT: usize = 7;

    /// Mistakes and refusals are warnings; the rest is what a client does
    /// in normal operation.
    pub fn level(self) -> Level {
        match self {
            Cause::Refused | Cause::BadAccess | Cause::Dropped | Cause::GuestError => Level::Warn,
            Cause::Connection | Cause::Reset | Cause::Setup => Level::Info,
        }
    }

    /// The lines of this cause, in "N … so far".
    fn noun(self) -> &'static str {
        match self {
            Cause::Refused => "refusals",
            Cause::BadAccess => "bad accesses",
            Cause::Dropped => "dropped connections",
            Cause::GuestError => "driver errors",
            Cause::Connection => "connection events",
            Cause::Reset => "resets",
            Cause::Setup => "setup events",
        }
    }
}

/// Per-cause counts of the lines one function (or queue pair) was asked
/// to write.
#[derive(Clone, Debug, Default)]
pub struct ClientLog {
    counts: [u64; Cause::COUNT],
}

impl ClientLog {
    /// Counts a line of `cause` about `who` and writes it, at the cause's
    /// level, if it is among the first [`FIRST`] or an [`EVERY`]th. The
    /// [`FIRST`]th says that from then on lines are thinned out; each
    /// [`EVERY`]th says how many there were. Returns whether it was written.
    pub fn log(&mut self, cause: Cause, who: &str, what: fmt::Arguments<'_>) -> bool {
        let count = &mut self.counts[cause as usize];
        *count = count.saturating_add(1);
        let n = *count;
        if !rate_limited(n) {
            return false;
        }
        let noun = cause.noun();
        match n {
            FIRST => log::log!(
                cause.level(),
                "{who}: {what} ({FIRST} {noun}: from now on one in {EVERY} is logged)"
            ),
            n if n > FIRST => log::log!(cause.level(), "{who}: {what} ({n} {noun} so far)"),
            _ => log::log!(cause.level(), "{who}: {what}"),
        }
        true
    }

    /// Lines of `cause` asked for so far, written or not.
    #[cfg(test)]
    pub fn count(&self, cause: Cause) -> u64 {
        self.counts[cause as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ten_then_every_thousandth() {
        let written: Vec<u64> = (1..=5000).filter(|&n| rate_limited(n)).collect();
        assert_eq!(
            written,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1000, 2000, 3000, 4000, 5000]
        );
    }

    #[test]
    fn a_burst_of_refusals_writes_a_bounded_number_of_lines() {
        let mut log = ClientLog::default();
        let written = (0..100_000)
            .filter(|i| log.log(Cause::Refused, "vf0", format_args!("DMA_MAP {i} refused")))
            .count();
        assert_eq!(written, 10 + 100);
        assert_eq!(log.count(Cause::Refused), 100_000, "every one counted");
    }

    #[test]
    fn causes_are_counted_apart() {
        let mut log = ClientLog::default();
        for _ in 0..50 {
            log.log(Cause::BadAccess, "pf", format_args!("bad"));
        }
        assert!(
            log.log(Cause::Refused, "pf", format_args!("refused")),
            "a flood of bad accesses does not hide the first refusal"
        );
        assert_eq!(log.count(Cause::BadAccess), 50);
        assert_eq!(log.count(Cause::Refused), 1);
    }

    #[test]
    fn mistakes_are_warnings_and_lifecycle_is_info() {
        for c in [
            Cause::Refused,
            Cause::BadAccess,
            Cause::Dropped,
            Cause::GuestError,
        ] {
            assert_eq!(c.level(), Level::Warn, "{c:?}");
        }
        for c in [Cause::Connection, Cause::Reset, Cause::Setup] {
            assert_eq!(c.level(), Level::Info, "{c:?}");
        }
    }
}
