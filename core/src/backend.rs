//! The storage contract: a small, object-safe, byte-level trait that every backend implements.

use crate::descriptor::{OperatorDescriptor, StateDescriptor};
use crate::error::Result;
use crate::ttl::ExpiryFilter;

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

/// The number of entries of a scan, or its first failure.
pub(crate) fn count_scanned(entries: EntryIter<'_>) -> Result<usize> {
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

/// A consistent, owned view of a backend's states, taken in a moment and read later on another
/// thread while the backend goes on changing: the asynchronous step of a snapshot (see
/// [`StateBackend::detach`]).
pub trait DetachedState: Send {
    /// Whether [`for_each_stored`](Self::for_each_stored) visits each state's entries in
    /// ascending key-group order (any order within a key group). A snapshot of such a view is
    /// written one key group at a time, holding no more than the largest key group in memory;
    /// otherwise the whole state is copied and sorted. The default: no.
    fn in_key_group_order(&self) -> bool {
        false
    }

    /// Like [`StateBackend::for_each_stored`], as the state was when the view was taken.
    ///
    /// # Errors
    ///
    /// Unknown state, a backend failure, or the visitor's error.
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()>;
}

/// A backend's own files for a native checkpoint (see [`StateBackend::native_checkpoint`]):
/// a directory the backend wrote them into, and which of them never change once written, so
/// checkpoints can share them. The directory is removed when this value drops.
#[derive(Debug)]
pub struct NativeFiles {
    backend: &'static str,
    dir: std::path::PathBuf,
    files: Vec<NativeFileSpec>,
    schemas: Option<crate::schema::OperatorSchemas>,
    watermark: Option<i64>,
}

/// One file of a [`NativeFiles`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeFileSpec {
    /// Its name in the directory (and in a restored one).
    pub name: String,
    /// For an immutable file, a name that identifies its content for good (no other file of
    /// any database ever gets it): checkpoints then store it once and share it.
    pub shared_as: Option<String>,
}

impl NativeFiles {
    /// The files in `dir`, written by `backend`. `dir` is removed when the value drops.
    #[must_use]
    pub fn new(backend: &'static str, dir: std::path::PathBuf, files: Vec<NativeFileSpec>) -> Self {
        Self {
            backend,
            dir,
            files,
            schemas: None,
            watermark: None,
        }
    }

    /// Records the instance's watermark when the files were written (the checkpoint's
    /// manifest keeps it, so that a restore sets it again).
    #[must_use]
    pub fn with_watermark(mut self, watermark: Option<i64>) -> Self {
        self.watermark = watermark;
        self
    }

    /// The watermark recorded with [`with_watermark`](Self::with_watermark).
    #[must_use]
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Records the schemas of the operator whose state the files hold (the checkpoint's
    /// manifest keeps them, so that a restore can check and migrate).
    #[must_use]
    pub fn with_schemas(mut self, schemas: crate::schema::OperatorSchemas) -> Self {
        self.schemas = Some(schemas);
        self
    }

    /// The schemas recorded with [`with_schemas`](Self::with_schemas).
    #[must_use]
    pub fn schemas(&self) -> Option<&crate::schema::OperatorSchemas> {
        self.schemas.as_ref()
    }

    /// The backend that wrote the files (and can restore them).
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The directory holding the files.
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The files.
    #[must_use]
    pub fn files(&self) -> &[NativeFileSpec] {
        &self.files
    }
}

impl Drop for NativeFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How far the rewrite of a state's entries by a declared migration is, reported while a
/// native checkpoint is restored (see [`Bound::restore_from_with_progress`](crate::Bound::restore_from_with_progress)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationProgress<'a> {
    /// The state being migrated.
    pub state: &'a str,
    /// The version its entries are migrated from.
    pub from_version: u32,
    /// Entries rewritten so far.
    pub entries: u64,
    /// The backend's estimate of the state's entries (0 when it has none).
    pub estimated_total: u64,
    /// Whether the state is done.
    pub done: bool,
}

/// A keyed state whose stored entries a native restore must rewrite with a declared
/// migration, because the checkpoint holds them in an earlier version.
#[derive(Debug, Clone, Copy)]
pub struct NativeMigration {
    /// The state.
    pub state: &'static StateDescriptor,
    /// Whether the stored values carry TTL stamps.
    pub stamped: bool,
    /// The migration from the stored version.
    pub migration: &'static crate::descriptor::Migration,
}

