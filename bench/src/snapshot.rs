//! The `snapshot` workload of `WORKLOAD.md`: checkpoint and restore times and sizes, full and
//! incremental, and the backend-independent snapshot restored across backends.

use std::path::Path;
use std::time::Instant;

use statewright::checkpointer::{CheckpointConfig, Checkpointable, Checkpointer};
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::snapshot::{SnapshotOptions, SnapshotReader};
use statewright::{RocksDbBackend, RocksDbOptions, restore_native};

use crate::{BenchOp, Params, Store, TtlBenchOp};

/// One result line of the snapshot workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotLine {
    /// Backend name.
    pub backend: String,
    /// `snapshot_full`, `snapshot_incr_base`, `snapshot_incr_delta`, `restore_full`, ...
    pub workload: String,
    /// Keys.
    pub k: u64,
    /// Seconds, end to end.
    pub secs: f64,
    /// Seconds of the synchronous step of a checkpoint (processing paused), when there is one.
    pub sync_secs: Option<f64>,
    /// Bytes of the whole checkpointed state.
    pub state_bytes: u64,
    /// Bytes this checkpoint newly wrote.
    pub checkpointed_bytes: u64,
    /// Bytes on disk under the checkpoint directory.
    pub dir_bytes: u64,
    /// For restores: checked keys with a wrong value.
    pub verify_bad: Option<u64>,
}

