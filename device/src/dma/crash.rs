//! Crash points, for tests (docs/restart.md, "Crash consistency"): a
//! card worker killed after its Nth write into guest memory. Armed, the
//! writes after the budget are dropped, as if the process had died there:
//! guest memory keeps what was written before, and nothing after. A test
//! then builds a new card from the state record over that memory and
//! checks what a guest could have seen. Outside the crate's tests every
//! write is allowed and this costs nothing.

#[cfg(test)]
use std::cell::Cell;

#[cfg(test)]
thread_local! {
    /// Writes still allowed; None: not armed.
    static BUDGET: Cell<Option<u64>> = const { Cell::new(None) };
    /// Writes seen (allowed or not) since the last [`reset`].
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Lets `writes` more writes through on this thread, then drops the rest.
#[cfg(test)]
pub fn arm(writes: u64) {
    BUDGET.with(|b| b.set(Some(writes)));
}

/// Every write goes through again.
#[cfg(test)]
pub fn disarm() {
    BUDGET.with(|b| b.set(None));
}

/// Starts counting writes from zero.
#[cfg(test)]
pub fn reset() {
    SEEN.with(|s| s.set(0));
}

/// Writes into guest memory since [`reset`].
#[cfg(test)]
pub fn seen() -> u64 {
    SEEN.with(Cell::get)
}

/// Whether this write goes through (counted).
#[cfg(test)]
pub(crate) fn write_allowed() -> bool {
    SEEN.with(|s| s.set(s.get() + 1));
    BUDGET.with(|b| match b.get() {
        None => true,
        Some(0) => false,
        Some(n) => {
            b.set(Some(n - 1));
            true
        }
    })
}

/// Every write goes through.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn write_allowed() -> bool {
    true
}
