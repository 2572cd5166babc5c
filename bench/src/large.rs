//! The `large_state` workload: a RocksDB state several times larger than the memory RocksDB is
//! given, checkpointed canonically and restored into a new database, with the peak resident
//! memory of the process during each step. Canonical checkpoints are written one key group at
//! a time and restored a block at a time, so neither step should hold the state in memory.
//!
//! Each key `j` in `0..K` holds 256 bytes that no compressor shrinks (a `mix64` stream seeded
//! by `j`), so the snapshot holds about `K × 270` bytes.

use std::time::Instant;

use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::prelude::*;
use statewright::{Compression, RocksDbBackend, RocksDbOptions};

use crate::{Params, mix64};

/// Bytes of each value.
pub const VALUE_BYTES: usize = 256;

/// The operator of the workload: one value per key.
#[derive(StatefulOperator, Default)]
#[operator(name = "large", key = u64)]
pub struct LargeOp {
    blob: ValueState<Vec<u8>>,
}

/// The value of key `j`.
#[must_use]
pub fn value_of(j: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_BYTES);
    let mut z = j;
    while out.len() < VALUE_BYTES {
        z = mix64(z);
        out.extend_from_slice(&z.to_le_bytes());
    }
    out
}

/// The memory RocksDB is given: a 64 MiB block cache, two 16 MiB memtables and a 32 MiB row
/// cache, no compression (the values do not compress).
#[must_use]
pub fn options() -> RocksDbOptions {
    RocksDbOptions::default()
        .block_cache_size(64 << 20)
        .row_cache_size(32 << 20)
        .write_buffer_size(16 << 20)
        .max_write_buffer_number(2)
        .compression_per_level(vec![Compression::None])
}

/// RocksDB's configured memory under [`options`]: block cache, memtables and row cache.
#[must_use]
pub fn configured_bytes() -> u64 {
    let o = options();
    o.block_cache_size as u64
        + o.row_cache_size as u64
        + o.write_buffer_size as u64 * u64::try_from(o.max_write_buffer_number).unwrap_or(0)
}

/// Peak resident set size of this process since the last [`reset_peak`] (`VmHWM`), in bytes;
/// `None` where `/proc` does not say.
#[must_use]
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak resident set size to the current one (Linux: `/proc/self/clear_refs`).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// One result line of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct LargeLine {
    /// `large_populate`, `large_checkpoint`, `large_restore`.
    pub step: &'static str,
    /// Keys.
    pub k: u64,
    /// Seconds.
    pub secs: f64,
    /// Bytes of the canonical snapshot.
    pub snapshot_bytes: u64,
    /// Peak resident set size during the step.
    pub peak_rss: Option<u64>,
    /// For the restore: keys checked with a wrong value.
    pub verify_bad: Option<u64>,
}

impl std::fmt::Display for LargeLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statewright rocksdb {} K={} secs={:.1} snapshot_bytes={} rocksdb_memory={}",
            self.step,
            self.k,
            self.secs,
            self.snapshot_bytes,
            configured_bytes()
        )?;
        if let Some(rss) = self.peak_rss {
            write!(f, " peak_rss={rss}")?;
        }
        if let Some(bad) = self.verify_bad {
            write!(f, " verify_bad={bad}")?;
        }
        Ok(())
    }
}

/// Runs the workload with `p.k` keys in a temporary directory under `dir` (the system's when
/// `None`).
///
/// # Errors
///
/// A state, backend or I/O error.
pub fn run(p: Params, dir: Option<&std::path::Path>) -> statewright::Result<Vec<LargeLine>> {
    let tmp = |d: &std::path::Path| statewright::Error::Io {
        path: d.to_owned(),
        source: std::io::Error::other("cannot create a temporary directory"),
    };
    let base = dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    let work = tempfile::tempdir_in(&base).map_err(|_| tmp(&base))?;
    let mut lines = Vec::new();
    let line = |step, secs, snapshot_bytes, peak_rss, verify_bad| LargeLine {
        step,
        k: p.k,
        secs,
        snapshot_bytes,
        peak_rss,
        verify_bad,
    };

    // 1. Populate.
    reset_peak();
    let start = Instant::now();
    let mut op =
        LargeOp::default().bind(RocksDbBackend::open(work.path().join("db"), options())?)?;
    for j in 0..p.k {
        op.key(&j)?.blob().set(&value_of(j))?;
    }
    op.backend().flush()?;
    lines.push(line(
        "large_populate",
        start.elapsed().as_secs_f64(),
        0,
        peak_rss(),
        None,
    ));

    // 2. A canonical checkpoint: the detached view written a key group at a time.
    let config = CheckpointConfig::new(work.path().join("checkpoints")).native(false);
    let mut checkpointer = Checkpointer::new(config)?;
    reset_peak();
    let start = Instant::now();
    let done = checkpointer.checkpoint_now(&mut [&mut op])?;
    let snapshot_bytes = done.info.bytes();
    lines.push(line(
        "large_checkpoint",
        start.elapsed().as_secs_f64(),
        snapshot_bytes,
        peak_rss(),
        None,
    ));
    drop(op);

    // 3. Restore into a new database, a block at a time.
    reset_peak();
    let start = Instant::now();
    let mut restored = LargeOp::default().bind(RocksDbBackend::open(
        work.path().join("restored"),
        options(),
    )?)?;
    restored.restore_from(checkpointer.storage(), RestorePoint::Latest)?;
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss();
    // Every 1,000th key, compared whole.
    let mut bad = 0u64;
    let mut j = 0;
    while j < p.k {
        let got = restored.key(&j)?.blob().get_owned()?;
        bad += u64::from(got.as_deref() != Some(value_of(j).as_slice()));
        j += 1_000;
    }
    lines.push(line("large_restore", secs, snapshot_bytes, peak, Some(bad)));
    Ok(lines)
}