impl std::fmt::Display for SnapshotLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statewright {} {} K={} secs={:.3}",
            self.backend, self.workload, self.k, self.secs
        )?;
        if let Some(s) = self.sync_secs {
            write!(f, " sync_secs={s:.4}")?;
        }
        write!(
            f,
            " state_bytes={} checkpointed_bytes={} dir_bytes={}",
            self.state_bytes, self.checkpointed_bytes, self.dir_bytes
        )?;
        if let Some(v) = self.verify_bad {
            write!(f, " verify_bad={v}")?;
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> statewright::Error + '_ {
    move |source| statewright::Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The keys the workload changes after the first checkpoint, with their final values.
fn changes(p: Params) -> std::collections::HashMap<u64, i64> {
    let mut out = std::collections::HashMap::new();
    for i in 0..(p.k / 100).max(1) {
        out.insert(p.key(i), -1 - i as i64);
    }
    out
}

/// Checks every `step`-th key and every changed key.
fn verify(
    s: &mut dyn Store,
    p: Params,
    changed: Option<&std::collections::HashMap<u64, i64>>,
) -> statewright::Result<u64> {
    let want = |j: u64| changed.and_then(|c| c.get(&j).copied()).unwrap_or(j as i64);
    let step = (p.k / 100_000).max(1);
    let mut bad = 0;
    let mut j = 0;
    while j < p.k {
        bad += u64::from(s.value_get(j)? != Some(want(j)));
        j += step;
    }
    for &k in changed.into_iter().flat_map(|c| c.keys()) {
        bad += u64::from(s.value_get(k)? != Some(want(k)));
    }
    Ok(bad)
}

/// A bound benchmark operator: state access, checkpoints, and its RocksDB database if any.
trait Job: Store + Checkpointable {
    fn rocksdb(&self) -> Option<&RocksDbBackend> {
        None
    }
}
impl Job for Bound<BenchOp, HeapBackend> {}
impl Job for Bound<TtlBenchOp, TtlBackend<HeapBackend>> {}
impl Job for Bound<BenchOp, RocksDbBackend> {
    fn rocksdb(&self) -> Option<&RocksDbBackend> {
        Some(self.backend())
    }
}
impl Job for Bound<TtlBenchOp, TtlBackend<RocksDbBackend>> {
    fn rocksdb(&self) -> Option<&RocksDbBackend> {
        Some(self.backend().inner())
    }
}

/// Runs the snapshot workload on `backend` (`heap`, `rocksdb`, `ttl-heap`, `ttl-rocksdb`).
///
/// # Errors
///
/// An unknown backend, a state, backend or I/O error.
pub fn run(backend: &str, p: Params) -> statewright::Result<Vec<SnapshotLine>> {
    let work = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let line = |workload: &str, secs: f64| SnapshotLine {
        backend: backend.to_owned(),
        workload: workload.to_owned(),
        k: p.k,
        secs,
        sync_secs: None,
        state_bytes: 0,
        checkpointed_bytes: 0,
        dir_bytes: 0,
        verify_bad: None,
    };
    let rocks = || RocksDbBackend::open_temporary(RocksDbOptions::default());
    let mut job: Box<dyn Job> = match backend {
        "heap" => Box::new(BenchOp::default().bind(HeapBackend::new())?),
        "rocksdb" => Box::new(BenchOp::default().bind(rocks()?)?),
        "ttl-heap" => Box::new(TtlBenchOp::default().bind(TtlBackend::new(HeapBackend::new()))?),
        "ttl-rocksdb" => Box::new(TtlBenchOp::default().bind(TtlBackend::new(rocks()?))?),
        other => {
            return Err(statewright::Error::Backend {
                backend: "statebench",
                message: format!(
                    "the snapshot workload runs on heap, rocksdb, ttl-heap and ttl-rocksdb, not `{other}`"
                ),
            });
        }
    };
    let mut lines = Vec::new();

    // 1. Populate.
    let start = Instant::now();
    for j in 0..p.k {
        job.value_set(j, j as i64)?;
    }
    lines.push(line("snapshot_populate", start.elapsed().as_secs_f64()));

    // 2. Checkpoint 1: the synchronous and asynchronous steps back to back on this thread.
    let dir = work.path().join("checkpoints");
    // Canonical snapshots here; RocksDB's native checkpoints below, in a storage of their own.
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::new(&dir).max_retained(2).native(false))?;
    let first = checkpointer.checkpoint_now(&mut [job.as_mut() as &mut dyn Checkpointable])?;
    lines.push(SnapshotLine {
        sync_secs: Some(first.started.sync_pause.as_secs_f64()),
        state_bytes: first.info.restore_bytes(),
        checkpointed_bytes: first.info.bytes(),
        dir_bytes: dir_bytes(&dir),
        ..line("snapshot_full", first.duration.as_secs_f64())
    });
    // RocksDB's incremental checkpoints are its native ones (shared SST files).
    let native_dir = work.path().join("native");
    let mut native = Checkpointer::new(CheckpointConfig::new(&native_dir).max_retained(2))?;
    if job.rocksdb().is_some() {
        let base = native.checkpoint_now(&mut [job.as_mut() as &mut dyn Checkpointable])?;
        lines.push(SnapshotLine {
            sync_secs: Some(base.started.sync_pause.as_secs_f64()),
            state_bytes: base.info.restore_bytes(),
            checkpointed_bytes: base.info.bytes(),
            dir_bytes: dir_bytes(&native_dir),
            ..line("snapshot_incr_base", base.duration.as_secs_f64())
        });
    }

    // 3. Change 1% of the keys, then checkpoint 2.
    let changed = changes(p);
    for i in 0..(p.k / 100).max(1) {
        job.value_set(p.key(i), -1 - i as i64)?;
    }
    let second = checkpointer.checkpoint_now(&mut [job.as_mut() as &mut dyn Checkpointable])?;
    let incremental = second.info.kind() == statewright::checkpoint::SnapshotKind::Incremental;
    // RocksDB's canonical checkpoints are full ones (`snapshot_full_next`: the pause of a
    // checkpoint that flushes only what changed since the last); its incremental ones are native.
    lines.push(SnapshotLine {
        sync_secs: Some(second.started.sync_pause.as_secs_f64()),
        state_bytes: second.info.restore_bytes(),
        checkpointed_bytes: second.info.bytes(),
        dir_bytes: dir_bytes(&dir),
        ..line(
            if incremental {
                "snapshot_incr_delta"
            } else {
                "snapshot_full_next"
            },
            second.duration.as_secs_f64(),
        )
    });

    if job.rocksdb().is_some() {
        let delta = native.checkpoint_now(&mut [job.as_mut() as &mut dyn Checkpointable])?;
        lines.push(SnapshotLine {
            sync_secs: Some(delta.started.sync_pause.as_secs_f64()),
            state_bytes: delta.info.restore_bytes(),
            checkpointed_bytes: delta.info.bytes(),
            dir_bytes: dir_bytes(&native_dir),
            ..line("snapshot_incr_delta", delta.duration.as_secs_f64())
        });
        let start = Instant::now();
        let target = work.path().join("native-restored");
        let mut restored: Box<dyn Job> = if backend == "rocksdb" {
            Box::new(restore_native(
                BenchOp::default(),
                native.storage(),
                RestorePoint::Latest,
                KeyGroupRange::all(BenchOp::DESCRIPTOR.max_parallelism),
                &target,
                RocksDbOptions::default(),
            )?)
        } else {
            // TTL state: the TTL wrapper over a new database, restored through the one path.
            let db = RocksDbBackend::open(&target, RocksDbOptions::default())?;
            let mut op = TtlBenchOp::default().bind(TtlBackend::new(db))?;
            op.restore_from(native.storage(), RestorePoint::Latest)?;
            Box::new(op)
        };
        let secs = start.elapsed().as_secs_f64();
        lines.push(SnapshotLine {
            state_bytes: delta.info.restore_bytes(),
            dir_bytes: dir_bytes(&native_dir),
            verify_bad: Some(verify(restored.as_mut(), p, Some(&changed))?),
            ..line("restore_incr", secs)
        });
    }

    // 4. Restore the last checkpoint into a fresh backend, timed until readable.
    let start = Instant::now();
    let mut restored: Box<dyn Job> = match backend {
        "heap" => Box::new(BenchOp::default().restore(
            HeapBackend::new(),
            checkpointer.storage(),
            RestorePoint::Latest,
        )?),
        "rocksdb" => Box::new(BenchOp::default().restore(
            rocks()?,
            checkpointer.storage(),
            RestorePoint::Latest,
        )?),
        "ttl-heap" => Box::new(TtlBenchOp::default().restore(
            TtlBackend::new(HeapBackend::new()),
            checkpointer.storage(),
            RestorePoint::Latest,
        )?),
        _ => Box::new(TtlBenchOp::default().restore(
            TtlBackend::new(rocks()?),
            checkpointer.storage(),
            RestorePoint::Latest,
        )?),
    };
    let secs = start.elapsed().as_secs_f64();
    lines.push(SnapshotLine {
        state_bytes: second.info.restore_bytes(),
        dir_bytes: dir_bytes(&dir),
        verify_bad: Some(verify(restored.as_mut(), p, Some(&changed))?),
        ..line(
            if incremental {
                "restore_incr"
            } else {
                "restore_full"
            },
            secs,
        )
    });
    drop(restored);

    // 5. The canonical snapshot, restored into the other kind of backend.
    if matches!(backend, "heap" | "rocksdb") {
        let path = work.path().join("canonical.snap");
        let start = Instant::now();
        let image = job.capture_full(false)?;
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let summary = image.write(
            SnapshotOptions::default(),
            &path,
            std::io::BufWriter::new(file),
        )?;
        lines.push(SnapshotLine {
            state_bytes: summary.bytes,
            checkpointed_bytes: summary.bytes,
            dir_bytes: summary.bytes,
            ..line("snapshot_canonical", start.elapsed().as_secs_f64())
        });
        let start = Instant::now();
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let reader = SnapshotReader::parse(&path, &bytes)?;
        let mut other: Box<dyn Job> = if backend == "heap" {
            let mut op = BenchOp::default().bind(rocks()?)?;
            op.restore_snapshot(&reader)?;
            Box::new(op)
        } else {
            let mut op = BenchOp::default().bind(HeapBackend::new())?;
            op.restore_snapshot(&reader)?;
            Box::new(op)
        };
        let secs = start.elapsed().as_secs_f64();
        lines.push(SnapshotLine {
            state_bytes: summary.bytes,
            verify_bad: Some(verify(other.as_mut(), p, Some(&changed))?),
            ..line("restore_canonical", secs)
        });
    }
    Ok(lines)
}
