//! Periodic checkpoints while a job runs: incremental where the backend tracks changes,
//! asynchronous on a tokio runtime.
//!
//! A checkpoint has two steps. The **synchronous step** runs on the processing thread, between
//! two records, in [`Checkpointer::poll`]: every operator instance copies what its snapshot
//! holds out of its backend (the whole state, or for an incremental snapshot only the entries
//! changed since its previous one) into a [`SnapshotImage`] that owns its bytes. The
//! **asynchronous step** runs on tokio's blocking pool while processing goes on: sorting,
//! encoding, compressing, writing and fsyncing the snapshot files, then committing the
//! manifest. Updates made after the synchronous step are in the next checkpoint, not this one.
//!
//! A backend with a native format (RocksDB) instead writes its own files in the synchronous
//! step (a memtable flush and hard links), and the asynchronous step moves them into the
//! storage, sharing the immutable ones with earlier checkpoints: incremental by nature.
//!
//! Flink's rules apply: one checkpoint in flight at a time (a checkpoint that falls due while
//! one is being written starts when it is done), and a failed checkpoint loses nothing
//! committed; the next one is then a full one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::data::backend::NativeFiles;
use crate::model::error::{Error, Result};
use crate::model::keygroup::KeyGroupRange;
use crate::persist::checkpoint::{CheckpointInfo, CheckpointStorage, SnapshotKind, SnapshotRef};
use crate::persist::snapshot::{SnapshotImage, SnapshotOptions};
use crate::persist::store::CheckpointStore;

/// How and where a job checkpoints.
///
/// ```
/// use std::time::Duration;
/// use statewright::checkpointer::CheckpointConfig;
///
/// let config = CheckpointConfig::new("/var/lib/job/checkpoints")
///     .interval(Duration::from_secs(30))
///     .max_retained(5)
///     .incremental(true)
///     .max_chain(10);
/// assert_eq!(config.interval, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// The checkpoint directory (see [`CheckpointStorage`]), or where [`store`](Self::store)
    /// is.
    pub storage: PathBuf,
    /// The store checkpoints go to instead of the directory `storage`, when set (see
    /// [`on_store`](Self::on_store)).
    pub store: Option<StoreHandle>,
    /// Time between the starts of two checkpoints (default: 10 s).
    pub interval: Duration,
    /// Compress snapshot blocks with LZ4 (default: on).
    pub compression: bool,
    /// Committed checkpoints to keep (default: 3); files a kept incremental checkpoint needs
    /// are kept too.
    pub max_retained: usize,
    /// Take incremental snapshots where the backend tracks changes (default: on); backends
    /// that cannot always take full ones.
    pub incremental: bool,
    /// Take the backend's native checkpoints where it has them (default: on): RocksDB then
    /// writes only the SST files earlier checkpoints do not have. Off, every backend writes
    /// canonical snapshots, which restore into any backend.
    pub native: bool,
    /// Incremental snapshots on top of a full one before the next full one (default: 10).
    pub max_chain: usize,
    /// The next snapshot is a full one once the incremental snapshots of the chain together
    /// are larger than this fraction of their full snapshot (default: 1.0), so a restore never
    /// reads much more than the state.
    pub max_chain_ratio: f64,
}

/// A [`CheckpointStore`] in a [`CheckpointConfig`]: configurations are equal when they name
/// the same store (the same allocation).
#[derive(Debug, Clone)]
pub struct StoreHandle(pub Arc<dyn CheckpointStore>);

impl PartialEq for StoreHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl CheckpointConfig {
    /// The defaults, checkpointing into `storage`.
    pub fn new(storage: impl Into<PathBuf>) -> Self {
        Self {
            storage: storage.into(),
            store: None,
            interval: Duration::from_secs(10),
            compression: true,
            max_retained: 3,
            incremental: true,
            native: true,
            max_chain: 10,
            max_chain_ratio: 1.0,
        }
    }

    /// The defaults, checkpointing into any [`CheckpointStore`] (an object store, ...).
    pub fn on_store(store: Arc<dyn CheckpointStore>) -> Self {
        let mut config = Self::new(store.locate(""));
        config.store = Some(StoreHandle(store));
        config
    }

