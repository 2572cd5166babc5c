//! Errors of the RocksDB backend. A directory whose database cannot be read is an error naming
//! the directory, and opening it changes none of its files: only a directory without a database
//! (no `CURRENT` file) gets a new one. RocksDB's own errors keep their source; what the backend
//! does not offer is `Unsupported`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use statewright::Error;
use statewright::prelude::*;
use statewright_rocksdb::{RocksDbBackend, RocksDbOptions};

#[derive(StatefulOperator, Default)]
#[operator(name = "counts", key = u64)]
struct Counts {
    n: ValueState<u64>,
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = fs::read(&path).unwrap();
            out.insert(path, bytes);
        }
    }
    out
}

/// With a write-ahead log, so that what was written survives closing the database.
fn options() -> RocksDbOptions {
    RocksDbOptions::default().write_ahead_log(true)
}

#[test]
fn a_damaged_current_file_is_an_error_and_the_database_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let backend = RocksDbBackend::open(&path, options()).unwrap();
        let mut op = Counts::default().bind(backend).unwrap();
        for k in 0..10u64 {
            op.key(&k).unwrap().n().set(&(k * 10)).unwrap();
        }
    }
    let current = path.join("CURRENT");
    let good = fs::read(&current).unwrap();
    fs::write(&current, b"not a manifest name").unwrap();
    let before = files(&path);

    let Err(err) = RocksDbBackend::open(&path, options()) else {
        panic!("a database with a damaged CURRENT file opened");
    };
    match &err {
        Error::Io { path: named, .. } => assert_eq!(named, &path, "{err}"),
        other => panic!("expected an i/o error naming the database, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        files(&path) == before,
        "opening the damaged database changed its files"
    );

    // Repaired, it opens with its data.
    fs::write(&current, good).unwrap();
    let backend = RocksDbBackend::open(&path, options()).unwrap();
    let mut op = Counts::default().bind(backend).unwrap();
    assert_eq!(op.key(&7).unwrap().n().get_owned().unwrap(), Some(70));
}

#[test]
fn a_directory_without_a_database_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("README"), "kept").unwrap();
    let backend = RocksDbBackend::open(&path, options()).unwrap();
    let mut op = Counts::default().bind(backend).unwrap();
    op.key(&1).unwrap().n().set(&1).unwrap();
    assert!(path.join("CURRENT").exists());
    assert_eq!(fs::read_to_string(path.join("README")).unwrap(), "kept");
}

/// RocksDB's own error reaches the caller as the source of `Error::Storage`, not flattened into
/// a message: here, the lock a second open of the same database cannot take.
#[test]
fn the_engine_error_is_kept_as_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap();
    let err =
        RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory()).unwrap_err();
    let Error::Storage { backend, source } = &err else {
        panic!("not a storage error: {err:?}");
    };
    assert_eq!(*backend, "rocksdb");
    assert!(source.to_string().contains("lock"), "{source}");
    assert!(std::error::Error::source(&err).is_some());
}

/// Asking a backend for what it does not offer is `Error::Unsupported`, which says what to do
/// instead, apart from failures.
#[test]
fn what_rocksdb_does_not_offer_is_unsupported() {
    use statewright::Snapshots;
    let mut op = Counts::default()
        .bind(RocksDbBackend::open_temporary(RocksDbOptions::low_memory()).unwrap())
        .unwrap();
    op.key(&1).unwrap().n().set(&1).unwrap();
    let backend: &mut RocksDbBackend = op.backend_mut();
    assert!(!backend.track_changes(true));
    let err = backend
        .drain_changes(statewright::StateId(0), &mut |_, _, _| Ok(()))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported { backend: "rocksdb", what } if what.contains("full snapshots")),
        "{err}"
    );
}
