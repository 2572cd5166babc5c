//! Rescaling: a job runs at parallelism 2, checkpoints, and is restored at parallelism 3.
//!
//! Every key belongs to a key group (a stable hash of its canonical bytes modulo the operator's
//! `max_parallelism`), and every instance owns a contiguous range of key groups. A checkpoint
//! holds one snapshot per instance with an index per key group, so each of the 3 new instances
//! reads exactly its key groups from whichever of the 2 old snapshots hold them. The example
//! then processes the rest of the stream at parallelism 3 and compares every user's state with
//! an unpartitioned run of the whole stream.
//!
//! ```text
//! cargo run --example rescale -- [--events N] [--from 2] [--to 3]
//! cargo run --example rescale --features rocksdb -- --backend rocksdb
//! ```
//!
//! On RocksDB the checkpoint is native (shared SST files) and `restore_native` builds each new
//! instance's database: the old database overlapping it most, cut to its key groups, plus the
//! entries of its key groups from the others.

use std::path::Path;

use statewright::checkpointer::{CheckpointConfig, Checkpointable, Checkpointer};
use statewright::keygroup::{KeyGroupRange, key_group};
use statewright::prelude::*;

// ANCHOR: operator
/// Page views per user.
#[derive(StatefulOperator, Default)]
#[operator(name = "page-views", key = String, max_parallelism = 128)]
pub struct PageViews {
    /// Views of the user.
    views: ValueState<u64>,
    /// Views per page.
    per_page: MapState<u32, u64>,
}

const MAX_PARALLELISM: u16 = 128;

/// The instance (of `parallelism`) that owns `user`.
pub fn owner(user: &str, parallelism: u16) -> usize {
    let kg = key_group(&user.to_owned().to_key_bytes(), MAX_PARALLELISM);
    usize::from(KeyGroupRange::instance_of(kg, MAX_PARALLELISM, parallelism))
}
// ANCHOR_END: operator

/// The `i`-th page view: (user, page).
pub fn view(i: u64) -> (String, u32) {
    let mut z = 0xC0FFEE_u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (format!("user-{}", z % 2_000), ((z >> 32) % 50) as u32)
}

fn process<B: AnyBackend>(
    op: &mut Bound<PageViews, B>,
    user: &str,
    page: u32,
) -> statewright::Result<()> {
    let mut st = op.key(user)?;
    st.views().update(|v| v.unwrap_or(0) + 1)?;
    st.per_page().update(&page, |v| v.unwrap_or(0) + 1)?;
    Ok(())
}

/// Which backend holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Heap,
    /// RocksDB, one database per instance, native checkpoints.
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Users in the state.
    pub users: usize,
    /// For every new instance: its key groups and the old instances whose snapshots it reads.
    pub plan: Vec<(KeyGroupRange, Vec<u16>)>,
    /// Bytes the checkpoint wrote.
    pub checkpoint_bytes: u64,
    /// Users whose state differs from the unpartitioned run (0 when rescaling is right).
    pub mismatched: usize,
    /// Views counted by the instances after the rescale, over all users (the events, when
    /// none is lost or counted twice).
    pub views: u64,
}

/// Every user's state: (views, per-page views), in one map.
type Table = std::collections::BTreeMap<String, (u64, Vec<(u32, u64)>)>;

fn read_all<B: AnyBackend>(
    op: &mut Bound<PageViews, B>,
    users: &[String],
    table: &mut Table,
) -> statewright::Result<()> {
    for user in users {
        // An instance serves only the keys of its key groups.
        let kg = key_group(&user.clone().to_key_bytes(), MAX_PARALLELISM);
        if !op.key_groups().contains(kg) {
            continue;
        }
        let mut st = op.key(user.as_str())?;
        let Some(views) = st.views().get_owned()? else {
            continue;
        };
        let pages = st
            .per_page()
            .entries()?
            .map(|e| e.map(|(p, n)| (p, n.to_native())))
            .collect::<statewright::Result<Vec<_>>>()?;
        table.insert(user.clone(), (views, pages));
    }
    Ok(())
}

/// Processes the views `range` on the instances `ops` (each view goes to the instance owning
/// its user), then checkpoints every instance into one checkpoint.
fn run_and_checkpoint<B: AnyBackend>(
    ops: &mut [Bound<PageViews, B>],
    range: std::ops::Range<u64>,
    checkpointer: &mut Checkpointer,
) -> Result<statewright::CheckpointInfo, Box<dyn std::error::Error>> {
    let parallelism = u16::try_from(ops.len())?;
    for i in range {
        let (user, page) = view(i);
        process(&mut ops[owner(&user, parallelism)], &user, page)?;
    }
    let mut all: Vec<&mut dyn Checkpointable> = ops
        .iter_mut()
        .map(|op| op as &mut dyn Checkpointable)
        .collect();
    Ok(checkpointer.checkpoint_now(&mut all)?.info)
}

/// Processes the views `range` on the instances `ops`, then reads every user's state.
fn run_and_read<B: AnyBackend>(
    ops: &mut [Bound<PageViews, B>],
    range: std::ops::Range<u64>,
    users: &[String],
) -> Result<Table, Box<dyn std::error::Error>> {
    let parallelism = u16::try_from(ops.len())?;
    for i in range {
        let (user, page) = view(i);
        process(&mut ops[owner(&user, parallelism)], &user, page)?;
    }
    let mut table = Table::new();
    for op in ops {
        read_all(op, users, &mut table)?;
    }
    Ok(table)
}

