//! `statewright::store::open_url` picks a store by URL, and says which feature a scheme needs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::Error;
use statewright::prelude::*;
use statewright::store::open_url;

const NO_OPTIONS: [(&str, &str); 0] = [];

#[derive(StatefulOperator, Default)]
#[operator(name = "counts", key = u64)]
struct Counts {
    count: ValueState<u64>,
}

#[test]
fn a_file_url_opens_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let storage = open_url(&url, NO_OPTIONS).unwrap();
    let mut op = Counts::default().bind(HeapBackend::new()).unwrap();
    op.key(&1).unwrap().count().set(&7).unwrap();
    op.checkpoint(&storage).unwrap();
    // The same directory, opened by path, holds the checkpoint.
    let by_path = CheckpointStorage::open(dir.path()).unwrap();
    assert_eq!(by_path.list().unwrap().len(), 1);
    assert!(matches!(
        open_url("file://relative/path", NO_OPTIONS),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn an_unknown_scheme_is_an_error_not_a_panic() {
    let err = open_url("ftp://example/x", NO_OPTIONS).err().unwrap();
    assert!(
        matches!(err, Error::Unsupported { .. } | Error::InvalidName { .. }),
        "{err}"
    );
    assert!(open_url("not a url", NO_OPTIONS).is_err());
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_url_takes_no_options() {
    let err = open_url("redis://127.0.0.1:6390/0/x", [("aws_region", "x")])
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
}
