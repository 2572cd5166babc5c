//! Capture and restore of a [`Bound`]: its snapshots and checkpoints, and the one restore path
//! every checkpoint goes through.

use crate::access::operator::{Bound, NO_WATERMARK, StatefulOperator};
use crate::data::backend::{
    MigrationProgress, NativeMigration, NativePart, NativeRestore, NativeSource, Snapshots,
};
use crate::model::error::{Error, Result};
use crate::model::keygroup::KeyGroupRange;
use crate::model::schema::Reading;
use crate::persist::checkpoint::{CheckpointFile, CheckpointInfo, CheckpointStorage, RestorePoint};
use crate::persist::checkpointer::Checkpointable;
use crate::persist::snapshot::{
    self, RestoreSummary, SnapshotImage, SnapshotOptions, SnapshotReader, SnapshotSummary,
};

/// Restoring an operator from a checkpoint in one call: implemented for every
/// [`StatefulOperator`], and in the prelude.
pub trait RestoreOperator: StatefulOperator {
    /// Binds to `backend` and restores the operator's state from a checkpoint.
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointNotFound`], or any error of [`Bound::restore_from`].
    fn restore<B: Snapshots>(
        self,
        backend: B,
        storage: &CheckpointStorage,
        point: RestorePoint,
    ) -> Result<Bound<Self, B>> {
        let mut bound = Bound::new(self, backend)?;
        bound.restore_from(storage, point)?;
        Ok(bound)
    }
}

impl<Op: StatefulOperator> RestoreOperator for Op {}

impl<Op: StatefulOperator, B: Snapshots> Bound<Op, B> {
    /// Writes a canonical full snapshot of this instance's state (format v1) to `out`; `path`
    /// names the destination in errors.
    ///
    /// # Errors
    ///
    /// A backend or I/O failure.
    pub fn write_snapshot<W: std::io::Write>(
        &self,
        options: SnapshotOptions,
        path: &std::path::Path,
        out: W,
    ) -> Result<SnapshotSummary> {
        self.capture()?.write(options, path, out)
    }

    /// Copies this instance's whole state out of the backend: the synchronous step of a full
    /// snapshot. The image owns its bytes; write it with [`SnapshotImage::write`] or
    /// [`PendingCheckpoint::add_image`](crate::persist::checkpoint::PendingCheckpoint::add_image), on
    /// any thread, while this instance goes on processing.
    ///
    /// Every way to take a snapshot or checkpoint captures the same thing: the state as the
    /// next read would see it (TTL refreshes that reads queued included) and the watermark.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn capture(&self) -> Result<SnapshotImage> {
        let mut image = snapshot::capture(
            &self.backend,
            &Op::DESCRIPTOR,
            self.columns.as_ref(),
            self.key_groups,
        )?;
        image.add_operator_states(&Op::DESCRIPTOR, &self.op.__operator_states())?;
        Ok(image.with_watermark(self.watermark()))
    }

    /// Takes the changes since the last capture as an incremental image (see
    /// [`Snapshots::track_changes`], which a full capture through
    /// [`Checkpointer`](crate::persist::checkpointer::Checkpointer) turns on).
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend is not tracking changes; a backend failure.
    pub fn capture_changes(&mut self) -> Result<SnapshotImage> {
        if !self.tracking {
            return Err(Error::Backend {
                backend: self.backend.name(),
                message: format!(
                    "operator `{}` has no full capture to take changes since (or its backend cannot track changes)",
                    Op::DESCRIPTOR.name
                ),
            });
        }
        let mut image = snapshot::capture_changes(
            &mut self.backend,
            &Op::DESCRIPTOR,
            self.columns.as_ref(),
            self.key_groups,
        )?;
        image.add_operator_states(&Op::DESCRIPTOR, &self.op.__operator_states())?;
        Ok(image.with_watermark(self.watermark()))
    }

    /// Replaces this instance's state with the snapshot's (only this instance's key groups are
    /// read). Every entry is validated against the declared types first.
    ///
    /// # Errors
    ///
    /// See [`snapshot::restore_operator`].
    pub fn restore_snapshot(&mut self, snapshot: &SnapshotReader<'_>) -> Result<RestoreSummary> {
        self.restore_snapshots(&[snapshot])
    }

    /// Replaces this instance's state with the state of several snapshots applied in order:
    /// full snapshots (of any instances' key-group ranges), each followed by the incremental
    /// snapshots taken on top of it. Only this instance's key groups are read.
    ///
    /// # Errors
    ///
    /// See [`snapshot::restore_operator_from`].
    pub fn restore_snapshots(
        &mut self,
        snapshots: &[&SnapshotReader<'_>],
    ) -> Result<RestoreSummary> {
        // Operator states are read (and checked) before the backend is touched, and loaded
        // after the keyed state restored.
        let operator_states =
            snapshot::restore_operator_states(snapshots, &Op::DESCRIPTOR, self.key_groups)?;
        let restored = snapshot::restore_operator_from(
            snapshots,
            &mut self.backend,
            &Op::DESCRIPTOR,
            self.columns.as_ref(),
            self.key_groups,
        );
        if restored.is_err() {
            // A failed restore leaves the states cleared: so are the timers it indexed.
            self.timers.rebuild(&self.backend, self.key_groups)?;
        }
        let summary = restored?;
        for (slot, entries) in self
            .op
            .__operator_states_mut()
            .into_iter()
            .zip(operator_states)
        {
            slot.load(entries);
        }
        // What was tracked before no longer applies to the restored state: the next
        // checkpoint of this instance is a full one.
        self.backend.track_changes(false);
        self.tracking = false;
        self.timers.rebuild(&self.backend, self.key_groups)?;
        Ok(summary)
    }

    /// Takes a full checkpoint of this operator alone and commits it (synchronously; see
    /// [`Checkpointer`](crate::persist::checkpointer::Checkpointer) for periodic, incremental and
    /// asynchronous checkpoints).
    ///
    /// # Errors
    ///
    /// A backend or I/O failure; the previous checkpoints are untouched.
    pub fn checkpoint(&self, storage: &CheckpointStorage) -> Result<CheckpointInfo> {
        let mut pending = storage.begin()?;
        pending.add(self)?;
        pending.commit()
    }

    /// Replaces this instance's state with the operator's state in a checkpoint: the key
    /// groups this instance owns, read from the snapshots of whichever instances wrote them
    /// (any parallelism), each with its incremental chain.
    ///
    /// This is the one restore path for every checkpoint: canonical (full or incremental, from
    /// any backend) and native (the backend's own files, opened by a backend of the same kind,
    /// wrapped in [`TtlBackend`](crate::data::ttl::TtlBackend) or not). The schemas recorded are
    /// checked against the declaration and declared migrations applied, only this instance's
    /// key groups are kept, and the watermark is set to the smallest of the restored instances'
    /// (none when one of them had none).
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointNotFound`], [`Error::Incompatible`] when the checkpoint has no
    /// snapshot of some of this instance's key groups, another maximum parallelism, or native
    /// files this backend cannot open; [`Error::SchemaMismatch`]; the errors of reading and
    /// restoring a snapshot.
    pub fn restore_from(
        &mut self,
        storage: &CheckpointStorage,
        point: RestorePoint,
    ) -> Result<RestoreSummary> {
        self.restore_from_with_progress(storage, point, &mut |_| {})
    }

    /// [`restore_from`](Self::restore_from), calling `progress` while declared migrations
    /// rewrite the entries of a native checkpoint in place (every 10,000 entries and when a
    /// state is done; a canonical restore migrates each entry as it reads it).
    ///
    /// # Errors
    ///
    /// As [`restore_from`](Self::restore_from).
    pub fn restore_from_with_progress(
        &mut self,
        storage: &CheckpointStorage,
        point: RestorePoint,
        progress: &mut dyn FnMut(&MigrationProgress<'_>),
    ) -> Result<RestoreSummary> {
        let info = storage.resolve(point)?;
        // A union list state needs every instance's snapshot, not only those of this
        // instance's key groups (only their blocks are read for the keyed state).
        let union = Op::DESCRIPTOR
            .operator_states
            .iter()
            .any(|s| s.kind == crate::model::descriptor::StateKind::UnionList);
        let range = if union {
            KeyGroupRange::all(Op::DESCRIPTOR.max_parallelism)
        } else {
            self.key_groups
        };
        let files = storage.files_for_restore(&info, Op::DESCRIPTOR.name, range)?;
        // The smallest watermark of the instances whose key groups this one takes: no
        // restored key sees event time its own instance had not reached.
        let watermark = files
            .iter()
            .filter(|f| f.key_groups().overlaps(self.key_groups))
            .map(|f| f.watermark)
            .min()
            .flatten();
        let summary = if files.iter().any(|f| f.native.is_some()) {
            self.restore_native_files(storage, files, progress)?
        } else {
            // Each file checked whole first, then read a block at a time: memory holds the
            // indexes and a block, not the checkpoint.
            let readers = storage.open_for_restore(&info, Op::DESCRIPTOR.name, range)?;
            let refs: Vec<&SnapshotReader<'_>> = readers.iter().collect();
            self.restore_snapshots(&refs)?
        };
        self.watermark = NO_WATERMARK;
        self.timers.watermark = NO_WATERMARK;
        if let Some(w) = watermark {
            self.set_watermark(w);
        }
        Ok(summary)
    }

    /// The native part of [`restore_from_with_progress`](Self::restore_from_with_progress):
    /// checks the snapshots, then lets the backend open them.
    fn restore_native_files(
        &mut self,
        storage: &CheckpointStorage,
        files: Vec<&CheckpointFile>,
        progress: &mut dyn FnMut(&MigrationProgress<'_>),
    ) -> Result<RestoreSummary> {
        let name = Op::DESCRIPTOR.name;
        let backend = self.backend.name();
        let incompatible = |file: &CheckpointFile, reason: String| Error::Incompatible {
            operator: name.to_owned(),
            path: storage.store().locate(&file.path),
            reason,
        };
        let mut migrations: Option<Vec<NativeMigration>> = None;
        for f in &files {
            let Some(native) = &f.native else {
                return Err(incompatible(
                    f,
                    format!(
                        "is a {} canonical snapshot, and other instances' snapshots of this \
                         checkpoint are native ones: a restore reads one or the other",
                        f.kind
                    ),
                ));
            };
            if native.backend != backend {
                return Err(incompatible(
                    f,
                    format!(
                        "is a native {} snapshot, which the {backend} backend cannot open; \
                         take canonical checkpoints (`CheckpointConfig::native(false)`) to \
                         restore into any backend",
                        native.backend
                    ),
                ));
            }
            if native.max_parallelism != Op::DESCRIPTOR.max_parallelism {
                return Err(incompatible(
                    f,
                    format!(
                        "written with max_parallelism {}, the operator declares {}",
                        native.max_parallelism,
                        Op::DESCRIPTOR.max_parallelism
                    ),
                ));
            }
            // The recorded schemas, checked before anything changes; every snapshot of the
            // checkpoint must read the same way.
            let mut mine = Vec::new();
            if let Some(schemas) = &native.schemas {
                let checked =
                    schemas
                        .check(&Op::DESCRIPTOR)
                        .map_err(|report| Error::SchemaMismatch {
                            operator: name.to_owned(),
                            path: storage.store().locate(&f.path),
                            report,
                        })?;
                for (record, c) in schemas.states.iter().zip(&checked) {
                    // A native snapshot keeps the stored values as they were written: it cannot
                    // add time-to-live stamps, or take them off, as a canonical restore does.
                    if let Some((state, _)) = c
                        && state.kind.is_keyed()
                        && record.stamped != state.ttl.is_some()
                    {
                        let change = if record.stamped {
                            "was written with a time-to-live and now declares none"
                        } else {
                            "was written without a time-to-live and now declares one"
                        };
                        return Err(incompatible(
                            f,
                            format!(
                                "state `{}` {change}; a native snapshot keeps its stored values \
                                 as they are: restore from a canonical checkpoint \
                                 (`CheckpointConfig::native(false)`) to change a state's TTL",
                                state.name
                            ),
                        ));
                    }
                }
                for (record, c) in schemas.states.iter().zip(checked) {
                    if let Some((state, Reading::Migrate(migration))) = c
                        && state.kind.is_keyed()
                    {
                        mine.push(NativeMigration {
                            state,
                            stamped: record.stamped,
                            migration,
                        });
                    }
                }
            }
            match &migrations {
                None => migrations = Some(mine),
                Some(first)
                    if first
                        .iter()
                        .map(|m| (m.state.name, m.migration.version))
                        .ne(mine.iter().map(|m| (m.state.name, m.migration.version))) =>
                {
                    return Err(incompatible(
                        f,
                        "its states are of other versions than the checkpoint's other snapshots"
                            .into(),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut migrated = 0u64;
        let mut count = |p: &MigrationProgress<'_>| {
            if p.done {
                migrated += p.entries;
            }
            progress(p);
        };
        let source = StoredNative { storage, files };
        let mut restore = NativeRestore {
            source: &source,
            operator: &Op::DESCRIPTOR,
            parts: source.files.iter().map(|f| native_part(f)).collect(),
            range: self.key_groups,
            migrations: migrations.unwrap_or_default(),
            progress: &mut count,
        };
        // What was tracked no longer applies to the restored state.
        self.backend.track_changes(false);
        self.tracking = false;
        let opened = self.backend.restore_native(&mut restore);
        // Whatever the backend holds now (the restored state, or nothing after a failure),
        // the timer index follows it.
        self.timers.rebuild(&self.backend, self.key_groups)?;
        if !opened? {
            let f = source.files[0];
            return Err(incompatible(
                f,
                format!(
                    "is a native snapshot, which the {backend} backend cannot open; take \
                     canonical checkpoints (`CheckpointConfig::native(false)`) to restore into \
                     any backend"
                ),
            ));
        }
        Ok(RestoreSummary {
            entries: 0,
            migrated,
        })
    }
}

impl<Op: StatefulOperator, B: Snapshots> Checkpointable for Bound<Op, B> {
    fn operator_name(&self) -> &'static str {
        Op::DESCRIPTOR.name
    }

    fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }

    fn is_tracking_changes(&self) -> bool {
        self.tracking
    }

    fn capture_full(&mut self, track_changes: bool) -> Result<SnapshotImage> {
        let mut image = snapshot::capture_detached(
            &self.backend,
            &Op::DESCRIPTOR,
            self.columns.as_ref(),
            self.key_groups,
        )?;
        image.add_operator_states(&Op::DESCRIPTOR, &self.op.__operator_states())?;
        // In the same synchronous step: every change after the capture is tracked.
        self.tracking = self.backend.track_changes(track_changes) && track_changes;
        Ok(image.with_watermark(self.watermark()))
    }

    fn capture_changes(&mut self) -> Result<SnapshotImage> {
        Bound::capture_changes(self)
    }

    fn capture_native(&mut self) -> Result<Option<(crate::data::backend::NativeFiles, u16)>> {
        // Operator states live in the operator, not in the backend's files: an operator with
        // operator states is checkpointed canonically, which holds both.
        if !Op::DESCRIPTOR.operator_states.is_empty() {
            return Ok(None);
        }
        let Some(files) = self.backend.native_checkpoint()? else {
            return Ok(None);
        };
        if self.tracking {
            self.backend.track_changes(false);
            self.tracking = false;
        }
        let files = files
            .with_schemas(crate::model::schema::OperatorSchemas::of(&Op::DESCRIPTOR))
            .with_watermark(self.watermark());
        Ok(Some((files, Op::DESCRIPTOR.max_parallelism)))
    }
}

/// The files of a native restore, in a checkpoint storage.
struct StoredNative<'a> {
    storage: &'a CheckpointStorage,
    files: Vec<&'a CheckpointFile>,
}

impl NativeSource for StoredNative<'_> {
    fn materialize(&self, index: usize, dir: &std::path::Path) -> Result<()> {
        let file = self.files.get(index).ok_or_else(|| Error::Backend {
            backend: "checkpoint storage",
            message: format!(
                "native part {index} of {} requested, the restore has {}",
                self.files.first().map_or("?", |f| f.operator.as_str()),
                self.files.len()
            ),
        })?;
        self.storage.materialize_native(file, dir)
    }
}

/// How a native restore sees a stored native snapshot (checked to be one before).
fn native_part(file: &CheckpointFile) -> NativePart {
    let native = file.native.as_ref();
    NativePart {
        backend: native.map(|n| n.backend.clone()).unwrap_or_default(),
        max_parallelism: native.map_or(0, |n| n.max_parallelism),
        key_groups: file.key_groups(),
        files: native
            .map(|n| {
                n.files
                    .iter()
                    .map(|f| (f.name.clone(), f.shared.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
