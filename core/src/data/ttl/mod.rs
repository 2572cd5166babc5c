//! Time-to-live: stamps, clocks, and [`TtlBackend`], which enforces `#[state(ttl = "...")]`
//! over any backend.
//!
//! A state that declares a TTL stores an 8-byte stamp (little-endian milliseconds, in the
//! state's [time](crate::model::descriptor::TtlTime)) with every value, every list element and every
//! map entry, so list elements and map entries expire independently. A value stamped `s`
//! expires when the state's time reaches `s + ttl`.
//!
//! | kind | stored bytes |
//! |---|---|
//! | value, reducing, aggregating | `stamp ++ value` |
//! | map | `stamp ++ value` per entry |
//! | list | frames `u32 len ++ stamp ++ element` (`len` counts the stamp) |
//!
//! Expired data is never returned under
//! [`NeverReturnExpired`](crate::model::descriptor::TtlVisibility::NeverReturnExpired), removed when
//! it is read, checked a few entries at a time as keys change (on backends that can walk their
//! entries in steps: the heap backend), dropped by a filter during the backend's own
//! background work (RocksDB compactions), and never written into snapshots. Stamps travel in
//! snapshots unchanged, so a restore never extends a value's life.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use statewright::prelude::*;
//! use statewright::{ManualClock, TtlBackend};
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "sessions", key = u64)]
//! struct Sessions {
//!     #[state(ttl = "30m")]
//!     last_seen: ValueState<u64>,
//! }
//!
//! let clock = ManualClock::new(0);
//! let mut op = Sessions::default().bind(TtlBackend::with_clock(HeapBackend::new(), clock.clone()))?;
//! op.key(&7)?.last_seen().set(&1)?;
//! clock.advance(Duration::from_secs(29 * 60));
//! assert_eq!(op.key(&7)?.last_seen().get_owned()?, Some(1));
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(op.key(&7)?.last_seen().get_owned()?, None);
//! # Ok::<(), statewright::Error>(())
//! ```

mod clock;
mod stamp;
mod wrapper;

pub use clock::{Clock, ManualClock, SystemClock};
pub use stamp::{ExpiryFilter, add_stamps, migrate_parts, strip_stamps};
pub use wrapper::{DEFAULT_CLEANUP_ENTRIES, DEFAULT_CLEANUP_EVERY, TtlBackend, TtlStats};

/// Bytes of a stamp.
pub const STAMP_LEN: usize = 8;

/// The watermark before the runtime has set one: nothing expires in event time yet.
pub const NO_WATERMARK: i64 = i64::MIN;
