//! The storage contract: a small, object-safe, byte-level trait that every backend implements.

use crate::data::ttl::ExpiryFilter;
use crate::model::descriptor::{OperatorDescriptor, StateDescriptor};
use crate::model::error::Result;

pub use crate::data::capture::{
    Change, ChangeVisitor, DetachedState, MigrationProgress, NativeFileSpec, NativeFiles,
    NativeMigration, NativePart, NativeRestore, NativeSource, Snapshots,
};

/// The update of a [`StateBackend::read_modify_write`]: given the stored value (`None` when
/// there is none), it writes the new value into the buffer.
pub type ValueUpdate<'u> = &'u mut dyn FnMut(Option<&[u8]>, &mut Vec<u8>) -> Result<()>;

/// A backend's handle for one registered state (one column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

/// Where a backend found an entry, left by [`StateBackend::get_hinted`] for the write that
/// follows (a read-modify-write), so that [`StateBackend::put_hinted`] can go straight to the
/// entry instead of looking it up again.
///
/// Opaque to callers. A backend checks a hint before it trusts it: a stale hint, or one left by
/// a read of another key or state, costs the lookup it would have saved and never reaches
/// another entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryHint(u64);

impl EntryHint {
    /// No position: the write looks the entry up.
    pub const NONE: Self = Self(0);

    /// A backend's position (`0` is [`NONE`](Self::NONE)).
    #[must_use]
    #[inline]
    pub const fn new(position: u64) -> Self {
        Self(position)
    }

    /// The position the backend stored.
    #[must_use]
    #[inline]
    pub const fn position(self) -> u64 {
        self.0
    }
}

/// Iterator over `(user key, value)` pairs of one key, in user-key byte order. Backends that
/// read as the iterator advances (RocksDB) report a failure met on the way as an `Err` item,
/// after which the iterator ends.
pub type EntryIter<'a> = Box<dyn Iterator<Item = Result<(&'a [u8], &'a [u8])>> + 'a>;

