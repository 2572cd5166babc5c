//! RocksDB's native checkpoints on a real S3 server (SeaweedFS on 127.0.0.1, started by
//! `bash .ci/test`; the endpoint comes from `STATEWRIGHT_S3_ENDPOINT`, and where
//! `STATEWRIGHT_REQUIRE_S3` is set a missing endpoint fails).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use statewright::prelude::*;
use statewright::{RocksDbBackend, RocksDbOptions};
use statewright_object_store::testing;

fn endpoint() -> Option<String> {
    testing::s3_endpoint().unwrap()
}

fn storage(endpoint: &str, name: &str) -> CheckpointStorage {
    testing::s3_storage(endpoint, name).unwrap()
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = u64)]
struct Sessions {
    clicks: ValueState<u64>,
    pages: MapState<String, u32>,
}

/// RocksDB's native checkpoints on S3: SST files are uploaded once and listed by every
/// checkpoint that uses them, and a restore downloads them into a new database.
#[test]
fn native_rocksdb_checkpoints_go_to_s3_once_and_restore() {
    let Some(endpoint) = endpoint() else { return };
    let storage = storage(&endpoint, "native");
    let dir = tempfile::tempdir().unwrap();
    let mut op = Sessions::default()
        .bind(RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap())
        .unwrap();
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::on_store(Arc::clone(storage.store()))).unwrap();
    for round in 0..3u32 {
        for k in 0..3_000u64 {
            if round == 0 || k % 10 == u64::from(round) {
                let mut st = op.key(&k).unwrap();
                st.clicks().update(|c| c.unwrap_or(0) + 1).unwrap();
                st.pages().put(&format!("p{}", k % 5), &round).unwrap();
            }
        }
        checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    }
    let listed = storage.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .iter()
            .all(|c| c.kind() == statewright::checkpoint::SnapshotKind::Native)
    );
    // Each shared file is one object, listed by the checkpoints that use it.
    let shared = storage.store().list("shared/").unwrap();
    let listed_shared: std::collections::BTreeSet<String> = listed
        .iter()
        .flat_map(|c| &c.files)
        .filter_map(|f| f.native.as_ref())
        .flat_map(|n| &n.files)
        .filter_map(|f| f.shared.clone())
        .map(|s| format!("shared/{s}"))
        .collect();
    assert!(!shared.is_empty());
    assert_eq!(
        shared
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        listed_shared
    );
    let later = &listed[2].files[0];
    let first = &listed[0].files[0];
    let reused = later
        .native
        .as_ref()
        .unwrap()
        .files
        .iter()
        .filter(|f| f.shared.is_some())
        .filter(|f| {
            first
                .native
                .as_ref()
                .unwrap()
                .files
                .iter()
                .any(|g| g.shared == f.shared)
        })
        .count();
    assert!(
        reused > 0,
        "the third checkpoint uploads every SST file again"
    );
    // A restore into a new database downloads the files.
    let restored_dir = tempfile::tempdir().unwrap();
    let mut restored = Sessions::default()
        .bind(
            RocksDbBackend::open(restored_dir.path().join("db"), RocksDbOptions::low_memory())
                .unwrap(),
        )
        .unwrap();
    restored
        .restore_from(&storage, RestorePoint::Latest)
        .unwrap();
    for k in [0u64, 1, 11, 2_999] {
        let want = op.key(&k).unwrap().clicks().get_owned().unwrap();
        assert_eq!(
            restored.key(&k).unwrap().clicks().get_owned().unwrap(),
            want,
            "key {k}"
        );
    }
}
