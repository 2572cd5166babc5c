//! Schema evolution: a restore checks every stored schema against the declaration, reports
//! every problem with a readable diff and touches nothing, and runs declared migrations.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright::schema::{ProblemKind, SchemaReport};
use statewright::{Error, ManualClock};

mod v1 {
    #[statewright::value]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Txn {
        pub card: u64,
        pub amount_cents: i64,
        pub merchant: u32,
    }
}

mod v2 {
    #[statewright::value]
    #[derive(Debug, Clone, PartialEq)]
    pub struct Txn {
        pub card: u64,
        pub amount_cents: i64,
        pub merchant: u32,
        pub currency: String,
    }

    impl From<super::v1::Txn> for Txn {
        fn from(t: super::v1::Txn) -> Self {
            Self {
                card: t.card,
                amount_cents: t.amount_cents,
                merchant: t.merchant,
                currency: "EUR".into(),
            }
        }
    }
}

/// Version 3: amounts as a float in whole units, the merchant dropped.
#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub card: u64,
    pub amount: f64,
    pub currency: String,
}

impl From<v2::Txn> for Txn {
    fn from(t: v2::Txn) -> Self {
        Self {
            card: t.card,
            amount: t.amount_cents as f64 / 100.0,
            currency: t.currency,
        }
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "payments", key = u64, max_parallelism = 16)]
struct PaymentsV1 {
    last: ValueState<v1::Txn>,
    #[state(ttl = "1h")]
    history: ListState<v1::Txn>,
    by_merchant: MapState<u32, v1::Txn>,
    count: ValueState<u64>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "payments", key = u64, max_parallelism = 16)]
struct PaymentsV3 {
    #[state(version = 3, migrate_from(v1 = v1::Txn, v2 = v2::Txn))]
    last: ValueState<Txn>,
    #[state(ttl = "1h", version = 3, migrate_from(v1 = v1::Txn, v2 = v2::Txn))]
    history: ListState<Txn>,
    #[state(version = 2, migrate_from(v1 = v1::Txn))]
    by_merchant: MapState<u32, v2::Txn>,
    count: ValueState<u64>,
}

/// The value type changed, no migration declared.
#[derive(StatefulOperator, Default)]
#[operator(name = "payments", key = u64, max_parallelism = 16)]
struct PaymentsChanged {
    last: ValueState<Txn>,
    #[state(ttl = "1h")]
    history: ListState<v1::Txn>,
    by_merchant: MapState<u32, v1::Txn>,
    count: ValueState<u64>,
}

impl From<u64> for v2::Txn {
    fn from(card: u64) -> Self {
        Self {
            card,
            amount_cents: 0,
            merchant: 0,
            currency: String::new(),
        }
    }
}

/// Every kind of problem at once.
#[derive(StatefulOperator, Default)]
#[operator(name = "payments", key = String, max_parallelism = 16)]
struct PaymentsBroken {
    last: ListState<v1::Txn>,
    #[state(ttl = "1h", version = 2, migrate_from(v1 = u64))]
    history: ListState<v2::Txn>,
    by_merchant: MapState<u64, v1::Txn>,
    total: ValueState<u64>,
}

fn txn(i: u64) -> v1::Txn {
    v1::Txn {
        card: i,
        amount_cents: i as i64 * 150,
        merchant: (i % 3) as u32,
    }
}

fn ttl_backend(clock: &ManualClock) -> TtlBackend<HeapBackend> {
    TtlBackend::with_clock(HeapBackend::new(), clock.clone())
}

/// A checkpoint of `PaymentsV1` with 20 keys; the storage directory stays alive with it.
fn v1_checkpoint(clock: &ManualClock) -> (tempfile::TempDir, CheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut op = PaymentsV1::default().bind(ttl_backend(clock)).unwrap();
    for i in 0..20u64 {
        let mut st = op.key(&i).unwrap();
        st.last().set(&txn(i)).unwrap();
        st.history().add(&txn(i)).unwrap();
        st.history().add(&txn(i + 100)).unwrap();
        st.by_merchant().put(&7, &txn(i)).unwrap();
        st.count().set(&i).unwrap();
    }
    op.checkpoint(&storage).unwrap();
    (dir, storage)
}

fn report(e: Error) -> SchemaReport {
    match e {
        Error::SchemaMismatch { report, .. } => report,
        other => panic!("expected a schema mismatch, got {other}"),
    }
}

