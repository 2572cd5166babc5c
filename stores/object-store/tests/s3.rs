//! The object store against a real S3 server: SeaweedFS on 127.0.0.1, which `bash .ci/test`
//! installs, starts and stops. The endpoint comes from `STATEWRIGHT_S3_ENDPOINT`; where
//! `STATEWRIGHT_REQUIRE_S3` is set (the test command sets it), a missing endpoint fails.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::Arc;

use statewright::prelude::*;
use statewright::store::CheckpointStore;
use statewright::{Error, keygroup::KeyGroupRange};
use statewright_object_store::{ObjectStoreStore, PART_SIZE, open_url, testing};

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

fn fill(op: &mut Bound<Sessions, HeapBackend>, keys: std::ops::Range<u64>, round: u32) {
    for k in keys {
        let Ok(mut st) = op.key(&k) else { continue };
        st.clicks().update(|c| c.unwrap_or(0) + 1).unwrap();
        st.pages().put(&format!("p{}", k % 5), &round).unwrap();
    }
}

/// A key, its clicks and its pages.
type Row = (u64, u64, Vec<(String, u32)>);

/// Every key of `keys` the instance owns.
fn image(op: &mut Bound<Sessions, HeapBackend>, keys: std::ops::Range<u64>) -> Vec<Row> {
    let range = op.key_groups();
    let mut out = Vec::new();
    for k in keys {
        if !range.contains(statewright::keygroup::key_group(&k.to_be_bytes(), 128)) {
            continue;
        }
        let mut st = op.key(&k).unwrap();
        let clicks = st.clicks().get_owned().unwrap().unwrap_or(0);
        let mut pages: Vec<(String, u32)> = st
            .pages()
            .entries()
            .unwrap()
            .map(|e| e.map(|(p, r)| (p, r.to_native())))
            .collect::<statewright::Result<_>>()
            .unwrap();
        pages.sort();
        out.push((k, clicks, pages));
    }
    out
}

