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
//! | `s3`, `gcs`, `azure` | checkpoints on object storage: `store::open_url("s3://bucket/prefix", ..)` |
//! | `redis` | checkpoints in Redis: `store::open_url("redis://host:6379/0/prefix", ..)` |
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
    StateValue, StatefulOperator, TimeDomain, Timer, TimerService, TtlBackend, TtlConfig, TtlTime,
    TtlUpdate, TtlVisibility, UnionListState, ValueState,
};

// Each module below lists what it holds beyond the top-level items above, so every item is at
// one path (the prelude aside).

/// Keyed state: the [`Aggregate`] trait's helpers. The state types are at the top level.
pub mod state {
    pub use statewright_core::state::reduce;
}

/// Operator (non-keyed) state beyond [`OperatorListState`], [`UnionListState`] and
/// [`BroadcastState`]: how its entries are stored and visited.
pub mod operator_state {
    pub use statewright_core::operator_state::{EntryVisitor, OperatorEntries, OperatorStateData};
}

/// The typed views of one key's states, as an operator's generated accessors return them.
pub mod view {
    pub use statewright_core::namespaces::{
        AggregateMerge, ListMerge, MergeNamespaces, NamespacesView, NoMerge, ReduceMerge,
    };
    pub use statewright_core::timers::TimerView;
    pub use statewright_core::view::{
        AggregatingView, KeyContext, ListIter, ListView, MapView, ReducingView, Scratch, Slot,
        ValueView,
    };
}

/// Timers beyond [`TimerService`], [`TimeDomain`] and [`Timer`]: the tokio helper that waits
/// for the next processing-time timer, and how many timers of a key group an instance holds in
/// memory on RocksDB (the view of a key's timers is [`view::TimerView`]).
pub mod timers {
    pub use statewright_core::timers::{
        CACHED_PER_GROUP, processing_time_reached, system_time_millis,
    };
}

/// Event-time windows: [`TimeWindow`](window::TimeWindow), a namespace type, and
/// [`Windows`](window::Windows), which assigns records to tumbling, sliding and session
/// windows and drives their timers.
pub mod window {
    pub use statewright_core::window::{Assigned, SessionMerge, TimeWindow, WindowTimer, Windows};
}

/// Keys: validating encoded keys ([`StateKey`] and [`EncodeKey`] are at the top level).
pub mod key {
    pub use statewright_core::key::validate_key;
}

/// Key groups: the unit of rescaling.
pub mod keygroup {
    pub use statewright_core::keygroup::{
        DEFAULT_MAX_PARALLELISM, KEY_HASH_VERSION, KeyGroupRange, MAX_PARALLELISM_LIMIT, key_group,
        key_hash,
    };
}

/// The value codec (rkyv, zero-copy): encoding, validation and access ([`StateValue`] is at the
/// top level).
pub mod codec {
    pub use statewright_core::codec::{
        Frames, RKYV_FORMAT, ValueDeserializer, ValueSerializer, ValueValidator, access, decode,
        encode_frame_into, encode_into, raw, to_owned, validate, validate_frames,
    };
}

/// What a descriptor records, beyond the descriptors and TTL settings at the top level.
pub mod descriptor {
    pub use statewright_core::descriptor::{
        MigrationManifest, StateManifest, TtlManifest, no_user_key,
    };
}

/// Schemas of stored types and their compatibility ([`StateSchema`] is at the top level).
pub mod schema {
    pub use statewright_core::schema::{
        ChangeKind, Field, FieldDesc, Fields, FieldsDesc, OperatorSchemas, ProblemKind, Reading,
        Schema, SchemaChange, SchemaDesc, SchemaProblem, SchemaReport, StateSchemaRecord,
        StoredSchema, StoredState, Variant, VariantDesc, diff,
    };
}

/// The backend interface beyond [`StateBackend`], [`Snapshots`] and [`ExpiryHooks`]: iterators,
/// visitors, and what capture and native restore exchange.
pub mod backend {
    pub use statewright_core::backend::{
        Change, ChangeVisitor, DetachedState, EntryIter, EntryVisitor, NativeFileSpec, NativeFiles,
        NativeMigration, NativePart, NativeRestore, NativeSource, ValueReader,
    };
}

/// Time-to-live beyond [`TtlBackend`] and [`ManualClock`]: clocks, stamps and statistics.
pub mod ttl {
    pub use statewright_core::ttl::{
        Clock, DEFAULT_CLEANUP_ENTRIES, DEFAULT_CLEANUP_EVERY, ExpiryFilter, NO_WATERMARK,
        STAMP_LEN, SystemClock, TtlStats, add_stamps, migrate_parts, strip_stamps,
    };
}

/// The snapshot format: capture, writing and reading.
pub mod snapshot {
    pub use statewright_core::snapshot::{
        BlockRef, COMPRESSION_LZ4, COMPRESSION_NONE, ChangeRecordVisitor, FORMAT_VERSION,
        KeyGroupIndex, RecordVisitor, RestoreSummary, SnapshotImage, SnapshotIndex,
        SnapshotOptions, SnapshotReader, SnapshotSummary, StateSection, capture, capture_changes,
        capture_detached, restore_operator, restore_operator_from, restore_operator_states,
        write_operator,
    };
}

