//! # statewright
//!
//! Typed, keyed state for Rust stream processing. Declare an operator's state as the fields of
//! a struct, derive [`StatefulOperator`], and get at compile time what Apache Flink builds at run
//! time from string descriptors: state descriptors, zero-copy [rkyv](https://docs.rs/rkyv)
//! codecs, the binding to a backend, and snapshot and restore code for checkpoints. Mistakes in
//! a state declaration are compile errors.
//!
//! ```
//! use statewright::prelude::*;
//!
//! #[statewright::value]
//! #[derive(Debug, Clone, PartialEq)]
//! pub struct Txn { pub card: u64, pub amount_cents: i64, pub merchant: u32 }
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "spend", key = u64)]
//! pub struct Spend {
//!     recent: ListState<Txn>,
//!     per_merchant: MapState<u32, i64>,
//!     #[state(reduce = max)]
//!     largest: ReducingState<i64>,
//! }
//!
//! let mut op = Spend::default().bind(HeapBackend::new())?;
//! let txn = Txn { card: 4, amount_cents: 1_250, merchant: 9 };
//! let mut st = op.key(&txn.card)?;
//! st.recent().add(&txn)?;
//! st.per_merchant().update(&txn.merchant, |v| v.unwrap_or(0) + txn.amount_cents)?;
//! st.largest().add(&txn.amount_cents)?;
//! assert_eq!(st.largest().get()?.map(|v| v.to_native()), Some(1_250));
//! # Ok::<(), statewright::Error>(())
//! ```
//!
//! | feature | enables |
//! |---|---|
//! | `rocksdb` | [`RocksDbBackend`](https://docs.rs/statewright-rocksdb), for state larger than memory |
//!
//! The guide in `book/` explains every part; [`prelude`] has what an operator needs.

#![warn(missing_docs)]

// The public API, item by item: what an operator author names at the top level, the rest in the
// modules of `statewright-core` that hold it (keys, key groups, codec, schemas, views, backends,
// time-to-live, snapshots, checkpoints). Nothing reaches users by a glob.
#[doc(hidden)]
pub use statewright_core::{__impl_state_value, __private};
pub use statewright_core::{
    Aggregate, AggregatingState, AnyBackend, Bound, BroadcastState, CheckpointId, CheckpointInfo,
    CheckpointStorage, CodecError, Corruption, EncodeKey, EntryHint, Error, ExpiryHooks, KeyError,
    ListState, ManualClock, MapState, Migration, MigrationProgress, OperatorDescriptor,
    OperatorListState, OperatorManifest, ReducingState, RestoreOperator, RestorePoint, Result,
    Snapshots, StateBackend, StateDescriptor, StateId, StateKey, StateKind, StateSchema,
    StateValue, StatefulOperator, TtlBackend, TtlConfig, TtlTime, TtlUpdate, TtlVisibility,
    UnionListState, ValueState,
};
pub use statewright_core::{
    backend, checkpoint, checkpointer, codec, descriptor, key, keygroup, operator_state, schema,
    snapshot, state, store, ttl, view,
};
pub use statewright_heap::HeapBackend;
pub use statewright_macros::{StateKey, StateSchema, StatefulOperator, value};
#[cfg(feature = "rocksdb")]
pub use statewright_rocksdb::{
    Compression, RocksDbBackend, RocksDbOptions, RocksDbStats, restore_native,
    restore_native_with_progress,
};

/// Everything an operator needs: `use statewright::prelude::*;`.
pub mod prelude {
    pub use statewright_core::checkpoint::{CheckpointId, CheckpointStorage, RestorePoint};
    pub use statewright_core::checkpointer::{CheckpointConfig, Checkpointer};
    pub use statewright_core::ttl::TtlBackend;
    pub use statewright_core::view::{AggregatingView, ListView, MapView, ReducingView, ValueView};
    pub use statewright_core::{
        Aggregate, AggregatingState, AnyBackend, Bound, BroadcastState, EncodeKey, ListState,
        MapState, OperatorListState, ReducingState, RestoreOperator, StateBackend, StateKey,
        StateSchema, StateValue, StatefulOperator, UnionListState, ValueState,
    };
    pub use statewright_heap::HeapBackend;
    pub use statewright_macros::{StateKey, StateSchema, StatefulOperator};
}
