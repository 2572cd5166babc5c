//! Event-time windows on top of namespaces and timers, as Flink's `WindowOperator` builds
//! them: a window is a namespace of the key's state, an event-time timer at its end fires it,
//! and a second one at its end plus the allowed lateness clears it.
//!
//! An operator declares its window state with `#[state(namespace = TimeWindow)]` and a
//! `TimerService<TimeWindow>`; [`Windows`] assigns records to windows, tells late records from
//! the rest, registers and reads the windows' timers, and merges session windows.
//!
//! ```
//! use std::time::Duration;
//! use statewright::prelude::*;
//! use statewright::window::{TimeWindow, Windows};
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "counts", key = String)]
//! struct Counts {
//!     #[state(namespace = TimeWindow, reduce = sum)]
//!     count: ReducingState<u64>,
//!     timers: TimerService<TimeWindow>,
//! }
//!
//! let windows = Windows::tumbling(Duration::from_secs(60));
//! let mut op = Counts::default().bind(HeapBackend::new())?;
//! for (user, ts) in [("a", 1_000), ("a", 59_000), ("b", 61_000)] {
//!     let watermark = op.watermark();
//!     let mut st = op.key(user)?;
//!     for w in windows.assign(ts) {
//!         if windows.is_late(&w, watermark) {
//!             continue; // past its allowed lateness: dropped
//!         }
//!         st.count(&w).add(&1)?;
//!         windows.register(&mut st.timers(), &w)?;
//!     }
//! }
//! let mut out = Vec::new();
//! op.advance_watermark(60_000, |timer, mut st| {
//!     let w = timer.namespace;
//!     let action = windows.on_timer(&w, timer.timestamp);
//!     if action.fire {
//!         out.push((timer.key, w, st.count(&w).get_owned()?.unwrap_or(0)));
//!     }
//!     if action.cleanup {
//!         st.count(&w).clear()?;
//!     }
//!     Ok(())
//! })?;
//! assert_eq!(out, vec![("a".to_string(), TimeWindow::new(0, 60_000), 2)]);
//! # Ok::<(), statewright::Error>(())
//! ```

use std::time::Duration;

use crate::access::timers::TimerView;
use crate::data::backend::StateBackend;
use crate::model::error::{KeyError, Result};
use crate::model::key::{EncodeKey, StateKey};
use crate::model::schema::{Field, Fields, Schema, StateSchema};

/// A window of event time: `[start, end)`, in milliseconds. Ordered by start, then end (as its
/// canonical encoding is), so a key's windows list in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeWindow {
    /// The first millisecond in the window.
    pub start: i64,
    /// The first millisecond after it.
    pub end: i64,
}

impl TimeWindow {
    /// The window `[start, end)`.
    #[must_use]
    pub const fn new(start: i64, end: i64) -> Self {
        Self { start, end }
    }

    /// The last millisecond in the window (`end - 1`): when its event-time trigger fires.
    #[must_use]
    pub const fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    /// Whether `timestamp` is in the window.
    #[must_use]
    pub const fn contains(&self, timestamp: i64) -> bool {
        self.start <= timestamp && timestamp < self.end
    }