/// The number of entries of a scan, or its first failure: what [`StateBackend::count`] does by
/// default, for a backend that counts some states another way and the others by scanning.
///
/// # Errors
///
/// The first failure the scan reports.
pub fn count_scanned(entries: EntryIter<'_>) -> Result<usize> {
    let mut n = 0;
    for entry in entries {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// A reader of one stored value, given the bytes (`None` when nothing is stored) for the
/// duration of the call (see [`StateBackend::read`]).
pub type ValueReader<'v> = dyn FnMut(Option<&[u8]>) -> Result<()> + 'v;

/// A visitor over every entry of a state: `(key, user key, value)`.
pub type EntryVisitor<'v> = dyn FnMut(&[u8], &[u8], &[u8]) -> Result<()> + 'v;

/// Byte-level keyed state storage.
///
/// Addresses: every entry lives in one state (a column, see [`register`](Self::register)) under
/// a *key* and a *user key*. The key is the key-group prefix (2 bytes, big endian) followed by
/// the canonical key bytes, the prefix being the key group of those bytes under the operator's
/// maximum parallelism (as [`Bound::key`](crate::Bound::key) builds every key), so a backend
/// may compute the prefix from the canonical key instead of storing it. A key with another
/// prefix is a caller's error: a backend may refuse it or treat it as the key with the right
/// prefix (the heap refuses it wherever it creates or removes an entry or records a change,
/// and reads, replaces and appends in place by the canonical bytes), and never panics. The user
/// key is empty except for map states, where it is the canonical user key. Values are opaque bytes. Canonical encodings are prefix-free, so no key
/// is a prefix of another key of the same state: a backend may store `key ++ user_key` as one
/// byte string and serve [`scan`](Self::scan) as a prefix scan.
///
/// Contracts every implementation keeps (the conformance suite in
/// `conformance` module checks them):
///
/// - `get` after `put` returns exactly the bytes put; after `delete`, `None`.
/// - `merge` appends the operand to the stored bytes (or stores it when absent), without the
///   caller reading the old value: list state relies on it.
/// - `scan` yields the user keys of one key in ascending byte order.
/// - `for_each_entry` visits every live entry of a state exactly once, in any order.
/// - States are independent: nothing written to one is visible in another.
/// - No method panics on any input; failures are [`Error`](crate::Error)s.
pub trait StateBackend {
    /// Short name for errors and statistics (`heap`, `rocksdb`).
    fn name(&self) -> &'static str;

    /// Creates (or finds, when the same operator and state were registered before) the column
    /// for a state of `operator`. The operator is named by its
    /// [`name`](OperatorDescriptor::name); its
    /// [`max_parallelism`](OperatorDescriptor::max_parallelism) fixes the key group of every
    /// key of the state.
    ///
    /// # Errors
    ///
    /// When the backend cannot create the column.
    fn register(
        &mut self,
        operator: &OperatorDescriptor,
        state: &StateDescriptor,
    ) -> Result<StateId>;

    /// The value stored at `(key, user_key)`.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn get(&self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<Option<&[u8]>>;

    /// Stores `value` at `(key, user_key)`, replacing what was there.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn put(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()>;

    /// [`get`](Self::get), leaving in `hint` where the entry is for a
    /// [`put_hinted`](Self::put_hinted) of the same entry. The default sets no hint.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    #[inline]
    fn get_hinted(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        hint: &mut EntryHint,
    ) -> Result<Option<&[u8]>> {
        *hint = EntryHint::NONE;
        self.get(state, key, user_key)
    }

    /// [`put`](Self::put), starting at `hint` (from a [`get_hinted`](Self::get_hinted)) when it
    /// still names this entry. The default ignores the hint.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    #[inline]
    fn put_hinted(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        let _ = hint;
        self.put(state, key, user_key, value)
    }

    /// A read-modify-write in one call: `update` is given the value stored at
    /// `(key, user_key)` (`None` when there is none) and writes the new value into `value`
    /// (cleared first), which is then stored there. A backend may find the entry once for
    /// both, where [`get_hinted`](Self::get_hinted) and [`put_hinted`](Self::put_hinted)
    /// find it twice when it is new (an add to a reducing or aggregating state in a window
    /// nobody wrote yet). `update` runs exactly once; when it fails, nothing is stored. The
    /// default reads, then writes ([`read_then_write`]).
    ///
    /// # Errors
    ///
    /// Unknown state, a backend failure, or `update`'s error, as it returned it.
    #[inline]
    fn read_modify_write(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        read_then_write(self, state, key, user_key, value, update)
    }

    /// Appends `operand` to the bytes at `(key, user_key)`.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn merge(&mut self, state: StateId, key: &[u8], user_key: &[u8], operand: &[u8]) -> Result<()>;

    /// Removes the entry at `(key, user_key)`; removing a missing entry is not an error.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn delete(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()>;

    /// The `(user key, value)` pairs stored under `key`, in ascending user-key order.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn scan<'a>(&'a self, state: StateId, key: &[u8]) -> Result<EntryIter<'a>>;

    /// Calls `reader` with the bytes at `(key, user_key)`, or `None`, and returns its result.
    /// Unlike [`get`](Self::get), nothing has to stay alive after the call: reads that decode
    /// into owned values use this, so a backend that pins what `get` returns (RocksDB) pins
    /// nothing for them. The default calls `get`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get), or the reader's error.
    fn read(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        reader: &mut ValueReader<'_>,
    ) -> Result<()> {
        reader(self.get(state, key, user_key)?)
    }

    /// The number of entries [`scan`](Self::scan) would yield for `key`. The default counts
    /// them with `scan`; a backend that can count without keeping what it reads overrides it.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    fn count(&self, state: StateId, key: &[u8]) -> Result<usize> {
        count_scanned(self.scan(state, key)?)
    }

    /// Removes every entry stored under `key`.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn delete_key(&mut self, state: StateId, key: &[u8]) -> Result<()>;

    /// Calls `visit(key, user_key, value)` for every entry of the state; stops at the first
    /// error the visitor returns and returns it.
    ///
    /// # Errors
    ///
    /// Unknown state, a backend failure, or the visitor's error.
    fn for_each_entry(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()>;

    /// Called whenever no value returned by [`get`](Self::get) or [`scan`](Self::scan) can still
    /// be borrowed (the caller holds `&mut self`). Backends that keep read buffers alive for
    /// those borrows (RocksDB's pinned slices) release them here.
    fn release_reads(&mut self);

    /// Removes every entry of the state (used before a restore).
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn clear_state(&mut self, state: StateId) -> Result<()>;

    /// Whether this backend stores a time-to-live stamp with every value of the state (see
    /// [`ttl`](crate::data::ttl)); binding a state that declares a TTL to a backend that does not is
    /// an error.
    fn stamps_ttl(&self, state: StateId) -> bool;

    /// The event time this backend's states see (the watermark), once one was set; always
    /// `None` for a backend that keeps none ([`Bound`](crate::Bound) keeps it as well).
    fn watermark(&self) -> Option<i64>;

    /// Advances event time to `millis`; watermarks never go back. A backend that keeps no
    /// watermark ignores it; a wrapper passes it on.
    fn set_watermark(&mut self, millis: i64);

    /// The timers of a timer state in one key group and time domain, in time order, when the
    /// backend keeps them in that order itself (RocksDB keeps a column family of them,
    /// `[key group][domain][timestamp][key][namespace]`, as Flink does): then an operator
    /// instance holds only the first timers of each key group in memory and reads the next
    /// ones from here, instead of indexing every timer.
    ///
    /// Visits, in order, up to `limit` timers of `key_group` and `domain` (its
    /// [`TimeDomain::tag`](crate::TimeDomain::tag)) that come after `after` (all of them when
    /// `None`), each as its order-preserving timestamp encoding followed by the canonical key
    /// and namespace bytes; `after` is such bytes too. Returns `false`, having visited nothing,
    /// when the backend keeps no such order (the default); `limit` 0 asks only that.
    ///
    /// # Errors
    ///
    /// A backend failure, or what `visit` returns.
    fn ordered_timers(
        &self,
        state: StateId,
        key_group: u16,
        domain: u8,
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        let _ = (state, key_group, domain, after, limit, visit);
        Ok(false)
    }

    /// The number of timers of `domain` (its [`TimeDomain::tag`](crate::TimeDomain::tag)) in a
    /// timer state, when the backend keeps that state's timers as a queue of its own, in the
    /// order they fire over all its key groups (the heap: an ordered set per key group and a
    /// tree of the groups' earliest timers). Then an operator instance keeps no index of its
    /// own: it asks [`earliest_timer`](Self::earliest_timer) for the next timer and fires it
    /// with [`pop_earliest_timer`](Self::pop_earliest_timer), so a timer is stored once.
    /// `None` (the default) when the backend keeps no such queue.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn queued_timers(&self, state: StateId, domain: u8) -> Result<Option<usize>> {
        let _ = (state, domain);
        Ok(None)
    }

    /// The earliest timer of `domain` in a timer state the backend queues
    /// ([`queued_timers`](Self::queued_timers)): the smallest by timestamp, then canonical key
    /// bytes, then canonical namespace bytes. `None` when there is none (or no queue).
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn earliest_timer(&self, state: StateId, domain: u8) -> Result<Option<QueuedTimer<'_>>> {
        let _ = (state, domain);
        Ok(None)
    }

    /// Removes the timer [`earliest_timer`](Self::earliest_timer) returns, as
    /// [`delete`](Self::delete) would remove it (change tracking included). Returns whether
    /// there was one.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn pop_earliest_timer(&mut self, state: StateId, domain: u8) -> Result<bool> {
        let _ = (state, domain);
        Ok(false)
    }
}

