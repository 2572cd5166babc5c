//! Reads keep RocksDB's blocks pinned only while a borrowed slice can use them: owned reads
//! (`get_owned`, `contains`, `len`) pin nothing, however many one key view makes, and borrowed
//! reads are released when the instance moves to the next key.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright_rocksdb::{RocksDbBackend, RocksDbOptions};

#[derive(StatefulOperator, Default)]
#[operator(name = "pages", key = u32)]
struct Pages {
    visits: MapState<u32, Vec<u8>>,
}

const ENTRIES: u32 = 20_000;

fn pinned<B: std::borrow::Borrow<RocksDbBackend>>(b: B) -> u64 {
    let db = b.borrow().db();
    db.property_int_value_cf(
        db.cf_handle("pages.visits").unwrap(),
        "rocksdb.block-cache-pinned-usage",
    )
    .unwrap()
    .unwrap()
}

/// The operator with `ENTRIES` entries under key 1, all in SST files, and how many bytes of
/// the block cache are pinned before any read (index and filter blocks RocksDB keeps pinned).
fn filled() -> (Bound<Pages, RocksDbBackend>, u64) {
    // Without the row cache, so that every read goes to RocksDB and pins what it reads.
    let backend =
        RocksDbBackend::open_temporary(RocksDbOptions::low_memory().row_cache_size(0)).unwrap();
    let mut op = Pages::default().bind(backend).unwrap();
    let mut st = op.key(&1).unwrap();
    for i in 0..ENTRIES {
        st.visits().put(&i, &vec![7u8; 200]).unwrap();
    }
    // In SST files, read through the block cache.
    op.backend().flush().unwrap();
    op.backend().compact().unwrap();
    let _ = op.key(&0).unwrap();
    let baseline = pinned(op.backend());
    (op, baseline)
}

#[test]
fn owned_reads_in_one_key_view_pin_nothing() {
    let (mut op, baseline) = filled();
    let mut st = op.key(&1).unwrap();
    let mut visits = st.visits();
    for i in 0..ENTRIES {
        assert_eq!(visits.get_owned(&i).unwrap().map(|v| v.len()), Some(200));
        assert!(visits.contains(&i).unwrap());
    }
    assert_eq!(visits.len().unwrap(), ENTRIES as usize);
    assert!(!visits.is_empty().unwrap());
    assert_eq!(pinned(op.backend()), baseline, "nothing more stays pinned");
}

#[test]
fn borrowed_reads_are_released_at_the_next_key() {
    let (mut op, baseline) = filled();
    let mut st = op.key(&1).unwrap();
    let mut total = 0usize;
    for i in 0..ENTRIES {
        total += st.visits().get(&i).unwrap().map_or(0, |v| v.len());
    }
    assert_eq!(total, 200 * ENTRIES as usize);
    // The slices borrowed above could still be in use until the view is gone, so their blocks
    // are pinned...
    let during = pinned(op.backend());
    assert!(
        during > baseline + 100_000,
        "{during} bytes pinned, {baseline} before"
    );
    // ...and released by the next key.
    let _ = op.key(&2).unwrap();
    assert_eq!(pinned(op.backend()), baseline);
}

#[test]
fn scans_stop_early_or_go_on_in_order() {
    let (mut op, _) = filled();
    let mut st = op.key(&1).unwrap();
    let first: Vec<u32> = st
        .visits()
        .keys()
        .unwrap()
        .take(3)
        .collect::<statewright::Result<_>>()
        .unwrap();
    assert_eq!(first, vec![0, 1, 2]);
    // Iterating on to the end yields every entry in order.
    let mut st = op.key(&1).unwrap();
    let mut n = 0u32;
    for (i, e) in st.visits().entries().unwrap().enumerate() {
        let (k, v) = e.unwrap();
        assert_eq!(k as usize, i);
        assert_eq!(v.len(), 200);
        n += 1;
    }
    assert_eq!(n, ENTRIES);
}