    /// Whether the windows overlap or touch (Flink's `TimeWindow.intersects`): session windows
    /// that do merge.
    #[must_use]
    pub const fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window that covers both.
    #[must_use]
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl EncodeKey for TimeWindow {
    #[inline]
    fn encode_key(&self, out: &mut Vec<u8>) {
        self.start.encode_key(out);
        self.end.encode_key(out);
    }
}

impl StateKey for TimeWindow {
    #[inline]
    fn decode_key(input: &mut &[u8]) -> std::result::Result<Self, KeyError> {
        let start = i64::decode_key(input)?;
        let end = i64::decode_key(input)?;
        Ok(Self { start, end })
    }
}

impl StateSchema for TimeWindow {
    const SCHEMA: &'static Schema = &Schema::Struct {
        name: "TimeWindow",
        fields: Fields::Named(&[
            Field {
                name: "start",
                schema: i64::SCHEMA,
            },
            Field {
                name: "end",
                schema: i64::SCHEMA,
            },
        ]),
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
}

/// How records are assigned to event-time windows, and how late a record may be: Flink's
/// `TumblingEventTimeWindows`, `SlidingEventTimeWindows` and `EventTimeSessionWindows` with
/// its `EventTimeTrigger` and `allowedLateness`.
///
/// A window fires when the watermark reaches its [`max_timestamp`](TimeWindow::max_timestamp).
/// A record for a window that has fired, but whose cleanup time (`max_timestamp` plus the
/// allowed lateness) the watermark has not reached, updates the window, and the window fires
/// again at the next watermark advance. At the cleanup time the window's state and timers go;
/// a record for it after that is late and dropped ([`is_late`](Self::is_late)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    kind: Kind,
    lateness: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl Windows {
    /// Windows of `size` that do not overlap: `[k * size, (k + 1) * size)`.
    #[must_use]
    pub fn tumbling(size: Duration) -> Self {
        Self {
            kind: Kind::Tumbling {
                size: millis(size),
                offset: 0,
            },
            lateness: 0,
        }
    }

    /// Windows of `size` starting every `slide`; a record is in `size / slide` of them.
    #[must_use]
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        Self {
            kind: Kind::Sliding {
                size: millis(size),
                slide: millis(slide),
                offset: 0,
            },
            lateness: 0,
        }
    }

    /// Session windows: a record opens `[t, t + gap)`, and windows of a key that overlap or
    /// touch merge ([`merge_sessions`](Self::merge_sessions)).
    #[must_use]
    pub fn session(gap: Duration) -> Self {
        Self {
            kind: Kind::Session { gap: millis(gap) },
            lateness: 0,
        }
    }

    /// Shifts tumbling and sliding windows by `offset` (for windows aligned to another time
    /// zone than UTC); no effect on sessions.
    #[must_use]
    pub fn with_offset(mut self, offset: Duration) -> Self {
        let o = i64::try_from(offset.as_millis()).unwrap_or(0);
        match &mut self.kind {
            Kind::Tumbling { offset, .. } | Kind::Sliding { offset, .. } => *offset = o,
            Kind::Session { .. } => {}
        }
        self
    }

    /// How long after a window fires records for it are still taken (0 by default).
    #[must_use]
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The allowed lateness, in milliseconds.
    #[must_use]
    pub fn allowed_lateness(&self) -> i64 {
        self.lateness
    }

    /// Whether windows merge (sessions).
    #[must_use]
    pub fn is_merging(&self) -> bool {
        matches!(self.kind, Kind::Session { .. })
    }

    /// The windows a record at `timestamp` belongs to (for sessions, its own window before
    /// merging), latest start first for sliding windows.
    #[must_use]
    pub fn assign(&self, timestamp: i64) -> Assigned {
        match self.kind {
            Kind::Tumbling { size, offset } => {
                let start = window_start(timestamp, offset, size);
                Assigned {
                    next: start,
                    last: start,
                    size,
                    step: size,
                }
            }
            Kind::Sliding {
                size,
                slide,
                offset,
            } => {
                let last_start = window_start(timestamp, offset, slide);
                // Every start > timestamp - size, stepping back by `slide` (in i128: no
                // overflow at the ends of time).
                let steps =
                    (i128::from(last_start) - (i128::from(timestamp) - i128::from(size)) - 1)
                        .div_euclid(i128::from(slide));
                let steps = i64::try_from(steps).unwrap_or(0).max(0);
                Assigned {
                    next: last_start,
                    last: last_start.saturating_sub(steps.saturating_mul(slide)),
                    size,
                    step: slide,
                }
            }
            Kind::Session { gap } => Assigned {
                next: timestamp,
                last: timestamp,
                size: gap,
                step: gap,
            },
        }
    }

