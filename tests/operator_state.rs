//! Operator state (broadcast, operator list and union list states): held in the operator,
//! checkpointed with the keyed state, and distributed on restore as each kind promises.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(name = "source", key = u64, max_parallelism = 32)]
struct Source {
    rules: BroadcastState<String, i64>,
    offsets: OperatorListState<(u32, u64)>,
    assigned: UnionListState<u32>,
    seen: ValueState<u64>,
}

const MAX: u16 = 32;

fn instance(p: u16, i: u16) -> Bound<Source, HeapBackend> {
    Source::default()
        .bind(HeapBackend::new())
        .unwrap()
        .with_key_groups(KeyGroupRange::for_instance(MAX, p, i).unwrap())
        .unwrap()
}

/// A checkpoint of `p` instances: every instance holds the same rules, instance `i` holds
/// `3 + 2i` offsets and one assigned partition, and counts its keys.
fn checkpoint(p: u16) -> (tempfile::TempDir, CheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut instances: Vec<_> = (0..p).map(|i| instance(p, i)).collect();
    for (i, op) in instances.iter_mut().enumerate() {
        let i = i as u32;
        let ops = op.operator_mut();
        ops.rules.put("limit", &500).unwrap();
        ops.rules.put("window", &60).unwrap();
        for j in 0..3 + 2 * i {
            ops.offsets.add(&(i, u64::from(j) * 10)).unwrap();
        }
        ops.assigned.add(&(100 + i)).unwrap();
    }
    for key in 0..200u64 {
        for op in &mut instances {
            if let Ok(mut st) = op.key(&key) {
                st.seen().set(&key).unwrap();
            }
        }
    }
    let mut pending = storage.begin().unwrap();
    for op in &instances {
        pending.add(op).unwrap();
    }
    pending.commit().unwrap();
    (dir, storage)
}

fn restore(storage: &CheckpointStorage, p: u16) -> Vec<Bound<Source, HeapBackend>> {
    (0..p)
        .map(|i| {
            let mut op = instance(p, i);
            op.restore_from(storage, RestorePoint::Latest).unwrap();
            op
        })
        .collect()
}

fn all_offsets(p: u16) -> Vec<(u32, u64)> {
    (0..u32::from(p))
        .flat_map(|i| (0..3 + 2 * i).map(move |j| (i, u64::from(j) * 10)))
        .collect()
}

fn rules(op: &Bound<Source, HeapBackend>) -> BTreeMap<String, i64> {
    op.operator()
        .rules
        .iter()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k, v.to_native())
        })
        .collect()
}

#[test]
fn same_parallelism_gives_each_instance_its_own_state_back() {
    let (_dir, storage) = checkpoint(2);
    let restored = restore(&storage, 2);
    for (i, op) in restored.iter().enumerate() {
        let i = i as u32;
        let mine: Vec<(u32, u64)> = (0..3 + 2 * i).map(|j| (i, u64::from(j) * 10)).collect();
        assert_eq!(op.operator().offsets.to_vec().unwrap(), mine);
        assert_eq!(op.operator().assigned.to_vec().unwrap(), vec![100, 101]);
        assert_eq!(rules(op).len(), 2);
    }
}

#[test]
fn rescaling_copies_broadcast_state_splits_lists_and_unions_union_lists() {
    for (from, to) in [(2u16, 3u16), (3, 1), (1, 4), (4, 3)] {
        let (_dir, storage) = checkpoint(from);
        let mut restored = restore(&storage, to);
        let expected_rules = BTreeMap::from([("limit".to_owned(), 500), ("window".to_owned(), 60)]);
        let mut split: Vec<(u32, u64)> = Vec::new();
        let union: Vec<u32> = (0..u32::from(from)).map(|i| 100 + i).collect();
        for op in &restored {
            assert_eq!(rules(op), expected_rules, "{from} -> {to}");
            assert_eq!(
                op.operator().assigned.to_vec().unwrap(),
                union,
                "{from} -> {to}"
            );
            let mine = op.operator().offsets.to_vec().unwrap();
            split.extend(mine);
        }
        // Every offset lands on exactly one new instance.
        split.sort_unstable();
        let mut all = all_offsets(from);
        all.sort_unstable();
        assert_eq!(split, all, "{from} -> {to}");
        // No instance is left with much more than its share of any old instance's elements.
        let sizes: Vec<usize> = restored
            .iter()
            .map(|op| op.operator().offsets.len())
            .collect();
        let total: usize = sizes.iter().sum();
        let fair = total.div_ceil(usize::from(to)) + usize::from(from);
        assert!(
            sizes.iter().all(|&n| n <= fair),
            "{from} -> {to}: {sizes:?}"
        );
        // The keyed state went with its key groups, as always.
        let mut keys = 0;
        for key in 0..200u64 {
            for op in &mut restored {
                if let Ok(mut st) = op.key(&key) {
                    assert_eq!(st.seen().get_owned().unwrap(), Some(key));
                    keys += 1;
                }
            }
        }
        assert_eq!(keys, 200);
    }
}

#[test]
fn operator_state_is_in_every_incremental_checkpoint_and_the_keyed_view_reads_it() {
    use statewright::checkpoint::SnapshotKind;
    use statewright::checkpointer::{CheckpointConfig, Checkpointer};
    let dir = tempfile::tempdir().unwrap();
    let mut op = Source::default().bind(HeapBackend::new()).unwrap();
    let mut cp = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    // Enough keyed state that the changes of a round are smaller than a full snapshot.
    for key in 100..400u64 {
        op.key(&key).unwrap().seen().set(&key).unwrap();
    }
    for round in 0..3u64 {
        op.operator_mut().offsets.update(&[(0, round)]).unwrap();
        op.operator_mut()
            .rules
            .put("round", &(round as i64))
            .unwrap();
        op.key(&round).unwrap().seen().set(&round).unwrap();
        cp.checkpoint_now(&mut [&mut op]).unwrap();
    }
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let list = storage.list().unwrap();
    assert_eq!(list.last().unwrap().kind(), SnapshotKind::Incremental);
    let mut back = Source::default().bind(HeapBackend::new()).unwrap();
    back.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(back.operator().offsets.to_vec().unwrap(), vec![(0, 2)]);
    let mut st = back.key(&1).unwrap();
    assert_eq!(
        st.rules.get("round").unwrap().map(|v| v.to_native()),
        Some(2)
    );
    assert_eq!(st.seen().get_owned().unwrap(), Some(1));
}
