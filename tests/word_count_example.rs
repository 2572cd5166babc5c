//! The `word_count` example on a small text: RocksDB's counts equal a plain `HashMap`'s, and
//! the checkpoint it takes restores them.
#![cfg(feature = "rocksdb")]
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../examples/word_count.rs"]
mod word_count;

use std::collections::HashMap;

use statewright::checkpoint::SnapshotKind;
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::{RocksDbOptions, restore_native};

#[test]
fn counts_equal_a_hashmap_and_the_checkpoint_restores_them() {
    let words = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let summary = word_count::run(words, dir.path(), false).unwrap();

    let mut expected: HashMap<String, u64> = HashMap::new();
    for i in 0..words {
        *expected
            .entry(word_count::word_of_rank(word_count::rank_of(i)))
            .or_default() += 1;
    }
    let mut top: Vec<(String, u64)> = expected.clone().into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(10);
    assert_eq!(summary.distinct, expected.len() as u64);
    assert_eq!(summary.top, top);
    // Zipf-like: the most frequent word is far more frequent than the tenth.
    assert!(top[0].1 > 4 * top[9].1, "{top:?}");

    assert_eq!(summary.checkpoint.kind(), SnapshotKind::Native);
    let storage = CheckpointStorage::open(dir.path().join("checkpoints")).unwrap();
    let mut restored = restore_native(
        word_count::WordCount::default(),
        &storage,
        RestorePoint::Latest,
        KeyGroupRange::all(word_count::WordCount::DESCRIPTOR.max_parallelism),
        dir.path().join("restored"),
        RocksDbOptions::low_memory(),
    )
    .unwrap();
    for (word, n) in &expected {
        assert_eq!(
            restored
                .key(word.as_str())
                .unwrap()
                .count()
                .get_owned()
                .unwrap(),
            Some(*n),
            "{word}"
        );
    }
}