    /// When the window's state and timers go: its `max_timestamp` plus the allowed lateness.
    #[must_use]
    pub fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        window.max_timestamp().saturating_add(self.lateness)
    }

    /// Whether a record for `window` comes too late: the watermark reached the window's
    /// cleanup time, so the window is gone (Flink's `isWindowLate`).
    #[must_use]
    pub fn is_late(&self, window: &TimeWindow, watermark: Option<i64>) -> bool {
        watermark.is_some_and(|w| self.cleanup_time(window) <= w)
    }

    /// Registers the window's trigger (at its `max_timestamp`) and cleanup timers for the
    /// current key. Registering them again for every record of the window costs a set
    /// insertion that finds them there; a window that fired already fires again at the next
    /// watermark advance (a late record updated it).
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn register<B: StateBackend + ?Sized>(
        &self,
        timers: &mut TimerView<'_, TimeWindow, B>,
        window: &TimeWindow,
    ) -> Result<()> {
        timers.register_event_time_in(window, window.max_timestamp())?;
        if self.lateness > 0 {
            timers.register_event_time_in(window, self.cleanup_time(window))?;
        }
        Ok(())
    }

    /// Deletes the window's timers (a session window merged into another).
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn delete<B: StateBackend + ?Sized>(
        &self,
        timers: &mut TimerView<'_, TimeWindow, B>,
        window: &TimeWindow,
    ) -> Result<()> {
        timers.delete_event_time_in(window, window.max_timestamp())?;
        timers.delete_event_time_in(window, self.cleanup_time(window))
    }

    /// What a fired timer of `window` at `timestamp` asks for: emit the window's result
    /// (`fire`), drop its state (`cleanup`), or both (no allowed lateness).
    #[must_use]
    pub fn on_timer(&self, window: &TimeWindow, timestamp: i64) -> WindowTimer {
        WindowTimer {
            fire: timestamp == window.max_timestamp(),
            cleanup: timestamp == self.cleanup_time(window),
        }
    }

    /// Merges a new session window into a key's active ones (disjoint, as this keeps them):
    /// the active windows it overlaps or touches and itself become one window.
    /// Move their state into it with the state's `_namespaces().merge(&window, &merged)` and
    /// delete their timers with [`delete`](Self::delete).
    #[must_use]
    pub fn merge_sessions(active: &[TimeWindow], new: TimeWindow) -> SessionMerge {
        let mut window = new;
        let mut merged = Vec::new();
        for w in active {
            if w.intersects(&new) {
                window = window.cover(w);
                merged.push(*w);
            }
        }
        // A record inside an active session leaves it as it is: nothing merged into it.
        merged.retain(|w| *w != window);
        SessionMerge { window, merged }
    }
}

/// The start of the window of `size` (shifted by `offset`) that holds `timestamp`, saturating
/// at the ends of time.
fn window_start(timestamp: i64, offset: i64, size: i64) -> i64 {
    let t = i128::from(timestamp);
    let start = t - (t - i128::from(offset)).rem_euclid(i128::from(size));
    i64::try_from(start).unwrap_or(i64::MIN)
}

/// The windows of one record: an iterator (no allocation).
#[derive(Debug, Clone)]
pub struct Assigned {
    next: i64,
    last: i64,
    size: i64,
    step: i64,
}

impl Iterator for Assigned {
    type Item = TimeWindow;

    fn next(&mut self) -> Option<TimeWindow> {
        if self.next < self.last {
            return None;
        }
        let w = TimeWindow::new(self.next, self.next.saturating_add(self.size));
        match self.next.checked_sub(self.step) {
            Some(n) => self.next = n,
            None => self.last = i64::MAX,
        }
        Some(w)
    }
}

/// What a window's timer asks for: see [`Windows::on_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowTimer {
    /// Emit the window's result.
    pub fire: bool,
    /// Drop the window's state (its timers are gone once this one fired).
    pub cleanup: bool,
}

