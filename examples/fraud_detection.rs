//! Fraud detection with keyed state that survives a crash.
//!
//! A stream of generated card transactions flows through the `FraudDetector` operator on the
//! heap backend. The job checkpoints every tenth of the stream (a full checkpoint, then
//! incremental ones holding only what changed), then, after seven tenths, "crashes": the
//! operator and its state are dropped, along with the events processed after the last
//! checkpoint. A new operator restores
//! from the checkpoint, replays from the checkpointed position (as a source with offsets would)
//! and finishes. The result must equal an uninterrupted run: the same alerts and, byte for
//! byte, the same final state.
//!
//! Two states expire in event time: the watermark follows the transactions' timestamps, a tiny
//! charge counts for one minute and the recent transactions for one hour of event time, so a
//! replay after a restore expires exactly what the uninterrupted run expired.
//!
//! ```text
//! cargo run --example fraud_detection -- [--events N] [--dir PATH]
//! cargo run --example fraud_detection --features rocksdb -- --backend rocksdb
//! ```

use std::path::Path;

use statewright::TtlBackend;
use statewright::prelude::*;
use statewright::snapshot::SnapshotOptions;

// ANCHOR: operator
/// A card transaction.
#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    /// The card number (the key).
    pub card: u64,
    /// The amount in cents.
    pub amount_cents: i64,
    /// The merchant.
    pub merchant: u32,
    /// Event time, milliseconds.
    pub time_ms: i64,
}

/// Flags a large transaction that follows a tiny "test" charge on the same card.
#[derive(StatefulOperator, Default)]
#[operator(name = "fraud-detector", key = u64, max_parallelism = 128)]
pub struct FraudDetector {
    /// Whether the card's last transaction was tiny.
    #[state(ttl = "1m", time = "event")]
    small_seen: ValueState<bool>,
    /// The card's transactions of the last hour.
    #[state(ttl = "1h", time = "event")]
    recent: ListState<Txn>,
    /// Spend per merchant.
    per_merchant: MapState<u32, i64>,
    /// The largest amount seen.
    #[state(reduce = max)]
    largest: ReducingState<i64>,
    /// Amounts above this after a tiny charge raise an alert.
    threshold_cents: i64,
}

fn process<B: AnyBackend>(
    op: &mut Bound<FraudDetector, TtlBackend<B>>,
    txn: &Txn,
) -> statewright::Result<bool> {
    // In order here; a runtime would advance the watermark from its sources.
    op.backend().set_watermark(txn.time_ms);
    let mut st = op.key(&txn.card)?; // a typed view scoped to one key; the key is encoded once
    let alert =
        st.small_seen().get()?.copied().unwrap_or(false) && txn.amount_cents > st.threshold_cents;
    st.small_seen().set(&(txn.amount_cents < 100))?;
    st.recent().add(txn)?;
    st.per_merchant()
        .update(&txn.merchant, |v| v.unwrap_or(0) + txn.amount_cents)?;
    st.largest().add(&txn.amount_cents)?;
    Ok(alert)
}
// ANCHOR_END: operator

/// The `i`-th generated transaction: SplitMix64, so every run sees the same stream.
pub fn txn(i: u64) -> Txn {
    let mut z = 0x5EED_u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let amount_cents = match z % 10 {
        0 | 1 => (z >> 8) as i64 % 100,            // a tiny "test" charge
        2 => 50_000 + ((z >> 8) as i64 % 200_000), // a large purchase
        _ => 100 + ((z >> 8) as i64 % 20_000),
    };
    Txn {
        card: (z >> 20) % 5_000,
        amount_cents,
        merchant: ((z >> 40) % 200) as u32,
        time_ms: i as i64 * 50, // 20 transactions a second
    }
}

fn detector() -> FraudDetector {
    FraudDetector {
        threshold_cents: 50_000,
        ..Default::default()
    }
}

/// What one run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Events that raised an alert, by position in the stream.
    pub alerts: Vec<u64>,
    /// The canonical snapshot of the final state (identical bytes for identical state).
    pub final_state: Vec<u8>,
}

/// Which backend holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Heap,
    /// RocksDB, in a directory below the run's directory.
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

impl Backend {
    fn open(self, dir: &Path, name: &str) -> statewright::Result<Box<dyn AnyBackend>> {
        let _ = (dir, name);
        Ok(match self {
            Backend::Heap => Box::new(HeapBackend::new()),
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb => Box::new(statewright::RocksDbBackend::open(
                dir.join(name),
                statewright::RocksDbOptions::default(),
            )?),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Heap => "heap",
            #[cfg(feature = "rocksdb")]
            Backend::RocksDb => "rocksdb",
        }
    }
}

type Op = Bound<FraudDetector, TtlBackend<Box<dyn AnyBackend>>>;

/// Values and list elements that expired and were removed in a run.
fn expired(op: &Op) -> u64 {
    op.backend().ttl_stats().iter().map(|s| s.total()).sum()
}

fn final_state(op: &Op) -> statewright::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    op.write_snapshot(
        SnapshotOptions::default(),
        Path::new("final-state"),
        &mut bytes,
    )?;
    Ok(bytes)
}

