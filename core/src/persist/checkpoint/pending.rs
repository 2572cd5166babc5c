//! [`PendingCheckpoint`]: a checkpoint being written, committed by its manifest.

#![allow(clippy::wildcard_imports)]

use super::*;

/// A checkpoint being written: add one snapshot per operator, then commit.
#[derive(Debug)]
pub struct PendingCheckpoint<'s> {
    pub(super) storage: &'s CheckpointStorage,
    pub(super) manifest: Manifest,
    pub(super) id: CheckpointId,
    /// `chk-<id>`: where its objects are.
    pub(super) prefix: String,
    pub(super) files: Vec<CheckpointFile>,
    pub(super) committed: bool,
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
        match self.write_image(image, base) {
            Ok(file) => {
                self.files.push(file);
                Ok(&self.files[self.files.len() - 1])
            }
            Err(e) => Err(self.conflict_or(e)),
        }
    }

    fn write_image(&self, image: SnapshotImage, base: &[SnapshotRef]) -> Result<CheckpointFile> {
        self.write_image_tagged(image, base, None)
    }

    /// Writes a snapshot; `tag` (a writer's name) goes into the file's name, so that parts
    /// written by several writers for one checkpoint never share a name.
    pub(super) fn write_image_tagged(
        &self,
        image: SnapshotImage,
        base: &[SnapshotRef],
        tag: Option<&str>,
    ) -> Result<CheckpointFile> {
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
                path: self.storage.store.locate(&self.prefix),
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
            self.storage.snapshot_name(&b.path)?;
            let retained = self.manifest.checkpoints.iter().any(|c| {
                c.files
                    .iter()
                    .any(|f| f.path == b.path || f.base.iter().any(|x| x.path == b.path))
            });
            if !retained {
                return Err(Error::Incompatible {
                    operator: operator.to_owned(),
                    path: self.storage.store.locate(&b.path),
                    reason: "the base of an incremental snapshot is no longer retained".into(),
                });
            }
        }
        let file_name = match tag {
            Some(tag) => format!("{operator}.kg{}-{}.{tag}.snap", range.first(), range.last()),
            None => format!("{operator}.kg{}-{}.snap", range.first(), range.last()),
        };
        let name = format!("{}/{file_name}", self.prefix);
        let path = self.storage.store.locate(&name);
        // Written as it is encoded, a block at a time: memory holds a buffer, not the file.
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, self.storage.store.create(&name)?),
            crc: 0,
        };
        let watermark = image.watermark();
        let summary = image.write(self.storage.options, &path, &mut out)?;
        let crc = out.crc;
        let writer = out
            .inner
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        writer.finish()?;
        let relative = name;
        Ok(CheckpointFile {
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
        })
    }

    pub(super) fn check_new_instance(&self, operator: &str, range: KeyGroupRange) -> Result<()> {
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
        match self.write_native_files(operator, range, max_parallelism, &files) {
            Ok(file) => {
                self.files.push(file);
                Ok(&self.files[self.files.len() - 1])
            }
            Err(e) => Err(self.conflict_or(e)),
        }
    }

    /// `e`, or [`Error::CommitConflict`] when another writer committed since this checkpoint
    /// began: retention after that commit may have removed this checkpoint's files, and the
    /// conflict, not the missing file, is what went wrong.
    fn conflict_or(&self, e: Error) -> Error {
        self.storage
            .conflict_after(self.manifest.seq, self.id)
            .unwrap_or(e)
    }

    fn write_native_files(
        &self,
        operator: &str,
        range: KeyGroupRange,
        max_parallelism: u16,
        files: &NativeFiles,
    ) -> Result<CheckpointFile> {
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
        let own = format!("{}/{dir_name}", self.prefix);
        let store = &self.storage.store;
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
                    match known.get(shared.as_str()).copied() {
                        Some(old)
                            if store.head(&format!("{SHARED}/{shared}"))? == Some(old.bytes) =>
                        {
                            Some(old)
                        }
                        _ => None,
                    }
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
                Some(shared) => format!("{SHARED}/{shared}"),
                None => format!("{own}/{}", spec.name),
            };
            store.put_file(&to, &from)?;
            written += bytes;
            listed.push(NativeFile {
                name: spec.name.clone(),
                bytes,
                crc32c,
                shared: spec.shared_as.clone(),
            });
        }
        let crc32c = listed.iter().fold(0, |crc, f| {
            crc32c::crc32c_append(crc, &f.crc32c.to_le_bytes())
        });
        Ok(CheckpointFile {
            operator: operator.to_owned(),
            first_key_group: range.first(),
            last_key_group: range.last(),
            path: own,
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
        })
    }

    /// Makes the checkpoint visible: puts the next manifest (the retained checkpoints, this one
    /// last) if no other writer has put that number since this checkpoint began. Checkpoints
    /// beyond `max_retained` and the files only they need are deleted afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::CommitConflict`] when another writer committed first (this checkpoint's files
    /// are then removed); an I/O failure. The previous manifest and its checkpoints are
    /// untouched either way.
    pub fn commit(mut self) -> Result<CheckpointInfo> {
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let info = CheckpointInfo {
            id: self.id,
            created_ms,
            files: std::mem::take(&mut self.files),
        };
        let seq = self.manifest.seq + 1;
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            next_id: self.id.0 + 1,
            checkpoints: std::mem::take(&mut self.manifest.checkpoints),
            seq,
        };
        manifest.checkpoints.push(info.clone());
        let excess = manifest
            .checkpoints
            .len()
            .saturating_sub(self.storage.max_retained);
        manifest.checkpoints.drain(..excess);
        let name = manifest_name(seq);
        if !self
            .storage
            .store
            .put_if_absent(&name, &encode_manifest(&manifest)?)?
        {
            return Err(Error::CommitConflict {
                id: self.id.0,
                path: self.storage.store.locate(&name),
            });
        }
        // A manifest's number is free again once retention retired it, which happens only
        // after a newer one was committed: a writer that began before that commit can put the
        // old number. Readers take the newest manifest, so such a late one is never read; it is
        // taken back, and its checkpoint was not committed.
        if let Some(conflict) = self.storage.conflict_after(seq, self.id) {
            let _ = self.storage.store.delete(&name);
            return Err(conflict);
        }
        self.committed = true;
        self.storage.collect_garbage(&manifest, self.id);
        Ok(info)
    }
}

impl Drop for PendingCheckpoint<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self
                .storage
                .store
                .delete_prefix(&format!("{}/", self.prefix));
        }
    }
}

pub(super) struct CrcWriter<W> {
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
