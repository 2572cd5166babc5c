//! The committer: on worker 0, it collects every worker's parts of each checkpoint and the
//! sources' positions, and commits the checkpoint once the frontier says nothing more of it
//! can come, after checking that every operator's key groups are all there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use statewright::checkpoint::CheckpointFile;
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::{CheckpointInfo, Error, Result};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;

use crate::job::{Job, Part, Shared, SourcePositions, Time};

struct Committer<F> {
    storage: CheckpointStorage,
    interval: Time,
    next_id: u64,
    operators: Vec<(&'static str, u16)>,
    has_sources: bool,
    /// Every partition's newest position, applied up to the checkpoint being committed.
    positions: BTreeMap<(String, u32), u64>,
    /// Positions not yet applied, by the time they hold from.
    held: BTreeMap<Time, Vec<(String, u32, u64)>>,
    parts: BTreeMap<u64, Vec<CheckpointFile>>,
    /// Every instance's last part, with the number it was written under.
    last: Vec<(u64, CheckpointFile)>,
    /// When each checkpoint's first part was captured (milliseconds since the Unix epoch).
    started: BTreeMap<u64, u64>,
    /// Each sink's directory and its lines not yet written, by time.
    sinks: Vec<(PathBuf, BTreeMap<Time, Vec<String>>)>,
    on_commit: F,
    shared: Shared,
    writer: String,
}

impl<F: FnMut(&CheckpointInfo)> Committer<F> {
    fn apply_positions(&mut self, before: Time) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() >= before {
                break;
            }
            for (source, partition, position) in entry.remove() {
                // Positions only move forward; the newest is the largest.
                let slot = self.positions.entry((source, partition)).or_insert(0);
                *slot = (*slot).max(position);
            }
        }
    }

    /// Whether the parts cover every operator's key groups once.
    fn complete(&self, parts: &[CheckpointFile]) -> bool {
        self.check(0, parts).is_ok()
    }

    /// Checks that the parts of checkpoint `id` cover every operator's key groups once.
    fn check(&self, id: u64, parts: &[CheckpointFile]) -> Result<()> {
        for &(name, max_parallelism) in &self.operators {
            let mut ranges: Vec<KeyGroupRange> = parts
                .iter()
                .filter(|p| p.operator == name)
                .map(CheckpointFile::key_groups)
                .collect();
            ranges.sort_by_key(KeyGroupRange::first);
            let mut next = 0u32;
            for r in &ranges {
                if u32::from(r.first()) != next {
                    break;
                }
                next = u32::from(r.last()) + 1;
            }
            if next != u32::from(max_parallelism) {
                return Err(Error::Incompatible {
                    operator: name.to_owned(),
                    path: self.storage.dir().to_path_buf(),
                    reason: format!(
                        "checkpoint {id} would miss key groups from {next} on: a worker's part \
                         did not arrive, so it is not committed"
                    ),
                });
            }
        }
        Ok(())
    }

    fn commit(
        &mut self,
        id: u64,
        mut parts: Vec<CheckpointFile>,
        positions_before: Time,
    ) -> Result<()> {
        self.apply_positions(positions_before);
        self.check(id, &parts)?;
        if self.has_sources {
            let mut bound = SourcePositions::default().bind(HeapBackend::new())?;
            bound.operator_mut().write(&self.positions)?;
            parts.push(self.storage.write_part(
                CheckpointId(id),
                &self.writer,
                bound.capture()?,
                &[],
            )?);
        }
        // Each sink's lines of this checkpoint, written whole before the commit.
        let mut pending = Vec::new();
        for (dir, lines) in &mut self.sinks {
            let path = dir.join(format!("{id}.pending"));
            let tmp = dir.join(format!("{id}.pending.tmp"));
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&tmp).map_err(|e| crate::io_error(&tmp, e))?,
            );
            while let Some(entry) = lines.first_entry() {
                if *entry.key() >= positions_before {
                    break;
                }
                for line in entry.remove() {
                    writeln!(out, "{line}").map_err(|e| crate::io_error(&tmp, e))?;
                }
            }
            let file = out
                .into_inner()
                .map_err(|e| crate::io_error(&tmp, e.into_error()))?;
            file.sync_all().map_err(|e| crate::io_error(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| crate::io_error(&path, e))?;
            pending.push(dir.clone());
        }
        let info = self.storage.commit_parts(CheckpointId(id), parts)?;
        for dir in pending {
            finish_sink_commits(&dir, id)?;
        }
        self.shared.committed.set(Some(info.id));
        let started = self.started.remove(&id);
        let now = u64::try_from(statewright::timers::system_time_millis()).unwrap_or(0);
        self.shared.update(|s| {
            s.committed += 1;
            if let Some(started) = started {
                s.max_checkpoint = s
                    .max_checkpoint
                    .max(Duration::from_millis(now.saturating_sub(started)));
            }
        });
        (self.on_commit)(&info);
        Ok(())
    }

    fn activate(&mut self, frontier: Option<Time>) -> Result<()> {
        loop {
            let boundary = self.next_id.saturating_mul(self.interval);
            match frontier {
                Some(f) if f >= boundary && f < crate::stateful::END => {
                    // Every part of this checkpoint that will ever come is here: each
                    // instance sends it at the boundary's time. An instance whose input ended
                    // before it saw the boundary pass (its frontier jumped to the end) sends
                    // only its last part, maybe later; the checkpoint is then incomplete and
                    // skipped (the final one holds everything). An incomplete checkpoint is
                    // never committed.
                    let parts = self.parts.remove(&self.next_id).unwrap_or_default();
                    if self.complete(&parts) {
                        self.commit(self.next_id, parts, boundary)?;
                    } else {
                        self.shared.update(|s| s.skipped += 1);
                    }
                    self.next_id += 1;
                }
                Some(_) => return Ok(()),
                None => break,
            }
        }
        // The end of the input. The checkpoints every instance took a part of are committed;
        // an instance whose input ended before it saw a boundary pass took its last part
        // instead, so the trailing ones may be incomplete: they are skipped.
        while let Some(parts) = self.parts.remove(&self.next_id) {
            if !self.complete(&parts) {
                break;
            }
            let boundary = self.next_id.saturating_mul(self.interval);
            self.commit(self.next_id, parts, boundary)?;
            self.next_id += 1;
        }
        if self.last.is_empty() {
            return Ok(());
        }
        // The final checkpoint: every instance's last part, under a number after every part's.
        let id = self
            .last
            .iter()
            .map(|(id, _)| *id)
            .max()
            .unwrap_or(0)
            .max(self.next_id);
        let parts = std::mem::take(&mut self.last)
            .into_iter()
            .map(|(_, file)| file)
            .collect();
        self.commit(id, parts, Time::MAX)?;
        self.next_id = id + 1;
        self.parts.clear();
        Ok(())
    }
}