/// Processes events `0..events` without interruption.
pub fn uninterrupted(events: u64, backend: Backend, dir: &Path) -> statewright::Result<Outcome> {
    let mut op = detector().bind(TtlBackend::new(backend.open(dir, "uninterrupted")?))?;
    let mut alerts = Vec::new();
    for i in 0..events {
        if process(&mut op, &txn(i))? {
            alerts.push(i);
        }
    }
    Ok(Outcome {
        alerts,
        final_state: final_state(&op)?,
    })
}

/// What the crash-and-restore run did.
#[derive(Debug)]
pub struct Recovery {
    /// The result of the run.
    pub outcome: Outcome,
    /// The checkpoint it restored from.
    pub checkpoint: statewright::CheckpointInfo,
    /// Events processed after the checkpoint and lost in the crash (replayed after restore).
    pub replayed: u64,
    /// Values and list elements removed after their TTL expired, after the restore.
    pub expired: u64,
}

/// Processes the stream, checkpoints midway, crashes, restores and finishes.
pub fn with_crash(events: u64, backend: Backend, dir: &Path) -> statewright::Result<Recovery> {
    // ANCHOR: checkpoint
    // A checkpoint every tenth of the stream: a full one, then incremental ones on the heap,
    // and RocksDB's own native checkpoints on RocksDB (shared SST files). Both restore, TTL
    // stamps and watermark included, through the same `restore` call below.
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.join("checkpoints")))?;
    let every = (events / 10).max(1);
    let checkpoint_at = events / 2;
    let crash_at = checkpoint_at + events / 5;

    let mut op = detector().bind(TtlBackend::new(backend.open(dir, "before-crash")?))?;
    let mut alerts = Vec::new();
    let mut checkpoint = None;
    // What a source and a sink would commit with the checkpoint: the position, the alerts.
    let (mut position, mut alerts_at_checkpoint) = (0, 0);
    for i in 0..crash_at {
        if process(&mut op, &txn(i))? {
            alerts.push(i);
        }
        if (i + 1) % every == 0 && i < checkpoint_at {
            checkpoint = Some(checkpointer.checkpoint_now(&mut [&mut op])?.info);
            (position, alerts_at_checkpoint) = (i + 1, alerts.len());
        }
    }
    let checkpoint = checkpoint.ok_or(statewright::Error::CheckpointNotStarted {
        reason: "the stream is too short to checkpoint",
    })?;
    drop(op); // the crash: everything since the checkpoint is gone
    alerts.truncate(alerts_at_checkpoint);

    let mut op = detector().restore(
        TtlBackend::new(backend.open(dir, "after-crash")?),
        checkpointer.storage(),
        RestorePoint::Latest,
    )?;
    for i in position..events {
        if process(&mut op, &txn(i))? {
            alerts.push(i);
        }
    }
    // ANCHOR_END: checkpoint
    Ok(Recovery {
        outcome: Outcome {
            alerts,
            final_state: final_state(&op)?,
        },
        checkpoint,
        replayed: crash_at - position,
        expired: expired(&op),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut events = 100_000u64;
    let mut backend = Backend::Heap;
    let mut keep: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args.next().ok_or("--events needs a number")?.parse()?;
            }
            "--dir" => keep = Some(args.next().ok_or("--dir needs a path")?.into()),
            "--backend" => match args.next().as_deref() {
                Some("heap") => backend = Backend::Heap,
                #[cfg(feature = "rocksdb")]
                Some("rocksdb") => backend = Backend::RocksDb,
                #[cfg(not(feature = "rocksdb"))]
                Some("rocksdb") => {
                    return Err(
                        "this build has no RocksDB backend; run with `--features rocksdb`".into(),
                    );
                }
                other => {
                    return Err(
                        format!("unknown backend {other:?}; expected `heap` or `rocksdb`").into(),
                    );
                }
            },
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --events N, --backend heap|rocksdb and --dir PATH"
                )
                .into());
            }
        }
    }
    // The run's files (checkpoints, RocksDB directories) go to `--dir`, kept for inspection, or
    // to a temporary directory.
    let temporary = tempfile::tempdir()?;
    let dir = match &keep {
        Some(path) => {
            std::fs::create_dir_all(path)?;
            path.clone()
        }
        None => temporary.path().to_owned(),
    };
    let expected = uninterrupted(events, backend, &dir)?;
    let recovery = with_crash(events, backend, &dir)?;
    let matched = recovery.outcome == expected;
    println!("fraud_detection on the {} backend", backend.name());
    println!("  events:      {events}");
    println!("  alerts:      {}", recovery.outcome.alerts.len());
    println!(
        "  checkpoint:  id {} ({}) after {} events, {} bytes ({} with the checkpoints it builds on)",
        recovery.checkpoint.id,
        recovery.checkpoint.kind(),
        events / 2,
        recovery.checkpoint.bytes(),
        recovery.checkpoint.restore_bytes()
    );
    println!(
        "  crash:       {} events lost and replayed after restore",
        recovery.replayed
    );
    println!(
        "  ttl:         {} expired values and list elements removed after the restore (event time)",
        recovery.expired
    );
    println!(
        "  restored run matched the uninterrupted run: {}",
        if matched { "yes" } else { "NO" }
    );
    if let Some(path) = &keep {
        println!(
            "  checkpoints: {} (try `cargo run -p statewright-cli -- inspect {}`)",
            path.join("checkpoints").display(),
            path.join("checkpoints").display()
        );
    }
    if matched {
        Ok(())
    } else {
        Err("the restored run differs from the uninterrupted run".into())
    }
}
