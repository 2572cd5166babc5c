//! [`CheckpointStorage`]: checkpoints in a store, reading, restoring and retention.

#![allow(clippy::wildcard_imports)]

use super::*;

/// Checkpoints in a [`CheckpointStore`]: a local directory by default, or an object store.
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
    pub(super) store: Arc<dyn CheckpointStore>,
    pub(super) dir: PathBuf,
    pub(super) max_retained: usize,
    pub(super) options: SnapshotOptions,
}

impl CheckpointStorage {
    /// Opens (creating if needed) a checkpoint directory on the local file system. Retains 3
    /// checkpoints by default.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self::from_store(Arc::new(LocalStore::open(&dir)?)))
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
            None => Ok(Self::from_store(Arc::new(LocalStore::open(&dir)?))),
        }
    }

    /// Checkpoints in any [`CheckpointStore`]: a local directory, an object store. Retains 3
    /// checkpoints by default.
    #[must_use]
    pub fn from_store(store: Arc<dyn CheckpointStore>) -> Self {
        Self {
            dir: store.locate(""),
            store,
            max_retained: 3,
            options: SnapshotOptions::default(),
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

    /// Where the checkpoints are: the directory, or the store's location as a path.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store the checkpoints are in.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// The retained checkpoints, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Foreign`] or [`Error::Corrupt`] for a damaged manifest, or an I/O failure.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        Ok(self.read_manifest()?.checkpoints)
    }

    /// Where the manifest of the newest commit is (`manifests/<number>`, or the `MANIFEST`
    /// of a directory written before manifests were numbered); `None` before the first commit.
    ///
    /// # Errors
    ///
    /// A failure to list the store.
    pub fn manifest_location(&self) -> Result<Option<PathBuf>> {
        if let Some((_, name)) = self.latest_manifest()? {
            return Ok(Some(self.store.locate(&name)));
        }
        Ok(self
            .store
            .head(LEGACY_MANIFEST)?
            .map(|_| self.store.locate(LEGACY_MANIFEST)))
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
    /// its path leaves the storage; an I/O failure.
    pub fn read_file(&self, file: &SnapshotRef) -> Result<(PathBuf, Vec<u8>)> {
        let name = self.snapshot_name(&file.path)?;
        let path = self.store.locate(name);
        let len = self.length_of(name, file.bytes)?;
        let bytes = self.store.get_range(name, 0..len)?;
        let computed = crc32c::crc32c(&bytes);
        if computed != file.crc32c {
            return Err(mismatch(&path, file.crc32c, computed));
        }
        Ok((path, bytes))
    }

    /// Opens a snapshot for a restore after checking, in one pass over it with ranged reads,
    /// that its length and checksum are the manifest's: the restore then reads its header,
    /// index and blocks as it needs them, and never starts on a damaged file.
    ///
    /// From a remote store, a snapshot of at most 64 MiB is downloaded once, checked, and read
    /// from memory: one request, each byte fetched once.
    ///
    /// # Errors
    ///
    /// As [`read_file`](Self::read_file), and those of [`SnapshotReader::from_store`].
    pub fn open_snapshot(&self, file: &SnapshotRef) -> Result<SnapshotReader<'static>> {
        let name = self.snapshot_name(&file.path)?;
        if file.bytes <= WHOLE_DOWNLOAD && self.store.local_path(name).is_none() {
            let (path, bytes) = self.read_file(file)?;
            return SnapshotReader::from_vec(path, bytes);
        }
        self.verify_object(name, file.bytes, file.crc32c, &mut |_| {})?;
        SnapshotReader::from_store(Arc::clone(&self.store), name)
    }

    /// Opens the snapshots a restore of `operator`'s key groups `range` from `checkpoint`
    /// needs, as [`read_for_restore`](Self::read_for_restore) reads them, each checked by
    /// [`open_snapshot`](Self::open_snapshot).
    ///
    /// # Errors
    ///
    /// As [`read_for_restore`](Self::read_for_restore).
    pub fn open_for_restore(
        &self,
        checkpoint: &CheckpointInfo,
        operator: &str,
        range: KeyGroupRange,
    ) -> Result<Vec<SnapshotReader<'static>>> {
        let files = self.canonical_files_for_restore(checkpoint, operator, range)?;
        let mut out = Vec::new();
        for f in files {
            // A snapshot read whole is checked whole first, so a damaged one is refused before
            // anything changes. Of one read in part (rescaling), only the header, the index
            // and the blocks of the key groups restored are read, each checked by its own
            // checksum as it is read: a new instance reads its share, not every file whole.
            let whole = (f.first_key_group..=f.last_key_group).all(|kg| range.contains(kg));
            for link in f.chain() {
                out.push(if whole {
                    self.open_snapshot(&link)?
                } else {
                    self.open_snapshot_in_part(&link)?
                });
            }
        }
        Ok(out)
    }

    /// Opens a snapshot for a restore that reads some of its key groups: checks its length
    /// against the manifest's and reads its header and index (each checksummed); the blocks are
    /// checked as they are read.
    ///
    /// # Errors
    ///
    /// As [`open_snapshot`](Self::open_snapshot).
    pub fn open_snapshot_in_part(&self, file: &SnapshotRef) -> Result<SnapshotReader<'static>> {
        let name = self.snapshot_name(&file.path)?;
        self.length_of(name, file.bytes)?;
        SnapshotReader::from_store(Arc::clone(&self.store), name)
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
            path: self.store.locate(&checkpoint_dir_name(checkpoint.id)),
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
                path: self.store.locate(&checkpoint_dir_name(checkpoint.id)),
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

    /// The name in the store of a file of a native snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the manifest names a path that leaves the storage.
    pub fn native_file_name(&self, snapshot: &CheckpointFile, file: &NativeFile) -> Result<String> {
        let escapes = |name: &str| {
            Error::corrupt(
                self.store.locate(MANIFESTS),
                0,
                Corruption::Malformed {
                    section: "manifest",
                    detail: format!("native file `{name}` leaves the checkpoint storage"),
                },
            )
        };
        match &file.shared {
            Some(shared) => {
                validate_name("shared file", shared).map_err(|_| escapes(shared))?;
                Ok(format!("{SHARED}/{shared}"))
            }
            None => {
                validate_name("native file", &file.name).map_err(|_| escapes(&file.name))?;
                Ok(format!(
                    "{}/{}",
                    self.snapshot_name(&snapshot.path)?,
                    file.name
                ))
            }
        }
    }

    /// Where a file of a native snapshot is (see [`native_file_name`](Self::native_file_name)).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the manifest names a path that leaves the storage.
    pub fn native_file_path(
        &self,
        snapshot: &CheckpointFile,
        file: &NativeFile,
    ) -> Result<PathBuf> {
        Ok(self.store.locate(&self.native_file_name(snapshot, file)?))
    }

    /// Puts the files of a native snapshot into `target` (a directory that must not exist yet),
    /// checking every length against the manifest's: from a local store the shared ones as
    /// hard links where the file system allows, from a remote one downloaded with ranged
    /// reads. The backend that wrote them opens the result.
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
                path: self.store.locate(&snapshot.path),
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
        let put = |f: &NativeFile| -> Result<()> {
            let name = self.native_file_name(snapshot, f)?;
            self.length_of(&name, f.bytes)?;
            validate_name("native file", &f.name)?;
            let to = target.join(&f.name);
            match self.store.local_path(&name) {
                // Shared files never change, so a hard link shares them (a copy across file
                // systems); the others are copied, as the backend may append to them.
                Some(from) => {
                    if f.shared.is_none() || fs::hard_link(&from, &to).is_err() {
                        fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
                    }
                }
                None => self.download(&name, f.bytes, &to)?,
            }
            Ok(())
        };
        // From a remote store, several files download at once; locally, links are instant.
        let remote = native
            .files
            .first()
            .and_then(|f| self.native_file_name(snapshot, f).ok())
            .is_some_and(|name| self.store.local_path(&name).is_none());
        let result = if remote && native.files.len() > 1 {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let failed = std::sync::Mutex::new(None);
            std::thread::scope(|scope| {
                for _ in 0..DOWNLOADS.min(native.files.len()) {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(f) = native.files.get(i) else { break };
                            if let Err(e) = put(f) {
                                if let Ok(mut slot) = failed.lock() {
                                    slot.get_or_insert(e);
                                }
                                // The others stop at their next file.
                                next.store(
                                    native.files.len(),
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                break;
                            }
                        }
                    });
                }
            });
            match failed.into_inner() {
                Ok(None) => Ok(()),
                Ok(Some(e)) => Err(e),
                Err(_) => Err(Error::Backend {
                    backend: "checkpoint",
                    message: "a download of a native file panicked".into(),
                }),
            }
        } else {
            native.files.iter().try_for_each(put)
        };
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
            let name = self.native_file_name(snapshot, f)?;
            self.verify_object(&name, f.bytes, f.crc32c, progress)?;
        }
        Ok(())
    }

    /// Starts a new checkpoint; add snapshots to it, then [`commit`](PendingCheckpoint::commit).
    /// Dropping it uncommitted removes its files.
    ///
    /// Its number is claimed in the store (a put-if-absent of `chk-<number>/CLAIM`), so two
    /// writers never write the same files; of two writers that began from the same commit, the
    /// second to commit gets [`Error::CommitConflict`].
    ///
    /// # Errors
    ///
    /// [`Error::CommitConflict`] when another writer committed while this one claimed its
    /// number; a damaged manifest (the storage is left as it is) or an I/O failure.
    pub fn begin(&self) -> Result<PendingCheckpoint<'_>> {
        let manifest = self.read_manifest()?;
        // Never reuse the number of a checkpoint a crashed attempt may have left behind.
        let mut id = manifest.next_id.max(1);
        for (existing, _) in self.checkpoint_prefixes()? {
            id = id.max(existing.0 + 1);
        }
        // A writer racing for the same number takes the next one.
        for _ in 0..CLAIM_ATTEMPTS {
            let prefix = checkpoint_dir_name(CheckpointId(id));
            let claimed = match self.store.put_if_absent(&format!("{prefix}/{CLAIM}"), &[]) {
                Ok(claimed) => claimed,
                // Another writer committed meanwhile, and its retention removed the number
                // being claimed: this checkpoint would not commit either.
                Err(e) => {
                    return Err(self
                        .conflict_after(manifest.seq, CheckpointId(id))
                        .unwrap_or(e));
                }
            };
            if claimed {
                return Ok(PendingCheckpoint {
                    storage: self,
                    manifest,
                    id: CheckpointId(id),
                    prefix,
                    files: Vec::new(),
                    committed: false,
                });
            }
            id += 1;
        }
        Err(Error::CheckpointNotStarted {
            reason: "every checkpoint number tried is claimed by another writer",
        })
    }

    /// Deletes what no retained checkpoint needs: the checkpoints up to `committed` that are
    /// neither retained nor hold a file of a retained one's incremental chain (newer numbers
    /// may be another writer's), the shared files no retained checkpoint lists, and the
    /// manifests before `manifest`. Failures lose nothing committed.
    pub(super) fn collect_garbage(&self, manifest: &Manifest, committed: CheckpointId) {
        let mut needed = std::collections::HashSet::new();
        for c in &manifest.checkpoints {
            needed.insert(checkpoint_dir_name(c.id));
            for f in &c.files {
                // A part committed by another writer may sit in an earlier checkpoint's
                // directory (see `commit_parts`).
                let paths = std::iter::once(&f.path).chain(f.base.iter().map(|b| &b.path));
                for path in paths {
                    if let Some((dir, _)) = path.split_once('/') {
                        needed.insert(dir.to_owned());
                    }
                }
            }
        }
        if let Ok(prefixes) = self.checkpoint_prefixes() {
            for (id, prefix) in prefixes {
                if id <= committed && !needed.contains(&prefix) {
                    let _ = self.store.delete_prefix(&format!("{prefix}/"));
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
        if let Ok(names) = self.store.list(&format!("{SHARED}/")) {
            for name in names {
                let listed = name
                    .strip_prefix(SHARED)
                    .and_then(|n| n.strip_prefix('/'))
                    .is_some_and(|n| shared.contains(n));
                if !listed {
                    let _ = self.store.delete(&name);
                }
            }
        }
        if let Ok(names) = self.store.list(&format!("{MANIFESTS}/")) {
            for name in names {
                if manifest_seq(&name).is_some_and(|seq| seq < manifest.seq) {
                    let _ = self.store.delete(&name);
                }
            }
        }
        // A directory written before manifests were numbered.
        for legacy in [LEGACY_MANIFEST, LEGACY_MANIFEST_TMP, LEGACY_LOCK] {
            let _ = self.store.delete(legacy);
        }
    }

    /// Checks a manifest's snapshot path: a checkpoint and a name in it.
    pub(super) fn snapshot_name<'r>(&self, relative: &'r str) -> Result<&'r str> {
        let ok = relative.split_once('/').is_some_and(|(dir, name)| {
            validate_name("checkpoint", dir).is_ok() && validate_name("snapshot", name).is_ok()
        });
        if !ok {
            return Err(Error::corrupt(
                self.store.locate(MANIFESTS),
                0,
                Corruption::Malformed {
                    section: "manifest",
                    detail: format!("file path `{relative}` leaves the checkpoint storage"),
                },
            ));
        }
        Ok(relative)
    }

    /// The checkpoints that have objects in the store, by number, with their prefixes.
    pub(super) fn checkpoint_prefixes(&self) -> Result<Vec<(CheckpointId, String)>> {
        let mut out: Vec<(CheckpointId, String)> = Vec::new();
        for name in self.store.list("")? {
            let Some((prefix, _)) = name.split_once('/') else {
                continue;
            };
            let Some(id) = prefix
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if out.last().is_none_or(|(last, _)| last.0 != id) {
                out.push((CheckpointId(id), prefix.to_owned()));
            }
        }
        Ok(out)
    }

    /// The newest numbered manifest.
    fn latest_manifest(&self) -> Result<Option<(u64, String)>> {
        Ok(self
            .store
            .list(&format!("{MANIFESTS}/"))?
            .into_iter()
            .filter_map(|name| Some((manifest_seq(&name)?, name)))
            .max())
    }

    pub(super) fn read_manifest(&self) -> Result<Manifest> {
        // A writer retires the manifests before its own after committing: one listed a moment
        // ago may be gone, and a newer one is there.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (seq, name) = match self.latest_manifest()? {
                Some(latest) => latest,
                None => (0, LEGACY_MANIFEST.to_owned()),
            };
            let path = self.store.locate(&name);
            let bytes = match self.store.head(&name)? {
                Some(len) => match self.store.get_range(&name, 0..len) {
                    Ok(bytes) => bytes,
                    Err(_) if attempts < 3 && self.store.head(&name)?.is_none() => continue,
                    Err(e) => return Err(e),
                },
                None if seq == 0 => {
                    return Ok(Manifest {
                        format: MANIFEST_FORMAT.into(),
                        version: MANIFEST_VERSION,
                        next_id: 1,
                        checkpoints: Vec::new(),
                        seq: 0,
                    });
                }
                None if attempts < 3 => continue,
                None => {
                    return Err(Error::io(
                        &path,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the newest manifest was removed while it was read",
                        ),
                    ));
                }
            };
            let mut manifest = parse_manifest(&path, &bytes)?;
            manifest.seq = seq;
            return Ok(manifest);
        }
    }

    /// The length of `name`, which must be `expected`.
    pub(super) fn length_of(&self, name: &str, expected: u64) -> Result<u64> {
        let path = self.store.locate(name);
        let len = self.store.head(name)?.ok_or_else(|| {
            Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            )
        })?;
        if len != expected {
            return Err(Error::corrupt(
                &path,
                len,
                Corruption::Truncated {
                    needed: expected,
                    available: len,
                },
            ));
        }
        Ok(len)
    }

    /// [`Error::CommitConflict`] for checkpoint `id` when a manifest newer than number `seq`
    /// has been committed; `None` when none has, or when the store cannot tell.
    pub(super) fn conflict_after(&self, seq: u64, id: CheckpointId) -> Option<Error> {
        match self.latest_manifest() {
            Ok(Some((latest, name))) if latest > seq => Some(Error::CommitConflict {
                id: id.0,
                path: self.store.locate(&name),
            }),
            _ => None,
        }
    }

    /// Reads `name` (of length `len`) in steps of [`READ_STEP`] bytes, handing each to `chunk`.
    fn read_in_steps(
        &self,
        name: &str,
        len: u64,
        chunk: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut offset = 0u64;
        while offset < len {
            let end = len.min(offset + READ_STEP);
            chunk(&self.store.get_range(name, offset..end)?)?;
            offset = end;
        }
        Ok(())
    }

    /// Checks the length and crc32c of `name`, reading it in steps of [`READ_STEP`] bytes.
    fn verify_object(
        &self,
        name: &str,
        bytes: u64,
        crc32c: u32,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let len = self.length_of(name, bytes)?;
        let mut crc = 0u32;
        self.read_in_steps(name, len, &mut |chunk| {
            crc = crc32c::crc32c_append(crc, chunk);
            progress(chunk.len() as u64);
            Ok(())
        })?;
        if crc != crc32c {
            return Err(mismatch(&self.store.locate(name), crc32c, crc));
        }
        Ok(())
    }

    /// Copies `name` into the local file `to`, in steps of [`READ_STEP`] bytes.
    fn download(&self, name: &str, len: u64, to: &Path) -> Result<()> {
        let mut out = File::create(to).map_err(|e| Error::io(to, e))?;
        self.read_in_steps(name, len, &mut |chunk| {
            out.write_all(chunk).map_err(|e| Error::io(to, e))
        })?;
        out.sync_all().map_err(|e| Error::io(to, e))
    }
}

