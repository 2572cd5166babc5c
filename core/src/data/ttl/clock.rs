//! Processing time and event time, as TTL counts them.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::descriptor::TtlTime;

/// Processing time for TTL: milliseconds on some fixed scale (the Unix epoch for
/// [`SystemClock`]).
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in milliseconds.
    fn now_millis(&self) -> i64;
}

/// The system's wall clock, in milliseconds since the Unix epoch.
///
/// On Linux, Android and FreeBSD it reads the coarse real-time clock (`CLOCK_REALTIME_COARSE`):
/// a few nanoseconds a read instead of tens, with the kernel tick's resolution (1 to 4 ms),
/// which is what a TTL needs. Elsewhere it reads [`SystemTime`](std::time::SystemTime).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    #[allow(clippy::useless_conversion)] // the fields are narrower than i64 on some targets
    fn now_millis(&self) -> i64 {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        let ms = i64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000;
        i64::try_from(ts.tv_sec)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000)
            .saturating_add(ms)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to; clones share the time (tests, simulations).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `millis`.
    #[must_use]
    pub fn new(millis: i64) -> Self {
        Self(Arc::new(AtomicI64::new(millis)))
    }

    /// Sets the time.
    pub fn set(&self, millis: i64) {
        self.0.store(millis, Ordering::Relaxed);
    }

    /// Moves the time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(ms))
            });
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Both times a TTL can count in; shared with expiry filters running on other threads.
#[derive(Debug, Clone)]
pub(crate) struct Time {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) watermark: Arc<AtomicI64>,
}

impl Time {
    pub(crate) fn now(&self, mode: TtlTime) -> i64 {
        match mode {
            TtlTime::Event => self.watermark.load(Ordering::Relaxed),
            _ => self.clock.now_millis(),
        }
    }
}

pub(crate) fn cached_now(time: &Time, cache: &Cell<Option<i64>>, mode: TtlTime) -> i64 {
    if mode == TtlTime::Event {
        return time.now(mode);
    }
    if let Some(t) = cache.get() {
        return t;
    }
    let t = time.now(mode);
    cache.set(Some(t));
    t
}
