//! Local checkpoint storage: numbered checkpoints in a directory, committed by a manifest.
//!
//! ```text
//! <dir>/MANIFEST                                  the commit point: the retained checkpoints
//! <dir>/chk-0000000007/<operator>.kg<first>-<last>.snap   one snapshot per operator instance
//! <dir>/chk-0000000007/<operator>.kg<first>-<last>.native/ or a backend's native checkpoint
//! <dir>/shared/<name>                             immutable native files, shared by checkpoints
//! ```
//!
//! A checkpoint holds one snapshot per operator instance (its key-group range). A snapshot is
//! full, or incremental: the changes since the instance's previous snapshot, which it names,
//! with the whole chain back to a full one, in the manifest. Or it is native: a backend's own
//! files (RocksDB: its SST files and manifest), whose immutable files are stored once under
//! `shared/` and listed by every checkpoint that uses them. Retention keeps the newest
//! `max_retained` checkpoints, every file their chains need and every shared file they list,
//! and deletes the rest.
//!
//! A checkpoint's files are written and fsynced first; then the new manifest is written to
//! `MANIFEST.tmp`, fsynced, renamed over `MANIFEST` and the directory fsynced. A crash at any
//! point leaves either the old or the new manifest, each naming only complete files. The
//! manifest records each file's length and crc32c, so a damaged file is found before it is
//! parsed. One process writes to a directory at a time.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::access::operator::{Bound, StatefulOperator};
use crate::data::backend::{NativeFiles, Snapshots};
use crate::model::error::{Corruption, Error, Result};
use crate::model::keygroup::KeyGroupRange;
use crate::persist::snapshot::{SnapshotImage, SnapshotOptions};

const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const LOCK: &str = "LOCK";
const MANIFEST_FORMAT: &str = "statewright-checkpoints";
const MANIFEST_VERSION: u32 = 3;
/// Version 2 has no native snapshots; it reads as version 3.
const MANIFEST_OLDEST_READABLE: u32 = 2;
const SHARED: &str = "shared";
const CRC_PREFIX: &str = "crc32c ";

/// The number of a committed checkpoint (1, 2, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CheckpointId(pub u64);

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Which checkpoint to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestorePoint {
    /// The newest committed checkpoint.
    Latest,
    /// A retained checkpoint by number.
    Id(CheckpointId),
    /// The newest retained checkpoint committed at or before this time (point-in-time
    /// recovery: "the state as of 03:00").
    AtOrBefore(SystemTime),
}

fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl From<CheckpointId> for RestorePoint {
    fn from(id: CheckpointId) -> Self {
        RestorePoint::Id(id)
    }
}

/// Whether a snapshot holds the whole state of its key groups or the changes since the
/// snapshot before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// The whole state.
    #[default]
    Full,
    /// The changes since the previous snapshot of the same operator instance.
    Incremental,
    /// A backend's own files (see [`NativeSnapshot`]); restored by that backend.
    Native,
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Incremental => "incremental",
            SnapshotKind::Native => "native",
        })
    }
}

/// A snapshot file in the storage directory, with what the manifest knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// Path relative to the storage directory.
    pub path: String,
    /// Length in bytes.
    pub bytes: u64,
    /// crc32c of the whole file.
    pub crc32c: u32,
    /// Full or incremental.
    pub kind: SnapshotKind,
}

/// A backend's native checkpoint of one operator instance: its files, as the backend wrote
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeSnapshot {
    /// The backend that wrote the files (and restores them), e.g. `rocksdb`.
    pub backend: String,
    /// The operator's maximum parallelism when the files were written.
    pub max_parallelism: u16,
    /// The files.
    pub files: Vec<NativeFile>,
    /// The schemas of the operator's states when written (checked, and migrated, by a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<crate::model::schema::OperatorSchemas>,
}

/// One file of a [`NativeSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeFile {
    /// Its name in the backend's directory.
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// crc32c of the whole file.
    pub crc32c: u32,
    /// For an immutable file, its name under `shared/`; otherwise it is in the snapshot's own
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

/// One operator instance's snapshot in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// The operator.
    pub operator: String,
    /// First key group of the instance.
    pub first_key_group: u16,
    /// Last key group of the instance (inclusive).
    pub last_key_group: u16,
    /// Path relative to the storage directory.
    pub path: String,
    /// Length in bytes (for a native snapshot: the bytes it newly wrote, its own files and
    /// the shared files no earlier checkpoint had).
    pub bytes: u64,
    /// crc32c of the whole file (for a native snapshot: of its files' checksums).
    pub crc32c: u32,
    /// Entries in the snapshot (changes, for an incremental one; 0 for a native one, whose
    /// backend does not count them).
    pub entries: u64,
    /// Full or incremental.
    pub kind: SnapshotKind,
    /// For an incremental snapshot, the snapshots it applies on top of, oldest (a full one)
    /// first; empty for a full one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base: Vec<SnapshotRef>,
    /// For a native snapshot, its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeSnapshot>,
    /// The instance's watermark (event time, in milliseconds) when the snapshot was taken;
    /// absent when none was set. A restore starts from the smallest of its instances'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
}