/// Checkpoints beyond [`CheckpointStorage`], [`CheckpointId`], [`CheckpointInfo`] and
/// [`RestorePoint`]: what the manifest records, and a checkpoint being written.
pub mod checkpoint {
    pub use statewright_core::checkpoint::{
        CheckpointFile, NativeFile, NativeSnapshot, PendingCheckpoint, SnapshotKind, SnapshotRef,
        decode_manifest, validate_name,
    };
}

/// Where checkpoints live: the object-storage-shaped [`CheckpointStore`](store::CheckpointStore),
/// its local implementation, the object stores (features `s3`, `gcs`, `azure`) and Redis
/// (feature `redis`), and [`open_url`](store::open_url), which picks one by URL.
pub mod store {
    pub use statewright_core::store::{
        CheckpointStore, LocalStore, ObjectWriter, upload_file, validate_object_name,
    };
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    pub use statewright_object_store::{ObjectStoreStore, PART_SIZE};
    #[cfg(feature = "redis")]
    pub use statewright_redis::{CHUNK_SIZE, RedisStore};

    use statewright_core::{CheckpointStorage, Error, Result};

    /// Opens a checkpoint storage by URL:
    ///
    /// - `file:///path`: a local directory, as [`CheckpointStorage::open`];
    /// - `s3://bucket/prefix` (feature `s3`), `gs://` (`gcs`), `az://` (`azure`): object
    ///   storage, credentials, region and endpoint from the usual environment variables
    ///   (`AWS_*`, ...), then `options` (`("aws_endpoint", "http://127.0.0.1:8333")`);
    /// - `redis://[:password@]host[:port]/db/prefix` (feature `redis`): a Redis server, which
    ///   takes no options.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a scheme this build does not offer (the message names the
    /// feature), [`Error::InvalidName`] for a URL that cannot be parsed, and the errors of
    /// opening the store.
    #[allow(unused_variables)]
    pub fn open_url<I, K, V>(url: &str, options: I) -> Result<CheckpointStorage>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        let unsupported = |feature: &str| Error::Unsupported {
            backend: "checkpoint storage",
            what: format!("`{scheme}://` locations in this build (enable the `{feature}` feature)"),
        };
        match scheme {
            "file" => {
                let path = url.trim_start_matches("file://");
                if path.starts_with('/') {
                    CheckpointStorage::open(path)
                } else {
                    Err(Error::InvalidName {
                        what: "checkpoint storage URL",
                        name: url.to_owned(),
                        reason: "a `file://` URL names an absolute path (`file:///path`)",
                    })
                }
            }
            #[cfg(feature = "redis")]
            "redis" | "rediss" => {
                if options.into_iter().next().is_some() {
                    return Err(Error::InvalidName {
                        what: "checkpoint storage option",
                        name: url.to_owned(),
                        reason: "a Redis location takes no options: put the password and \
                                 database in the URL",
                    });
                }
                statewright_redis::open_url(url)
            }
            #[cfg(not(feature = "redis"))]
            "redis" | "rediss" => Err(unsupported("redis")),
            #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
            _ => statewright_object_store::open_url(url, options),
            #[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
            "s3" | "s3a" => Err(unsupported("s3")),
            #[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
            "gs" => Err(unsupported("gcs")),
            #[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
            "az" | "azure" | "abfs" | "abfss" => Err(unsupported("azure")),
            #[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
            _ => Err(Error::InvalidName {
                what: "checkpoint storage URL",
                name: url.to_owned(),
                reason: "not a location this build opens (`file:///path`; `s3://`, `gs://`, \
                         `az://` and `redis://` with their features)",
            }),
        }
    }
}

/// Periodic, asynchronous and incremental checkpoints of several operators.
pub mod checkpointer {
    pub use statewright_core::checkpointer::{
        CheckpointConfig, CheckpointReport, CheckpointStarted, Checkpointable, Checkpointer,
        StoreHandle,
    };
}
pub use statewright_heap::HeapBackend;
pub use statewright_macros::{StateKey, StateSchema, StatefulOperator, value};
#[cfg(feature = "rocksdb")]
pub use statewright_rocksdb::{
    Compression, RocksDbBackend, RocksDbOptions, RocksDbStats, restore_native,
    restore_native_with_progress,
};

/// Everything an operator needs: `use statewright::prelude::*;`.
pub mod prelude {
    pub use statewright_core::checkpointer::{CheckpointConfig, Checkpointer};
    pub use statewright_core::view::{AggregatingView, ListView, MapView, ReducingView, ValueView};
    pub use statewright_core::window::{TimeWindow, Windows};
    pub use statewright_core::{
        Aggregate, AggregatingState, AnyBackend, Bound, BroadcastState, CheckpointId,
        CheckpointStorage, EncodeKey, ListState, MapState, OperatorListState, ReducingState,
        RestoreOperator, RestorePoint, StateBackend, StateKey, StateSchema, StateValue,
        StatefulOperator, TimeDomain, Timer, TimerService, TtlBackend, UnionListState, ValueState,
    };
    pub use statewright_heap::HeapBackend;
    pub use statewright_macros::{StateKey, StateSchema, StatefulOperator};
}