    /// Sets [`interval`](Self::interval).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets [`compression`](Self::compression).
    #[must_use]
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Sets [`max_retained`](Self::max_retained) (at least 1).
    #[must_use]
    pub fn max_retained(mut self, n: usize) -> Self {
        self.max_retained = n.max(1);
        self
    }

    /// Sets [`incremental`](Self::incremental).
    #[must_use]
    pub fn incremental(mut self, on: bool) -> Self {
        self.incremental = on;
        self
    }

    /// Sets [`native`](Self::native).
    #[must_use]
    pub fn native(mut self, on: bool) -> Self {
        self.native = on;
        self
    }

    /// Sets [`max_chain`](Self::max_chain).
    #[must_use]
    pub fn max_chain(mut self, n: usize) -> Self {
        self.max_chain = n;
        self
    }

    /// Sets [`max_chain_ratio`](Self::max_chain_ratio).
    #[must_use]
    pub fn max_chain_ratio(mut self, ratio: f64) -> Self {
        self.max_chain_ratio = ratio;
        self
    }

    /// Opens the storage this configuration describes.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn open_storage(&self) -> Result<CheckpointStorage> {
        let storage = match &self.store {
            Some(StoreHandle(store)) => CheckpointStorage::from_store(Arc::clone(store)),
            None => CheckpointStorage::open(&self.storage)?,
        };
        Ok(storage
            .max_retained(self.max_retained)
            .snapshot_options(SnapshotOptions {
                compression: self.compression,
                ..SnapshotOptions::default()
            }))
    }
}

/// An operator instance a [`Checkpointer`] can snapshot; [`Bound`](crate::Bound) is one.
pub trait Checkpointable {
    /// The operator's name.
    fn operator_name(&self) -> &'static str;
    /// The key groups the instance owns.
    fn key_groups(&self) -> KeyGroupRange;
    /// Whether the backend tracks changes since the instance's last full capture.
    fn is_tracking_changes(&self) -> bool;
    /// Copies the whole state out, then starts (or, with `false`, stops) tracking changes.
    ///
    /// # Errors
    ///
    /// A backend failure.
    fn capture_full(&mut self, track_changes: bool) -> Result<SnapshotImage>;
    /// Takes the changes since the last capture.
    ///
    /// # Errors
    ///
    /// When not tracking changes; a backend failure.
    fn capture_changes(&mut self) -> Result<SnapshotImage>;
    /// Writes the backend's native checkpoint files and stops tracking changes; `None` when
    /// the backend has no native format. Returns the files and the operator's maximum
    /// parallelism.
    ///
    /// # Errors
    ///
    /// A backend or I/O failure.
    fn capture_native(&mut self) -> Result<Option<(NativeFiles, u16)>>;
}

/// What the synchronous step of a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointStarted {
    /// How long processing was paused to capture the state.
    pub sync_pause: Duration,
    /// Snapshots captured (one per operator instance), and how many of them are incremental.
    pub snapshots: usize,
    /// Incremental snapshots among them.
    pub incremental: usize,
    /// Native snapshots among them.
    pub native: usize,
    /// Entries captured (changes, for incremental snapshots).
    pub entries: u64,
}

/// A committed checkpoint and what it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The checkpoint, as the manifest records it.
    pub info: CheckpointInfo,
    /// The synchronous step.
    pub started: CheckpointStarted,
    /// From the start of the synchronous step to the commit.
    pub duration: Duration,
}

#[derive(Debug)]
struct Chain {
    links: Vec<SnapshotRef>,
    full_bytes: u64,
    increment_bytes: u64,
}

type InstanceKey = (String, u16, u16);

fn instance_key(operator: &str, range: KeyGroupRange) -> InstanceKey {
    (operator.to_owned(), range.first(), range.last())
}

enum Captured {
    Image(SnapshotImage, Vec<SnapshotRef>),
    Native {
        operator: &'static str,
        range: KeyGroupRange,
        max_parallelism: u16,
        files: NativeFiles,
    },
}

