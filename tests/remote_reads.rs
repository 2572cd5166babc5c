//! How a restore reads from a remote store (one whose objects are not local files): a small
//! snapshot read whole is downloaded once; a rescaled restore fetches the blocks of its key
//! groups in a few ranged reads, and a damaged block among them is reported by its object.
//! The remote store here is a local directory that hides its files, so every read is a ranged
//! read through the store interface, counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use statewright::Error;
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::store::{CheckpointStore, LocalStore, ObjectWriter};

#[derive(Debug)]
struct Remote {
    inner: LocalStore,
    reads: AtomicU64,
    bytes: AtomicU64,
}

impl Remote {
    fn take_counts(&self) -> (u64, u64) {
        (
            self.reads.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

impl CheckpointStore for Remote {
    fn locate(&self, name: &str) -> PathBuf {
        self.inner.locate(name)
    }
    fn create(&self, name: &str) -> statewright::Result<Box<dyn ObjectWriter>> {
        self.inner.create(name)
    }
    fn put_file(&self, name: &str, from: &Path) -> statewright::Result<u64> {
        self.inner.put_file(name, from)
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> statewright::Result<bool> {
        self.inner.put_if_absent(name, bytes)
    }
    fn get_range(&self, name: &str, range: Range<u64>) -> statewright::Result<Vec<u8>> {
        let bytes = self.inner.get_range(name, range)?;
        if name.ends_with(".snap") {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(bytes)
    }
    fn head(&self, name: &str) -> statewright::Result<Option<u64>> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> statewright::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> statewright::Result<()> {
        self.inner.delete(name)
    }
    fn delete_prefix(&self, prefix: &str) -> statewright::Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "counts", key = u64)]
struct Counts {
    count: ValueState<u64>,
}

const KEYS: u64 = 60_000;

fn instance(parallelism: u16, index: u16) -> Bound<Counts, HeapBackend> {
    Counts::default()
        .bind(HeapBackend::new())
        .unwrap()
        .with_key_groups(KeyGroupRange::for_instance(128, parallelism, index).unwrap())
        .unwrap()
}

/// Two instances checkpointed to a remote store: the storage, the store and the checkpoint.
fn checkpointed() -> (
    tempfile::TempDir,
    CheckpointStorage,
    Arc<Remote>,
    statewright::CheckpointInfo,
) {
    let dir = tempfile::tempdir().unwrap();
    let remote = Arc::new(Remote {
        inner: LocalStore::open(dir.path()).unwrap(),
        reads: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let storage = CheckpointStorage::from_store(Arc::clone(&remote) as Arc<dyn CheckpointStore>);
    let mut ops = [instance(2, 0), instance(2, 1)];
    for k in 0..KEYS {
        for op in &mut ops {
            if let Ok(mut st) = op.key(&k) {
                st.count().set(&(k * 3)).unwrap();
            }
        }
    }
    let mut pending = storage.begin().unwrap();
    for op in &ops {
        pending.add(op).unwrap();
    }
    let info = pending.commit().unwrap();
    remote.take_counts();
    (dir, storage, remote, info)
}

fn check(op: &mut Bound<Counts, HeapBackend>) -> u64 {
    let mut owned = 0;
    for k in 0..KEYS {
        if let Ok(mut st) = op.key(&k) {
            assert_eq!(st.count().get_owned().unwrap(), Some(k * 3), "key {k}");
            owned += 1;
        }
    }
    owned
}

#[test]
fn a_whole_restore_downloads_each_snapshot_once() {
    let (_dir, storage, remote, info) = checkpointed();
    let mut op = instance(1, 0);
    op.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(check(&mut op), KEYS);
    let (reads, bytes) = remote.take_counts();
    assert_eq!(reads, 2, "one read per snapshot");
    assert_eq!(bytes, info.bytes(), "every byte once");
}

#[test]
fn a_rescaled_restore_reads_its_share_in_a_few_requests() {
    let (_dir, storage, remote, info) = checkpointed();
    let mut owned = 0;
    for i in 0..3 {
        let mut op = instance(3, i);
        op.restore_from(&storage, RestorePoint::Latest).unwrap();
        owned += check(&mut op);
        let (reads, bytes) = remote.take_counts();
        let share = bytes as f64 / (info.bytes() as f64 / 3.0);
        assert!(share <= 1.2, "instance {i} read {share:.2} × a third");
        // Per snapshot it overlaps: magic, header, footer, index, and its blocks in one run.
        assert!(reads <= 2 * 5, "instance {i} made {reads} reads");
    }
    assert_eq!(owned, KEYS);
}

#[test]
fn a_damaged_block_fails_the_rescaled_restore_that_reads_it() {
    let (dir, storage, _remote, info) = checkpointed();
    // One byte flipped in the middle of the first instance's snapshot (its data blocks).
    let file = info.files.iter().find(|f| f.first_key_group == 0).unwrap();
    let path = dir.path().join(&file.path);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    // The new instance 0 reads key groups 0..=42, all in that file.
    let err = instance(3, 0)
        .restore_from(&storage, RestorePoint::Latest)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&file.path), "{err}");
}
