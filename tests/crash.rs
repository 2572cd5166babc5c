//! Crash proof for incremental, asynchronous checkpoints: a child process updates state and
//! checkpoints in a loop (a full checkpoint, then chains of incremental ones, written on
//! tokio's blocking pool) and is killed with SIGKILL at random points: mid-update,
//! mid-capture, mid-write, mid-commit. After each kill every retained checkpoint restores to
//! exactly the state of its round, and the latest holds at least the last round the child
//! saw committed: no committed checkpoint is ever lost or damaged.
//!
//! The same for RocksDB's native checkpoints (`sigkill_native_rocksdb`): a killed job restarts
//! by restoring the latest checkpoint into a new database directory, and every retained
//! checkpoint restores after each kill, whatever the kill left half moved into `shared/`.
//!
//! `STATEWRIGHT_CRASH_POINTS` sets the number of kills (default 50 on the heap, 25 on RocksDB;
//! 200 or more for a long run); `STATEWRIGHT_CRASH_SEED` replays a run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::prelude::*;

const KEYS: u64 = 1_500;
const CHILD_ENV: &str = "STATEWRIGHT_CRASH_CHILD_DIR";
const BACKEND_ENV: &str = "STATEWRIGHT_CRASH_CHILD_BACKEND";

#[derive(StatefulOperator, Default)]
#[operator(name = "crash", key = u64)]
struct Crash {
    round: ValueState<u64>,
    /// Set in even rounds, cleared in odd ones: deletions in incremental checkpoints.
    even: ValueState<u64>,
    rounds: ListState<u64>,
    per_bucket: MapState<u8, u64>,
}

/// Where the checkpoints go: `<dir>/checkpoints`, or the object-storage URL in
/// [`URL_ENV`] (the S3 run).
fn config(dir: &Path) -> CheckpointConfig {
    config_at(
        dir,
        std::env::var(URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .as_deref(),
    )
}

fn config_at(dir: &Path, url: Option<&str>) -> CheckpointConfig {
    let config = match url {
        #[cfg(feature = "s3")]
        Some(url) => {
            let endpoint = std::env::var("STATEWRIGHT_S3_ENDPOINT").unwrap_or_default();
            let storage = statewright::store::open_url(
                url,
                [
                    ("aws_endpoint", endpoint.as_str()),
                    ("aws_allow_http", "true"),
                ],
            )
            .unwrap();
            CheckpointConfig::on_store(storage.store().clone())
        }
        _ => CheckpointConfig::new(dir.join("checkpoints")),
    };
    config.max_retained(3).max_chain(4).max_chain_ratio(100.0)
}

const URL_ENV: &str = "STATEWRIGHT_CRASH_CHILD_URL";

/// The child: rounds of updates to every key, an asynchronous checkpoint after each round.
#[test]
#[ignore = "the child process of `sigkill_at_random_points`, which runs it"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let checkpointer = Checkpointer::new(config(dir)).unwrap();
        let restart = checkpointer.storage().list().unwrap().last().is_some();
        #[cfg(feature = "rocksdb")]
        if std::env::var(BACKEND_ENV).as_deref() == Ok("rocksdb") {
            use statewright::keygroup::KeyGroupRange;
            use statewright::{RocksDbBackend, RocksDbOptions, restore_native};
            // A restarted job restores into a new database; the killed job's is dropped (with
            // the write-ahead log off it holds nothing a checkpoint does not).
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("db-") || name.starts_with(".db-") {
                    std::fs::remove_dir_all(entry.path()).unwrap();
                }
            }
            let db = dir.join(format!("db-{}", std::process::id()));
            let op = if restart {
                restore_native(
                    Crash::default(),
                    checkpointer.storage(),
                    RestorePoint::Latest,
                    KeyGroupRange::all(Crash::DESCRIPTOR.max_parallelism),
                    &db,
                    RocksDbOptions::low_memory(),
                )
                .unwrap()
            } else {
                Crash::default()
                    .bind(RocksDbBackend::open(&db, RocksDbOptions::low_memory()).unwrap())
                    .unwrap()
            };
            return run_child(op, checkpointer).await;
        }
        let mut op = Crash::default().bind(HeapBackend::new()).unwrap();
        if restart {
            op.restore_from(checkpointer.storage(), RestorePoint::Latest)
                .unwrap();
        }
        run_child(op, checkpointer).await;
    });
}

/// Rounds of updates and checkpoints until killed, continuing after the last committed round,
/// as a restarted job would.
async fn run_child<B: AnyBackend>(mut op: Bound<Crash, B>, mut checkpointer: Checkpointer) {
    let mut round = op
        .key(&0)
        .unwrap()
        .round()
        .get_owned()
        .unwrap()
        .unwrap_or(0);
    let mut out = std::io::stdout();
    loop {
        round += 1;
        for k in 0..KEYS {
            let mut st = op.key(&k).unwrap();
            st.round().set(&round).unwrap();
            if k % 3 == 0 {
                if round.is_multiple_of(2) {
                    st.even().set(&round).unwrap();
                } else {
                    st.even().clear().unwrap();
                }
            }
            if k % 7 == 0 {
                st.rounds().add(&round).unwrap();
            }
            st.per_bucket().put(&((round % 5) as u8), &round).unwrap();
        }
        checkpointer.trigger(&mut [&mut op]).unwrap();
        // Updates of the next round would go on here; the round's state is captured.
        let report = checkpointer.wait().await.unwrap().unwrap();
        writeln!(
            out,
            "committed {} {round} {}",
            report.info.id,
            report.info.kind()
        )
        .unwrap();
        out.flush().unwrap();
    }
}