/// How much of an object one ranged read asks for when a whole object is checked or copied.
const READ_STEP: u64 = 8 << 20;

/// The largest snapshot a restore from a remote store downloads in one request and reads from
/// memory; a larger one is checked in a first pass and then read block by block.
const WHOLE_DOWNLOAD: u64 = 64 << 20;

/// How many files of a native snapshot download from a remote store at once.
const DOWNLOADS: usize = 4;

/// How many checkpoint numbers [`CheckpointStorage::begin`] tries to claim.
const CLAIM_ATTEMPTS: usize = 64;

fn mismatch(path: &Path, stored: u32, computed: u32) -> Error {
    Error::corrupt(
        path,
        0,
        Corruption::ChecksumMismatch {
            section: "file",
            stored,
            computed,
        },
    )
}

/// The number of a manifest's name (`manifests/00000000000000000007`).
pub(super) fn manifest_seq(name: &str) -> Option<u64> {
    name.strip_prefix(MANIFESTS)?
        .strip_prefix('/')?
        .parse()
        .ok()
}

pub(super) fn manifest_name(seq: u64) -> String {
    format!("{MANIFESTS}/{seq:020}")
}

pub(super) fn checkpoint_dir_name(id: CheckpointId) -> String {
    format!("chk-{:010}", id.0)
}

/// The length and crc32c of a local file, reading it in 1 MiB steps.
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
