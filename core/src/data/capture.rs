//! What checkpoints need of a backend beyond reads and writes: the [`Snapshots`] capability
//! and the types it exchanges with the persistence layer (detached views, native files,
//! native restores, tracked changes).

use crate::data::backend::{EntryVisitor, StateBackend, StateId};
use crate::model::descriptor::{OperatorDescriptor, StateDescriptor};
use crate::model::error::Result;

/// A consistent, owned view of a backend's states, taken in a moment and read later on another
/// thread while the backend goes on changing: the asynchronous step of a snapshot (see
/// [`Snapshots::detach`]).
pub trait DetachedState: Send {
    /// Whether [`for_each_stored`](Self::for_each_stored) visits each state's entries in the
    /// canonical order of snapshots: by key (its key group first, as the stored key begins
    /// with it), then by user key, each entry once. A snapshot of such a view is encoded as it
    /// is visited, holding one block in memory, whatever the size of the state; otherwise the
    /// whole state is copied and sorted first. A view that promises the order and breaks it
    /// fails the snapshot. The default: no.
    fn in_canonical_order(&self) -> bool {
        false
    }

    /// Like [`Snapshots::for_each_stored`], as the state was when the view was taken.
    ///
    /// # Errors
    ///
    /// Unknown state, a backend failure, or the visitor's error.
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()>;
}

/// A backend's own files for a native checkpoint (see [`Snapshots::native_checkpoint`]):
/// a directory the backend wrote them into, and which of them never change once written, so
/// checkpoints can share them. The directory is removed when this value drops.
#[derive(Debug)]
pub struct NativeFiles {
    backend: &'static str,
    dir: std::path::PathBuf,
    files: Vec<NativeFileSpec>,
    schemas: Option<crate::model::schema::OperatorSchemas>,
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
    pub fn with_schemas(mut self, schemas: crate::model::schema::OperatorSchemas) -> Self {
        self.schemas = Some(schemas);
        self
    }

    /// The schemas recorded with [`with_schemas`](Self::with_schemas).
    #[must_use]
    pub fn schemas(&self) -> Option<&crate::model::schema::OperatorSchemas> {
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
    pub migration: &'static crate::model::descriptor::Migration,
}

/// One instance's native snapshot, as a native restore sees it (see [`NativeRestore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativePart {
    /// The backend that wrote it, e.g. `rocksdb`.
    pub backend: String,
    /// The operator's maximum parallelism when it was written.
    pub max_parallelism: u16,
    /// The key groups of the instance that wrote it.
    pub key_groups: crate::model::keygroup::KeyGroupRange,
    /// Its files: each one's name in the backend's directory and, for an immutable file, the
    /// name under which checkpoints share it.
    pub files: Vec<(String, Option<String>)>,
}

/// Where the files of a native restore come from: implemented by the checkpoint storage, so
/// that a backend restores the same way from a local directory or an object store.
pub trait NativeSource {
    /// Puts the files of `parts[index]` of the restore into `dir`, which must not exist and is
    /// created; every file is checked against its recorded length and checksum.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or does not match ([`Error::Corrupt`](crate::model::error::Error::Corrupt)),
    /// an existing `dir`, an I/O failure. A failed call leaves no `dir` behind.
    fn materialize(&self, index: usize, dir: &std::path::Path) -> Result<()>;
}

/// What a backend needs to open a native checkpoint as its state (see
/// [`Snapshots::restore_native`]): the snapshots, checked by the one restore path
/// ([`Bound::restore_from`](crate::Bound::restore_from)) for their backend, maximum
/// parallelism and schemas before the backend is asked.
pub struct NativeRestore<'a> {
    /// Where the files come from.
    pub source: &'a dyn NativeSource,
    /// The operator.
    pub operator: &'a OperatorDescriptor,
    /// The native snapshots of the operator overlapping `range`, by first key group; together
    /// they cover the range. [`NativeSource::materialize`] takes an index into this list.
    pub parts: Vec<NativePart>,
    /// The key groups the restored instance owns: entries of other key groups must not remain.
    pub range: crate::model::keygroup::KeyGroupRange,
    /// States to rewrite after the files are in place.
    pub migrations: Vec<NativeMigration>,
    /// Called while migrations rewrite entries.
    pub progress: &'a mut dyn FnMut(&MigrationProgress<'_>),
}

