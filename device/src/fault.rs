//! Fault injection (docs/fault-injection.md): faults management arms on one
//! function so that people who test guest drivers can watch their driver
//! meet a misbehaving card, and recover where real hardware would let it.
//!
//! A function holds its armed faults in [`Faults`]. The data path and the
//! interrupt path ask it at the point where real hardware would fail: as a
//! frame leaves a send queue or enters a receive queue, as a send
//! descriptor is written back, as an MSI-X message is sent, as a buffer is
//! read or written. Each question consumes one armed fault and counts it
//! ([`FaultCounters`]), so tests see exactly what was injected. Faults are
//! management's, like the link state: a reset of the function by its guest
//! leaves them armed; `fault-clear` disarms them.

use std::time::{Duration, Instant};

use log::info;
use serde::{Deserialize, Serialize};

use crate::clientlog::rate_limited;
use crate::model::Direction;

/// Most frames, completions, interrupts or DMA accesses one request arms.
pub const MAX_COUNT: u32 = 1_000_000;
/// Longest delay one request asks for, µs (a minute: far beyond any
/// driver's timeout).
pub const MAX_DELAY_US: u32 = 60_000_000;

fn one() -> u32 {
    1
}

/// A fault management injects into one function (the `fault` object of a
/// `fault-inject` request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// The function's link goes down (the administrative link state
    /// `down`: STATUS.LINK_UP clear, IRQ_CAUSE.LINK).
    LinkDown {},
    /// The link comes back (administrative state `auto`).
    LinkUp {},
    /// The next `count` frames the function sends (`tx`) or is given
    /// (`rx`) are lost on the wire: a sent frame is completed as sent.
    DropFrames { direction: Direction, count: u32 },
    /// The next `count` frames in that direction have a byte of their
    /// payload flipped (the last byte of an IPv4 packet, else of the frame).
    CorruptFrames { direction: Direction, count: u32 },
    /// The next `count` send frames are switched, but their descriptors are
    /// never written back (no DONE) and no interrupt reports them.
    DropCompletions { count: u32 },
    /// Before each of the next `count` send frames the card waits `us`
    /// microseconds: its completion comes that much later.
    DelayCompletions {
        us: u32,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next `count` MSI-X messages of the function are not sent.
    DropIrqs { count: u32 },
    /// The next `count` MSI-X messages are sent `us` microseconds late.
    DelayIrqs {
        us: u32,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next `count` buffer accesses in that direction fail as if the
    /// address were not mapped: the queue stops with error 2 (`DMA`).
    FailDma {
        direction: Direction,
        #[serde(default = "one")]
        count: u32,
    },
    /// Surprise removal: BAR reads return all-ones, BAR writes are lost, no
    /// DMA, no interrupts, until `reinsert`.
    Remove {},
    /// The function answers again, as a freshly inserted device: reset.
    Reinsert {},
}

/// Why a fault request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    #[error("count {0} outside 1..={MAX_COUNT}")]
    Count(u32),
    #[error("delay {0} µs outside 1..={MAX_DELAY_US}")]
    Delay(u32),
    #[error("the function is already removed")]
    Removed,
    #[error("the function is not removed")]
    NotRemoved,
}

impl Fault {
    /// Checks counts and delays before anything is armed.
    pub fn validate(&self) -> Result<(), FaultError> {
        let count = |c: u32| {
            if (1..=MAX_COUNT).contains(&c) {
                Ok(())
            } else {
                Err(FaultError::Count(c))
            }
        };
        let delay = |us: u32| {
            if (1..=MAX_DELAY_US).contains(&us) {
                Ok(())
            } else {
                Err(FaultError::Delay(us))
            }
        };
        match *self {
            Fault::DropFrames { count: c, .. }
            | Fault::CorruptFrames { count: c, .. }
            | Fault::DropCompletions { count: c }
            | Fault::DropIrqs { count: c }
            | Fault::FailDma { count: c, .. } => count(c),
            Fault::DelayCompletions { us, count: c } | Fault::DelayIrqs { us, count: c } => {
                delay(us).and(count(c))
            }
            Fault::LinkDown {} | Fault::LinkUp {} | Fault::Remove {} | Fault::Reinsert {} => Ok(()),
        }
    }
}