impl CheckpointFile {
    /// The key groups of the instance.
    ///
    /// A manifest whose entry has its first key group after its last is refused when read, so
    /// every file [`CheckpointStorage`] lists has a range; only a value built by hand can lack
    /// one, and gets key group 0.
    #[must_use]
    pub fn key_groups(&self) -> KeyGroupRange {
        KeyGroupRange::new(self.first_key_group, self.last_key_group)
            .unwrap_or_else(|| KeyGroupRange::all(1))
    }

    /// This file as a reference.
    #[must_use]
    pub fn to_ref(&self) -> SnapshotRef {
        SnapshotRef {
            path: self.path.clone(),
            bytes: self.bytes,
            crc32c: self.crc32c,
            kind: self.kind,
        }
    }

    /// The snapshots a restore reads, in order: the base chain, then this one.
    #[must_use]
    pub fn chain(&self) -> Vec<SnapshotRef> {
        let mut chain = self.base.clone();
        chain.push(self.to_ref());
        chain
    }
}

/// A committed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Its number.
    pub id: CheckpointId,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// One snapshot file per operator instance.
    pub files: Vec<CheckpointFile>,
}

impl CheckpointInfo {
    /// Bytes this checkpoint wrote (its own files, not the bases it shares).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// Bytes a restore of the whole checkpoint reads (its files and their bases).
    #[must_use]
    pub fn restore_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| match &f.native {
                Some(native) => native.files.iter().map(|n| n.bytes).sum(),
                None => f.bytes + f.base.iter().map(|b| b.bytes).sum::<u64>(),
            })
            .sum()
    }

    /// [`Incremental`](SnapshotKind::Incremental) when any of its snapshots is, otherwise
    /// [`Native`](SnapshotKind::Native) when any is, otherwise [`Full`](SnapshotKind::Full).
    #[must_use]
    pub fn kind(&self) -> SnapshotKind {
        let any = |kind| self.files.iter().any(|f| f.kind == kind);
        if any(SnapshotKind::Incremental) {
            SnapshotKind::Incremental
        } else if any(SnapshotKind::Native) {
            SnapshotKind::Native
        } else {
            SnapshotKind::Full
        }
    }

    /// The snapshots of `operator` whose key groups overlap `range`, by first key group.
    #[must_use]
    pub fn files_of(&self, operator: &str, range: KeyGroupRange) -> Vec<&CheckpointFile> {
        let mut files: Vec<&CheckpointFile> = self
            .files
            .iter()
            .filter(|f| f.operator == operator && f.key_groups().overlaps(range))
            .collect();
        files.sort_by_key(|f| f.first_key_group);
        files
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    next_id: u64,
    checkpoints: Vec<CheckpointInfo>,
}

/// A directory of checkpoints.
///
/// # Examples
///
/// ```
/// use statewright::prelude::*;
///
/// #[derive(StatefulOperator, Default)]
/// #[operator(name = "totals", key = u32)]
/// struct Totals { sum: ValueState<i64> }
///
/// let dir = tempfile::tempdir()?;
/// let storage = CheckpointStorage::open(dir.path())?.max_retained(2);
///
/// let mut op = Totals::default().bind(HeapBackend::new())?;
/// op.key(&7)?.sum().set(&100)?;
/// let first = op.checkpoint(&storage)?;
///
/// let mut restored = Totals::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)?;
/// assert_eq!(restored.key(&7)?.sum().get_owned()?, Some(100));
/// assert_eq!(storage.list()?[0].id, first.id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    dir: PathBuf,
    max_retained: usize,
    options: SnapshotOptions,
}

