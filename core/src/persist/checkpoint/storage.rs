//! [`CheckpointStorage`]: a directory of checkpoints, reading, restoring and retention.

#![allow(clippy::wildcard_imports)]

use super::*;

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
    pub(super) dir: PathBuf,
    pub(super) max_retained: usize,
    pub(super) options: SnapshotOptions,
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
    pub(super) fn canonical_files_for_restore<'c>(
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
    pub(super) fn collect_garbage(&self, manifest: &Manifest) {
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

    pub(super) fn safe_join(&self, relative: &str) -> Result<PathBuf> {
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

    pub(super) fn checkpoint_dirs(&self) -> Result<Vec<(CheckpointId, PathBuf)>> {
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

    pub(super) fn read_manifest(&self) -> Result<Manifest> {
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

    pub(super) fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
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

pub(super) fn checkpoint_dir_name(id: CheckpointId) -> String {
    format!("chk-{:010}", id.0)
}

pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The length and crc32c of a file, reading it in 1 MiB steps.
pub(super) fn crc_of_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<(u64, u32)> {
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
pub(super) fn move_durably(from: &Path, to: &Path) -> Result<()> {
    if fs::rename(from, to).is_err() {
        fs::copy(from, to).map_err(|e| Error::io(to, e))?;
        let _ = fs::remove_file(from);
    }
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(to, e))
}