/// What the faults say about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFault {
    Pass,
    Drop,
    Corrupt,
}

/// What the faults say about one MSI-X message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqFault {
    Send,
    /// Not sent (dropped, or the function is removed).
    Drop,
    /// Sent later by the card's timer ([`Faults::due_irqs`]).
    Held,
}

/// Counts armed per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerDirection {
    pub tx: u32,
    pub rx: u32,
}

impl PerDirection {
    fn get(&mut self, d: Direction) -> &mut u32 {
        match d {
            Direction::Tx => &mut self.tx,
            Direction::Rx => &mut self.rx,
        }
    }

    /// Consumes one armed fault in direction `d`, if any.
    fn take(&mut self, d: Direction) -> bool {
        let n = self.get(d);
        if *n == 0 {
            return false;
        }
        *n -= 1;
        true
    }
}

/// A delay armed for the next `count` events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delay {
    pub us: u32,
    pub count: u32,
}

impl Delay {
    fn duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.us))
    }

    /// Consumes one armed delay, if any.
    fn take(&mut self) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        Some(self.duration())
    }
}

/// What is armed now (`fault-status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    pub drop_frames: PerDirection,
    pub corrupt_frames: PerDirection,
    pub drop_completions: u32,
    pub delay_completions: Delay,
    pub drop_irqs: u32,
    pub delay_irqs: Delay,
    pub fail_dma: PerDirection,
    pub removed: bool,
}

/// Faults injected so far (statistics `fault_*`; never reset by the guest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    pub tx_frames_dropped: u64,
    pub rx_frames_dropped: u64,
    pub tx_frames_corrupted: u64,
    pub rx_frames_corrupted: u64,
    pub completions_dropped: u64,
    pub completions_delayed: u64,
    pub irqs_dropped: u64,
    pub irqs_delayed: u64,
    pub dma_failed: u64,
    pub removals: u64,
    /// BAR accesses answered with all-ones or lost while removed.
    pub removed_accesses: u64,
    /// Frames not taken or not delivered, interrupts not sent, while
    /// removed.
    pub removed_drops: u64,
}

impl FaultCounters {
    /// (statistics name, value), for `stats`.
    pub fn named(&self) -> [(&'static str, u64); 12] {
        [
            ("fault_tx_frames_dropped", self.tx_frames_dropped),
            ("fault_rx_frames_dropped", self.rx_frames_dropped),
            ("fault_tx_frames_corrupted", self.tx_frames_corrupted),
            ("fault_rx_frames_corrupted", self.rx_frames_corrupted),
            ("fault_completions_dropped", self.completions_dropped),
            ("fault_completions_delayed", self.completions_delayed),
            ("fault_irqs_dropped", self.irqs_dropped),
            ("fault_irqs_delayed", self.irqs_delayed),
            ("fault_dma_failed", self.dma_failed),
            ("fault_removals", self.removals),
            ("fault_removed_accesses", self.removed_accesses),
            ("fault_removed_drops", self.removed_drops),
        ]
    }
}

/// The answer to `fault-inject`, `fault-clear` and `fault-status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultInfo {
    pub function: String,
    pub armed: Armed,
    pub counters: FaultCounters,
}

/// The faults of one function.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Armed,
    counters: FaultCounters,
    /// When the send frame held by `delay_completions` may go.
    completion_release: Option<Instant>,
    /// Interrupts held by `delay_irqs`: (vector, when to send).
    delayed_irqs: Vec<(u32, Instant)>,
}

impl Faults {
    pub fn armed(&self) -> Armed {
        self.armed
    }

    pub fn counters(&self) -> FaultCounters {
        self.counters
    }

