//! The canonical snapshot is backend-independent: heap state restores into RocksDB and back,
//! with byte-identical snapshots on both sides.
#![cfg(feature = "rocksdb")]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use statewright::prelude::*;
use statewright::snapshot::{SnapshotOptions, SnapshotReader};
use statewright::{RocksDbBackend, RocksDbOptions};

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u64,
    pub name: String,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "cross", key = String)]
struct Cross {
    last: ValueState<Event>,
    events: ListState<Event>,
    counts: MapState<String, u64>,
    #[state(reduce = max)]
    max_id: ReducingState<u64>,
}

fn fill<B: AnyBackend>(op: &mut Bound<Cross, B>) {
    for i in 0..3_000u64 {
        let user = format!("user-{}", i % 400);
        let e = Event {
            id: i,
            name: format!("event-{}", i % 13),
        };
        let mut st = op.key(user.as_str()).unwrap();
        st.last().set(&e).unwrap();
        st.events().add(&e).unwrap();
        st.counts().update(&e.name, |c| c.unwrap_or(0) + 1).unwrap();
        st.max_id().add(&i).unwrap();
    }
    // Keys of many lengths, across 128 bytes (where a stored key's length prefix grows to two
    // bytes): RocksDB orders them by length first, a snapshot by key.
    for j in 0..80u64 {
        let user = format!("{}{j}", "k".repeat(90 + j as usize * 3));
        let mut st = op.key(user.as_str()).unwrap();
        st.max_id().add(&j).unwrap();
        st.counts().put(&"x".repeat(j as usize % 7), &j).unwrap();
    }
}

fn snapshot<B: AnyBackend>(op: &Bound<Cross, B>) -> Vec<u8> {
    let mut bytes = Vec::new();
    op.write_snapshot(
        SnapshotOptions::default(),
        Path::new("cross.snap"),
        &mut bytes,
    )
    .unwrap();
    bytes
}

fn rocks() -> RocksDbBackend {
    RocksDbBackend::open_temporary(RocksDbOptions::low_memory()).unwrap()
}

#[test]
fn heap_snapshot_restores_into_rocksdb() {
    let mut heap = Cross::default().bind(HeapBackend::new()).unwrap();
    fill(&mut heap);
    let bytes = snapshot(&heap);
    let mut rocks = Cross::default().bind(rocks()).unwrap();
    rocks
        .restore_snapshot(&SnapshotReader::parse("cross.snap", &bytes).unwrap())
        .unwrap();
    assert_eq!(snapshot(&rocks), bytes);
    let mut st = rocks.key("user-7").unwrap();
    assert_eq!(st.events().len().unwrap(), 8);
    assert_eq!(st.max_id().get_owned().unwrap(), Some(2807));
}

#[test]
fn rocksdb_snapshot_restores_into_the_heap() {
    let mut rocks = Cross::default().bind(rocks()).unwrap();
    fill(&mut rocks);
    rocks.backend().flush().unwrap();
    let bytes = snapshot(&rocks);
    let mut heap = Cross::default().bind(HeapBackend::new()).unwrap();
    heap.restore_snapshot(&SnapshotReader::parse("cross.snap", &bytes).unwrap())
        .unwrap();
    assert_eq!(snapshot(&heap), bytes);

    // The same operations on both backends give the same bytes.
    let mut fresh_heap = Cross::default().bind(HeapBackend::new()).unwrap();
    fill(&mut fresh_heap);
    assert_eq!(snapshot(&fresh_heap), bytes);
}

#[test]
fn checkpoints_move_between_backends() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let mut rocks = Cross::default().bind(rocks()).unwrap();
    fill(&mut rocks);
    rocks.checkpoint(&storage).unwrap();
    let mut heap = Cross::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(heap.key("user-1").unwrap().counts().len().unwrap(), 8);
    assert_eq!(snapshot(&heap), snapshot(&rocks));
}

/// A checkpoint of RocksDB takes a detached view and encodes it as RocksDB yields it, in
/// canonical order, never holding the state; the bytes are the heap's, block boundaries
/// included.
#[test]
fn a_detached_rocksdb_capture_streams_to_the_same_bytes() {
    use statewright::checkpointer::Checkpointable;
    let mut heap = Cross::default().bind(HeapBackend::new()).unwrap();
    fill(&mut heap);
    let mut rocks = Cross::default().bind(rocks()).unwrap();
    fill(&mut rocks);
    rocks.backend().flush().unwrap();
    for options in [
        SnapshotOptions::default(),
        SnapshotOptions {
            compression: false,
            block_size: 256,
        },
    ] {
        let image = rocks.capture_full(false).unwrap();
        assert!(image.is_detached());
        let mut streamed = Vec::new();
        image
            .write(options, Path::new("cross.snap"), &mut streamed)
            .unwrap();
        let mut whole = Vec::new();
        heap.write_snapshot(options, Path::new("cross.snap"), &mut whole)
            .unwrap();
        assert!(streamed == whole, "{options:?}");
    }
}
