//! A job: the stateful part of one timely dataflow on one worker, with the checkpoint it
//! restored from and the parts its operators write.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::{CheckpointInfo, Error, Result};
use timely::dataflow::operators::Concatenate;
use timely::dataflow::{Scope, StreamVec};
use timely::worker::Worker;

/// The timestamp of a job's dataflow: event time, in whatever unit the sources give it
/// (milliseconds for the watermark of event-time timers and TTL).
pub type Time = u64;

/// Where a job keeps its checkpoints and how often it takes them.
///
/// The workers of one process share the clones of one `JobConfig`: when one of them fails,
/// the others stop too (make a new one for each run).
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub(crate) storage: CheckpointStorage,
    pub(crate) interval: Time,
    pub(crate) fresh: bool,
    pub(crate) max_chain: usize,
    /// The first failure of any worker of this process.
    pub(crate) failed: Arc<Mutex<Option<String>>>,
}

impl JobConfig {
    /// Checkpoints in `storage` every 1,000 units of time, restoring from its latest
    /// checkpoint when it has one.
    #[must_use]
    pub fn new(storage: CheckpointStorage) -> Self {
        Self {
            storage,
            interval: 1_000,
            fresh: false,
            max_chain: 0,
            failed: Arc::new(Mutex::new(None)),
        }
    }

    /// Takes checkpoint `n` once every operator's input frontier has passed time
    /// `n * interval - 1`: it holds every record with an earlier time and none later.
    /// Checkpoint numbers follow time, so every worker of every process agrees on them
    /// without talking. Zero is taken as one.
    #[must_use]
    pub fn checkpoint_every(mut self, interval: Time) -> Self {
        self.interval = interval.max(1);
        self
    }

    /// Refuses to start when the storage already holds a checkpoint (instead of restoring
    /// the latest one): for a job that must start from nothing.
    #[must_use]
    pub fn fresh(mut self) -> Self {
        self.fresh = true;
        self
    }

    /// Incremental parts: an operator instance whose backend tracks changes (the heap) writes
    /// the changes since its previous part when that part is in a committed checkpoint, up to
    /// `n` parts on one full one; 0 (the default) writes full parts only. RocksDB's parts are
    /// always full. Tracking costs every write a little and a part's changes are taken in the
    /// synchronous step, so incremental parts pay when a small share of the state changes
    /// between checkpoints; when most of it does, full parts (read on the writer's thread)
    /// pause less.
    #[must_use]
    pub fn max_chain(mut self, n: usize) -> Self {
        self.max_chain = n;
        self
    }

    /// The checkpoint storage.
    #[must_use]
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The time between checkpoints.
    #[must_use]
    pub fn interval(&self) -> Time {
        self.interval
    }
}

/// What an operator sends its job's committer: its parts of checkpoints, and where sources
/// are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Part {
    /// An operator instance's snapshot for checkpoint `id`.
    Snapshot {
        /// The checkpoint's number.
        id: u64,
        /// The file written, as the manifest records it (JSON: the manifest's own encoding,
        /// which bincode cannot carry).
        file: String,
        /// When its capture began (milliseconds since the Unix epoch).
        captured_ms: u64,
        /// The instance's last part, at the end of its input: the final checkpoint, whose
        /// number the committer chooses (`id` is the number it was written under).
        last: bool,
    },
    /// A line of output of sink `sink`, at this message's time.
    Output {
        /// The sink's index in the job.
        sink: usize,
        /// The line.
        line: String,
    },
    /// A source partition's position at this message's time + 1: resuming there replays
    /// exactly the records from that time on.
    Position {
        /// The source's name.
        source: String,
        /// The partition.
        partition: u32,
        /// Its position.
        position: u64,
    },
}

