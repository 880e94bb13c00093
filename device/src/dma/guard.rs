//! Guest memory a client takes away under the card.
//!
//! A DMA_MAP hands the card a file that stays the client's: it can
//! `ftruncate` it at any time (nothing obliges a client to seal it, and
//! QEMU's `memory-backend-file`, libvirt's route for vfio-user, is a plain
//! file). The card's next access to a page past the new end raises SIGBUS,
//! whose default action would take down every function and every other
//! client with it.
//!
//! So every mapping of a client's file is *watched*: its address range sits
//! in a fixed table that a SIGBUS handler can read without locks or
//! allocation. A SIGBUS inside a watched range replaces the whole range,
//! in the handler, with anonymous zero pages (`mmap(MAP_FIXED)`,
//! async-signal-safe), marks the watch lost and returns; the access that
//! faulted then completes on the zero pages (the client's own memory, which
//! it had already taken away: no other function's data is involved). The
//! card refuses a lost mapping from then on ([`super::DmaSpace`]), which
//! fails the queues that use it, and counts and logs the loss once.
//! A SIGBUS anywhere else, or one another process sent, gets the default
//! action, as without the handler.
//!
//! The handler is installed with the first watch; it replaces the one
//! Rust's runtime installs for SIGBUS (which only reports a main-thread
//! stack overflow, and those raise SIGSEGV on Linux).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use log::error;

/// Mappings watched at once, over all clients: more than every function's
/// limit of DMA mappings (crate::protocol::MAX_DMA_MAPS) for 64 VFs.
pub const WATCH_SLOTS: usize = 8192;

/// One watched range. `len` is written last when a slot is filled and
/// cleared first when it is emptied, so the handler, which reads `len`
/// first, never pairs a length with a stale start.
struct Slot {
    claimed: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    lost: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            claimed: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            lost: AtomicBool::new(false),
        }
    }
}

static SLOTS: [Slot; WATCH_SLOTS] = [const { Slot::new() }; WATCH_SLOTS];

/// Ranges lost so far, process-wide: the card compares it with what it saw
/// last to find out, cheaply, whether any function has a loss to report.
static LOST: AtomicU64 = AtomicU64::new(0);

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A watched mapping; dropping it stops watching (before the mapping
/// itself goes: the owner drops its watch first).
#[derive(Debug)]
pub struct Watch {
    slot: usize,
}

impl Watch {
    /// Whether the client took the memory away (a SIGBUS in the range).
    #[inline]
    pub fn lost(&self) -> bool {
        SLOTS[self.slot].lost.load(Ordering::Acquire)
    }

    /// Marks the range lost as the handler does, without a fault (tests).
    #[cfg(test)]
    pub fn mark_lost(&self) {
        SLOTS[self.slot].lost.store(true, Ordering::Release);
        LOST.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let s = &SLOTS[self.slot];
        s.len.store(0, Ordering::Release);
        s.start.store(0, Ordering::Release);
        s.lost.store(false, Ordering::Release);
        s.claimed.store(false, Ordering::Release);
    }
}

/// Watches `[start, start + len)`, a shared mapping of a client's file that
/// the caller made and keeps until the returned [`Watch`] is dropped.
/// None if the handler cannot be installed or every slot is taken (then the
/// caller refuses the mapping).
pub fn watch(start: *mut u8, len: usize) -> Option<Watch> {
    INSTALL.call_once(install);
    if !INSTALLED.load(Ordering::Acquire) || len == 0 {
        return None;
    }
    let slot = SLOTS.iter().position(|s| {
        s.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })?;
    let s = &SLOTS[slot];
    s.lost.store(false, Ordering::Release);
    s.start.store(start as usize, Ordering::Release);
    s.len.store(len, Ordering::Release);
    Some(Watch { slot })
}

/// How many watched ranges were lost so far in this process.
pub fn lost_total() -> u64 {
    LOST.load(Ordering::Acquire)
}

fn install() {
    match vmm_sys_util::signal::register_signal_handler(libc::SIGBUS, on_sigbus) {
        Ok(()) => INSTALLED.store(true, Ordering::Release),
        Err(e) => error!(
            "cannot install the SIGBUS handler ({e}): DMA mappings are refused, \
             since a client truncating one would crash vnicd"
        ),
    }
}

/// The SIGBUS handler. Only async-signal-safe work: atomics, mmap,
/// signal, raise.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo_t;
    // si_code and si_addr are plain reads of it.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code > 0: raised by the kernel for a faulting access, and si_addr
    // is where; otherwise a process sent it.
    if code > 0 {
        for s in &SLOTS {
            let len = s.len.load(Ordering::Acquire);
            if len == 0 {
                continue;
            }
            let start = s.start.load(Ordering::Acquire);
            if addr < start || addr - start >= len {
                continue;
            }
            // SAFETY: [start, start + len) is a mapping whose owner is
            // inside an access to it (this fault) and drops the watch
            // before unmapping it, so it is still this process's mapping
            // of a client's file. MAP_FIXED replaces it in place with
            // private zero pages of the same size; the faulting access
            // then completes on those. mmap is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                break;
            }
            s.lost.store(true, Ordering::Release);
            LOST.fetch_add(1, Ordering::AcqRel);
            return;
        }
    }
    // Not a watched range: the default action, as without this handler.
    // SAFETY: signal(2) and raise(3) are async-signal-safe; SIGBUS is
    // blocked while this handler runs, so it is delivered (and kills) when
    // the handler returns.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        libc::raise(libc::SIGBUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::unsealed_memfd;
    use std::os::fd::AsRawFd;

    /// A shared mapping of `file`, unmapped on drop.
    struct Map(*mut u8, usize);

    impl Map {
        fn new(file: &std::fs::File, len: usize) -> Map {
            // SAFETY: a fresh shared mapping of a file we own; checked.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Map(p.cast(), len)
        }

        fn read(&self, at: usize) -> u8 {
            assert!(at < self.1);
            // SAFETY: inside the mapping, which lives as long as self.
            unsafe { std::ptr::read_volatile(self.0.add(at)) }
        }

        fn write(&self, at: usize, v: u8) {
            assert!(at < self.1);
            // SAFETY: as in read.
            unsafe { std::ptr::write_volatile(self.0.add(at), v) }
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: our own mapping (or its anonymous replacement).
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    fn truncated_memory_reads_zero_and_the_watch_is_lost() {
        let file = unsealed_memfd(0x4000);
        let map = Map::new(&file, 0x4000);
        map.write(0x10, 7);
        map.write(0x3000, 9);
        let w = watch(map.0, map.1).expect("watched");
        assert!(!w.lost());
        let before = lost_total();
        file.set_len(0x1000).unwrap();
        // Inside what is left: the client's data; no fault.
        assert_eq!(map.read(0x10), 7);
        assert!(!w.lost());
        // Past the new end: SIGBUS, handled; the whole range is now zero
        // pages, also where the file still was.
        assert_eq!(map.read(0x3000), 0);
        assert!(w.lost());
        assert_eq!(map.read(0x10), 0);
        map.write(0x3ff0, 1);
        assert_eq!(map.read(0x3ff0), 1);
        assert!(lost_total() > before);
    }

    #[test]
    fn a_dropped_watch_frees_its_slot_for_another_range() {
        let file = unsealed_memfd(0x1000);
        let map = Map::new(&file, 0x1000);
        let w = watch(map.0, map.1).expect("watched");
        let slot = w.slot;
        drop(w);
        assert_eq!(SLOTS[slot].len.load(Ordering::Acquire), 0);
        let again = watch(map.0, map.1).expect("watched again");
        assert!(!again.lost());
    }
}
