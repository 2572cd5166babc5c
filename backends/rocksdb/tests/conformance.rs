//! The core conformance suite, run against RocksDB in a temporary directory.
#![allow(missing_docs)]

fn backend() -> statewright_rocksdb::RocksDbBackend {
    statewright_rocksdb::RocksDbBackend::open_temporary(
        statewright_rocksdb::RocksDbOptions::low_memory(),
    )
    .unwrap()
}

statewright_core::conformance_suite!(backend());