struct Job {
    captured: Vec<Captured>,
}

impl Job {
    fn run(self, storage: &CheckpointStorage) -> Result<CheckpointInfo> {
        let mut pending = storage.begin()?;
        for captured in self.captured {
            match captured {
                Captured::Image(image, base) => {
                    pending.add_image(image, &base)?;
                }
                Captured::Native {
                    operator,
                    range,
                    max_parallelism,
                    files,
                } => {
                    pending.add_native_files(operator, range, max_parallelism, files)?;
                }
            }
        }
        pending.commit()
    }
}

struct InFlight {
    done: tokio::sync::oneshot::Receiver<Result<CheckpointInfo>>,
    keys: Vec<InstanceKey>,
    started: CheckpointStarted,
    at: Instant,
}

/// Takes checkpoints of a job's operator instances: periodically ([`poll`](Self::poll)) or
/// when asked ([`trigger`](Self::trigger), [`checkpoint_now`](Self::checkpoint_now)),
/// incremental where it can, written asynchronously on tokio's blocking pool.
///
/// ```
/// use std::time::Duration;
/// use statewright::prelude::*;
/// use statewright::checkpointer::{CheckpointConfig, Checkpointer};
///
/// #[derive(StatefulOperator, Default)]
/// #[operator(name = "counts", key = u64)]
/// struct Counts { n: ValueState<u64> }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let config = CheckpointConfig::new(dir.path()).interval(Duration::from_millis(100));
/// let mut checkpointer = Checkpointer::new(config)?;
/// let mut op = Counts::default().bind(HeapBackend::new())?;
///
/// for i in 0..10_000u64 {
///     op.key(&(i % 100))?.n().update(|n| n.unwrap_or(0) + 1)?;
///     checkpointer.poll(&mut [&mut op])?; // a relaxed load, unless a checkpoint is due
/// }
/// checkpointer.trigger(&mut [&mut op])?;
/// let report = checkpointer.wait().await.expect("one in flight")?;
/// assert_eq!(report.info.id, checkpointer.storage().list()?.last().unwrap().id);
///
/// let restored = Counts::default().restore(HeapBackend::new(), checkpointer.storage(), RestorePoint::Latest)?;
/// # let mut restored = restored;
/// assert_eq!(restored.key(&7)?.n().get_owned()?, Some(100));
/// # Ok(()) }
/// ```
pub struct Checkpointer {
    storage: CheckpointStorage,
    config: CheckpointConfig,
    chains: HashMap<InstanceKey, Chain>,
    due: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
    in_flight: Option<InFlight>,
    finished: Option<Result<CheckpointReport>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("config", &self.config)
            .field("in_flight", &self.in_flight.is_some())
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens the storage and starts the interval timer (a small thread that raises a flag
    /// every interval; [`poll`](Self::poll) reads it).
    ///
    /// # Errors
    ///
    /// When the storage directory cannot be created.
    pub fn new(config: CheckpointConfig) -> Result<Self> {
        let storage = config.open_storage()?;
        let due = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (due, stop) = (due.clone(), stop.clone());
            // At most a thousand checkpoints a second; an interval too long to add to a clock
            // reading means "only when triggered".
            let interval = config.interval.max(Duration::from_millis(1));
            std::thread::Builder::new()
                .name("statewright-checkpoint-timer".into())
                .spawn(move || {
                    let mut next = Instant::now().checked_add(interval);
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        match next {
                            Some(at) if now >= at => {
                                due.store(true, Ordering::Relaxed);
                                next = now.checked_add(interval);
                            }
                            Some(at) => std::thread::park_timeout(at - now),
                            None => std::thread::park(),
                        }
                    }
                })
                .map_err(|e| Error::io(&config.storage, e))?
        };
        Ok(Self {
            storage,
            config,
            chains: HashMap::new(),
            due,
            stop,
            ticker: Some(ticker),
            in_flight: None,
            finished: None,
        })
    }

    /// The storage checkpoints go to.
    #[must_use]
    pub fn storage(&self) -> &CheckpointStorage {
        &self.storage
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// Whether a checkpoint is being written.
    #[must_use]
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Call between records. When a checkpoint is due and none is being written, takes the
    /// synchronous step and hands the rest to tokio's blocking pool; otherwise costs a
    /// relaxed atomic load (and, with a checkpoint in flight, a check whether it finished).
    ///
    /// # Errors
    ///
    /// A failure of the synchronous step (the checkpoint is then not taken, and the next one
    /// is a full one); [`Error::CheckpointNotStarted`] outside a tokio runtime.
    pub fn poll(
        &mut self,
        ops: &mut [&mut dyn Checkpointable],
    ) -> Result<Option<CheckpointStarted>> {
        if self.in_flight.is_some() {
            self.reap();
        }
        if !self.due.load(Ordering::Relaxed) || self.in_flight.is_some() {
            return Ok(None);
        }
        self.trigger(ops).map(Some)
    }

    /// Starts a checkpoint now: the synchronous step here, the writing on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointNotStarted`] while another checkpoint is being written or outside a
    /// tokio runtime; a failure of the synchronous step.
    pub fn trigger(&mut self, ops: &mut [&mut dyn Checkpointable]) -> Result<CheckpointStarted> {
        self.reap();
        if self.in_flight.is_some() {
            return Err(Error::CheckpointNotStarted {
                reason: "the previous checkpoint is still being written",
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| Error::CheckpointNotStarted {
                reason: "asynchronous checkpoints need a tokio runtime (use checkpoint_now without one)",
            })?;
        let at = Instant::now();
        let (job, keys, started) = self.capture(ops, at)?;
        let storage = self.storage.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn_blocking(move || {
            // The receiver may be gone (the checkpointer was dropped); the commit stands.
            let _ = tx.send(job.run(&storage));
        });
        self.in_flight = Some(InFlight {
            done: rx,
            keys,
            started,
            at,
        });
        Ok(started)
    }

    /// Takes a checkpoint and writes it on this thread (no runtime needed).
    ///
    /// # Errors
    ///
    /// [`Error::CheckpointNotStarted`] while an asynchronous checkpoint is being written; a
    /// backend or I/O failure (the previous checkpoints are untouched, the next one is full).
    pub fn checkpoint_now(
        &mut self,
        ops: &mut [&mut dyn Checkpointable],
    ) -> Result<CheckpointReport> {
        self.reap();
        if self.in_flight.is_some() {
            return Err(Error::CheckpointNotStarted {
                reason: "the previous checkpoint is still being written",
            });
        }
        let at = Instant::now();
        let (job, keys, started) = self.capture(ops, at)?;
        let result = job.run(&self.storage);
        self.complete(result, &keys, started, at)
    }

    /// Waits for the checkpoint being written, if any, and returns how it ended.
    pub async fn wait(&mut self) -> Option<Result<CheckpointReport>> {
        let in_flight = self.in_flight.take()?;
        let result = in_flight
            .done
            .await
            .unwrap_or(Err(Error::CheckpointNotStarted {
                reason: "the task writing the checkpoint ended without a result",
            }));
        Some(self.complete(result, &in_flight.keys, in_flight.started, in_flight.at))
    }

    /// How the last asynchronous checkpoint that finished since the last call ended.
    pub fn take_finished(&mut self) -> Option<Result<CheckpointReport>> {
        self.reap();
        self.finished.take()
    }

    fn reap(&mut self) {
        let Some(in_flight) = &mut self.in_flight else {
            return;
        };
        let result = match in_flight.done.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return,
            Ok(result) => result,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                Err(Error::CheckpointNotStarted {
                    reason: "the task writing the checkpoint ended without a result",
                })
            }
        };
        if let Some(in_flight) = self.in_flight.take() {
            let report = self.complete(result, &in_flight.keys, in_flight.started, in_flight.at);
            self.finished = Some(report);
        }
    }

    /// The synchronous step.
    fn capture(
        &mut self,
        ops: &mut [&mut dyn Checkpointable],
        at: Instant,
    ) -> Result<(Job, Vec<InstanceKey>, CheckpointStarted)> {
        self.due.store(false, Ordering::Relaxed);
        let mut captured = Vec::with_capacity(ops.len());
        let mut keys = Vec::with_capacity(ops.len());
        let mut started = CheckpointStarted {
            sync_pause: Duration::ZERO,
            snapshots: 0,
            incremental: 0,
            native: 0,
            entries: 0,
        };
        for op in ops.iter_mut() {
            keys.push(instance_key(op.operator_name(), op.key_groups()));
            match self.capture_one(&mut **op) {
                Ok(c) => {
                    started.snapshots += 1;
                    match &c {
                        Captured::Image(image, _) => {
                            started.incremental += usize::from(image.is_incremental());
                            started.entries += image.entries();
                        }
                        Captured::Native { .. } => started.native += 1,
                    }
                    captured.push(c);
                }
                Err(e) => {
                    // Changes already taken are in no checkpoint: start these chains anew.
                    for k in &keys {
                        self.chains.remove(k);
                    }
                    return Err(e);
                }
            }
        }
        started.sync_pause = at.elapsed();
        metrics::histogram!("statewright_checkpoint_sync_pause_seconds")
            .record(started.sync_pause.as_secs_f64());
        Ok((Job { captured }, keys, started))
    }

    /// One instance's part of the synchronous step: the backend's native files when it has
    /// them and they are wanted, otherwise an incremental image when its chain may grow, or a
    /// full one.
    fn capture_one(&self, op: &mut dyn Checkpointable) -> Result<Captured> {
        if self.config.native
            && let Some((files, max_parallelism)) = op.capture_native()?
        {
            return Ok(Captured::Native {
                operator: op.operator_name(),
                range: op.key_groups(),
                max_parallelism,
                files,
            });
        }
        let key = instance_key(op.operator_name(), op.key_groups());
        let chain = self.chains.get(&key).filter(|c| {
            self.config.incremental
                && op.is_tracking_changes()
                && c.links.len() <= self.config.max_chain
                && (c.increment_bytes as f64) <= self.config.max_chain_ratio * c.full_bytes as f64
        });
        Ok(match chain {
            Some(c) => Captured::Image(op.capture_changes()?, c.links.clone()),
            None => Captured::Image(op.capture_full(self.config.incremental)?, Vec::new()),
        })
    }

    fn complete(
        &mut self,
        result: Result<CheckpointInfo>,
        keys: &[InstanceKey],
        started: CheckpointStarted,
        at: Instant,
    ) -> Result<CheckpointReport> {
        match result {
            Ok(info) => {
                // An instance left out of this checkpoint may lose its bases to retention: its
                // next checkpoint is a full one.
                let written: Vec<InstanceKey> = info
                    .files
                    .iter()
                    .map(|f| instance_key(&f.operator, f.key_groups()))
                    .collect();
                self.chains.retain(|k, _| written.contains(k));
                for (f, key) in info.files.iter().zip(written) {
                    match f.kind {
                        SnapshotKind::Full => {
                            self.chains.insert(
                                key,
                                Chain {
                                    links: f.chain(),
                                    full_bytes: f.bytes,
                                    increment_bytes: 0,
                                },
                            );
                        }
                        SnapshotKind::Incremental => {
                            if let Some(c) = self.chains.get_mut(&key) {
                                c.links = f.chain();
                                c.increment_bytes += f.bytes;
                            }
                        }
                        // Shares files through the storage, not through a chain.
                        SnapshotKind::Native => {
                            self.chains.remove(&key);
                        }
                    }
                }
                let duration = at.elapsed();
                metrics::histogram!("statewright_checkpoint_duration_seconds")
                    .record(duration.as_secs_f64());
                metrics::counter!("statewright_checkpoints_completed_total").increment(1);
                metrics::counter!("statewright_checkpoint_bytes_total").increment(info.bytes());
                Ok(CheckpointReport {
                    info,
                    started,
                    duration,
                })
            }
            Err(e) => {
                for k in keys {
                    self.chains.remove(k);
                }
                metrics::counter!("statewright_checkpoints_failed_total").increment(1);
                Err(e)
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