/// Checks that `op` holds exactly the state after `round` rounds.
fn verify_round<B: AnyBackend>(op: &mut Bound<Crash, B>, round: u64) {
    for k in 0..KEYS {
        let mut st = op.key(&k).unwrap();
        assert_eq!(st.round().get_owned().unwrap(), Some(round), "key {k}");
        let even = (k % 3 == 0 && round.is_multiple_of(2)).then_some(round);
        assert_eq!(st.even().get_owned().unwrap(), even, "key {k}");
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
    kill_repeatedly("heap", None, 50, |storage, info, _| {
        let mut op = Crash::default().restore(HeapBackend::new(), storage, info.id.into())?;
        Ok(restored_round(&mut op))
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn sigkill_native_rocksdb() {
    use statewright::keygroup::KeyGroupRange;
    use statewright::{RocksDbOptions, restore_native};
    kill_repeatedly("rocksdb", None, 25, |storage, info, dir| {
        let target = dir.join(format!("verify-{}", info.id));
        let mut op = restore_native(
            Crash::default(),
            storage,
            info.id.into(),
            KeyGroupRange::all(Crash::DESCRIPTOR.max_parallelism),
            &target,
            RocksDbOptions::low_memory(),
        )?;
        let round = restored_round(&mut op);
        drop(op);
        std::fs::remove_dir_all(&target).unwrap();
        Ok(round)
    });
}

/// The same on S3 (SeaweedFS on 127.0.0.1, started by `bash .ci/test`): a kill in the middle of
/// an upload or a commit leaves every committed checkpoint restorable.
#[cfg(feature = "s3")]
#[test]
fn sigkill_while_checkpointing_to_s3() {
    if std::env::var("STATEWRIGHT_S3_ENDPOINT").is_err() {
        assert!(
            std::env::var_os("STATEWRIGHT_REQUIRE_S3").is_none(),
            "STATEWRIGHT_REQUIRE_S3 is set but STATEWRIGHT_S3_ENDPOINT is not"
        );
        eprintln!("skipped: STATEWRIGHT_S3_ENDPOINT is not set (`bash .ci/test` sets it)");
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!(
        "s3://statewright/tests/crash-{}-{nanos}",
        std::process::id()
    );
    kill_repeatedly("heap", Some(&url), 8, |storage, info, _| {
        let mut op = Crash::default().restore(HeapBackend::new(), storage, info.id.into())?;
        Ok(restored_round(&mut op))
    });
}

/// The round a restored instance holds, after checking it holds exactly that round's state.
fn restored_round<B: AnyBackend>(op: &mut Bound<Crash, B>) -> u64 {
    let round = op.key(&0).unwrap().round().get_owned().unwrap().unwrap();
    verify_round(op, round);
    round
}

type Restore =
    fn(&CheckpointStorage, &statewright::CheckpointInfo, &Path) -> statewright::Result<u64>;

fn kill_repeatedly(backend: &str, url: Option<&str>, default_points: u32, restore: Restore) {
    let points: u32 = std::env::var("STATEWRIGHT_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_points);
    let mut seed: u64 = std::env::var("STATEWRIGHT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    eprintln!("crash test seed {seed} ({points} kills, {backend})");
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_reported = 0u64;
    let mut incremental_seen = 0u32;
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
            .env(BACKEND_ENV, backend)
            .env(URL_ENV, url.unwrap_or_default())
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
                let mut parts = rest.split(' ');
                let round: u64 = parts.nth(1).unwrap().parse().unwrap();
                incremental_seen +=
                    u32::from(matches!(parts.next(), Some("incremental" | "native")));
                assert!(round > last_reported);
                last_reported = round;
                seen += 1;
            }
        }
        // Kill somewhere in the next round: mid-update, mid-capture, mid-write or mid-commit.
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 20_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let storage = config_at(dir.path(), url).open_storage().unwrap();
        let retained = storage.list().unwrap();
        assert!(!retained.is_empty());
        for (i, info) in retained.iter().enumerate() {
            let round = restore(&storage, info, dir.path())
                .unwrap_or_else(|e| panic!("point {point}: checkpoint {} damaged: {e}", info.id));
            if i + 1 == retained.len() {
                assert!(
                    round >= last_reported,
                    "point {point}: latest checkpoint has round {round}, round {last_reported} was committed"
                );
                last_reported = round;
            }
        }
    }
    assert!(
        incremental_seen > 0 || points < 5,
        "the child committed no incremental or native checkpoint"
    );
}