/// Builds the committer of `job` on `parts`: every worker's parts go to worker 0.
pub(crate) fn committer<'scope, F>(
    job: &Job<'scope>,
    parts: StreamVec<'scope, Time, Part>,
    on_commit: F,
) where
    F: FnMut(&CheckpointInfo) + 'static,
{
    let mut committer = Committer {
        storage: job.config.storage.clone(),
        interval: job.config.interval,
        next_id: job.first_id(),
        operators: job.operators.clone(),
        has_sources: !job.sources.is_empty(),
        positions: job.positions.clone(),
        held: BTreeMap::new(),
        parts: BTreeMap::new(),
        last: Vec::new(),
        started: BTreeMap::new(),
        sinks: job
            .sinks
            .iter()
            .map(|dir| (dir.clone(), BTreeMap::new()))
            .collect(),
        on_commit,
        shared: job.shared.clone(),
        writer: format!("{}-committer", job.writer),
    };
    let is_committer = job.worker() == 0;
    parts.sink(
        Exchange::new(|_: &Part| 0),
        "commit",
        move |(input, frontier)| {
            if !is_committer {
                // Every part goes to worker 0; nothing arrives here.
                input.for_each_stamp(|_, _| {});
                return;
            }
            input.for_each_stamp(|cap, batches| {
                let Some(&time) = cap.least() else {
                    return;
                };
                for batch in batches {
                    for part in batch.drain(..) {
                        match part {
                            Part::Snapshot {
                                id,
                                file,
                                captured_ms,
                                last,
                            } => {
                                let file: CheckpointFile = match serde_json::from_str(&file) {
                                    Ok(file) => file,
                                    Err(e) => {
                                        committer.shared.fail(Error::Backend {
                                            backend: "timely job",
                                            message: format!(
                                                "a checkpoint part's description: {e}"
                                            ),
                                        });
                                        continue;
                                    }
                                };
                                if last {
                                    committer.last.push((id, file));
                                } else {
                                    committer.parts.entry(id).or_default().push(file);
                                }
                                let first = committer.started.entry(id).or_insert(captured_ms);
                                *first = (*first).min(captured_ms);
                            }
                            Part::Output { sink, line } => {
                                if let Some((_, lines)) = committer.sinks.get_mut(sink) {
                                    lines.entry(time).or_default().push(line);
                                }
                            }
                            Part::Position {
                                source,
                                partition,
                                position,
                            } => committer
                                .held
                                .entry(time)
                                .or_default()
                                .push((source, partition, position)),
                        }
                    }
                }
            });
            if committer.shared.failed() {
                return;
            }
            let frontier = frontier.frontier().first().copied();
            if let Err(e) = committer.activate(frontier) {
                committer.shared.fail(e);
            }
        },
    );
}

/// Renames a sink's pending file of checkpoint `id` (written before it committed) to its
/// final name; a pending file of a later checkpoint was not committed and stays to be
/// overwritten.
pub(crate) fn finish_sink_commits(dir: &Path, id: u64) -> Result<()> {
    let pending = dir.join(format!("{id}.pending"));
    if pending.exists() {
        let done = dir.join(format!("{id}.txt"));
        std::fs::rename(&pending, &done).map_err(|e| crate::io_error(&done, e))?;
    }
    Ok(())
}
