//! Checkpoint storage: numbered checkpoints in a [`CheckpointStore`] (a local directory, or an
//! object store), committed by numbered manifests.
//!
//! ```text
//! manifests/00000000000000000012                  a commit: the retained checkpoints
//! chk-0000000007/CLAIM                            checkpoint 7's number, claimed by its writer
//! chk-0000000007/<operator>.kg<first>-<last>.snap one snapshot per operator instance
//! chk-0000000007/<operator>.kg<first>-<last>.native/<file>  or a backend's native checkpoint
//! shared/<name>                                   immutable native files, shared by checkpoints
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
//! Every object is written whole before it is visible (a local store writes a temporary file,
//! fsyncs it and renames it). A commit is one put-if-absent of the next manifest number, the
//! only atomic step object storage offers: a crash at any point leaves the old or the new
//! manifest, each naming only complete files, and of two writers that began from the same
//! commit exactly one commits. The manifest records each file's length and crc32c, so a
//! damaged file is found before it is parsed. A directory written before manifests were
//! numbered (one `MANIFEST` file) is read as it is; the first commit into it numbers it.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::access::operator::{Bound, StatefulOperator};
use crate::data::backend::{NativeFiles, Snapshots};
use crate::model::error::{Corruption, Error, Result};
use crate::model::keygroup::KeyGroupRange;
use crate::persist::snapshot::{SnapshotImage, SnapshotOptions, SnapshotReader};
use crate::persist::store::{CheckpointStore, LocalStore};

mod manifest;
mod parts;
mod pending;
mod storage;

pub use manifest::decode_manifest;
use manifest::*;
pub use pending::PendingCheckpoint;
pub use storage::CheckpointStorage;
use storage::*;

/// Where the numbered manifests are.
const MANIFESTS: &str = "manifests";
/// The one manifest of a directory written before manifests were numbered.
const LEGACY_MANIFEST: &str = "MANIFEST";
const LEGACY_MANIFEST_TMP: &str = "MANIFEST.tmp";
const LEGACY_LOCK: &str = "LOCK";
/// The object that claims a checkpoint's number for its writer.
const CLAIM: &str = "CLAIM";
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
        assert!(s.snapshot_name("chk-0000000001/op.snap").is_ok());
        for bad in [
            "../x/op.snap",
            "/etc/passwd",
            "chk-1/../../x",
            "a/b/c",
            "op.snap",
        ] {
            assert!(s.snapshot_name(bad).is_err(), "{bad}");
        }
    }
}