/// What a backend needs to open a native checkpoint as its state (see
/// [`StateBackend::restore_native`]): the snapshots, checked by the one restore path
/// ([`Bound::restore_from`](crate::Bound::restore_from)) for their backend, maximum
/// parallelism and schemas before the backend is asked.
pub struct NativeRestore<'a> {
    /// The checkpoint storage holding the files.
    pub storage: &'a crate::checkpoint::CheckpointStorage,
    /// The operator.
    pub operator: &'a OperatorDescriptor,
    /// The native snapshots of the operator overlapping `range`, by first key group; together
    /// they cover the range.
    pub files: Vec<&'a crate::checkpoint::CheckpointFile>,
    /// The key groups the restored instance owns: entries of other key groups must not remain.
    pub range: crate::keygroup::KeyGroupRange,
    /// States to rewrite after the files are in place.
    pub migrations: Vec<NativeMigration>,
    /// Called while migrations rewrite entries.
    pub progress: &'a mut dyn FnMut(&MigrationProgress<'_>),
}

impl std::fmt::Debug for NativeRestore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeRestore")
            .field("operator", &self.operator.name)
            .field("files", &self.files.len())
            .field("range", &self.range)
            .field("migrations", &self.migrations.len())
            .finish_non_exhaustive()
    }
}

/// What happened to an entry since change tracking started (see
/// [`StateBackend::track_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The entry holds these bytes now (as [`StateBackend::for_each_stored`] would visit them).
    Put(&'a [u8]),
    /// The entry was deleted.
    Delete,
    /// Every entry of the key was deleted (the user key is empty); entries of the key written
    /// afterwards are visited as [`Change::Put`]s after this.
    DeleteKey,
}

/// A visitor over tracked changes: `(key, user key, change)`.
pub type ChangeVisitor<'v> = dyn FnMut(&[u8], &[u8], Change<'_>) -> Result<()> + 'v;

