//! Rate limiting: token buckets for a function's TX and RX policies
//! (docs/management.md, "Rate limiting").
//!
//! A policy has an average rate (CIR), an optional peak rate (PIR) and a
//! burst. The limiter holds two buckets: the committed one, `burst` bytes
//! deep, filled at CIR; and, with a peak, a peak bucket one maximum frame
//! deep, filled at PIR. A frame may pass while both buckets are
//! non-negative and then takes its length from both; a bucket may so go
//! negative by less than a frame. That lets frames of any size through,
//! keeps the long-run rate exact, and tells a shaper exactly when to look
//! again (when the deficit has been refilled).

use std::time::{Duration, Instant};

use crate::model::RatePolicy;
use crate::ring::MAX_FRAME;

/// The smallest burst a policy may have: one maximum frame.
pub const MIN_BURST: u64 = MAX_FRAME as u64;

/// Why a policy was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("average rate must be above 0 kbit/s")]
    ZeroRate,
    #[error("peak rate {peak} kbit/s is below the average rate {avg} kbit/s")]
    PeakBelowAverage { peak: u64, avg: u64 },
    #[error("burst {0} bytes is smaller than one maximum frame ({MIN_BURST} bytes)")]
    SmallBurst(u64),
    #[error("rate above 1 Tbit/s")]
    TooFast,
}

/// Checks a policy before it replaces another.
pub fn validate(p: &RatePolicy) -> Result<(), PolicyError> {
    const MAX_KBPS: u64 = 1_000_000_000;
    if p.avg_kbps == 0 {
        return Err(PolicyError::ZeroRate);
    }
    if p.avg_kbps > MAX_KBPS || p.peak_kbps > MAX_KBPS {
        return Err(PolicyError::TooFast);
    }
    if p.peak_kbps != 0 && p.peak_kbps < p.avg_kbps {
        return Err(PolicyError::PeakBelowAverage {
            peak: p.peak_kbps,
            avg: p.avg_kbps,
        });
    }
    if p.burst_bytes < MIN_BURST {
        return Err(PolicyError::SmallBurst(p.burst_bytes));
    }
    Ok(())
}

/// One token bucket, in bytes.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Bytes per second.
    rate: f64,
    depth: f64,
    tokens: f64,
}

impl Bucket {
    fn new(kbps: u64, depth: u64) -> Self {
        let depth = depth as f64;
        Bucket {
            rate: kbps as f64 * 1000.0 / 8.0,
            depth,
            tokens: depth,
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.depth);
    }

    /// How long until the bucket is non-negative again.
    fn wait(&self) -> Duration {
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The buckets enforcing one policy.
#[derive(Clone, Debug)]
pub struct Limiter {
    policy: RatePolicy,
    committed: Bucket,
    peak: Option<Bucket>,
    last: Instant,
}

impl Limiter {
    /// Buckets start full: a new policy allows its burst at once.
    pub fn new(policy: RatePolicy, now: Instant) -> Self {
        Limiter {
            policy,
            committed: Bucket::new(policy.avg_kbps, policy.burst_bytes),
            peak: (policy.peak_kbps != 0).then(|| Bucket::new(policy.peak_kbps, MIN_BURST)),
            last: now,
        }
    }

    pub fn policy(&self) -> RatePolicy {
        self.policy
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.committed.refill(elapsed);
        if let Some(p) = &mut self.peak {
            p.refill(elapsed);
        }
    }

    /// None if a frame may pass now; otherwise how long to wait.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        let w = self
            .committed
            .wait()
            .max(self.peak.map_or(Duration::ZERO, |p| p.wait()));
        (!w.is_zero()).then_some(w)
    }

    /// Takes a frame of `len` bytes that [`Limiter::wait`] let pass.
    pub fn take(&mut self, len: usize) {
        self.committed.tokens -= len as f64;
        if let Some(p) = &mut self.peak {
            p.tokens -= len as f64;
        }
    }

    /// Policing: takes the frame and returns true if it conforms, false
    /// (taking nothing) if it must be dropped.
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        if self.wait(now).is_some() {
            return false;
        }
        self.take(len);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(avg_kbps: u64, peak_kbps: u64, burst_bytes: u64) -> RatePolicy {
        RatePolicy {
            avg_kbps,
            peak_kbps,
            burst_bytes,
        }
    }

    /// Offers `len`-byte frames as fast as the limiter allows for `secs`
    /// seconds of simulated time; returns the bytes that passed.
    fn shape(l: &mut Limiter, start: Instant, secs: u64, len: usize) -> u64 {
        let end = start + Duration::from_secs(secs);
        let mut now = start;
        let mut sent = 0;
        while now < end {
            match l.wait(now) {
                None => {
                    l.take(len);
                    sent += len as u64;
                }
                Some(w) => now += w,
            }
        }
        sent
    }

    #[test]
    fn shaper_holds_the_average_rate_after_the_burst() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy(20_000, 0, 65_536), t0);
        let sent = shape(&mut l, t0, 10, 1514);
        // 10 s at 20 Mbit/s is 25 MB, plus the initial burst.
        let expect = 25_000_000.0 + 65_536.0;
        let err = (sent as f64 - expect).abs() / expect;
        assert!(err < 0.001, "sent {sent}, expected {expect}");
    }

    #[test]
    fn peak_bucket_spreads_the_burst_at_the_peak_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy(8_000, 16_000, 1_000_000), t0);
        // In 100 ms the committed bucket alone would let 1 MB through; the
        // peak (16 Mbit/s = 2 MB/s) allows about 200 KB.
        let sent = shape(&mut l, t0, 0, 1000);
        assert_eq!(sent, 0);
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_millis(100) {
            match l.wait(now) {
                None => {
                    l.take(1000);
                    sent += 1000;
                }
                Some(w) => now += w,
            }
        }
        assert!((200_000..=212_000).contains(&sent), "sent {sent}");
    }

    #[test]
    fn policer_drops_what_exceeds_the_burst() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy(1_000, 0, 10_000), t0);
        let passed = (0..100).filter(|_| l.admit(1000, t0)).count();
        // Non-negative before each frame: 10 frames of 1000 bytes from a
        // 10 000-byte bucket (the 10th takes it to 0, the 11th still passes
        // at exactly 0 and takes it negative).
        assert_eq!(passed, 11);
        // 1 Mbit/s refills 1000 bytes in 8 ms; the deficit is 1000 bytes.
        assert!(!l.admit(1000, t0 + Duration::from_millis(7)));
        assert!(l.admit(1000, t0 + Duration::from_millis(9)));
    }

    #[test]
    fn wait_says_when_the_deficit_is_refilled() {
        let t0 = Instant::now();
        let mut l = Limiter::new(policy(8_000, 0, MIN_BURST), t0);
        l.take(MIN_BURST as usize + 1000);
        // 1000 bytes at 1 MB/s: 1 ms.
        let w = l.wait(t0).unwrap();
        assert!((w.as_secs_f64() - 0.001).abs() < 1e-6, "{w:?}");
        assert_eq!(l.wait(t0 + Duration::from_millis(2)), None);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert_eq!(validate(&policy(0, 0, 65536)), Err(PolicyError::ZeroRate));
        assert_eq!(
            validate(&policy(100, 50, 65536)),
            Err(PolicyError::PeakBelowAverage { peak: 50, avg: 100 })
        );
        assert_eq!(
            validate(&policy(100, 0, 1500)),
            Err(PolicyError::SmallBurst(1500))
        );
        assert_eq!(validate(&policy(100, 0, MIN_BURST)), Ok(()));
    }
}