    /// Takes back what a state record kept (docs/restart.md): what is
    /// armed and the counts. Held completions and interrupts go at once.
    pub fn restore(&mut self, armed: Armed, counters: FaultCounters) {
        self.armed = armed;
        self.counters = counters;
    }

    pub fn removed(&self) -> bool {
        self.armed.removed
    }

    /// Arms a counted fault (link, removal and reinsertion are the card's
    /// to carry out: [`Faults::set_removed`]). The fault was validated.
    pub fn arm(&mut self, who: &str, fault: Fault) {
        let a = &mut self.armed;
        match fault {
            Fault::DropFrames { direction, count } => *a.drop_frames.get(direction) = count,
            Fault::CorruptFrames { direction, count } => *a.corrupt_frames.get(direction) = count,
            Fault::DropCompletions { count } => a.drop_completions = count,
            Fault::DelayCompletions { us, count } => {
                a.delay_completions = Delay { us, count };
                self.completion_release = None;
            }
            Fault::DropIrqs { count } => a.drop_irqs = count,
            Fault::DelayIrqs { us, count } => a.delay_irqs = Delay { us, count },
            Fault::FailDma { direction, count } => *a.fail_dma.get(direction) = count,
            Fault::LinkDown {} | Fault::LinkUp {} | Fault::Remove {} | Fault::Reinsert {} => {}
        }
        info!("{who}: fault armed: {fault:?}");
    }

    /// Disarms every counted fault; interrupts already held are sent when
    /// due. Removal and the link are left as they are.
    pub fn clear(&mut self, who: &str) {
        self.armed = Armed {
            removed: self.armed.removed,
            ..Armed::default()
        };
        self.completion_release = None;
        info!("{who}: faults cleared");
    }

    /// Surprise removal starts (`true`) or ends.
    pub fn set_removed(&mut self, who: &str, removed: bool) {
        self.armed.removed = removed;
        if removed {
            self.counters.removals += 1;
            self.delayed_irqs.clear();
            info!("{who}: fault: surprise removal, the function stops answering");
        } else {
            info!("{who}: fault: reinserted, the function answers again (reset)");
        }
    }

    /// Whether anything armed concerns the frames the function sends, so
    /// the fast path must leave them to the general path.
    #[inline]
    pub fn tx_active(&self) -> bool {
        let a = &self.armed;
        a.removed
            || a.drop_frames.tx > 0
            || a.corrupt_frames.tx > 0
            || a.drop_completions > 0
            || a.delay_completions.count > 0
            || a.fail_dma.tx > 0
    }

    /// Whether anything armed concerns the frames the function receives.
    #[inline]
    pub fn rx_active(&self) -> bool {
        let a = &self.armed;
        a.removed || a.drop_frames.rx > 0 || a.corrupt_frames.rx > 0 || a.fail_dma.rx > 0
    }

    /// A BAR access while removed: counted (the caller answers all-ones).
    pub fn count_removed_access(&mut self) {
        self.counters.removed_accesses += 1;
    }

    /// A frame or interrupt lost because the function is removed.
    pub fn count_removed_drop(&mut self) {
        self.counters.removed_drops += 1;
    }

    /// One frame in direction `d`: lost, corrupted or let through.
    pub fn frame(&mut self, who: &str, d: Direction) -> FrameFault {
        let c = &mut self.counters;
        let (counter, fault) = if self.armed.drop_frames.take(d) {
            let n = match d {
                Direction::Tx => &mut c.tx_frames_dropped,
                Direction::Rx => &mut c.rx_frames_dropped,
            };
            (n, FrameFault::Drop)
        } else if self.armed.corrupt_frames.take(d) {
            let n = match d {
                Direction::Tx => &mut c.tx_frames_corrupted,
                Direction::Rx => &mut c.rx_frames_corrupted,
            };
            (n, FrameFault::Corrupt)
        } else {
            return FrameFault::Pass;
        };
        *counter += 1;
        if rate_limited(*counter) {
            info!("{who}: fault: {d} frame {fault:?} ({counter} so far)");
        }
        fault
    }