/// Byte-level keyed state storage.
///
/// Addresses: every entry lives in one state (a column, see [`register`](Self::register)) under
/// a *key* and a *user key*. The key is the key-group prefix (2 bytes, big endian) followed by
/// the canonical key bytes, the prefix being the key group of those bytes under the operator's
/// maximum parallelism (as [`Bound::key`](crate::Bound::key) builds every key), so a backend
/// may compute the prefix from the canonical key instead of storing it. A key with another
/// prefix is a caller's error: a backend may refuse it or treat it as the key with the right
/// prefix (the heap refuses it wherever it creates, merges or removes an entry or records a
/// change, and reads and replaces in place by the canonical bytes), and never panics. The user
/// key is empty except for map states, where it is the canonical user key. Values are opaque bytes. Canonical encodings are prefix-free, so no key
/// is a prefix of another key of the same state: a backend may store `key ++ user_key` as one
/// byte string and serve [`scan`](Self::scan) as a prefix scan.
///
/// Contracts every implementation keeps (the conformance suite in
/// [`conformance`](crate::conformance) checks them):
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
    /// those borrows (RocksDB's pinned slices) release them here; the default does nothing.
    fn release_reads(&mut self) {}

    /// Removes every entry of the state (used before a restore).
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn clear_state(&mut self, state: StateId) -> Result<()>;

    /// Whether this backend stores a time-to-live stamp with every value of the state (see
    /// [`ttl`](crate::ttl)); binding a state that declares a TTL to a backend that does not is
    /// an error. The default: no.
    fn stamps_ttl(&self, state: StateId) -> bool {
        let _ = state;
        false
    }

    /// Like [`for_each_entry`](Self::for_each_entry), with values as snapshots keep them:
    /// for a state this backend [stamps](Self::stamps_ttl), with their stamps (and without
    /// expired data). The default visits [`for_each_entry`](Self::for_each_entry).
    ///
    /// # Errors
    ///
    /// As [`for_each_entry`](Self::for_each_entry).
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        self.for_each_entry(state, visit)
    }

    /// Stores a value as [`for_each_stored`](Self::for_each_stored) visited it (a restore).
    /// The default is [`put`](Self::put).
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put), or damaged stamps.
    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.put(state, key, user_key, value)
    }

    /// Visits up to `limit` entries of the state, continuing from `*cursor` (0 starts at the
    /// beginning) in the backend's own order, and advances the cursor, wrapping to 0 after the
    /// last entry. Returns `false`, visiting nothing, when the backend cannot walk its entries
    /// in steps (the default). Used for incremental TTL cleanup.
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
    ) -> Result<bool> {
        let _ = (state, cursor, limit, visit);
        Ok(false)
    }

    /// Installs a filter that drops expired entries of the state during the backend's own
    /// background work (RocksDB: compaction). Returns `false` when the backend has no such
    /// work (the default).
    ///
    /// # Errors
    ///
    /// Unknown state, or a backend failure.
    fn install_expiry_filter(&mut self, state: StateId, filter: ExpiryFilter) -> Result<bool> {
        let _ = (state, filter);
        Ok(false)
    }

    /// Takes a consistent view of every state that another thread can read while this backend
    /// goes on changing, in much less time than copying the entries (RocksDB: a checkpoint of
    /// hard-linked files). `None` (the default) when the backend has none; a snapshot then
    /// copies the entries out in its synchronous step.
    ///
    /// # Errors
    ///
    /// A backend or I/O failure.
    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>> {
        Ok(None)
    }

    /// Writes the backend's own files for a native checkpoint, quickly enough for the
    /// synchronous step (RocksDB: a memtable flush and hard links), into a new directory on
    /// the backend's file system. `None` (the default) when the backend has no native format.
    /// A checkpoint moves the files into its storage on another thread, keeping one copy of
    /// each immutable file for all the checkpoints that share it (incremental by nature).
    ///
    /// # Errors
    ///
    /// A backend or I/O failure.
    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>> {
        Ok(None)
    }

    /// Replaces everything this backend holds with the state in native snapshots written by a
    /// backend of its kind (see [`native_checkpoint`](Self::native_checkpoint)): the key
    /// groups of `restore.range`, with `restore.migrations` applied. Returns `false`, changing
    /// nothing, when the backend cannot open native snapshots (the default) or they are of
    /// another backend. Registered states stay registered under the same ids.
    ///
    /// # Errors
    ///
    /// A damaged or missing file, a backend or I/O failure; the backend is then empty.
    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        let _ = restore;
        Ok(false)
    }

    /// The event time this backend's states see (the watermark), once one was set. The
    /// default keeps none.
    fn watermark(&self) -> Option<i64> {
        None
    }

    /// Advances event time to `millis`; watermarks never go back. The default keeps none.
    fn set_watermark(&mut self, millis: i64) {
        let _ = millis;
    }

    /// Starts (`true`) or stops (`false`) tracking which entries change, for incremental
    /// snapshots; starting forgets what was tracked before. Returns `false` when the backend
    /// cannot track changes (the default), which makes every snapshot a full one.
    fn track_changes(&mut self, on: bool) -> bool {
        let _ = on;
        false
    }

    /// Visits, and forgets, the changes of the state since tracking started or since the last
    /// call: for every changed entry its stored bytes now or its deletion, each entry once.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) when the backend does not track
    /// changes (the default); unknown state; the visitor's error (the changes not yet visited are
    /// then lost, so the next snapshot must be a full one).
    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()> {
        let _ = (state, visit);
        Err(crate::Error::Unsupported {
            backend: self.name(),
            what: "change tracking: it takes only full snapshots".into(),
        })
    }
}

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
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        (**self).for_each_stored(state, visit)
    }
    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        (**self).put_stored(state, key, user_key, value)
    }
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
    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>> {
        (**self).detach()
    }
    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>> {
        (**self).native_checkpoint()
    }
    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        (**self).restore_native(restore)
    }
    fn watermark(&self) -> Option<i64> {
        (**self).watermark()
    }
    fn set_watermark(&mut self, millis: i64) {
        (**self).set_watermark(millis);
    }
    fn track_changes(&mut self, on: bool) -> bool {
        (**self).track_changes(on)
    }
    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()> {
        (**self).drain_changes(state, visit)
    }
}