/// What a worker's checkpoints took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Parts of checkpoints this worker's operators captured.
    pub parts: u64,
    /// The longest synchronous capture of a part: how long an operator stopped processing.
    pub max_pause: Duration,
    /// All synchronous captures together.
    pub total_pause: Duration,
    /// Checkpoints this worker committed (worker 0 commits).
    pub committed: u64,
    /// The longest time from a checkpoint's first capture to its commit (on worker 0).
    pub max_checkpoint: Duration,
    /// When the last of this worker's operator instances saw its input end (before its
    /// final checkpoint): the end of the records' processing.
    pub input_ended: Option<std::time::Instant>,
    /// Checkpoints skipped because an instance's input ended before their time (on worker
    /// 0): the final checkpoint, after them, holds everything.
    pub skipped: u64,
}

/// A worker's [`JobStats`], read while or after the job runs.
#[derive(Debug, Clone)]
pub struct StatsHandle(Rc<Cell<JobStats>>);

impl StatsHandle {
    /// The statistics so far.
    #[must_use]
    pub fn get(&self) -> JobStats {
        self.0.get()
    }
}

/// What a worker's operators share: the first failure, the newest committed checkpoint, and
/// the statistics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared {
    pub(crate) failure: Rc<RefCell<Option<Error>>>,
    pub(crate) process: Arc<Mutex<Option<String>>>,
    pub(crate) committed: Rc<Cell<Option<CheckpointId>>>,
    pub(crate) stats: Rc<Cell<JobStats>>,
}

impl Shared {
    /// Records the first failure; later ones are dropped (the job stops at the first).
    pub(crate) fn fail(&self, error: Error) {
        if let Ok(mut process) = self.process.lock()
            && process.is_none()
        {
            *process = Some(error.to_string());
        }
        let mut slot = self.failure.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.failure.borrow().is_some() || self.process.lock().map_or(true, |p| p.is_some())
    }

    /// The error that stops this worker: its own, or another worker's of this process.
    fn take_failure(&self) -> Option<Error> {
        if let Some(e) = self.failure.borrow_mut().take() {
            return Some(e);
        }
        let other = self
            .process
            .lock()
            .map_or_else(|_| Some("a worker panicked".to_owned()), |p| p.clone())?;
        Some(Error::Backend {
            backend: "timely job",
            message: format!("another worker of this process failed: {other}"),
        })
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut JobStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }
}

/// The source positions of a checkpoint, as every source's partitions were at its time.
#[derive(StatefulOperator, Default)]
#[operator(name = "sources", key = u64)]
pub(crate) struct SourcePositions {
    /// (source, partition, position) of every partition of every source.
    positions: UnionListState<(String, u32, u64)>,
}

impl SourcePositions {
    pub(crate) fn read(&self) -> Result<BTreeMap<(String, u32), u64>> {
        let mut out = BTreeMap::new();
        for (source, partition, position) in self.positions.to_vec()? {
            out.insert((source, partition), position);
        }
        Ok(out)
    }

    pub(crate) fn write(&mut self, positions: &BTreeMap<(String, u32), u64>) -> Result<()> {
        self.positions.clear();
        for ((source, partition), position) in positions {
            self.positions
                .add(&(source.clone(), *partition, *position))?;
        }
        Ok(())
    }
}

/// The stateful part of a dataflow on one worker: build it inside `worker.dataflow`, add
/// sources ([`source`](Self::source)) and stateful operators
/// ([`stateful`](Self::stateful)), then [`finish`](Self::finish) it and run the worker with
/// the handle it returns.
///
/// Every worker of every process builds the same job. Each restores, for each operator, the
/// key groups it owns from the latest checkpoint (any earlier parallelism), and each source
/// resumes its partitions where that checkpoint says.
pub struct Job<'scope> {
    pub(crate) scope: Scope<'scope, Time>,
    pub(crate) config: JobConfig,
    pub(crate) restored: Option<CheckpointInfo>,
    pub(crate) positions: BTreeMap<(String, u32), u64>,
    pub(crate) parts: Vec<StreamVec<'scope, Time, Part>>,
    pub(crate) operators: Vec<(&'static str, u16)>,
    pub(crate) sources: Vec<String>,
    pub(crate) sinks: Vec<std::path::PathBuf>,
    pub(crate) shared: Shared,
    pub(crate) writer: String,
}

