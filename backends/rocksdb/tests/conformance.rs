//! The core conformance suite, run against RocksDB in a temporary directory, alone and under
//! the TTL wrapper.
#![allow(missing_docs, clippy::unwrap_used)]

fn backend() -> statewright_rocksdb::RocksDbBackend {
    statewright_rocksdb::RocksDbBackend::open_temporary(
        statewright_rocksdb::RocksDbOptions::low_memory(),
    )
    .unwrap()
}

statewright_core::conformance_suite!(backend());

/// `TtlBackend<RocksDbBackend>` with a one-year TTL on every state: nothing expires, so it must
/// behave exactly as a backend without TTL.
mod ttl {
    statewright_core::conformance_suite!(ttl: statewright_core::ttl::TtlBackend::new(super::backend()));
}

/// A row cache of 2 KiB: nearly every write evicts, so every contract holds across write-backs.
mod tiny_row_cache {
    fn backend() -> statewright_rocksdb::RocksDbBackend {
        statewright_rocksdb::RocksDbBackend::open_temporary(
            statewright_rocksdb::RocksDbOptions::low_memory().row_cache_size(2 << 10),
        )
        .unwrap()
    }

    statewright_core::conformance_suite!(backend());
}

/// No row cache: every operation goes to RocksDB.
mod no_row_cache {
    fn backend() -> statewright_rocksdb::RocksDbBackend {
        statewright_rocksdb::RocksDbBackend::open_temporary(
            statewright_rocksdb::RocksDbOptions::low_memory().row_cache_size(0),
        )
        .unwrap()
    }

    statewright_core::conformance_suite!(backend());
}

/// The write-ahead log on: every state is written through, timers in time order included.
mod write_ahead_log {
    fn backend() -> statewright_rocksdb::RocksDbBackend {
        statewright_rocksdb::RocksDbBackend::open_temporary(
            statewright_rocksdb::RocksDbOptions::low_memory().write_ahead_log(true),
        )
        .unwrap()
    }

    statewright_core::conformance_suite!(backend());
}
