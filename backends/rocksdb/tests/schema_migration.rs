//! Schema evolution on RocksDB: a canonical restore rewrites every migrated entry as it
//! restores, a native restore checks the schemas the manifest recorded and rewrites every
//! entry of a migrated state in the database, reporting progress.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::schema::ProblemKind;
use statewright::{
    Error, MigrationProgress, RocksDbBackend, RocksDbOptions, restore_native,
    restore_native_with_progress,
};

mod v1 {
    #[statewright::value]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Visit {
        pub page: u32,
        pub millis: u64,
    }
}

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub page: u64,
    pub seconds: f64,
    pub referrer: Option<String>,
}

impl From<v1::Visit> for Visit {
    fn from(v: v1::Visit) -> Self {
        Self {
            page: u64::from(v.page),
            seconds: v.millis as f64 / 1000.0,
            referrer: None,
        }
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "visits", key = u64, max_parallelism = 32)]
struct VisitsV1 {
    last: ValueState<v1::Visit>,
    all: ListState<v1::Visit>,
    by_page: MapState<u32, v1::Visit>,
    count: ValueState<u64>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "visits", key = u64, max_parallelism = 32)]
struct VisitsV2 {
    #[state(version = 2, migrate_from(v1 = v1::Visit))]
    last: ValueState<Visit>,
    #[state(version = 2, migrate_from(v1 = v1::Visit))]
    all: ListState<Visit>,
    #[state(version = 2, migrate_from(v1 = v1::Visit))]
    by_page: MapState<u32, Visit>,
    count: ValueState<u64>,
}

/// The value type changed, no migration.
#[derive(StatefulOperator, Default)]
#[operator(name = "visits", key = u64, max_parallelism = 32)]
struct VisitsUnmigrated {
    last: ValueState<Visit>,
    all: ListState<v1::Visit>,
    by_page: MapState<u32, v1::Visit>,
    count: ValueState<u64>,
}

const KEYS: u64 = 25_000;

fn visit(k: u64, i: u64) -> v1::Visit {
    v1::Visit {
        page: (k % 50) as u32 + i as u32,
        millis: k * 10 + i,
    }
}

fn fill(path: &Path) -> Bound<VisitsV1, RocksDbBackend> {
    let mut op = VisitsV1::default()
        .bind(RocksDbBackend::open(path, RocksDbOptions::low_memory()).unwrap())
        .unwrap();
    for k in 0..KEYS {
        let mut st = op.key(&k).unwrap();
        st.last().set(&visit(k, 0)).unwrap();
        st.all().add(&visit(k, 0)).unwrap();
        st.all().add(&visit(k, 1)).unwrap();
        st.by_page().put(&3, &visit(k, 2)).unwrap();
        st.count().set(&k).unwrap();
    }
    op
}

fn check<B: StateBackend>(op: &mut Bound<VisitsV2, B>) {
    for k in (0..KEYS).step_by(97) {
        let mut st = op.key(&k).unwrap();
        assert_eq!(
            st.last().get_owned().unwrap(),
            Some(Visit::from(visit(k, 0)))
        );
        assert_eq!(
            st.all().get_owned().unwrap(),
            vec![Visit::from(visit(k, 0)), Visit::from(visit(k, 1))]
        );
        assert_eq!(
            st.by_page().get_owned(&3).unwrap(),
            Some(Visit::from(visit(k, 2)))
        );
        assert_eq!(st.count().get_owned().unwrap(), Some(k));
    }
}

#[test]
fn a_canonical_restore_into_rocksdb_migrates_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path().join("ckpt")).unwrap();
    let op = fill(&dir.path().join("db1"));
    op.checkpoint(&storage).unwrap();
    let mut next = VisitsV2::default()
        .bind(RocksDbBackend::open(dir.path().join("db2"), RocksDbOptions::low_memory()).unwrap())
        .unwrap();
    let summary = next.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(summary.migrated, KEYS * 4);
    check(&mut next);
}

#[test]
fn a_native_restore_checks_recorded_schemas_and_rewrites_migrated_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut op = fill(&dir.path().join("db1"));
    let mut cp = Checkpointer::new(CheckpointConfig::new(dir.path().join("ckpt"))).unwrap();
    cp.checkpoint_now(&mut [&mut op]).unwrap();
    let storage = CheckpointStorage::open(dir.path().join("ckpt")).unwrap();
    let all = KeyGroupRange::all(32);

    // No migration declared: refused before anything is created.
    let target = dir.path().join("refused");
    let err = restore_native(
        VisitsUnmigrated::default(),
        &storage,
        RestorePoint::Latest,
        all,
        &target,
        RocksDbOptions::low_memory(),
    )
    .unwrap_err();
    match &err {
        Error::SchemaMismatch { report, .. } => {
            assert_eq!(report.problems.len(), 1, "{err}");
            assert_eq!(report.problems[0].kind, ProblemKind::ValueChanged);
        }
        other => panic!("expected a schema mismatch, got {other}"),
    }
    assert!(!target.exists());

    // Declared: every entry of the three migrated states is rewritten, with progress.
    let mut seen: Vec<(String, u64, bool)> = Vec::new();
    let mut next = restore_native_with_progress(
        VisitsV2::default(),
        &storage,
        RestorePoint::Latest,
        all,
        dir.path().join("db2"),
        RocksDbOptions::low_memory(),
        &mut |p: &MigrationProgress<'_>| {
            assert_eq!(p.from_version, 1);
            seen.push((p.state.to_owned(), p.entries, p.done));
        },
    )
    .unwrap();
    let done: Vec<(&str, u64)> = seen
        .iter()
        .filter(|s| s.2)
        .map(|s| (s.0.as_str(), s.1))
        .collect();
    assert_eq!(done, [("last", KEYS), ("all", KEYS), ("by_page", KEYS)]);
    assert!(seen.iter().any(|s| !s.2 && s.1 == 10_000));
    check(&mut next);

    // A checkpoint of the migrated database records version 2 and restores without a rewrite.
    let mut cp = Checkpointer::new(CheckpointConfig::new(dir.path().join("ckpt2"))).unwrap();
    cp.checkpoint_now(&mut [&mut next]).unwrap();
    let storage2 = CheckpointStorage::open(dir.path().join("ckpt2")).unwrap();
    let mut rewrites = 0;
    let mut again = restore_native_with_progress(
        VisitsV2::default(),
        &storage2,
        RestorePoint::Latest,
        all,
        dir.path().join("db3"),
        RocksDbOptions::low_memory(),
        &mut |_| rewrites += 1,
    )
    .unwrap();
    assert_eq!(rewrites, 0);
    check(&mut again);
}