impl std::fmt::Debug for Job<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("worker", &self.scope.index())
            .field("peers", &self.scope.peers())
            .field("restored", &self.restored.as_ref().map(|c| c.id))
            .field("operators", &self.operators)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl<'scope> Job<'scope> {
    /// Starts building a job on this worker: reads the latest checkpoint of the storage (all
    /// workers read the same one: nothing is committed until every worker has written its
    /// part) and the source positions it holds.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] when the configuration asks for a fresh start and the storage
    /// holds a checkpoint; the errors of reading the checkpoint.
    pub fn new(scope: Scope<'scope, Time>, config: &JobConfig) -> Result<Self> {
        let restored = config.storage.latest()?;
        if config.fresh
            && let Some(latest) = &restored
        {
            return Err(Error::Incompatible {
                operator: "job".into(),
                path: config.storage.dir().to_path_buf(),
                reason: format!(
                    "holds checkpoint {}, and the job was configured to start fresh",
                    latest.id
                ),
            });
        }
        let mut positions = BTreeMap::new();
        if let Some(info) = &restored
            && info
                .files
                .iter()
                .any(|f| f.operator == SourcePositions::DESCRIPTOR.name)
        {
            let mut bound = SourcePositions::default().bind(HeapBackend::new())?;
            bound.restore_from(&config.storage, RestorePoint::Id(info.id))?;
            positions = bound.operator().read()?;
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let writer = format!(
            "w{}-{}-{}",
            scope.index(),
            std::process::id(),
            nonce % 1_000_000_000_000
        );
        Ok(Self {
            scope,
            config: config.clone(),
            restored,
            positions,
            parts: Vec::new(),
            operators: Vec::new(),
            sources: Vec::new(),
            sinks: Vec::new(),
            shared: Shared {
                process: Arc::clone(&config.failed),
                ..Shared::default()
            },
            writer,
        })
    }

    /// The checkpoint this job restored from, when it did.
    #[must_use]
    pub fn restored(&self) -> Option<&CheckpointInfo> {
        self.restored.as_ref()
    }

    /// The dataflow scope, to add plain timely operators.
    #[must_use]
    pub fn scope(&self) -> Scope<'scope, Time> {
        self.scope
    }

    /// This worker's index among all workers of all processes.
    #[must_use]
    pub fn worker(&self) -> usize {
        self.scope.index()
    }

    /// How many workers the job has in all.
    #[must_use]
    pub fn peers(&self) -> usize {
        self.scope.peers()
    }

    /// The key groups this worker owns of an operator with `max_parallelism`: Flink's
    /// contiguous ranges, so that a key's worker is
    /// [`KeyGroupRange::instance_of`]`(key_group, max_parallelism, peers)`.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] when the job has more workers than `max_parallelism`.
    pub fn key_groups(&self, max_parallelism: u16) -> Result<KeyGroupRange> {
        let too_many = || Error::Incompatible {
            operator: "job".into(),
            path: self.config.storage.dir().to_path_buf(),
            reason: format!(
                "has {} workers, more than the operator's max_parallelism {max_parallelism}",
                self.peers()
            ),
        };
        let peers = u16::try_from(self.peers()).map_err(|_| too_many())?;
        let index = u16::try_from(self.worker()).map_err(|_| too_many())?;
        KeyGroupRange::for_instance(max_parallelism, peers, index).ok_or_else(too_many)
    }

    /// The first checkpoint number this run takes.
    pub(crate) fn first_id(&self) -> u64 {
        self.restored.as_ref().map_or(1, |c| c.id.0 + 1)
    }

    /// Records a stateful operator the committer expects a part of from every worker.
    pub(crate) fn expect(&mut self, name: &'static str, max_parallelism: u16) -> Result<()> {
        if self.operators.iter().any(|(n, _)| *n == name)
            || name == SourcePositions::DESCRIPTOR.name
        {
            return Err(Error::InvalidName {
                what: "operator",
                name: name.to_owned(),
                reason: "is already in this job: each stateful operator of a job needs its own name",
            });
        }
        self.operators.push((name, max_parallelism));
        Ok(())
    }

    /// Writes `stream` to the directory `dir` exactly once: each record becomes a line
    /// (`line`), and the lines of checkpoint `n` (the records with times in its interval)
    /// appear as the file `dir/<n>.txt` when checkpoint `n` commits, never before and never
    /// twice, whatever fails and restarts. The lines travel to worker 0, which commits
    /// checkpoints: the directory is on its machine (or a shared file system).
    ///
    /// Before the commit, worker 0 writes `dir/<n>.pending`; after it, renames it to
    /// `<n>.txt`. A restart renames the pending file of the checkpoint it restores (written
    /// and committed, but not yet renamed) and overwrites any later one.
    ///
    /// # Errors
    ///
    /// An I/O failure creating the directory or finishing a commit's rename.
    pub fn exactly_once_sink<O, F>(
        &mut self,
        stream: StreamVec<'scope, Time, O>,
        dir: impl Into<std::path::PathBuf>,
        line: F,
    ) -> Result<()>
    where
        O: Clone + 'static,
        F: Fn(&O) -> String + 'static,
    {
        use timely::dataflow::operators::vec::Map;
        let dir = dir.into();
        if self.worker() == 0 {
            std::fs::create_dir_all(&dir).map_err(|e| crate::io_error(&dir, e))?;
            if let Some(info) = &self.restored {
                crate::commit::finish_sink_commits(&dir, info.id.0)?;
            }
        }
        let sink = self.sinks.len();
        self.sinks.push(dir);
        self.parts.push(stream.map(move |o| Part::Output {
            sink,
            line: line(&o),
        }));
        Ok(())
    }

    /// Builds the committer (on worker 0) and returns the handle that runs this worker.
    /// `on_commit` runs on worker 0 after each checkpoint commits, with what was committed:
    /// the hook for committing a sink's output or offsets downstream.
    pub fn finish<F>(self, on_commit: F) -> JobHandle
    where
        F: FnMut(&CheckpointInfo) + 'static,
    {
        let shared = self.shared.clone();
        let parts = self.scope.concatenate(self.parts.clone());
        crate::commit::committer(&self, parts, on_commit);
        JobHandle { shared }
    }
}

