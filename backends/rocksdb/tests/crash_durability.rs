//! A child process writes state and checkpoints in a loop and is killed with SIGKILL at random
//! points. After each kill the database opens cleanly, every retained checkpoint restores, and
//! the latest holds everything up to the last checkpoint the child reported as committed.
//!
//! `STATEWRIGHT_CRASH_POINTS` sets the number of kills (default 8); `STATEWRIGHT_CRASH_SEED`
//! replays a run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use statewright::prelude::*;
use statewright_rocksdb::{RocksDbBackend, RocksDbOptions};

const KEYS: u64 = 2_000;
const CHILD_ENV: &str = "STATEWRIGHT_CRASH_CHILD_DIR";

#[derive(StatefulOperator, Default)]
#[operator(name = "crash", key = u64)]
struct Crash {
    round: ValueState<u64>,
    rounds: ListState<u64>,
    per_bucket: MapState<u8, u64>,
}

/// The child: rounds of updates to every key, a checkpoint after each round.
#[test]
#[ignore = "the child process of `sigkill_at_random_points`, which runs it"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let storage = CheckpointStorage::open(dir.join("checkpoints"))
        .unwrap()
        .max_retained(3);
    // A row cache far smaller than the state: kills also fall between rows evicted (written
    // to RocksDB) and the next checkpoint.
    let backend = RocksDbBackend::open(
        dir.join("db"),
        RocksDbOptions::low_memory().row_cache_size(64 << 10),
    )
    .unwrap();
    let mut op = Crash::default().bind(backend).unwrap();
    // Continue after the last committed round, as a restarted job would.
    let mut round = match storage.list().unwrap().last() {
        Some(_) => {
            op.restore_from(&storage, RestorePoint::Latest).unwrap();
            op.key(&0)
                .unwrap()
                .round()
                .get_owned()
                .unwrap()
                .unwrap_or(0)
        }
        None => 0,
    };
    let mut out = std::io::stdout();
    loop {
        round += 1;
        for k in 0..KEYS {
            let mut st = op.key(&k).unwrap();
            st.round().set(&round).unwrap();
            if k % 7 == 0 {
                st.rounds().add(&round).unwrap();
            }
            st.per_bucket().put(&((round % 5) as u8), &round).unwrap();
        }
        let info = op.checkpoint(&storage).unwrap();
        writeln!(out, "committed {} {round}", info.id).unwrap();
        out.flush().unwrap();
    }
}

/// Checks that `op` holds exactly the state after `round` rounds.
fn verify_round(op: &mut Bound<Crash, HeapBackend>, round: u64) {
    for k in 0..KEYS {
        let mut st = op.key(&k).unwrap();
        assert_eq!(st.round().get_owned().unwrap(), Some(round), "key {k}");
        let expected_rounds: Vec<u64> = if k % 7 == 0 {
            (1..=round).collect()
        } else {
            Vec::new()
        };
        assert_eq!(st.rounds().get_owned().unwrap(), expected_rounds, "key {k}");
        let buckets: Vec<(u8, u64)> = st
            .per_bucket()
            .entries()
            .unwrap()
            .map(|e| e.map(|(b, r)| (b, r.to_native())))
            .collect::<Result<_, _>>()
            .unwrap();
        let mut expected: Vec<(u8, u64)> = (round.saturating_sub(4)..=round)
            .filter(|r| *r > 0)
            .map(|r| ((r % 5) as u8, r))
            .collect();
        expected.sort_unstable();
        assert_eq!(buckets, expected, "key {k}");
    }
}

fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn sigkill_at_random_points() {
    let points: u32 = std::env::var("STATEWRIGHT_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut seed: u64 = std::env::var("STATEWRIGHT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    eprintln!("crash test seed {seed} ({points} kills)");
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_reported = 0u64;
    for point in 0..points {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let wait_for = 1 + next(&mut seed) % 3;
        let mut seen = 0;
        while seen < wait_for {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(rest) = line.strip_prefix("committed ") {
                let round: u64 = rest.split(' ').nth(1).unwrap().parse().unwrap();
                assert!(round > last_reported);
                last_reported = round;
                seen += 1;
            }
        }
        // Kill somewhere in the next round: mid-update, mid-checkpoint or mid-commit.
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 60_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The database opens cleanly after the kill.
        let reopened = RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory());
        assert!(reopened.is_ok(), "point {point}: {:?}", reopened.err());
        drop(reopened);

        let storage = CheckpointStorage::open(dir.path().join("checkpoints")).unwrap();
        let retained = storage.list().unwrap();
        assert!(!retained.is_empty());
        for (i, info) in retained.iter().enumerate() {
            let mut op = Crash::default()
                .restore(HeapBackend::new(), &storage, info.id.into())
                .unwrap_or_else(|e| panic!("point {point}: checkpoint {} damaged: {e}", info.id));
            let round = op.key(&0).unwrap().round().get_owned().unwrap().unwrap();
            verify_round(&mut op, round);
            if i + 1 == retained.len() {
                assert!(
                    round >= last_reported,
                    "point {point}: latest checkpoint has round {round}, round {last_reported} was committed"
                );
                last_reported = round;
            }
        }
    }
}