#[test]
fn a_changed_value_type_is_a_readable_error_and_nothing_is_restored() {
    let clock = ManualClock::new(1_000);
    let (_dir, storage) = v1_checkpoint(&clock);
    let mut op = PaymentsChanged::default()
        .bind(ttl_backend(&clock))
        .unwrap();
    op.key(&1).unwrap().count().set(&99).unwrap();
    let err = op.restore_from(&storage, RestorePoint::Latest).unwrap_err();
    let text = err.to_string();
    let report = report(err);
    assert_eq!(report.problems.len(), 1, "{text}");
    let p = &report.problems[0];
    assert_eq!(p.kind, ProblemKind::ValueChanged);
    assert_eq!(p.state.as_deref(), Some("last"));
    let lines: Vec<String> = p.changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "- field `amount_cents`: i64 (removed)",
            "- field `merchant`: u32 (removed)",
            "+ field `amount`: f64 (added)",
            "+ field `currency`: String (added)",
        ]
    );
    assert!(
        text.starts_with("operator `payments` cannot restore from `"),
        "{text}"
    );
    assert!(text.contains("\n  - state `last`: the value type changed without a new version (stored `Txn`, declared `Txn`, both version 1)"), "{text}");
    assert!(
        text.contains("\n      + field `currency`: String (added)"),
        "{text}"
    );
    assert!(text.contains("migrate_from(v1 = OldType)"), "{text}");
    // Checked before the backend was touched: the instance still holds what it held.
    assert_eq!(op.key(&1).unwrap().count().get_owned().unwrap(), Some(99));
    assert_eq!(op.key(&2).unwrap().count().get_owned().unwrap(), None);
    // The checkpoint is unharmed: the code that wrote it restores it.
    let mut back = PaymentsV1::default().bind(ttl_backend(&clock)).unwrap();
    back.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(
        back.key(&2).unwrap().last().get_owned().unwrap(),
        Some(txn(2))
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let clock = ManualClock::new(1_000);
    let (_dir, storage) = v1_checkpoint(&clock);
    let mut op = PaymentsBroken::default().bind(ttl_backend(&clock)).unwrap();
    let report = report(op.restore_from(&storage, RestorePoint::Latest).unwrap_err());
    let kinds: Vec<(Option<&str>, ProblemKind)> = report
        .problems
        .iter()
        .map(|p| (p.state.as_deref(), p.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (None, ProblemKind::KeyChanged),
            (Some("last"), ProblemKind::KindChanged),
            (Some("history"), ProblemKind::MigrationMismatch),
            (Some("by_merchant"), ProblemKind::UserKeyChanged),
            (Some("count"), ProblemKind::StateUndeclared),
        ]
    );
    // `total` has the stored schema of `count` and is missing from the snapshot: a rename.
    let hint = report.problems[4].hint.as_deref().unwrap();
    assert!(
        hint.contains("`#[state(name = \"count\")]`") && hint.contains("`total`"),
        "{hint}"
    );
    assert!(
        report.problems[0]
            .summary
            .contains("from `u64` to `String`")
    );
}

#[test]
fn declared_migrations_convert_every_value_and_keep_ttl_stamps() {
    let clock = ManualClock::new(1_000);
    let (_dir, storage) = v1_checkpoint(&clock);
    clock.set(1_000 + 3_000_000); // 50 minutes later: the history has 10 minutes left
    let mut op = PaymentsV3::default().bind(ttl_backend(&clock)).unwrap();
    let summary = op.restore_from(&storage, RestorePoint::Latest).unwrap();
    // 20 values, 40 list elements and 20 map values were of version 1.
    assert_eq!(summary.migrated, 80);
    for i in 0..20u64 {
        let mut st = op.key(&i).unwrap();
        let expect = |t: v1::Txn| Txn::from(v2::Txn::from(t));
        assert_eq!(st.last().get_owned().unwrap(), Some(expect(txn(i))));
        assert_eq!(
            st.history().get_owned().unwrap(),
            vec![expect(txn(i)), expect(txn(i + 100))]
        );
        assert_eq!(
            st.by_merchant().get_owned(&7).unwrap(),
            Some(v2::Txn::from(txn(i)))
        );
        assert_eq!(st.count().get_owned().unwrap(), Some(i));
    }
    // The stamps travelled through the migration: the elements expire an hour after they were
    // written, not an hour after the restore.
    clock.set(1_000 + 3_600_000);
    assert!(
        op.key(&3)
            .unwrap()
            .history()
            .get_owned()
            .unwrap()
            .is_empty()
    );

    // A checkpoint of the migrated state is of the current version and restores as it is.
    let dir = tempfile::tempdir().unwrap();
    let again = CheckpointStorage::open(dir.path()).unwrap();
    clock.set(1_000);
    op.checkpoint(&again).unwrap();
    let mut next = PaymentsV3::default().bind(ttl_backend(&clock)).unwrap();
    let s = next.restore_from(&again, RestorePoint::Latest).unwrap();
    assert_eq!(s.migrated, 0);
    assert_eq!(
        next.key(&4).unwrap().last().get_owned().unwrap(),
        Some(Txn::from(v2::Txn::from(txn(4))))
    );
    // And the old code refuses it: version 3 is newer than what it declares.
    let mut old = PaymentsV1::default().bind(ttl_backend(&clock)).unwrap();
    let r = report(old.restore_from(&again, RestorePoint::Latest).unwrap_err());
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::NewerVersion && p.state.as_deref() == Some("last"))
    );
}

#[test]
fn the_manifest_carries_schemas_versions_and_migrations() {
    let m = PaymentsV3::manifest();
    let last = &m.states[0];
    assert_eq!(last.version, 3);
    assert_eq!(
        last.value_schema.to_string(),
        "Txn { card: u64, amount: f64, currency: String }"
    );
    assert_eq!(last.value_fingerprint, <Txn as StateSchema>::FINGERPRINT);
    assert_eq!(last.migrates_from.len(), 2);
    assert_eq!(last.migrates_from[0].value_type, "v1::Txn");
    assert_eq!(m.key_schema.to_string(), "u64");
    let json = m.to_json();
    let back: statewright::OperatorManifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    // A renamed type keeps its fingerprint; a changed one does not.
    assert_ne!(
        <v1::Txn as StateSchema>::FINGERPRINT,
        <v2::Txn as StateSchema>::FINGERPRINT
    );
}
