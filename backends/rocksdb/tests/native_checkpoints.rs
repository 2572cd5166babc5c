//! Native incremental checkpoints share SST files: a checkpoint after a small change writes
//! little, retention never deletes a file a kept checkpoint needs, and every kept checkpoint
//! restores.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright_rocksdb::{NativeCheckpoints, RocksDbBackend, RocksDbOptions};

#[derive(StatefulOperator, Default)]
#[operator(name = "native", key = u64)]
struct Native {
    value: ValueState<u64>,
}

const KEYS: u64 = 50_000;

#[test]
fn incremental_checkpoints_share_files_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = NativeCheckpoints::open(dir.path().join("native"))
        .unwrap()
        .max_retained(2);
    let backend =
        RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap();
    let mut op = Native::default().bind(backend).unwrap();
    for k in 0..KEYS {
        op.key(&k).unwrap().value().set(&k).unwrap();
    }
    let first = store.checkpoint(op.backend()).unwrap();
    assert!(first.new_files > 0 && first.reused_files == 0);

    // Change 1% of the keys.
    for k in (0..KEYS).step_by(100) {
        op.key(&k).unwrap().value().set(&(k + 1_000_000)).unwrap();
    }
    let second = store.checkpoint(op.backend()).unwrap();
    assert!(
        second.reused_files >= first.new_files,
        "{first:?} {second:?}"
    );
    assert!(
        second.written_bytes * 5 < first.written_bytes,
        "incremental checkpoint wrote {} bytes, the first {}",
        second.written_bytes,
        first.written_bytes
    );

    // Two more checkpoints push the first two out; files the kept ones share survive.
    for round in 0..2u64 {
        op.key(&round).unwrap().value().set(&(round + 7)).unwrap();
        store.checkpoint(op.backend()).unwrap();
    }
    assert_eq!(store.list().unwrap(), vec![3, 4]);
    for id in [3, 4] {
        let restored = store
            .restore(
                id,
                dir.path().join(format!("restored-{id}")),
                RocksDbOptions::low_memory(),
            )
            .unwrap();
        let mut op = Native::default().bind(restored).unwrap();
        // Checkpoint 3 has round 0 (key 0 = 7); checkpoint 4 also round 1 (key 1 = 8).
        assert_eq!(op.key(&0).unwrap().value().get_owned().unwrap(), Some(7));
        let key1 = if id == 3 { 1 } else { 8 };
        assert_eq!(op.key(&1).unwrap().value().get_owned().unwrap(), Some(key1));
        assert_eq!(
            op.key(&100).unwrap().value().get_owned().unwrap(),
            Some(1_000_100)
        );
        assert_eq!(
            op.key(&(KEYS - 1)).unwrap().value().get_owned().unwrap(),
            Some(KEYS - 1)
        );
    }
    assert!(
        store
            .restore(1, dir.path().join("gone"), RocksDbOptions::low_memory())
            .is_err()
    );
}
