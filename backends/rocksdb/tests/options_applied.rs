//! The options statewright sets are the options RocksDB runs with: read back from RocksDB's
//! OPTIONS file and properties.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright_rocksdb::{Compression, RocksDbBackend, RocksDbOptions};

#[derive(StatefulOperator, Default)]
#[operator(name = "opts", key = u64)]
struct Opts {
    value: ValueState<u64>,
    map: MapState<u32, u64>,
}

fn open(dir: &std::path::Path, options: RocksDbOptions) -> Bound<Opts, RocksDbBackend> {
    let backend = RocksDbBackend::open(dir, options).unwrap();
    let mut op = Opts::default().bind(backend).unwrap();
    op.key(&1).unwrap().value().set(&1).unwrap();
    op
}

#[test]
fn configured_options_are_the_effective_options() {
    let dir = tempfile::tempdir().unwrap();
    let options = RocksDbOptions::default()
        .write_buffer_size(24 << 20)
        .max_write_buffer_number(3)
        .max_background_jobs(3)
        .block_cache_size(48 << 20)
        .block_size(8 << 10)
        .bloom_filter_bits_per_key(Some(14.0))
        .compression_per_level(vec![Compression::None, Compression::Lz4]);
    let op = open(dir.path(), options);
    let eff = op.backend().effective_options().unwrap();
    assert_eq!(eff.value("DBOptions", "max_background_jobs"), Some("3"));
    for cf in ["opts.value", "opts.map"] {
        let cf_section = format!("CFOptions \"{cf}\"");
        let table = format!("TableOptions/BlockBasedTable \"{cf}\"");
        assert_eq!(
            eff.value(&cf_section, "write_buffer_size"),
            Some("25165824"),
            "{cf}"
        );
        assert_eq!(eff.value(&cf_section, "max_write_buffer_number"), Some("3"));
        assert_eq!(
            eff.value(&cf_section, "compression_per_level"),
            Some(
                "kNoCompression:kLZ4Compression:kLZ4Compression:kLZ4Compression:kLZ4Compression:kLZ4Compression:kLZ4Compression"
            )
        );
        assert_eq!(
            eff.value(&cf_section, "merge_operator"),
            Some("statewright.append")
        );
        assert_eq!(eff.value(&table, "block_size"), Some("8192"));
        assert_eq!(eff.value(&table, "filter_policy"), Some("bloomfilter"));
    }
    assert_eq!(op.backend().block_cache_capacity().unwrap(), 48 << 20);
}

/// Bits per key of the bloom filters RocksDB built, from the SST files' table properties (the
/// OPTIONS file names the policy only).
fn filter_bits_per_key(bits: Option<f64>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut op = open(
        dir.path(),
        RocksDbOptions::low_memory().bloom_filter_bits_per_key(bits),
    );
    let keys = 20_000u64;
    for k in 0..keys {
        op.key(&k).unwrap().value().set(&k).unwrap();
    }
    op.backend().flush().unwrap();
    let db = op.backend().db();
    let cf = db.cf_handle("opts.value").unwrap();
    let props = db
        .property_value_cf(cf, "rocksdb.aggregated-table-properties")
        .unwrap()
        .unwrap();
    let filter_bytes: f64 = props
        .split(';')
        .find_map(|p| p.trim().strip_prefix("filter block size="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    filter_bytes * 8.0 / keys as f64
}

#[test]
fn bloom_filter_bits_are_applied() {
    let fourteen = filter_bits_per_key(Some(14.0));
    let six = filter_bits_per_key(Some(6.0));
    assert!((13.0..16.0).contains(&fourteen), "{fourteen}");
    assert!((5.0..8.0).contains(&six), "{six}");
    assert!(filter_bits_per_key(None) < 0.5);
}

#[test]
fn presets_differ_where_they_should() {
    let d = RocksDbOptions::default();
    let w = RocksDbOptions::write_heavy();
    let r = RocksDbOptions::read_heavy();
    let l = RocksDbOptions::low_memory();
    assert!(
        w.write_buffer_size > d.write_buffer_size
            && w.max_write_buffer_number > d.max_write_buffer_number
    );
    assert!(r.block_cache_size > d.block_cache_size && r.block_size > d.block_size);
    assert!(l.write_buffer_size < d.write_buffer_size && l.block_cache_size < d.block_cache_size);

    let dir = tempfile::tempdir().unwrap();
    let op = open(dir.path(), RocksDbOptions::low_memory());
    let eff = op.backend().effective_options().unwrap();
    assert_eq!(
        eff.value("CFOptions \"opts.value\"", "write_buffer_size"),
        Some("8388608")
    );
    assert_eq!(op.backend().block_cache_capacity().unwrap(), 16 << 20);
}

#[test]
fn a_reopened_database_keeps_its_states() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut op = open(
            dir.path(),
            RocksDbOptions::low_memory().write_ahead_log(true),
        );
        op.key(&7).unwrap().map().put(&3, &33).unwrap();
    }
    let mut op = open(dir.path(), RocksDbOptions::low_memory());
    assert_eq!(op.key(&7).unwrap().map().get_owned(&3).unwrap(), Some(33));
}