/// Runs the first half of `events` at parallelism `from`, checkpoints, restores at `to`, runs
/// the second half and compares with an unpartitioned run.
pub fn run(
    events: u64,
    from: u16,
    to: u16,
    backend: Backend,
    dir: &Path,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let users: Vec<String> = (0..2_000).map(|u| format!("user-{u}")).collect();
    let half = events / 2;

    // The reference: one instance, the whole stream.
    let mut all = PageViews::default().bind(HeapBackend::new())?;
    for i in 0..events {
        let (user, page) = view(i);
        process(&mut all, &user, page)?;
    }
    let mut expected = Table::new();
    read_all(&mut all, &users, &mut expected)?;

    // ANCHOR: rescale
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.join("checkpoints")))?;
    let range = |parallelism, i| -> Result<KeyGroupRange, Box<dyn std::error::Error>> {
        Ok(KeyGroupRange::for_instance(MAX_PARALLELISM, parallelism, i)
            .ok_or("parallelism above max_parallelism")?)
    };
    let (checkpoint_bytes, actual) = match backend {
        Backend::Heap => {
            // Parallelism `from`: each instance owns a range of key groups; events go to the
            // owner of their key.
            let mut before = Vec::new();
            for i in 0..from {
                let op = PageViews::default().bind(HeapBackend::new())?;
                before.push(op.with_key_groups(range(from, i)?)?);
            }
            let info = run_and_checkpoint(&mut before, 0..half, &mut checkpointer)?;
            drop(before);

            // Parallelism `to`: each new instance restores its key groups, from whichever
            // snapshots hold them.
            let mut after = Vec::new();
            for i in 0..to {
                let mut op = PageViews::default()
                    .bind(HeapBackend::new())?
                    .with_key_groups(range(to, i)?)?;
                op.restore_from(checkpointer.storage(), RestorePoint::Latest)?;
                after.push(op);
            }
            (
                info.bytes(),
                run_and_read(&mut after, half..events, &users)?,
            )
        }
        // ANCHOR_END: rescale
        #[cfg(feature = "rocksdb")]
        Backend::RocksDb => {
            use statewright::{RocksDbBackend, RocksDbOptions, restore_native};
            let mut before = Vec::new();
            for i in 0..from {
                let path = dir.join(format!("before-{i}"));
                let db = RocksDbBackend::open(path, RocksDbOptions::low_memory())?;
                before.push(
                    PageViews::default()
                        .bind(db)?
                        .with_key_groups(range(from, i)?)?,
                );
            }
            let info = run_and_checkpoint(&mut before, 0..half, &mut checkpointer)?;
            drop(before);
            // Each new database: the old one overlapping it most, cut to its key groups, plus
            // the entries of its key groups from the others.
            let mut after = Vec::new();
            for i in 0..to {
                after.push(restore_native(
                    PageViews::default(),
                    checkpointer.storage(),
                    RestorePoint::Latest,
                    range(to, i)?,
                    dir.join(format!("after-{i}")),
                    RocksDbOptions::low_memory(),
                )?);
            }
            (
                info.bytes(),
                run_and_read(&mut after, half..events, &users)?,
            )
        }
    };
    let mut plan = Vec::new();
    for i in 0..to {
        let new = range(to, i)?;
        let olds = (0..from)
            .filter(|&o| range(from, o).is_ok_and(|r| r.overlaps(new)))
            .collect();
        plan.push((new, olds));
    }
    let mismatched = users
        .iter()
        .filter(|u| expected.get(*u) != actual.get(*u))
        .count();
    Ok(Summary {
        users: expected.len(),
        plan,
        checkpoint_bytes,
        mismatched,
        views: actual.values().map(|(v, _)| v).sum(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut events, mut from, mut to, mut backend) = (200_000u64, 2u16, 3u16, Backend::Heap);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => events = value()?.parse()?,
            "--from" => from = value()?.parse()?,
            "--to" => to = value()?.parse()?,
            "--backend" => match value()?.as_str() {
                "heap" => backend = Backend::Heap,
                #[cfg(feature = "rocksdb")]
                "rocksdb" => backend = Backend::RocksDb,
                #[cfg(not(feature = "rocksdb"))]
                "rocksdb" => {
                    return Err(
                        "this build has no RocksDB backend; run with `--features rocksdb`".into(),
                    );
                }
                other => return Err(format!("unknown backend `{other}`").into()),
            },
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --events N, --from P, --to P, --backend heap|rocksdb"
                )
                .into());
            }
        }
    }
    let dir = tempfile::tempdir()?;
    let summary = run(events, from, to, backend, dir.path())?;
    println!(
        "rescale: {events} page views, parallelism {from} -> {to} after {}",
        events / 2
    );
    println!("  users:               {}", summary.users);
    for (i, (range, olds)) in summary.plan.iter().enumerate() {
        println!(
            "  instance {i} of {to}:       key groups {:>3}..={:<3} read from the snapshots of old instance(s) {olds:?}",
            range.first(),
            range.last()
        );
    }
    println!("  checkpoint:          {} bytes", summary.checkpoint_bytes);
    println!(
        "  state equal to an unpartitioned run: {}",
        if summary.mismatched == 0 {
            "yes, for every user".to_owned()
        } else {
            format!("NO, {} users differ", summary.mismatched)
        }
    );
    if summary.mismatched == 0 {
        Ok(())
    } else {
        Err("rescaling changed the state".into())
    }
}