/// Runs one worker of a job to its end.
#[derive(Debug)]
pub struct JobHandle {
    shared: Shared,
}

/// How long an idle worker parks at most before it looks for a failure again (a writer
/// thread's finished part wakes it sooner).
const PARK: Duration = Duration::from_millis(50);

impl JobHandle {
    /// Steps the worker until every dataflow on it is done (parking while idle), or until
    /// an operator fails.
    ///
    /// # Errors
    ///
    /// The first error an operator on this worker met (a backend, checkpoint or source
    /// failure): the job stops; restart it to resume from the latest checkpoint.
    pub fn run(self, worker: &mut Worker) -> Result<Option<CheckpointId>> {
        while worker.step_or_park(Some(PARK)) {
            if let Some(e) = self.shared.take_failure() {
                return Err(e);
            }
        }
        if let Some(e) = self.shared.take_failure() {
            return Err(e);
        }
        Ok(self.shared.committed.get())
    }

    /// This worker's checkpoint statistics, to read while or after it runs.
    #[must_use]
    pub fn stats(&self) -> StatsHandle {
        StatsHandle(Rc::clone(&self.shared.stats))
    }

    /// The newest checkpoint this worker committed (worker 0 commits; `None` elsewhere).
    #[must_use]
    pub fn committed(&self) -> Option<CheckpointId> {
        self.shared.committed.get()
    }
}
