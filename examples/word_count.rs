//! Word count on RocksDB: 10 million generated words, a `ValueState<u64>` per word, a progress
//! bar, a native checkpoint at the end.
//!
//! The words follow a Zipf-like law over a vocabulary of 50,000 (a few words are most of the
//! text), so the working set is small and hot and RocksDB's block cache and memtable do most
//! of the work. Every word is one read-modify-write (`update`); the value is read in place
//! from RocksDB's pinned block, without a copy or a deserialisation.
//!
//! ```text
//! cargo run --release --example word_count --features rocksdb -- [--words N] [--dir PATH]
//! ```
//!
//! With `--dir`, the database and the checkpoint stay there; inspect the checkpoint with
//! `cargo run -p statewright-cli -- inspect PATH/checkpoints`.

use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::prelude::*;
use statewright::{CheckpointInfo, RocksDbBackend, RocksDbOptions};

// ANCHOR: operator
/// Occurrences per word.
#[derive(StatefulOperator, Default)]
#[operator(name = "word-count", key = String)]
pub struct WordCount {
    /// Occurrences of the word.
    pub count: ValueState<u64>,
}

fn count<B: AnyBackend>(op: &mut Bound<WordCount, B>, word: &str) -> statewright::Result<()> {
    op.key(word)?.count().update(|n| n.unwrap_or(0) + 1)
}
// ANCHOR_END: operator

/// Words in the vocabulary.
pub const VOCABULARY: u64 = 50_000;

/// The word of rank `rank` (0 is the most frequent): syllables spelling the rank.
pub fn word_of_rank(rank: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "va", "ze", "bo", "di", "fu", "ge", "hy",
        "ju",
    ];
    let mut word = String::new();
    let mut r = rank;
    loop {
        word.push_str(SYLLABLES[(r % 16) as usize]);
        r /= 16;
        if r == 0 {
            return word;
        }
    }
}

/// The rank of the `i`-th word of the text: log-uniform over the vocabulary, so the frequency
/// of a rank falls off like 1/rank.
pub fn rank_of(i: u64) -> u64 {
    let mut z = 0x0BAD_5EED_u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64) / ((1u64 << 53) as f64);
    (((VOCABULARY as f64 + 1.0).ln() * u).exp() as u64)
        .saturating_sub(1)
        .min(VOCABULARY - 1)
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Distinct words seen.
    pub distinct: u64,
    /// The ten most frequent words with their counts, most first.
    pub top: Vec<(String, u64)>,
    /// Words per second, counting only the counting.
    pub words_per_second: f64,
    /// The checkpoint taken at the end.
    pub checkpoint: CheckpointInfo,
}

/// Counts `words` words into a RocksDB database under `dir`, then checkpoints it.
pub fn run(words: u64, dir: &Path, progress: bool) -> Result<Summary, Box<dyn std::error::Error>> {
    let db = RocksDbBackend::open(dir.join("db"), RocksDbOptions::default())?;
    let mut op = WordCount::default().bind(db)?;
    let bar = if progress {
        ProgressBar::new(words).with_style(ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} words, {per_sec}, eta {eta}",
        )?)
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut text = String::new();
    for i in 0..words {
        text.clear();
        text.push_str(&word_of_rank(rank_of(i)));
        count(&mut op, &text)?;
        if (i + 1) % 100_000 == 0 {
            bar.inc(100_000);
        }
    }
    bar.finish_and_clear();
    let words_per_second = words as f64 / start.elapsed().as_secs_f64();

    let mut counts = Vec::new();
    for rank in 0..VOCABULARY {
        let word = word_of_rank(rank);
        if let Some(n) = op.key(word.as_str())?.count().get_owned()? {
            counts.push((word, n));
        }
    }
    let distinct = counts.len() as u64;
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(10);

    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.join("checkpoints")))?;
    let checkpoint = checkpointer.checkpoint_now(&mut [&mut op])?.info;
    Ok(Summary {
        distinct,
        top: counts,
        words_per_second,
        checkpoint,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut words, mut keep) = (10_000_000u64, None::<std::path::PathBuf>);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--words" => words = value()?.parse()?,
            "--dir" => keep = Some(value()?.into()),
            other => {
                return Err(
                    format!("unknown argument `{other}`; use --words N and --dir PATH").into(),
                );
            }
        }
    }
    let temporary = tempfile::tempdir()?;
    let dir = match &keep {
        Some(path) => {
            std::fs::create_dir_all(path)?;
            path.clone()
        }
        None => temporary.path().to_owned(),
    };
    let summary = run(words, &dir, true)?;
    println!(
        "word_count on RocksDB: {words} words, {} distinct, {:.0} words per second",
        summary.distinct, summary.words_per_second
    );
    for (word, n) in &summary.top {
        println!("  {word:<12} {n:>10}");
    }
    println!(
        "  checkpoint {} ({}): {} bytes in {} files",
        summary.checkpoint.id,
        summary.checkpoint.kind(),
        summary.checkpoint.restore_bytes(),
        summary
            .checkpoint
            .files
            .iter()
            .filter_map(|f| f.native.as_ref())
            .map(|n| n.files.len())
            .sum::<usize>()
    );
    if let Some(path) = &keep {
        println!(
            "  inspect it: cargo run -p statewright-cli -- inspect {}",
            path.join("checkpoints").display()
        );
    }
    Ok(())
}