/// The earliest timer of a backend's timer queue ([`StateBackend::earliest_timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedTimer<'a> {
    /// The key group of its key.
    pub key_group: u16,
    /// Its time.
    pub timestamp: i64,
    /// The canonical bytes of its key (without the key group).
    pub key: &'a [u8],
    /// The canonical bytes of its namespace.
    pub namespace: &'a [u8],
}

/// What the TTL wrapper ([`TtlBackend`](crate::data::ttl::TtlBackend)) needs of the backend
/// it wraps to clean up expired entries without being asked: a capability a backend opts into
/// (a backend without it cannot hold TTL state). Every method is required, so that a wrapper
/// around a backend says what it does with each one.
pub trait ExpiryHooks: StateBackend {
    /// Visits up to `limit` entries of the state, continuing from `*cursor` (0 starts at the
    /// beginning) in the backend's own order, and advances the cursor, wrapping to 0 after the
    /// last entry. Returns `false`, visiting nothing, when the backend cannot walk its entries
    /// in steps. Used for incremental TTL cleanup.
    ///
    /// # Errors
    ///
    /// Unknown state, a backend failure, or the visitor's error.
    fn visit_some(
        &self,
        state: StateId,
        cursor: &mut u64,
        limit: usize,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<bool>;

    /// Installs a filter that drops expired entries of the state during the backend's own
    /// background work (RocksDB: compaction). Returns `false` when the backend has no such
    /// work.
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn install_expiry_filter(&mut self, state: StateId, filter: ExpiryFilter) -> Result<bool>;
}

/// [`StateBackend::read_modify_write`] as a read ([`get_hinted`](StateBackend::get_hinted))
/// and a write ([`put_hinted`](StateBackend::put_hinted)): the default, and what a backend's
/// own version falls back to for the states it keeps another way.
///
/// # Errors
///
/// As [`StateBackend::read_modify_write`].
pub fn read_then_write<B: StateBackend + ?Sized>(
    backend: &mut B,
    state: StateId,
    key: &[u8],
    user_key: &[u8],
    value: &mut Vec<u8>,
    update: ValueUpdate<'_>,
) -> Result<()> {
    let mut hint = EntryHint::NONE;
    value.clear();
    update(backend.get_hinted(state, key, user_key, &mut hint)?, value)?;
    backend.put_hinted(state, key, user_key, value, hint)
}

/// Every capability of a backend in one trait object: for choosing the backend at run time,
/// as `Box<dyn AnyBackend>`, which is a [`StateBackend`], [`Snapshots`] and [`ExpiryHooks`]
/// (so it can be wrapped in a [`TtlBackend`](crate::data::ttl::TtlBackend) and checkpointed).
/// Implemented for every backend with all three.
pub trait AnyBackend: Snapshots + ExpiryHooks {}

impl<B: Snapshots + ExpiryHooks + ?Sized> AnyBackend for B {}

impl<B: StateBackend + ?Sized> StateBackend for Box<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn register(
        &mut self,
        operator: &OperatorDescriptor,
        state: &StateDescriptor,
    ) -> Result<StateId> {
        (**self).register(operator, state)
    }
    fn get(&self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<Option<&[u8]>> {
        (**self).get(state, key, user_key)
    }
    fn put(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        (**self).put(state, key, user_key, value)
    }
    fn get_hinted(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        hint: &mut EntryHint,
    ) -> Result<Option<&[u8]>> {
        (**self).get_hinted(state, key, user_key, hint)
    }
    fn put_hinted(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        (**self).put_hinted(state, key, user_key, value, hint)
    }
    fn read_modify_write(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        (**self).read_modify_write(state, key, user_key, value, update)
    }
    fn merge(&mut self, state: StateId, key: &[u8], user_key: &[u8], operand: &[u8]) -> Result<()> {
        (**self).merge(state, key, user_key, operand)
    }
    fn delete(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()> {
        (**self).delete(state, key, user_key)
    }
    fn scan<'a>(&'a self, state: StateId, key: &[u8]) -> Result<EntryIter<'a>> {
        (**self).scan(state, key)
    }
    fn read(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        reader: &mut ValueReader<'_>,
    ) -> Result<()> {
        (**self).read(state, key, user_key, reader)
    }
    fn count(&self, state: StateId, key: &[u8]) -> Result<usize> {
        (**self).count(state, key)
    }
    fn delete_key(&mut self, state: StateId, key: &[u8]) -> Result<()> {
        (**self).delete_key(state, key)
    }
    fn for_each_entry(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        (**self).for_each_entry(state, visit)
    }
    fn release_reads(&mut self) {
        (**self).release_reads();
    }
    fn clear_state(&mut self, state: StateId) -> Result<()> {
        (**self).clear_state(state)
    }
    fn stamps_ttl(&self, state: StateId) -> bool {
        (**self).stamps_ttl(state)
    }
    fn watermark(&self) -> Option<i64> {
        (**self).watermark()
    }
    fn set_watermark(&mut self, millis: i64) {
        (**self).set_watermark(millis);
    }
    fn ordered_timers(
        &self,
        state: StateId,
        key_group: u16,
        domain: u8,
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        (**self).ordered_timers(state, key_group, domain, after, limit, visit)
    }
    fn queued_timers(&self, state: StateId, domain: u8) -> Result<Option<usize>> {
        (**self).queued_timers(state, domain)
    }
    fn earliest_timer(&self, state: StateId, domain: u8) -> Result<Option<QueuedTimer<'_>>> {
        (**self).earliest_timer(state, domain)
    }
    fn pop_earliest_timer(&mut self, state: StateId, domain: u8) -> Result<bool> {
        (**self).pop_earliest_timer(state, domain)
    }
}

impl<B: ExpiryHooks + ?Sized> ExpiryHooks for Box<B> {
    fn visit_some(
        &self,
        state: StateId,
        cursor: &mut u64,
        limit: usize,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<bool> {
        (**self).visit_some(state, cursor, limit, visit)
    }
    fn install_expiry_filter(&mut self, state: StateId, filter: ExpiryFilter) -> Result<bool> {
        (**self).install_expiry_filter(state, filter)
    }
}