impl std::fmt::Debug for NativeRestore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeRestore")
            .field("operator", &self.operator.name)
            .field("parts", &self.parts)
            .field("range", &self.range)
            .field("migrations", &self.migrations.len())
            .finish_non_exhaustive()
    }
}

/// What happened to an entry since change tracking started (see
/// [`Snapshots::track_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// The entry holds these bytes now (as [`Snapshots::for_each_stored`] would visit them).
    Put(&'a [u8]),
    /// The entry was deleted.
    Delete,
    /// Every entry of the key was deleted (the user key is empty); entries of the key written
    /// afterwards are visited as [`Change::Put`]s after this.
    DeleteKey,
}

/// A visitor over tracked changes: `(key, user key, change)`.
pub type ChangeVisitor<'v> = dyn FnMut(&[u8], &[u8], Change<'_>) -> Result<()> + 'v;

/// What a checkpoint needs of a backend beyond reads and writes: values as snapshots keep
/// them, a detached view for asynchronous capture, native files, and change tracking for
/// incremental checkpoints. A capability a backend opts into: only a backend with it can be
/// checkpointed. Every method is required, so that a backend without a feature says so
/// (`Ok(None)`, `false`) and a wrapper that forgets to pass one on does not compile.
pub trait Snapshots: StateBackend {
    /// Like [`for_each_entry`](StateBackend::for_each_entry), with values as snapshots keep them:
    /// for a state this backend [stamps](StateBackend::stamps_ttl), with their stamps (and without
    /// expired data).
    ///
    /// # Errors
    ///
    /// As [`for_each_entry`](StateBackend::for_each_entry).
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()>;

    /// Stores a value as [`for_each_stored`](Self::for_each_stored) visited it (a restore).
    ///
    /// # Errors
    ///
    /// As [`put`](StateBackend::put), or damaged stamps.
    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()>;

    /// Takes a consistent view of every state that another thread can read while this backend
    /// goes on changing, in much less time than copying the entries (RocksDB: a checkpoint of
    /// hard-linked files). `None` when the backend has none; a snapshot then
    /// copies the entries out in its synchronous step.
    ///
    /// # Errors
    ///
    /// A backend or I/O failure.
    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>>;

    /// Writes the backend's own files for a native checkpoint, quickly enough for the
    /// synchronous step (RocksDB: a memtable flush and hard links), into a new directory on
    /// the backend's file system. `None` when the backend has no native format.
    /// A checkpoint moves the files into its storage on another thread, keeping one copy of
    /// each immutable file for all the checkpoints that share it (incremental by nature).
    ///
    /// # Errors
    ///
    /// A backend or I/O failure.
    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>>;

    /// Replaces everything this backend holds with the state in native snapshots written by a
    /// backend of its kind (see [`native_checkpoint`](Self::native_checkpoint)): the key
    /// groups of `restore.range`, with `restore.migrations` applied. Returns `false`, changing
    /// nothing, when the backend cannot open native snapshots or they are of
    /// another backend. Registered states stay registered under the same ids.
    ///
    /// # Errors
    ///
    /// A damaged or missing file, a backend or I/O failure; the backend is then empty.
    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool>;

    /// Starts (`true`) or stops (`false`) tracking which entries change, for incremental
    /// snapshots; starting forgets what was tracked before. Returns `false` when the backend
    /// cannot track changes, which makes every snapshot a full one.
    fn track_changes(&mut self, on: bool) -> bool;

    /// Visits, and forgets, the changes of the state since tracking started or since the last
    /// call: for every changed entry its stored bytes now or its deletion, each entry once.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::model::error::Error::Unsupported) when the backend does not track
    /// changes; unknown state; the visitor's error (the changes not yet visited are
    /// then lost, so the next snapshot must be a full one).
    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()>;
}

impl<B: Snapshots + ?Sized> Snapshots for Box<B> {
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
    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>> {
        (**self).detach()
    }
    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>> {
        (**self).native_checkpoint()
    }
    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        (**self).restore_native(restore)
    }
    fn track_changes(&mut self, on: bool) -> bool {
        (**self).track_changes(on)
    }
    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()> {
        (**self).drain_changes(state, visit)
    }
}