#[test]
fn the_store_keeps_the_contract_on_s3() {
    let Some(endpoint) = endpoint() else { return };
    let storage = storage(&endpoint, "contract");
    let s = storage.store();
    // Small objects, ranged reads, head, a range past the end.
    let data: Vec<u8> = (0..=255).collect();
    assert_eq!(s.put("chk-1/a.snap", &data).unwrap(), 256);
    assert_eq!(s.head("chk-1/a.snap").unwrap(), Some(256));
    assert_eq!(
        s.get_range("chk-1/a.snap", 10..14).unwrap(),
        [10, 11, 12, 13]
    );
    assert!(matches!(
        s.get_range("chk-1/a.snap", 250..300),
        Err(Error::Io { .. })
    ));
    assert_eq!(s.head("chk-1/missing").unwrap(), None);
    let err = s.get_range("chk-1/missing", 0..1).unwrap_err();
    assert!(err.to_string().contains("chk-1/missing"), "{err}");
    // A large object goes up in parts; its bytes read back across the part boundaries.
    let big: Vec<u8> = (0..PART_SIZE * 2 + 12_345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut w = s.create("chk-1/big.snap").unwrap();
    for chunk in big.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(
        s.head("chk-1/big.snap").unwrap(),
        None,
        "visible before finish"
    );
    assert_eq!(w.finish().unwrap(), big.len() as u64);
    let edge = PART_SIZE as u64;
    assert_eq!(
        s.get_range("chk-1/big.snap", edge - 3..edge + 3).unwrap(),
        big[PART_SIZE - 3..PART_SIZE + 3]
    );
    // An unfinished object is never seen.
    let mut w = s.create("chk-1/dropped.snap").unwrap();
    w.write_all(&big[..PART_SIZE + 10]).unwrap();
    drop(w);
    assert_eq!(s.head("chk-1/dropped.snap").unwrap(), None);
    // put-if-absent: one winner among racing writers.
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6u8)
            .map(|i| {
                scope.spawn(move || usize::from(s.put_if_absent("manifests/1", &[i]).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
    // Listing by prefix, deleting one and a prefix.
    assert_eq!(
        s.list("").unwrap(),
        ["chk-1/a.snap", "chk-1/big.snap", "manifests/1"]
    );
    assert_eq!(
        s.list("chk-1/").unwrap(),
        ["chk-1/a.snap", "chk-1/big.snap"]
    );
    s.delete("chk-1/a.snap").unwrap();
    s.delete("chk-1/a.snap").unwrap();
    s.delete_prefix("chk-1/").unwrap();
    assert_eq!(s.list("").unwrap(), ["manifests/1"]);
    assert!(matches!(
        s.put("../x", b"x"),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn checkpoints_on_s3_restore_at_any_parallelism() {
    let Some(endpoint) = endpoint() else { return };
    let storage = storage(&endpoint, "rescale");
    // Two instances, each checkpointed incrementally twice by a checkpointer on the store.
    let ranges: Vec<KeyGroupRange> = (0..2)
        .map(|i| KeyGroupRange::for_instance(128, 2, i).unwrap())
        .collect();
    let mut ops: Vec<_> = ranges
        .iter()
        .map(|&r| {
            Sessions::default()
                .bind(HeapBackend::new())
                .unwrap()
                .with_key_groups(r)
                .unwrap()
        })
        .collect();
    let config = CheckpointConfig::on_store(Arc::clone(storage.store())).max_chain(5);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    for round in 0..3 {
        // The first round writes every key, the others a tenth (so they are incremental).
        let keys = if round == 0 { 0..2_000 } else { 0..200 };
        for op in &mut ops {
            fill(op, keys.clone(), round);
        }
        let [a, b] = &mut ops[..] else { unreachable!() };
        checkpointer.checkpoint_now(&mut [a, b]).unwrap();
    }
    let listed = storage.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed[2].kind(),
        statewright::checkpoint::SnapshotKind::Incremental
    );
    let mut want = Vec::new();
    for op in &mut ops {
        want.extend(image(op, 0..2_000));
    }
    want.sort();
    // Restored at 3 instances, they hold what the 2 held.
    let mut got = Vec::new();
    for i in 0..3 {
        let mut op = Sessions::default()
            .bind(HeapBackend::new())
            .unwrap()
            .with_key_groups(KeyGroupRange::for_instance(128, 3, i).unwrap())
            .unwrap();
        op.restore_from(&storage, RestorePoint::Latest).unwrap();
        got.extend(image(&mut op, 0..2_000));
    }
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn two_writers_on_s3_never_both_commit() {
    let Some(endpoint) = endpoint() else { return };
    let storage = storage(&endpoint, "race");
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0..100, 1);
    let base = op.checkpoint(&storage).unwrap();
    let mut first = storage.begin().unwrap();
    first.add(&op).unwrap();
    fill(&mut op, 0..100, 2);
    let second = op.checkpoint(&storage).unwrap();
    let err = first.commit().unwrap_err();
    assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
    let ids: Vec<_> = storage.list().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, [base.id, second.id]);
    // The loser's objects are gone; the winner restores.
    let names = storage.store().list("").unwrap();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with(&format!("chk-{:010}/", first_id(&ids))))
    );
    let mut restored = Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(image(&mut restored, 0..100), image(&mut op, 0..100));
}

/// The checkpoint number between the two listed ones (the loser's).
fn first_id(ids: &[CheckpointId]) -> u64 {
    ids[0].0 + 1
}

#[test]
fn a_damaged_object_is_reported_by_its_key_and_the_checkpoint_before_restores() {
    let Some(endpoint) = endpoint() else { return };
    let storage = storage(&endpoint, "damaged");
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0..500, 1);
    let good = op.checkpoint(&storage).unwrap();
    fill(&mut op, 0..500, 2);
    let bad = op.checkpoint(&storage).unwrap();
    // One byte flipped in the newest snapshot.
    let name = &bad.files[0].path;
    let s = storage.store();
    let len = s.head(name).unwrap().unwrap();
    let mut bytes = s.get_range(name, 0..len).unwrap();
    bytes[len as usize / 2] ^= 0x40;
    s.put(name, &bytes).unwrap();
    let err = Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(name.as_str()), "{err}");
    Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Id(good.id))
        .unwrap();
}

#[test]
fn wrong_credentials_are_a_typed_error_not_a_hang() {
    let Some(endpoint) = endpoint() else { return };
    let started = std::time::Instant::now();
    let storage = open_url(
        &testing::unique_url("credentials"),
        [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "statewright"),
            ("aws_secret_access_key", "not-the-secret"),
        ],
    )
    .unwrap();
    let err = storage.list().unwrap_err();
    match &err {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn a_store_built_by_hand_takes_a_prefix() {
    let Some(endpoint) = endpoint() else { return };
    let url = testing::unique_url("by-hand");
    let bucket_store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name("statewright")
        .build()
        .unwrap();
    let prefix = url.trim_start_matches("s3://statewright/");
    let store = ObjectStoreStore::new(Arc::new(bucket_store), prefix, url.clone()).unwrap();
    store.put("a/b", b"x").unwrap();
    assert_eq!(store.list("").unwrap(), ["a/b"]);
    assert_eq!(
        store.locate("a/b"),
        std::path::PathBuf::from(format!("{url}/a/b"))
    );
    store.delete_prefix("a/").unwrap();
    assert!(store.list("").unwrap().is_empty());
}

/// A job may open, use and drop the storage inside an asynchronous task (`async fn main`).
#[test]
fn the_store_can_be_dropped_inside_an_asynchronous_task() {
    let Some(endpoint) = endpoint() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let storage = storage(&endpoint, "async-drop");
        storage.store().put("a", b"x").unwrap();
        assert_eq!(storage.store().head("a").unwrap(), Some(1));
        drop(storage);
    });
}