impl CheckpointStorage {
    /// Opens (creating if needed) a checkpoint directory. Retains 3 checkpoints by default.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self {
            dir,
            max_retained: 3,
            options: SnapshotOptions::default(),
        })
    }

    /// Opens a checkpoint directory that exists, creating and changing nothing: for tools that
    /// only read (list, inspect, verify). Retains 3 checkpoints by default.
    ///
    /// # Errors
    ///
    /// [`Error::NotACheckpointDirectory`] when `dir` does not exist or is not a directory, or
    /// an I/O failure finding out.
    pub fn open_existing(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let reason = match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some("it is a file, not a directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("it does not exist"),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                Some("a part of the path is a file, not a directory")
            }
            Err(e) => return Err(Error::io(&dir, e)),
        };
        match reason {
            Some(reason) => Err(Error::NotACheckpointDirectory { path: dir, reason }),
            None => Ok(Self {
                dir,
                max_retained: 3,
                options: SnapshotOptions::default(),
            }),
        }
    }

    /// How many committed checkpoints to keep (at least 1); older ones are deleted on commit.
    #[must_use]
    pub fn max_retained(mut self, n: usize) -> Self {
        self.max_retained = n.max(1);
        self
    }

    /// How snapshots are written (compression, block size).
    #[must_use]
    pub fn snapshot_options(mut self, options: SnapshotOptions) -> Self {
        self.options = options;
        self
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The retained checkpoints, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Foreign`] or [`Error::Corrupt`] for a damaged manifest, or an I/O failure.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        Ok(self.read_manifest()?.checkpoints)
    }

    /// The checkpoint a restore point names.
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointNotFound`], or the errors of [`list`](Self::list).
    pub fn resolve(&self, point: RestorePoint) -> Result<CheckpointInfo> {
        let list = self.list()?;
        let found = match point {
            RestorePoint::Latest => list.into_iter().next_back(),
            RestorePoint::Id(id) => list.into_iter().find(|c| c.id == id),
            RestorePoint::AtOrBefore(t) => {
                let ms = epoch_millis(t);
                list.into_iter()
                    .filter(|c| c.created_ms <= ms)
                    .max_by_key(|c| (c.created_ms, c.id))
            }
        };
        found.ok_or_else(|| Error::CheckpointNotFound {
            dir: self.dir.clone(),
            wanted: match point {
                RestorePoint::Latest => "(none committed)".into(),
                RestorePoint::Id(id) => id.to_string(),
                RestorePoint::AtOrBefore(t) => format!(
                    "(committed at or before {} ms since the Unix epoch)",
                    epoch_millis(t)
                ),
            },
        })
    }

    /// Reads a snapshot file, checking its length and crc32c against the manifest's.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the file's length or checksum differ from the manifest's, or
    /// its path leaves the directory; an I/O failure.
    pub fn read_file(&self, file: &SnapshotRef) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.safe_join(&file.path)?;
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        if bytes.len() as u64 != file.bytes {
            return Err(Error::corrupt(
                &path,
                bytes.len() as u64,
                Corruption::Truncated {
                    needed: file.bytes,
                    available: bytes.len() as u64,
                },
            ));
        }
        let computed = crc32c::crc32c(&bytes);
        if computed != file.crc32c {
            return Err(Error::corrupt(
                &path,
                0,
                Corruption::ChecksumMismatch {
                    section: "file",
                    stored: file.crc32c,
                    computed,
                },
            ));
        }
        Ok((path, bytes))
    }

    /// Opens the file of a snapshot after checking, in one pass over it with a small buffer,
    /// that its length and checksum are the manifest's: a restore then reads its blocks as it
    /// needs them, and never starts on a damaged file.
    ///
    /// # Errors
    ///
    /// As [`read_file`](Self::read_file).
    pub fn open_file(&self, file: &SnapshotRef) -> Result<(PathBuf, File)> {
        use std::io::{Read, Seek};
        let path = self.safe_join(&file.path)?;
        let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut crc = 0u32;
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io(&path, e))?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            len += n as u64;
        }
        if len != file.bytes {
            return Err(Error::corrupt(
                &path,
                len,
                Corruption::Truncated {
                    needed: file.bytes,
                    available: len,
                },
            ));
        }
        if crc != file.crc32c {
            return Err(Error::corrupt(
                &path,
                0,
                Corruption::ChecksumMismatch {
                    section: "file",
                    stored: file.crc32c,
                    computed: crc,
                },
            ));
        }
        f.rewind().map_err(|e| Error::io(&path, e))?;
        Ok((path, f))
    }

    /// Opens the files a restore of `operator`'s key groups `range` from `checkpoint` needs,
    /// as [`read_for_restore`](Self::read_for_restore) reads them, each checked by
    /// [`open_file`](Self::open_file).
    ///
    /// # Errors
    ///
    /// As [`read_for_restore`](Self::read_for_restore).
    pub fn open_for_restore(
        &self,
        checkpoint: &CheckpointInfo,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Vec<(PathBuf, File)>> {
        let files = self.canonical_files_for_restore(checkpoint, operator, range)?;
        let mut out = Vec::new();
        for f in files {
            for link in f.chain() {
                out.push(self.open_file(&link)?);
            }
        }
        Ok(out)
    }

    /// The snapshots of `operator` in `checkpoint` a restore of key groups `range` reads, by
    /// first key group, after checking that they cover the range without a gap.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] naming the first key group no snapshot covers.
    pub fn files_for_restore<'c>(
        &self,
        checkpoint: &'c CheckpointInfo,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Vec<&'c CheckpointFile>> {
        let files = checkpoint.files_of(operator, range);
        let incompatible = |reason: String| Error::Incompatible {
            operator: operator.to_owned(),
            path: self.dir.join(checkpoint_dir_name(checkpoint.id)),
            reason,
        };
        if files.is_empty() {
            return Err(incompatible(format!(
                "checkpoint {} has no snapshot of this operator for key groups {}..={}",
                checkpoint.id,
                range.first(),
                range.last()
            )));
        }
        // The instances' ranges must cover the range without a gap.
        let mut next = u32::from(range.first());
        for f in &files {
            if u32::from(f.first_key_group) > next {
                break;
            }
            next = next.max(u32::from(f.last_key_group) + 1);
        }
        if next <= u32::from(range.last()) {
            return Err(incompatible(format!(
                "checkpoint {} has no snapshot of key group {next} of this operator",
                checkpoint.id
            )));
        }
        Ok(files)
    }

    /// Reads the files a restore of `operator`'s key groups `range` from `checkpoint` needs:
    /// for every instance snapshot overlapping the range, its chain (full snapshot first).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] when the checkpoint's snapshots of the operator do not cover
    /// `range` or are native ones; the errors of [`read_file`](Self::read_file).
    pub fn read_for_restore(
        &self,
        checkpoint: &CheckpointInfo,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        let files = self.canonical_files_for_restore(checkpoint, operator, range)?;
        let mut out = Vec::new();
        for f in files {
            for link in f.chain() {
                out.push(self.read_file(&link)?);
            }
        }
        Ok(out)
    }

    /// [`files_for_restore`](Self::files_for_restore), refusing native snapshots.
    fn canonical_files_for_restore<'c>(
        &self,
        checkpoint: &'c CheckpointInfo,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Vec<&'c CheckpointFile>> {
        let files = self.files_for_restore(checkpoint, operator, range)?;
        if let Some(native) = files.iter().find_map(|f| f.native.as_ref()) {
            return Err(Error::Incompatible {
                operator: operator.to_owned(),
                path: self.dir.join(checkpoint_dir_name(checkpoint.id)),
                reason: format!(
                    "checkpoint {} holds a native {} checkpoint of this operator, which only \
                     that backend opens (`Bound::restore_from` on it); a canonical checkpoint \
                     restores into any backend",
                    checkpoint.id, native.backend
                ),
            });
        }
        Ok(files)
    }

    /// Where a file of a native snapshot is.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the manifest names a path that leaves the directory.
    pub fn native_file_path(
        &self,
        snapshot: &CheckpointFile,
        file: &NativeFile,
    ) -> Result<PathBuf> {
        let escapes = |name: &str| {
            Error::corrupt(
                self.dir.join(MANIFEST),
                0,
                Corruption::Malformed {
                    section: "manifest",
                    detail: format!("native file `{name}` leaves the checkpoint directory"),
                },
            )
        };
        match &file.shared {
            Some(shared) => {
                validate_name("shared file", shared).map_err(|_| escapes(shared))?;
                Ok(self.dir.join(SHARED).join(shared))
            }
            None => {
                validate_name("native file", &file.name).map_err(|_| escapes(&file.name))?;
                Ok(self.safe_join(&snapshot.path)?.join(&file.name))
            }
        }
    }

    /// Puts the files of a native snapshot into `target` (a directory that must not exist yet),
    /// the shared ones as hard links where the file system allows, checking every length
    /// against the manifest's. The backend that wrote them opens the result.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for a snapshot that is not native or a `target` that exists;
    /// [`Error::Corrupt`] for a file of the wrong length; an I/O failure. A failed attempt
    /// removes `target`.
    pub fn materialize_native(&self, snapshot: &CheckpointFile, target: &Path) -> Result<()> {
        let Some(native) = &snapshot.native else {
            return Err(Error::Incompatible {
                operator: snapshot.operator.clone(),
                path: self.dir.join(&snapshot.path),
                reason: format!("a {} snapshot is not a native one", snapshot.kind),
            });
        };
        if target.exists() {
            return Err(Error::Incompatible {
                operator: snapshot.operator.clone(),
                path: target.to_owned(),
                reason: "the restore target already exists".into(),
            });
        }
        fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
        let result = native.files.iter().try_for_each(|f| {
            let from = self.native_file_path(snapshot, f)?;
            let actual = fs::metadata(&from).map_err(|e| Error::io(&from, e))?.len();
            if actual != f.bytes {
                return Err(Error::corrupt(
                    &from,
                    actual,
                    Corruption::Truncated {
                        needed: f.bytes,
                        available: actual,
                    },
                ));
            }
            validate_name("native file", &f.name)?;
            let to = target.join(&f.name);
            // Shared files never change, so a hard link shares them (a copy across file
            // systems); the others are copied, as the backend may append to them.
            if f.shared.is_none() || fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
            }
            Ok(())
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(target);
        }
        result
    }

    /// Reads every file of a native snapshot and checks its length and crc32c against the
    /// manifest's; `progress` gets the bytes read as they are read.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a damaged file; an I/O failure.
    pub fn verify_native(
        &self,
        snapshot: &CheckpointFile,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let Some(native) = &snapshot.native else {
            return Ok(());
        };
        for f in &native.files {
            let path = self.native_file_path(snapshot, f)?;
            let (bytes, crc) = crc_of_file(&path, progress)?;
            if bytes != f.bytes {
                return Err(Error::corrupt(
                    &path,
                    bytes,
                    Corruption::Truncated {
                        needed: f.bytes,
                        available: bytes,
                    },
                ));
            }
            if crc != f.crc32c {
                return Err(Error::corrupt(
                    &path,
                    0,
                    Corruption::ChecksumMismatch {
                        section: "file",
                        stored: f.crc32c,
                        computed: crc,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Starts a new checkpoint; add snapshots to it, then [`commit`](PendingCheckpoint::commit).
    /// Dropping it uncommitted removes its files. One checkpoint of a directory is written at
    /// a time (a lock file, `LOCK`, held until commit).
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointNotStarted`] while another checkpoint of the directory is being
    /// written; a damaged manifest (the directory is left as it is) or an I/O failure.
    pub fn begin(&self) -> Result<PendingCheckpoint<'_>> {
        // One writer at a time, across threads and processes (an advisory lock the kernel
        // releases when the process dies): a second writer would commit a manifest without
        // the first one's checkpoint, or collect its directory.
        let lock_path = self.dir.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::CheckpointNotStarted {
                    reason: "another checkpoint of this directory is being written",
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let manifest = self.read_manifest()?;
        // Never reuse the number of a directory a crashed attempt may have left behind.
        let mut id = manifest.next_id.max(1);
        for (existing, _) in self.checkpoint_dirs()? {
            id = id.max(existing.0 + 1);
        }
        let id = CheckpointId(id);
        let dir = self.dir.join(checkpoint_dir_name(id));
        fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(PendingCheckpoint {
            storage: self,
            manifest,
            id,
            dir,
            files: Vec::new(),
            committed: false,
            _lock: lock,
        })
    }

    /// Deletes the checkpoint directories no retained checkpoint needs: neither one of them
    /// nor holding a file of their incremental chains. Failures lose nothing committed.
    fn collect_garbage(&self, manifest: &Manifest) {
        let mut needed = std::collections::HashSet::new();
        for c in &manifest.checkpoints {
            needed.insert(checkpoint_dir_name(c.id));
            for f in &c.files {
                for b in &f.base {
                    if let Some((dir, _)) = b.path.split_once('/') {
                        needed.insert(dir.to_owned());
                    }
                }
            }
        }
        if let Ok(dirs) = self.checkpoint_dirs() {
            for (id, path) in dirs {
                if !needed.contains(&checkpoint_dir_name(id)) {
                    let _ = fs::remove_dir_all(path);
                }
            }
        }
        let shared: std::collections::HashSet<&str> = manifest
            .checkpoints
            .iter()
            .flat_map(|c| &c.files)
            .filter_map(|f| f.native.as_ref())
            .flat_map(|n| &n.files)
            .filter_map(|f| f.shared.as_deref())
            .collect();
        if let Ok(entries) = fs::read_dir(self.dir.join(SHARED)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !name.to_str().is_some_and(|n| shared.contains(n)) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    fn safe_join(&self, relative: &str) -> Result<PathBuf> {
        let p = Path::new(relative);
        let ok = p.components().count() == 2
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok {
            return Err(Error::corrupt(
                self.dir.join(MANIFEST),
                0,
                Corruption::Malformed {
                    section: "manifest",
                    detail: format!("file path `{relative}` leaves the checkpoint directory"),
                },
            ));
        }
        Ok(self.dir.join(p))
    }

    fn checkpoint_dirs(&self) -> Result<Vec<(CheckpointId, PathBuf)>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((CheckpointId(id), entry.path()));
        }
        Ok(out)
    }

    fn read_manifest(&self) -> Result<Manifest> {
        let path = self.dir.join(MANIFEST);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    format: MANIFEST_FORMAT.into(),
                    version: MANIFEST_VERSION,
                    next_id: 1,
                    checkpoints: Vec::new(),
                });
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        parse_manifest(&path, &text)
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let tmp = self.dir.join(MANIFEST_TMP);
        let body = serde_json::to_string_pretty(manifest).map_err(|e| Error::Backend {
            backend: "checkpoint",
            message: format!("cannot encode the manifest: {e}"),
        })?;
        let crc = crc32c::crc32c(body.as_bytes());
        let text = format!("{body}\n{CRC_PREFIX}{crc:08x}\n");
        write_synced(&tmp, text.as_bytes())?;
        let path = self.dir.join(MANIFEST);
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)
    }
}

/// Decodes the bytes of a `MANIFEST` file into its retained checkpoints, checking its format,
/// version and checksum (for tools and fuzzing; [`CheckpointStorage::list`] reads the file).
///
/// # Errors
///
/// [`Error::Foreign`], [`Error::UnsupportedVersion`] or [`Error::Corrupt`].
pub fn decode_manifest(path: &Path, bytes: &[u8]) -> Result<Vec<CheckpointInfo>> {
    Ok(parse_manifest(path, bytes)?.checkpoints)
}

fn parse_manifest(path: &Path, text: &[u8]) -> Result<Manifest> {
    let prefix = br#"{
  "format": "statewright-checkpoints""#;
    if !text.starts_with(prefix) {
        return Err(Error::Foreign {
            path: path.to_owned(),
            expected: "checkpoint manifest",
        });
    }
    let malformed = |offset: usize, detail: String| {
        Error::corrupt(
            path,
            offset as u64,
            Corruption::Malformed {
                section: "manifest",
                detail,
            },
        )
    };
    let text =
        std::str::from_utf8(text).map_err(|e| malformed(e.valid_up_to(), "not UTF-8".into()))?;
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let Some((body, crc_line)) = trimmed.rsplit_once('\n') else {
        return Err(Error::corrupt(
            path,
            text.len() as u64,
            Corruption::Truncated {
                needed: 1,
                available: 0,
            },
        ));
    };
    let Some(stored) = crc_line
        .strip_prefix(CRC_PREFIX)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
    else {
        return Err(Error::corrupt(
            path,
            body.len() as u64,
            Corruption::Truncated {
                needed: 1,
                available: 0,
            },
        ));
    };
    let computed = crc32c::crc32c(body.as_bytes());
    if stored != computed {
        return Err(Error::corrupt(
            path,
            0,
            Corruption::ChecksumMismatch {
                section: "manifest",
                stored,
                computed,
            },
        ));
    }
    let manifest: Manifest =
        serde_json::from_str(body).map_err(|e| malformed(0, format!("json: {e}")))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(Error::Foreign {
            path: path.to_owned(),
            expected: "checkpoint manifest",
        });
    }
    if !(MANIFEST_OLDEST_READABLE..=MANIFEST_VERSION).contains(&manifest.version) {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            what: "manifest",
            found: manifest.version,
            supported: MANIFEST_VERSION,
        });
    }
    for checkpoint in &manifest.checkpoints {
        for file in &checkpoint.files {
            if file.first_key_group > file.last_key_group {
                return Err(malformed(
                    0,
                    format!(
                        "checkpoint {}: `{}` has key groups {}..={}, the first after the last",
                        checkpoint.id, file.path, file.first_key_group, file.last_key_group
                    ),
                ));
            }
        }
    }
    Ok(manifest)
}

fn checkpoint_dir_name(id: CheckpointId) -> String {
    format!("chk-{:010}", id.0)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The length and crc32c of a file, reading it in 1 MiB steps.
fn crc_of_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<(u64, u32)> {
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut crc) = (0u64, 0u32);
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok((bytes, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        bytes += n as u64;
        progress(n as u64);
    }
}

/// Moves a file into the checkpoint storage (a rename, or a copy across file systems) and
/// makes it durable there.
fn move_durably(from: &Path, to: &Path) -> Result<()> {
    if fs::rename(from, to).is_err() {
        fs::copy(from, to).map_err(|e| Error::io(to, e))?;
        let _ = fs::remove_file(from);
    }
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(to, e))
}

/// Checks that a name can become a file name: 1 to 200 characters of `A-Z a-z 0-9 . _ -`,
/// not starting with a dot.
///
/// # Errors
///
/// [`Error::InvalidName`] otherwise.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 200 {
        Some("must be 1 to 200 characters")
    } else if name.starts_with('.') {
        Some("must not start with `.`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may hold only ASCII letters, digits, `.`, `_` and `-`")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
    }
}

/// A checkpoint being written: add one snapshot per operator, then commit.
#[derive(Debug)]
pub struct PendingCheckpoint<'s> {
    storage: &'s CheckpointStorage,
    manifest: Manifest,
    id: CheckpointId,
    dir: PathBuf,
    files: Vec<CheckpointFile>,
    committed: bool,
    /// Held until the checkpoint is committed or abandoned.
    _lock: File,
}

impl PendingCheckpoint<'_> {
    /// The number this checkpoint will have.
    #[must_use]
    pub fn id(&self) -> CheckpointId {
        self.id
    }

    /// Adds a full snapshot of a bound operator instance.
    ///
    /// # Errors
    ///
    /// A clash (an instance of the same operator with overlapping key groups is already in
    /// this checkpoint), a backend or an I/O failure.
    pub fn add<Op: StatefulOperator, B: Snapshots>(
        &mut self,
        bound: &Bound<Op, B>,
    ) -> Result<&CheckpointFile> {
        let image = bound.capture()?;
        self.add_image(image, &[])
    }

    /// Writes a captured snapshot (see [`Bound::capture`] and
    /// [`snapshot::capture`](crate::persist::snapshot::capture)) into this checkpoint. An incremental
    /// image names the snapshots it applies on top of in `base`, oldest (a full one) first.
    ///
    /// # Errors
    ///
    /// An invalid operator name, a clash with an instance already added, an incremental image
    /// without a base (or a full one with one), or an I/O failure.
    pub fn add_image(
        &mut self,
        image: SnapshotImage,
        base: &[SnapshotRef],
    ) -> Result<&CheckpointFile> {
        let operator = image.operator();
        let range = image.key_groups();
        self.check_new_instance(operator, range)?;
        let kind = if image.is_incremental() {
            SnapshotKind::Incremental
        } else {
            SnapshotKind::Full
        };
        let base_ok = match kind {
            SnapshotKind::Full => base.is_empty(),
            SnapshotKind::Incremental => base.first().is_some_and(|b| b.kind == SnapshotKind::Full),
            SnapshotKind::Native => false,
        };
        if !base_ok {
            return Err(Error::Incompatible {
                operator: operator.to_owned(),
                path: self.dir.clone(),
                reason: format!(
                    "a {kind} snapshot needs {}",
                    if kind == SnapshotKind::Full {
                        "no base"
                    } else {
                        "a base chain that starts with a full snapshot"
                    }
                ),
            });
        }
        // Every base must be a file a retained checkpoint still has; retention may have
        // deleted any other.
        for b in base {
            self.storage.safe_join(&b.path)?;
            let retained = self.manifest.checkpoints.iter().any(|c| {
                c.files
                    .iter()
                    .any(|f| f.path == b.path || f.base.iter().any(|x| x.path == b.path))
            });
            if !retained {
                return Err(Error::Incompatible {
                    operator: operator.to_owned(),
                    path: self.storage.dir.join(&b.path),
                    reason: "the base of an incremental snapshot is no longer retained".into(),
                });
            }
        }
        let file_name = format!("{operator}.kg{}-{}.snap", range.first(), range.last());
        let path = self.dir.join(&file_name);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: 0,
        };
        let watermark = image.watermark();
        let summary = image.write(self.storage.options, &path, &mut out)?;
        let crc = out.crc;
        let file = out
            .inner
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        let relative = format!("{}/{file_name}", checkpoint_dir_name(self.id));
        self.files.push(CheckpointFile {
            operator: operator.to_owned(),
            first_key_group: range.first(),
            last_key_group: range.last(),
            path: relative,
            bytes: summary.bytes,
            crc32c: crc,
            entries: summary.entries,
            kind,
            base: base.to_vec(),
            native: None,
            watermark,
        });
        Ok(&self.files[self.files.len() - 1])
    }

    fn check_new_instance(&self, operator: &str, range: KeyGroupRange) -> Result<()> {
        validate_name("operator", operator)?;
        if self
            .files
            .iter()
            .any(|f| f.operator == operator && f.key_groups().overlaps(range))
        {
            return Err(Error::InvalidName {
                what: "operator",
                name: operator.to_owned(),
                reason: "already has an instance with these key groups in this checkpoint",
            });
        }
        Ok(())
    }

    /// Adds the backend's native checkpoint of a bound operator instance (see
    /// [`Snapshots::native_checkpoint`](crate::Snapshots::native_checkpoint)), or a full snapshot when the backend has no native
    /// format. Returns the file as the manifest will record it.
    ///
    /// # Errors
    ///
    /// As [`add_native_files`](Self::add_native_files) and [`add`](Self::add).
    pub fn add_native<Op: StatefulOperator, B: Snapshots>(
        &mut self,
        bound: &mut Bound<Op, B>,
    ) -> Result<&CheckpointFile> {
        // The same capture as the checkpointer's (operator states and schemas included).
        match crate::persist::checkpointer::Checkpointable::capture_native(bound)? {
            Some((files, max_parallelism)) => self.add_native_files(
                Op::DESCRIPTOR.name,
                bound.key_groups(),
                max_parallelism,
                files,
            ),
            None => self.add(bound),
        }
    }

    /// Moves a backend's native files into this checkpoint: each immutable file into `shared/`
    /// unless a retained checkpoint already has it (then nothing is written for it), the
    /// others into the snapshot's own directory; every file moved is fsynced.
    ///
    /// # Errors
    ///
    /// An invalid operator or file name, a clash with an instance already added, a shared
    /// name whose retained file has another length (two files claiming one name), or an I/O
    /// failure.
    pub fn add_native_files(
        &mut self,
        operator: &str,
        range: KeyGroupRange,
        max_parallelism: u16,
        files: NativeFiles,
    ) -> Result<&CheckpointFile> {
        self.check_new_instance(operator, range)?;
        validate_name("backend", files.backend())?;
        let mut known: std::collections::HashMap<&str, &NativeFile> =
            std::collections::HashMap::new();
        for f in self
            .manifest
            .checkpoints
            .iter()
            .flat_map(|c| &c.files)
            .chain(&self.files)
            .filter_map(|f| f.native.as_ref())
            .flat_map(|n| &n.files)
        {
            if let Some(shared) = &f.shared {
                known.insert(shared, f);
            }
        }
        let dir_name = format!("{operator}.kg{}-{}.native", range.first(), range.last());
        let own_dir = self.dir.join(&dir_name);
        fs::create_dir(&own_dir).map_err(|e| Error::io(&own_dir, e))?;
        let shared_dir = self.storage.dir.join(SHARED);
        fs::create_dir_all(&shared_dir).map_err(|e| Error::io(&shared_dir, e))?;
        let mut listed = Vec::with_capacity(files.files().len());
        let mut written = 0u64;
        for spec in files.files() {
            validate_name("native file", &spec.name)?;
            let from = files.dir().join(&spec.name);
            let reused = match &spec.shared_as {
                Some(shared) => {
                    validate_name("shared file", shared)?;
                    // Reused only while it is there whole; a missing or cut file is replaced
                    // (same name, same content), which mends the checkpoints listing it too.
                    known.get(shared.as_str()).copied().filter(|old| {
                        fs::metadata(shared_dir.join(shared)).is_ok_and(|m| m.len() == old.bytes)
                    })
                }
                None => None,
            };
            if let Some(old) = reused {
                let bytes = fs::metadata(&from).map_err(|e| Error::io(&from, e))?.len();
                if bytes != old.bytes {
                    return Err(Error::Incompatible {
                        operator: operator.to_owned(),
                        path: from,
                        reason: format!(
                            "has {bytes} bytes, but the retained shared file of the same name \
                             has {}: two files claim one name",
                            old.bytes
                        ),
                    });
                }
                listed.push(NativeFile {
                    name: spec.name.clone(),
                    ..old.clone()
                });
                continue;
            }
            let (bytes, crc32c) = crc_of_file(&from, &mut |_| {})?;
            let to = match &spec.shared_as {
                Some(shared) => shared_dir.join(shared),
                None => own_dir.join(&spec.name),
            };
            move_durably(&from, &to)?;
            written += bytes;
            listed.push(NativeFile {
                name: spec.name.clone(),
                bytes,
                crc32c,
                shared: spec.shared_as.clone(),
            });
        }
        sync_dir(&own_dir)?;
        sync_dir(&shared_dir)?;
        let crc32c = listed.iter().fold(0, |crc, f| {
            crc32c::crc32c_append(crc, &f.crc32c.to_le_bytes())
        });
        self.files.push(CheckpointFile {
            operator: operator.to_owned(),
            first_key_group: range.first(),
            last_key_group: range.last(),
            path: format!("{}/{dir_name}", checkpoint_dir_name(self.id)),
            bytes: written,
            crc32c,
            entries: 0,
            kind: SnapshotKind::Native,
            base: Vec::new(),
            native: Some(NativeSnapshot {
                backend: files.backend().to_owned(),
                max_parallelism,
                files: listed,
                schemas: files.schemas().cloned(),
            }),
            watermark: files.watermark(),
        });
        Ok(&self.files[self.files.len() - 1])
    }

    /// Makes the checkpoint durable and visible: fsyncs its directory, then atomically replaces
    /// the manifest. Checkpoints beyond `max_retained` are deleted afterwards.
    ///
    /// # Errors
    ///
    /// An I/O failure; the previous manifest and its checkpoints are then untouched.
    pub fn commit(mut self) -> Result<CheckpointInfo> {
        sync_dir(&self.dir)?;
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let info = CheckpointInfo {
            id: self.id,
            created_ms,
            files: std::mem::take(&mut self.files),
        };
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            next_id: self.id.0 + 1,
            checkpoints: std::mem::take(&mut self.manifest.checkpoints),
        };
        manifest.checkpoints.push(info.clone());
        let excess = manifest
            .checkpoints
            .len()
            .saturating_sub(self.storage.max_retained);
        manifest.checkpoints.drain(..excess);
        self.storage.write_manifest(&manifest)?;
        self.committed = true;
        self.storage.collect_garbage(&manifest);
        Ok(info)
    }
}

impl Drop for PendingCheckpoint<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_the_directory_are_rejected() {
        for bad in [
            "",
            "..",
            "../x",
            "/abs",
            "a/b",
            "a\\b",
            ".hidden",
            &"x".repeat(201),
            "nul\0",
        ] {
            assert!(validate_name("operator", bad).is_err(), "{bad:?}");
        }
        for good in ["fraud-detector", "a.b_c-1", "X"] {
            assert!(validate_name("operator", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn manifest_paths_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStorage::open(dir.path()).unwrap();
        assert!(s.safe_join("chk-0000000001/op.snap").is_ok());
        for bad in [
            "../x/op.snap",
            "/etc/passwd",
            "chk-1/../../x",
            "a/b/c",
            "op.snap",
        ] {
            assert!(s.safe_join(bad).is_err(), "{bad}");
        }
    }
}
