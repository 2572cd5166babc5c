//! The `snapshot_store` workload: the snapshot workload's state (K keys of value state) held by
//! two instances, checkpointed to a checkpoint store and restored from it, against the local
//! file system in the same run: checkpoint and restore MB/s, and the bytes a restore at three
//! instances reads per instance (a 2 → 3 rescale).
//!
//! `statebench --backend heap --workload snapshot_store --K 1000000 --store s3://bucket/prefix`
//! (credentials and endpoint from the `AWS_*` variables, `AWS_ENDPOINT` among them).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use statewright::checkpointer::{CheckpointConfig, Checkpointable, Checkpointer};
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::store::{CheckpointStore, ObjectWriter};

use crate::{BenchOp, Params, Store};

/// A store that counts the bytes read from it.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn CheckpointStore>,
    read: AtomicU64,
}

impl CheckpointStore for Counting {
    fn locate(&self, name: &str) -> PathBuf {
        self.inner.locate(name)
    }
    fn create(&self, name: &str) -> statewright::Result<Box<dyn ObjectWriter>> {
        self.inner.create(name)
    }
    fn put_file(&self, name: &str, from: &Path) -> statewright::Result<u64> {
        self.inner.put_file(name, from)
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> statewright::Result<bool> {
        self.inner.put_if_absent(name, bytes)
    }
    fn get_range(&self, name: &str, range: Range<u64>) -> statewright::Result<Vec<u8>> {
        let bytes = self.inner.get_range(name, range)?;
        self.read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
    fn head(&self, name: &str) -> statewright::Result<Option<u64>> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> statewright::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> statewright::Result<()> {
        self.inner.delete(name)
    }
    fn delete_prefix(&self, prefix: &str) -> statewright::Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.inner.local_path(name)
    }
}

fn instance(range: KeyGroupRange) -> statewright::Result<Bound<BenchOp, HeapBackend>> {
    BenchOp::default()
        .bind(HeapBackend::new())?
        .with_key_groups(range)
}

fn ranges(parallelism: u16) -> statewright::Result<Vec<KeyGroupRange>> {
    let max = BenchOp::DESCRIPTOR.max_parallelism;
    (0..parallelism)
        .map(|i| {
            KeyGroupRange::for_instance(max, parallelism, i).ok_or_else(|| {
                statewright::Error::Backend {
                    backend: "statebench",
                    message: format!("no key groups for instance {i} of {parallelism}"),
                }
            })
        })
        .collect()
}

/// Runs the workload on the local file system and at `url` (`None`: the local one only, opened
/// with `options`), giving one line per step and store.
///
/// # Errors
///
/// An unknown backend, a store that cannot be opened, a state or I/O error, a restore that
/// reads back a wrong value.
pub fn run(
    backend: &str,
    p: Params,
    url: Option<&str>,
    options: &[(&str, &str)],
) -> statewright::Result<Vec<String>> {
    if backend != "heap" {
        return Err(statewright::Error::Backend {
            backend: "statebench",
            message: format!("the snapshot_store workload runs on heap, not `{backend}`"),
        });
    }
    let scratch = tempfile::tempdir().map_err(|e| statewright::Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let local = format!("file://{}", scratch.path().join("checkpoints").display());
    let mut lines = Vec::new();
    for (name, url) in std::iter::once(("local", local.as_str())).chain(url.map(|u| ("url", u))) {
        let given = if name == "local" { &[][..] } else { options };
        let opened = statewright::store::open_url(url, given.iter().copied())?;
        let counting = Arc::new(Counting {
            inner: Arc::clone(opened.store()),
            read: AtomicU64::new(0),
        });
        let store = if name == "local" {
            "local"
        } else {
            url.split("://").next().unwrap_or("url")
        };
        lines.extend(one_store(store, p, counting)?);
    }
    Ok(lines)
}

fn one_store(store: &str, p: Params, counting: Arc<Counting>) -> statewright::Result<Vec<String>> {
    let line = |step: &str, secs: f64, bytes: u64, extra: String| {
        let mb_per_s = bytes as f64 / 1e6 / secs.max(1e-9);
        format!(
            "statewright heap {step} K={} store={store} secs={secs:.3} bytes={bytes} mb_per_s={mb_per_s:.1}{extra}",
            p.k
        )
    };
    let mut lines = Vec::new();
    // Two instances hold the K keys, split by key group.
    let mut ops = ranges(2)?
        .into_iter()
        .map(instance)
        .collect::<statewright::Result<Vec<_>>>()?;
    let max = BenchOp::DESCRIPTOR.max_parallelism;
    for j in 0..p.k {
        let group = statewright::keygroup::key_group(&j.to_key_bytes(), max);
        if let Some(op) = ops.iter_mut().find(|op| op.key_groups().contains(group)) {
            op.value_set(j, j as i64)?;
        }
    }
    let dyn_store: Arc<dyn CheckpointStore> = Arc::clone(&counting) as Arc<dyn CheckpointStore>;
    let config = CheckpointConfig::on_store(Arc::clone(&dyn_store))
        .native(false)
        .max_retained(1);
    let mut checkpointer = Checkpointer::new(config)?;
    let report = {
        let mut parts: Vec<&mut dyn Checkpointable> = ops
            .iter_mut()
            .map(|op| op as &mut dyn Checkpointable)
            .collect();
        checkpointer.checkpoint_now(&mut parts)?
    };
    let total = report.info.bytes();
    lines.push(line(
        "checkpoint_store",
        report.duration.as_secs_f64(),
        total,
        format!(" sync_secs={:.4}", report.started.sync_pause.as_secs_f64()),
    ));
    let storage = checkpointer.storage().clone();

    // Restore at one instance: every byte.
    counting.read.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let mut whole = instance(KeyGroupRange::all(BenchOp::DESCRIPTOR.max_parallelism))?;
    whole.restore_from(&storage, RestorePoint::Latest)?;
    let secs = start.elapsed().as_secs_f64();
    let read = counting.read.load(Ordering::Relaxed);
    let step = (p.k / 100_000).max(1);
    let mut bad = 0u64;
    let mut j = 0;
    while j < p.k {
        bad += u64::from(whole.value_get(j)? != Some(j as i64));
        j += step;
    }
    drop(whole);
    // MB/s of the checkpoint restored; what was read besides (a local restore checks each
    // file whole before it reads its blocks, from the page cache).
    lines.push(line(
        "restore_store",
        secs,
        total,
        format!(" read_bytes={read} verify_bad={bad}"),
    ));

    // Restore at three instances: each reads the key groups it owns.
    let mut max_read = 0u64;
    let mut secs = 0.0f64;
    for range in ranges(3)? {
        counting.read.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let mut op = instance(range)?;
        op.restore_from(&storage, RestorePoint::Latest)?;
        secs = secs.max(start.elapsed().as_secs_f64());
        max_read = max_read.max(counting.read.load(Ordering::Relaxed));
    }
    let share = max_read as f64 / (total as f64 / 3.0);
    lines.push(line(
        "rescale_2to3_store",
        secs,
        max_read,
        format!(" checkpoint_bytes={total} of_a_third={share:.3}"),
    ));
    Ok(lines)
}