    /// Whether the next buffer access in direction `d` fails.
    pub fn fail_dma(&mut self, who: &str, d: Direction) -> bool {
        if !self.armed.fail_dma.take(d) {
            return false;
        }
        self.counters.dma_failed += 1;
        info!(
            "{who}: fault: {d} DMA access failed ({} so far)",
            self.counters.dma_failed
        );
        true
    }

    /// Whether the completion of the send frame just switched is lost.
    pub fn drop_completion(&mut self, who: &str) -> bool {
        if self.armed.drop_completions == 0 {
            return false;
        }
        self.armed.drop_completions -= 1;
        self.counters.completions_dropped += 1;
        let n = self.counters.completions_dropped;
        if rate_limited(n) {
            info!("{who}: fault: send completion withheld ({n} so far)");
        }
        true
    }

    /// Before a send frame is taken: `Some(t)` if a delayed completion
    /// holds the function's send queues until `t`.
    pub fn completion_hold(&mut self, who: &str, now: Instant) -> Option<Instant> {
        let d = self.armed.delay_completions;
        if d.count == 0 {
            return None;
        }
        match self.completion_release {
            None => {
                let until = now + d.duration();
                self.completion_release = Some(until);
                Some(until)
            }
            Some(t) if now < t => Some(t),
            Some(_) => {
                self.completion_release = None;
                self.armed.delay_completions.count -= 1;
                self.counters.completions_delayed += 1;
                let n = self.counters.completions_delayed;
                if rate_limited(n) {
                    info!(
                        "{who}: fault: send completion delayed {} µs ({n} so far)",
                        d.us
                    );
                }
                None
            }
        }
    }

    /// One MSI-X message for `vector`: sent, lost or held.
    pub fn irq(&mut self, who: &str, vector: u32, now: Instant) -> IrqFault {
        if self.armed.removed {
            self.counters.removed_drops += 1;
            return IrqFault::Drop;
        }
        if self.armed.drop_irqs > 0 {
            self.armed.drop_irqs -= 1;
            self.counters.irqs_dropped += 1;
            let n = self.counters.irqs_dropped;
            if rate_limited(n) {
                info!("{who}: fault: vector {vector} not sent ({n} so far)");
            }
            return IrqFault::Drop;
        }
        if let Some(d) = self.armed.delay_irqs.take() {
            self.counters.irqs_delayed += 1;
            self.delayed_irqs.push((vector, now + d));
            return IrqFault::Held;
        }
        IrqFault::Send
    }

    /// The held interrupts whose time has come, oldest first.
    pub fn due_irqs(&mut self, now: Instant) -> Vec<u32> {
        let (due, held): (Vec<_>, Vec<_>) =
            self.delayed_irqs.drain(..).partition(|&(_, t)| t <= now);
        self.delayed_irqs = held;
        due.into_iter().map(|(v, _)| v).collect()
    }

    /// When the next held interrupt is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.delayed_irqs.iter().map(|&(_, t)| t).min()
    }
}

