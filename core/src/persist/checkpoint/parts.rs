//! Checkpoints written by many writers and committed by one: each operator instance writes its
//! part ([`CheckpointStorage::write_part`]) wherever it runs, and a committer that has heard
//! from every instance commits them together ([`CheckpointStorage::commit_parts`]). This is
//! how a distributed job (one instance per worker, workers in several processes) takes an
//! aligned checkpoint: no process holds every instance, and no partial checkpoint is ever
//! listed.

#![allow(clippy::wildcard_imports)]

use super::*;

impl CheckpointStorage {
    /// The checkpoint a job that starts now continues from: the newest committed one, or
    /// `None` for an empty storage. Every writer of a distributed job reads the same answer,
    /// because nothing is committed until every writer has written its part.
    ///
    /// # Errors
    ///
    /// A damaged manifest or an I/O failure.
    pub fn latest(&self) -> Result<Option<CheckpointInfo>> {
        Ok(self.read_manifest()?.checkpoints.pop())
    }

    /// Writes one operator instance's snapshot as a part of checkpoint `id`, to be committed
    /// by [`commit_parts`](Self::commit_parts), possibly in another process. `writer` names
    /// the writer (letters, digits, `.`, `_`, `-`) and goes into the file's name, so that
    /// writers never overwrite each other's parts, a restarted job's included. A full image
    /// has no `base`; an incremental one (see [`Bound::capture_changes`]) names the snapshots
    /// it applies on top of, oldest (a full one) first, each of them in a retained checkpoint.
    /// Nothing is visible to a reader until the commit; a part never committed is deleted by
    /// the garbage collection of a later commit once its number is retired.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an invalid operator or writer name; [`Error::Incompatible`]
    /// for an incremental image without a retained base chain (or a full one with a base); an
    /// I/O failure.
    pub fn write_part(
        &self,
        id: CheckpointId,
        writer: &str,
        image: SnapshotImage,
        base: &[SnapshotRef],
    ) -> Result<CheckpointFile> {
        validate_name("writer", writer)?;
        // The base chain is checked against the retained checkpoints.
        let manifest = if base.is_empty() {
            Manifest {
                format: MANIFEST_FORMAT.into(),
                version: MANIFEST_VERSION,
                next_id: id.0,
                checkpoints: Vec::new(),
                seq: 0,
            }
        } else {
            self.read_manifest()?
        };
        let mut pending = self.unclaimed(id, manifest);
        let file = pending.write_image_tagged(image, base, Some(writer));
        // The part stays (`committed` keeps it from being deleted): another writer commits it.
        pending.committed = true;
        file
    }

    /// Commits checkpoint `id` from parts written by [`write_part`](Self::write_part): checks
    /// that each (and an incremental one's base chain) was written for this checkpoint or for a number between the latest committed
    /// one and it (a writer that could not know the final number, such as the last checkpoint
    /// of a job whose workers end at different times), that it is there whole (its length), that no two instances of
    /// an operator overlap, and that `id` is newer than every committed checkpoint, then puts
    /// the next manifest as [`PendingCheckpoint::commit`] does (retention included).
    ///
    /// # Errors
    ///
    /// [`Error::CommitConflict`] when `id` is not newer than the latest committed checkpoint
    /// or another writer committed meanwhile; [`Error::InvalidName`] for overlapping
    /// instances; [`Error::Incompatible`] for a part of another checkpoint; an I/O error or
    /// [`Error::Corrupt`] for a part that is missing or cut. No committed checkpoint is
    /// touched on any error; the parts are kept when a check fails (another attempt may
    /// commit them) and removed when the commit itself fails.
    pub fn commit_parts(
        &self,
        id: CheckpointId,
        parts: Vec<CheckpointFile>,
    ) -> Result<CheckpointInfo> {
        let manifest = self.read_manifest()?;
        let latest = manifest.checkpoints.last().map_or(0, |c| c.id.0);
        if id.0 <= latest {
            return Err(Error::CommitConflict {
                id: id.0,
                path: self.store.locate(MANIFESTS),
            });
        }
        let mut pending = self.unclaimed(id, manifest);
        let result = (|| {
            for part in parts {
                // In this checkpoint's directory, or an earlier one's: a writer that could
                // not know the final number wrote it under the number it expected.
                let in_checkpoint = part.path.split_once('/').is_some_and(|(dir, _)| {
                    dir.strip_prefix("chk-")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > latest && n <= id.0)
                });
                if !in_checkpoint || part.native.is_some() {
                    return Err(Error::Incompatible {
                        operator: part.operator.clone(),
                        path: self.store.locate(&part.path),
                        reason: format!(
                            "is not a canonical snapshot written as a part of checkpoint {id}"
                        ),
                    });
                }
                self.snapshot_name(&part.path)?;
                self.length_of(&part.path, part.bytes)?;
                // An incremental part's chain must still be there, whole.
                for b in &part.base {
                    self.snapshot_name(&b.path)?;
                    self.length_of(&b.path, b.bytes)?;
                }
                pending.check_new_instance(&part.operator, part.key_groups())?;
                pending.files.push(part);
            }
            Ok(())
        })();
        match result {
            Ok(()) => pending.commit(),
            Err(e) => {
                // Nothing was committed; the parts stay for a writer that tries again.
                pending.committed = true;
                Err(e)
            }
        }
    }

    /// A checkpoint being written under `id` without claiming the number (the parts' writers
    /// and their committer agree on it).
    fn unclaimed(&self, id: CheckpointId, manifest: Manifest) -> PendingCheckpoint<'_> {
        PendingCheckpoint {
            storage: self,
            manifest,
            id,
            prefix: checkpoint_dir_name(id),
            files: Vec::new(),
            committed: false,
        }
    }
}