/// The result of [`Windows::merge_sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMerge {
    /// The window the record's state goes to.
    pub window: TimeWindow,
    /// The active windows merged into it (empty when it overlapped none).
    pub merged: Vec<TimeWindow>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tumbling_windows_cover_every_timestamp_once() {
        let w = Windows::tumbling(Duration::from_millis(10));
        for ts in -25..25 {
            let all: Vec<_> = w.assign(ts).collect();
            assert_eq!(all.len(), 1);
            assert!(all[0].contains(ts), "{ts} {all:?}");
            assert_eq!(all[0].start.rem_euclid(10), 0);
        }
        let off =
            Windows::tumbling(Duration::from_millis(10)).with_offset(Duration::from_millis(3));
        assert_eq!(off.assign(2).next(), Some(TimeWindow::new(-7, 3)));
        assert_eq!(off.assign(3).next(), Some(TimeWindow::new(3, 13)));
    }

    #[test]
    fn sliding_windows_are_every_window_that_holds_the_timestamp() {
        let w = Windows::sliding(Duration::from_millis(10), Duration::from_millis(3));
        for ts in -20..20 {
            let all: Vec<_> = w.assign(ts).collect();
            let expected: Vec<_> = (-40..40)
                .rev()
                .filter(|s: &i64| s.rem_euclid(3) == 0)
                .map(|s| TimeWindow::new(s, s + 10))
                .filter(|x| x.contains(ts))
                .collect();
            assert_eq!(all, expected, "{ts}");
        }
    }

    #[test]
    fn the_ends_of_time_do_not_overflow() {
        let t = Windows::tumbling(Duration::from_secs(60)).with_offset(Duration::from_secs(7));
        let s = Windows::sliding(Duration::from_secs(60), Duration::from_secs(7));
        let huge = Windows::sliding(Duration::MAX, Duration::from_secs(1));
        for ts in [i64::MIN, i64::MIN + 1, -2, 0, i64::MAX - 1, i64::MAX] {
            assert!(t.assign(ts).count() <= 1);
            assert!(s.assign(ts).count() <= 9);
            let _ = huge.assign(ts).take(3).count();
            let _ = Windows::session(Duration::MAX).assign(ts).count();
        }
        let w = TimeWindow::new(0, 10);
        let late =
            Windows::tumbling(Duration::from_millis(10)).with_allowed_lateness(Duration::MAX);
        assert_eq!(late.cleanup_time(&w), i64::MAX);
    }

    #[test]
    fn lateness_and_timers() {
        let w = Windows::tumbling(Duration::from_millis(10))
            .with_allowed_lateness(Duration::from_millis(5));
        let win = TimeWindow::new(0, 10);
        assert_eq!(w.cleanup_time(&win), 14);
        assert!(!w.is_late(&win, None));
        assert!(!w.is_late(&win, Some(13)));
        assert!(w.is_late(&win, Some(14)));
        assert_eq!(
            w.on_timer(&win, 9),
            WindowTimer {
                fire: true,
                cleanup: false
            }
        );
        assert_eq!(
            w.on_timer(&win, 14),
            WindowTimer {
                fire: false,
                cleanup: true
            }
        );
        let none = Windows::tumbling(Duration::from_millis(10));
        assert_eq!(
            none.on_timer(&win, 9),
            WindowTimer {
                fire: true,
                cleanup: true
            }
        );
    }

    #[test]
    fn sessions_merge_what_they_overlap_or_touch() {
        let active = [
            TimeWindow::new(0, 10),
            TimeWindow::new(20, 30),
            TimeWindow::new(40, 50),
        ];
        let m = Windows::merge_sessions(&active, TimeWindow::new(8, 20));
        assert_eq!(m.window, TimeWindow::new(0, 30));
        assert_eq!(m.merged, vec![active[0], active[1]]);
        let m = Windows::merge_sessions(&active, TimeWindow::new(31, 35));
        assert_eq!(m.window, TimeWindow::new(31, 35));
        assert!(m.merged.is_empty());
        // Inside an active session: that session, nothing merged.
        let m = Windows::merge_sessions(&active, TimeWindow::new(22, 25));
        assert_eq!(m.window, active[1]);
        assert!(m.merged.is_empty());
    }

    #[test]
    fn windows_encode_in_time_order() {
        let ws = [
            TimeWindow::new(-5, 0),
            TimeWindow::new(-5, 3),
            TimeWindow::new(0, 1),
            TimeWindow::new(7, 8),
        ];
        for pair in ws.windows(2) {
            assert!(pair[0].to_key_bytes() < pair[1].to_key_bytes());
        }
        for w in ws {
            assert_eq!(TimeWindow::from_key_bytes(&w.to_key_bytes()).unwrap(), w);
        }
    }
}