/// Corrupts a frame so that the receiver's checksums catch it: flips every
/// bit of the last byte of its IPv4 packet (covered by the TCP, UDP or ICMP
/// checksum; Ethernet padding behind it is not), or of the frame if it
/// carries no IPv4 packet. Frames shorter than an Ethernet header are left
/// alone (the switch drops them anyway).
pub fn corrupt(frame: &mut [u8]) {
    const ETH: usize = 14;
    if frame.len() <= ETH {
        return;
    }
    let (ethertype, l3) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 if frame.len() > ETH + 4 => (u16::from_be_bytes([frame[16], frame[17]]), ETH + 4),
        t => (t, ETH),
    };
    let mut last = frame.len() - 1;
    if ethertype == 0x0800 && frame.len() >= l3 + 20 {
        let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        if total >= 20 && l3 + total <= frame.len() {
            last = l3 + total - 1;
        }
    }
    frame[last] ^= 0xff;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_delays_are_checked() {
        assert_eq!(
            Fault::DropIrqs { count: 0 }.validate(),
            Err(FaultError::Count(0))
        );
        assert_eq!(
            Fault::DelayIrqs { us: 0, count: 1 }.validate(),
            Err(FaultError::Delay(0))
        );
        assert_eq!(
            Fault::DelayCompletions {
                us: MAX_DELAY_US + 1,
                count: 1
            }
            .validate(),
            Err(FaultError::Delay(MAX_DELAY_US + 1))
        );
        assert!(Fault::FailDma {
            direction: Direction::Rx,
            count: MAX_COUNT
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn faults_parse_from_json_with_defaults_and_refuse_unknown_fields() {
        let f: Fault = serde_json::from_str(r#"{"type":"delay-irqs","us":500}"#).unwrap();
        assert_eq!(f, Fault::DelayIrqs { us: 500, count: 1 });
        let f: Fault =
            serde_json::from_str(r#"{"type":"drop-frames","direction":"rx","count":3}"#).unwrap();
        assert_eq!(
            f,
            Fault::DropFrames {
                direction: Direction::Rx,
                count: 3
            }
        );
        for bad in [
            r#"{"type":"melt"}"#,
            r#"{"type":"remove","now":true}"#,
            r#"{"type":"drop-frames","count":3}"#,
            r#"{"type":"drop-irqs","count":-1}"#,
        ] {
            assert!(serde_json::from_str::<Fault>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frame_faults_are_consumed_drop_first_and_counted() {
        let mut f = Faults::default();
        f.arm(
            "vf0",
            Fault::DropFrames {
                direction: Direction::Tx,
                count: 1,
            },
        );
        f.arm(
            "vf0",
            Fault::CorruptFrames {
                direction: Direction::Tx,
                count: 1,
            },
        );
        assert!(f.tx_active() && !f.rx_active());
        assert_eq!(f.frame("vf0", Direction::Rx), FrameFault::Pass);
        assert_eq!(f.frame("vf0", Direction::Tx), FrameFault::Drop);
        assert_eq!(f.frame("vf0", Direction::Tx), FrameFault::Corrupt);
        assert_eq!(f.frame("vf0", Direction::Tx), FrameFault::Pass);
        assert_eq!(f.counters().tx_frames_dropped, 1);
        assert_eq!(f.counters().tx_frames_corrupted, 1);
        assert!(!f.tx_active());
    }

    #[test]
    fn delayed_irqs_wait_for_their_time_and_dropped_ones_never_come() {
        let mut f = Faults::default();
        let t0 = Instant::now();
        f.arm("vf0", Fault::DropIrqs { count: 1 });
        f.arm("vf0", Fault::DelayIrqs { us: 1000, count: 1 });
        assert_eq!(f.irq("vf0", 1, t0), IrqFault::Drop);
        assert_eq!(f.irq("vf0", 2, t0), IrqFault::Held);
        assert_eq!(f.irq("vf0", 3, t0), IrqFault::Send);
        assert_eq!(f.deadline(), Some(t0 + Duration::from_millis(1)));
        assert!(f.due_irqs(t0).is_empty());
        assert_eq!(f.due_irqs(t0 + Duration::from_millis(1)), vec![2]);
        assert_eq!(f.deadline(), None);
        assert_eq!(
            (f.counters().irqs_dropped, f.counters().irqs_delayed),
            (1, 1)
        );
    }

    #[test]
    fn a_delayed_completion_holds_until_its_time_then_counts() {
        let mut f = Faults::default();
        let t0 = Instant::now();
        f.arm("vf0", Fault::DelayCompletions { us: 2000, count: 1 });
        let until = f.completion_hold("vf0", t0).unwrap();
        assert_eq!(until, t0 + Duration::from_millis(2));
        assert_eq!(
            f.completion_hold("vf0", t0 + Duration::from_millis(1)),
            Some(until)
        );
        assert_eq!(f.completion_hold("vf0", until), None);
        assert_eq!(f.completion_hold("vf0", until), None, "one only");
        assert_eq!(f.counters().completions_delayed, 1);
    }

    #[test]
    fn removal_drops_interrupts_and_clear_keeps_it() {
        let mut f = Faults::default();
        f.set_removed("vf0", true);
        f.arm("vf0", Fault::DropCompletions { count: 4 });
        f.clear("vf0");
        assert!(f.removed());
        assert_eq!(f.armed().drop_completions, 0);
        assert_eq!(f.irq("vf0", 0, Instant::now()), IrqFault::Drop);
        assert_eq!(f.counters().removed_drops, 1);
        f.set_removed("vf0", false);
        assert_eq!(f.irq("vf0", 0, Instant::now()), IrqFault::Send);
    }

    #[test]
    fn corruption_flips_the_last_byte_of_the_ipv4_packet_not_the_padding() {
        // Ethernet + IPv4 total length 28, padded to 60 bytes.
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        corrupt(&mut f);
        assert_eq!(f[14 + 27], 0xff);
        assert_eq!(f[59], 0);
        // Not IPv4: the last byte of the frame.
        let mut g = vec![0u8; 20];
        g[12..14].copy_from_slice(&[0x86, 0xdd]);
        corrupt(&mut g);
        assert_eq!(g[19], 0xff);
        // Too short to corrupt, and a lying IPv4 length is not followed.
        let mut h = vec![0u8; 14];
        corrupt(&mut h);
        assert_eq!(h, vec![0u8; 14]);
        let mut i = vec![0u8; 40];
        i[12..14].copy_from_slice(&[0x08, 0x00]);
        i[16..18].copy_from_slice(&9000u16.to_be_bytes());
        corrupt(&mut i);
        assert_eq!(i[39], 0xff);
    }
}

/// Each fault's effect on the card, with the fake guest of
/// [`crate::test_utils::guest`]: vf0 (function 1) sends to vf1 (function 2).
#[cfg(test)]
mod card_tests {
    use super::*;
    use crate::card::Card;
    use crate::regs::{FnStat, Reg, ID_MAGIC};
    use crate::state::ServiceType;
    use crate::test_utils::guest::{card, eth, fn_stat, mac, qp_reg, rd, wr, Vm};

    fn inject(c: &mut Card, f: usize, fault: Fault) {
        c.fault_inject(f, fault).unwrap();
    }

    fn frames(c: &Card, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| eth(mac(c, 2, 0), mac(c, 1, 0), None, 80 + i))
            .collect()
    }

    fn counters(c: &Card, f: usize) -> FaultCounters {
        c.functions()[f].faults().counters()
    }

    /// Lets held frames and interrupts go after `us` microseconds.
    fn wait_timers(c: &mut Card, us: u64) {
        std::thread::sleep(Duration::from_micros(us));
        c.run_timers(Instant::now());
        c.run_pending();
    }

    #[test]
    fn dropped_tx_frames_complete_as_sent_and_never_arrive() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        let dir = Direction::Tx;
        inject(
            &mut c,
            1,
            Fault::DropFrames {
                direction: dir,
                count: 2,
            },
        );
        let f = frames(&c, 3);
        a.send(&mut c, 0, &f);
        assert_eq!(b.received(0), vec![f[2].clone()]);
        let tx = a.rings[0].0;
        assert!(
            (0..3).all(|i| a.drv.status(tx, i) == 1),
            "DONE, not DROPPED"
        );
        assert_eq!(counters(&c, 1).tx_frames_dropped, 2);
        // Only the named function: vf1's frames to vf0 pass.
        let back = eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 70);
        b.send(&mut c, 0, std::slice::from_ref(&back));
        assert_eq!(a.received(0), vec![back]);
        assert_eq!(counters(&c, 2), FaultCounters::default());
    }

    #[test]
    fn dropped_and_corrupted_rx_frames() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let dir = Direction::Rx;
        inject(
            &mut c,
            2,
            Fault::DropFrames {
                direction: dir,
                count: 1,
            },
        );
        inject(
            &mut c,
            2,
            Fault::CorruptFrames {
                direction: dir,
                count: 1,
            },
        );
        let f = frames(&c, 3);
        a.send(&mut c, 0, &f);
        let got = b.received(0);
        assert_eq!(got.len(), 2);
        let diff = got[0].iter().zip(&f[1]).filter(|(x, y)| x != y).count();
        assert_eq!((got[0].len(), diff), (f[1].len(), 1), "one byte flipped");
        assert_eq!(got[1], f[2]);
        let n = counters(&c, 2);
        assert_eq!((n.rx_frames_dropped, n.rx_frames_corrupted), (1, 1));
    }

    #[test]
    fn a_dropped_completion_leaves_its_descriptor_without_done() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        inject(&mut c, 1, Fault::DropCompletions { count: 1 });
        let f = frames(&c, 2);
        a.send(&mut c, 0, &f);
        assert_eq!(b.received(0), f, "both frames were switched");
        let tx = a.rings[0].0;
        assert_eq!((a.drv.status(tx, 0), a.drv.status(tx, 1)), (0, 1));
        assert_eq!(
            rd(&mut c, 1, qp_reg(0, 0x24)),
            2,
            "the card's head moved on"
        );
        assert_eq!(counters(&c, 1).completions_dropped, 1);
        assert_eq!(fn_stat(&c, 1, FnStat::TxPackets), 2);
    }

    // The send context's counters are loaded from guest memory, which may
    // hold anything: a lost completion counts its frame as sent, and that
    // count wraps like every other (adding to u64::MAX panicked in a debug
    // build).
    #[test]
    fn a_dropped_completion_wraps_send_counters_loaded_at_their_maximum() {
        const CTX_PACKETS: u64 = 24;
        const CTX_BYTES: u64 = 32;
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let at = a.tables.context(ServiceType::SendQueue, 0);
        wr(&mut c, 1, qp_reg(0, 0x08), 0);
        a.drv.write_u64(at + CTX_PACKETS, u64::MAX);
        a.drv.write_u64(at + CTX_BYTES, u64::MAX);
        wr(&mut c, 1, qp_reg(0, 0x08), 3);
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x0c)) & 3, 3, "running again");
        inject(&mut c, 1, Fault::DropCompletions { count: 1 });
        let f = frames(&c, 1);
        a.send(&mut c, 0, &f);
        assert_eq!(b.received(0), f, "switched");
        assert_eq!(a.drv.status(a.rings[0].0, 0), 0, "completion lost");
        assert_eq!(counters(&c, 1).completions_dropped, 1);
        wr(&mut c, 1, qp_reg(0, 0x08), 0);
        assert_eq!(a.drv.read_u64(at + CTX_PACKETS), 0, "wrapped");
        let len = f[0].len() as u64;
        assert_eq!(a.drv.read_u64(at + CTX_BYTES), len - 1, "wrapped");
    }

    #[test]
    fn a_delayed_completion_comes_after_the_delay() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        inject(&mut c, 1, Fault::DelayCompletions { us: 3000, count: 1 });
        let f = frames(&c, 1);
        a.send(&mut c, 0, &f);
        assert!(b.received(0).is_empty());
        assert_eq!(a.drv.status(a.rings[0].0, 0), 0, "not completed yet");
        assert!(c.next_deadline().is_some(), "the timer will release it");
        wait_timers(&mut c, 4000);
        assert_eq!(b.received(0), f);
        assert_eq!(a.drv.status(a.rings[0].0, 0), 1);
        assert_eq!(counters(&c, 1).completions_delayed, 1);
    }

    #[test]
    fn dropped_and_delayed_interrupts() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let _b = Vm::attach(&mut c, 2, 8);
        // MSI-X is off in the fake guest: an interrupt that reaches MSI-X
        // is counted in irqs_dropped, one the fault took is not.
        let reached = |c: &Card| c.functions()[2].stats().irqs_dropped;
        inject(&mut c, 2, Fault::DropIrqs { count: 1 });
        let before = reached(&c);
        let f = frames(&c, 1);
        a.send(&mut c, 0, &f);
        assert_eq!(reached(&c), before);
        assert_eq!(counters(&c, 2).irqs_dropped, 1);
        wr(&mut c, 2, qp_reg(0, 0x1c), 0); // no moderation
        wr(&mut c, 2, qp_reg(0, 0x18), 1); // the driver never saw it: rearm
        let before = reached(&c);
        inject(&mut c, 2, Fault::DelayIrqs { us: 2000, count: 1 });
        let f = frames(&c, 1);
        a.send(&mut c, 0, &f);
        assert_eq!(reached(&c), before, "held");
        assert_eq!(counters(&c, 2).irqs_delayed, 1);
        wait_timers(&mut c, 3000);
        assert_eq!(reached(&c), before + 1, "sent late");
    }

    #[test]
    fn failed_dma_stops_the_queue_with_the_dma_error_until_restarted() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let dir = Direction::Tx;
        inject(
            &mut c,
            1,
            Fault::FailDma {
                direction: dir,
                count: 1,
            },
        );
        let f = frames(&c, 1);
        a.send(&mut c, 0, &f);
        let status = rd(&mut c, 1, qp_reg(0, 0x0c));
        assert_eq!(status & 0x4, 0x4, "TX_ERROR");
        assert_eq!((status >> 8) & 0xff, 2, "code DMA");
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 1);
        assert!(b.received(0).is_empty());
        wr(&mut c, 1, qp_reg(0, 0x08), 0);
        wr(&mut c, 1, qp_reg(0, 0x08), 3);
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x0c)) & 0xf, 3, "runs again");
        // Receive side.
        let dir = Direction::Rx;
        inject(
            &mut c,
            2,
            Fault::FailDma {
                direction: dir,
                count: 1,
            },
        );
        let g = eth(mac(&c, 2, 0), mac(&c, 1, 1), None, 60);
        a.send(&mut c, 1, &[g]);
        let status = rd(&mut c, 2, qp_reg(0, 0x0c));
        assert_eq!((status & 0x8, (status >> 16) & 0xff), (0x8, 2));
        assert_eq!(counters(&c, 2).dma_failed, 1);
    }

    #[test]
    fn a_removed_function_does_not_answer_until_reinserted_reset() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        inject(&mut c, 2, Fault::Remove {});
        assert_eq!(rd(&mut c, 2, Reg::Id as u64), !0);
        wr(&mut c, 2, Reg::Scratch as u64, 5);
        let f = frames(&c, 1);
        a.send(&mut c, 0, &f);
        assert!(b.received(0).is_empty());
        let back = eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 60);
        b.send(&mut c, 0, &[back]);
        assert!(a.received(0).is_empty(), "its doorbell was lost");
        let n = counters(&c, 2);
        assert!(n.removed_accesses >= 2 && n.removed_drops >= 1, "{n:?}");
        assert_eq!(rd(&mut c, 1, Reg::Id as u64), ID_MAGIC, "others answer");
        assert!(c.fault_inject(2, Fault::Remove {}).is_err());
        inject(&mut c, 2, Fault::Reinsert {});
        assert_eq!(rd(&mut c, 2, Reg::Id as u64), ID_MAGIC);
        assert_eq!(rd(&mut c, 2, Reg::Scratch as u64), 0, "the write was lost");
        assert_eq!(c.functions()[2].vct(), 0, "reset: set it up again");
        assert!(c.fault_inject(2, Fault::Reinsert {}).is_err());
    }
}
