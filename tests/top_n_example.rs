//! The `top_n` example on a small stream: every category's ranking equals a plain `HashMap`'s,
//! on the heap and on RocksDB.
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/top_n.rs"]
mod top_n;

use statewright::HeapBackend;

fn check(rankings: &[(u32, Vec<(String, u64)>)], purchases: u64, n: usize) {
    let expected = top_n::reference(purchases, n);
    assert_eq!(rankings.len(), 8);
    for (category, top) in rankings {
        assert_eq!(top.len(), n, "category {category}");
        assert_eq!(Some(top), expected.get(category), "category {category}");
        // Most units first.
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "{top:?}");
    }
}

#[test]
fn rankings_equal_a_hashmap_on_the_heap() {
    for n in [1, 3, 10] {
        check(
            &top_n::run(20_000, n, HeapBackend::new()).unwrap(),
            20_000,
            n,
        );
    }
}

#[cfg(feature = "rocksdb")]
#[test]
fn rankings_equal_a_hashmap_on_rocksdb() {
    let db = statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::low_memory())
        .unwrap();
    check(&top_n::run(20_000, 5, db).unwrap(), 20_000, 5);
}
